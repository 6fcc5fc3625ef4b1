//! One AuthorizationPolicy rule, compiled into checks, and its evaluation.
//!
//! A rule matches when any `from` entry matches, any `to` entry matches and every `when`
//! condition holds (a missing `from`/`to`/`when` is no constraint). Each entry is a list of
//! [`Check`]s that must all hold; a check is one field (`principals`, `paths`,
//! `request.headers[x]`, ...) with its values ORed, or a `not*` field / `notValues` that must
//! match none. This is the shape of the Envoy RBAC policy Istio generates per rule
//! (`pilot/pkg/security/authz/model`): `principals` = `from` entries merged with the
//! principal-side `when` keys, `permissions` = `to` entries merged with the permission-side
//! ones; since the `when` part is in every entry, pulling it out is the same.
//!
//! Compilation differs for TCP connections, as Istio's generation for the network RBAC
//! filter does: an HTTP-only field (`hosts`, `methods`, `paths`, `requestPrincipals`,
//! `request.*` keys) drops the whole rule of an ALLOW policy (a narrower allow) and is left
//! out of a DENY, AUDIT or CUSTOM rule (a wider deny). Istio's `checkError` does the same
//! with a value that does not compile (a bad CIDR): ALLOW drops the rule, the others drop
//! the value.

use std::net::IpAddr;
use std::sync::LazyLock;

use http::HeaderName;
use ipnet::IpNet;

use crate::config::authorization_policy::{Action, Condition, Operation, Rule, Source};
use crate::route::matcher::JwtClaims;

use super::pattern::{
    NamespaceGlob, PathPattern, ServiceAccount, StrPattern, bracketed_names, parse_ip_block,
    parse_port,
};
use super::request::AuthzRequest;

/// The JWT claim paths Istio's generators read.
static ISS: LazyLock<[String; 1]> = LazyLock::new(|| ["iss".to_string()]);
static SUB: LazyLock<[String; 1]> = LazyLock::new(|| ["sub".to_string()]);

/// The trust domain Istio treats as "this mesh's trust domain" in a principal.
const CLUSTER_LOCAL: &str = "cluster.local";

/// A bit per well-known HTTP method, for the method prefilter; every other method shares
/// [`METHOD_OTHER`].
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
/// The bit of a method outside [`METHODS`] (and of TCP connections).
const METHOD_OTHER: u16 = 1 << METHODS.len();
/// Every method bit: no method constraint.
pub(crate) const METHOD_ANY: u16 = (METHOD_OTHER << 1) - 1;

/// The prefilter bit of `method`.
pub(crate) fn method_bit(method: &str) -> u16 {
    METHODS
        .iter()
        .position(|m| *m == method)
        .map_or(METHOD_OTHER, |i| 1 << i)
}

/// The request attributes prepared once per decision.
pub(crate) struct Cx<'r, 'a> {
    /// The request.
    pub(crate) req: &'r AuthzRequest<'a>,
    /// [`method_bit`] of its method.
    pub(crate) method_bit: u16,
    /// The path without the query.
    pub(crate) path: &'a str,
    /// The peer's trust domain (the principal up to its first `/`).
    pub(crate) trust_domain: Option<&'a str>,
    /// The peer IP, IPv4-mapped IPv6 addresses unmapped.
    pub(crate) peer_ip: Option<IpAddr>,
    /// The client IP, likewise.
    pub(crate) remote_ip: Option<IpAddr>,
    /// The destination IP, likewise.
    pub(crate) destination_ip: Option<IpAddr>,
}

impl<'r, 'a> Cx<'r, 'a> {
    /// Prepares `req`.
    pub(crate) fn new(req: &'r AuthzRequest<'a>) -> Self {
        Cx {
            req,
            method_bit: if req.is_http {
                method_bit(req.method)
            } else {
                METHOD_OTHER
            },
            path: req.path_only(),
            trust_domain: req
                .peer_principal
                .map(|p| p.split_once('/').map_or(p, |(td, _)| td)),
            peer_ip: req.peer_ip.map(|ip| ip.to_canonical()),
            remote_ip: req.remote().map(|ip| ip.to_canonical()),
            destination_ip: req.destination_ip.map(|ip| ip.to_canonical()),
        }
    }
}

/// What a [`Check`] looks at, with its compiled values (ORed).
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    /// `principals`, `source.principal`: the peer principal.
    Principal(Box<[StrPattern]>),
    /// `namespaces`, `source.namespace`.
    Namespace(Box<[NamespaceGlob]>),
    /// `serviceAccounts`, `source.serviceAccount`.
    ServiceAccount(Box<[ServiceAccount]>),
    /// `trustDomains`, `source.trustDomain`.
    TrustDomain(Box<[StrPattern]>),
    /// `requestPrincipals`, `request.auth.principal`: (issuer, subject) pairs.
    RequestPrincipal(Box<[(StrPattern, StrPattern)]>),
    /// `ipBlocks`, `source.ip`.
    PeerIp(Box<[IpNet]>),
    /// `remoteIpBlocks`, `remote.ip`.
    RemoteIp(Box<[IpNet]>),
    /// `destination.ip`.
    DestinationIp(Box<[IpNet]>),
    /// `ports`, `destination.port`.
    Port(Box<[u16]>),
    /// `methods`: the well-known methods written exactly, as [`method_bit`]s, and the other
    /// values as patterns.
    Method {
        /// Bits of the exact well-known methods.
        mask: u16,
        /// Every other value (`*`, `PURGE`, `GE*`).
        others: Box<[StrPattern]>,
    },
    /// `hosts`, without case.
    Host(Box<[StrPattern]>),
    /// `paths`.
    Path(Box<[PathPattern]>),
    /// `request.headers[name]`: `*` is "present", other values match the header's values
    /// joined with `,` (Envoy's `HeaderMatcher`).
    Header(HeaderName, Box<[StrPattern]>),
    /// `request.auth.claims[a][b]`, `request.auth.audiences` (`aud`),
    /// `request.auth.presenter` (`azp`): a string claim or an item of a list claim.
    Claim(Box<[String]>, Box<[StrPattern]>),
    /// `connection.sni`.
    Sni(Box<[StrPattern]>),
    /// `experimental.envoy.filters.*`: Envoy dynamic metadata, which nothing here produces;
    /// the attribute is always absent.
    Absent,
}

impl Matcher {
    /// Whether the field reads the peer's certificate identity.
    fn reads_peer(&self) -> bool {
        matches!(
            self,
            Matcher::Principal(_)
                | Matcher::Namespace(_)
                | Matcher::ServiceAccount(_)
                | Matcher::TrustDomain(_)
        )
    }

    /// Whether the field reads the JWT.
    fn reads_jwt(&self) -> bool {
        matches!(self, Matcher::RequestPrincipal(_) | Matcher::Claim(..))
    }

    /// The order checks run in: cheap and selective first.
    fn cost(&self) -> u8 {
        match self {
            Matcher::Absent | Matcher::Port(_) => 0,
            Matcher::Method { .. } => 1,
            Matcher::PeerIp(_) | Matcher::RemoteIp(_) | Matcher::DestinationIp(_) => 2,
            Matcher::Host(_) | Matcher::Sni(_) => 3,
            Matcher::Path(_) => 4,
            Matcher::Principal(_) | Matcher::TrustDomain(_) => 5,
            Matcher::Namespace(_) | Matcher::ServiceAccount(_) => 6,
            Matcher::Header(..) => 7,
            Matcher::RequestPrincipal(_) | Matcher::Claim(..) => 8,
        }
    }

    /// Whether any value matches the request.
    fn any(&self, cx: &Cx<'_, '_>) -> bool {
        let req = cx.req;
        match self {
            Matcher::Principal(pats) => req
                .peer_principal
                .is_some_and(|p| pats.iter().any(|m| m.matches(p.as_bytes()))),
            Matcher::Namespace(globs) => req
                .peer_principal
                .is_some_and(|p| globs.iter().any(|g| g.matches_principal(p))),
            Matcher::ServiceAccount(sas) => req
                .peer_principal
                .is_some_and(|p| sas.iter().any(|sa| sa.matches_principal(p))),
            Matcher::TrustDomain(pats) => cx
                .trust_domain
                .is_some_and(|td| pats.iter().any(|m| m.matches(td.as_bytes()))),
            Matcher::RequestPrincipal(pairs) => req.claims.is_some_and(|claims| {
                pairs.iter().any(|(iss, sub)| {
                    claim_matches(claims, &*ISS, |v| iss.matches(v.as_bytes()))
                        && claim_matches(claims, &*SUB, |v| sub.matches(v.as_bytes()))
                })
            }),
            Matcher::PeerIp(nets) => ip_in(cx.peer_ip, nets),
            Matcher::RemoteIp(nets) => ip_in(cx.remote_ip, nets),
            Matcher::DestinationIp(nets) => ip_in(cx.destination_ip, nets),
            Matcher::Port(ports) => ports.contains(&req.destination_port),
            Matcher::Method { mask, others } => {
                mask & cx.method_bit != 0 || others.iter().any(|m| m.matches(req.method.as_bytes()))
            }
            Matcher::Host(pats) => pats
                .iter()
                .any(|m| m.matches_ignore_case(req.host.as_bytes())),
            Matcher::Path(pats) => pats.iter().any(|m| m.matches(cx.path)),
            Matcher::Header(name, pats) => header_matches(req, name, pats),
            Matcher::Claim(path, pats) => req.claims.is_some_and(|claims| {
                claim_matches(claims, path, |v| {
                    pats.iter().any(|m| m.matches(v.as_bytes()))
                })
            }),
            Matcher::Sni(pats) => {
                let sni = req.sni.unwrap_or_default();
                pats.iter().any(|m| m.matches(sni.as_bytes()))
            }
            Matcher::Absent => false,
        }
    }
}

/// Whether the claim at `path` has a string value (or list item) `f` accepts.
fn claim_matches(claims: &dyn JwtClaims, path: &[String], mut f: impl FnMut(&str) -> bool) -> bool {
    claims.visit_claim(path, &mut f) == Some(true)
}

/// Whether `ip` is in one of `nets`.
fn ip_in(ip: Option<IpAddr>, nets: &[IpNet]) -> bool {
    ip.is_some_and(|ip| nets.iter().any(|n| n.contains(&ip)))
}

/// Envoy's `HeaderMatcher` for a `request.headers[...]` value.
fn header_matches(req: &AuthzRequest<'_>, name: &HeaderName, pats: &[StrPattern]) -> bool {
    let mut values = req.headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return false;
    };
    let Some(second) = values.next() else {
        return pats.iter().any(|m| match m {
            StrPattern::Present => true,
            m => m.matches(first.as_bytes()),
        });
    };
    // Several values: Envoy matches them joined with `,`.
    let mut joined = Vec::with_capacity(first.len() + second.len() + 16);
    joined.extend_from_slice(first.as_bytes());
    for v in std::iter::once(second).chain(values) {
        joined.push(b',');
        joined.extend_from_slice(v.as_bytes());
    }
    pats.iter().any(|m| match m {
        StrPattern::Present => true,
        m => m.matches(&joined),
    })
}

/// One field of a source, operation or condition: its values must match (or, negated, none
/// may).
#[derive(Debug, Clone)]
pub(crate) struct Check {
    /// The field and its values.
    matcher: Matcher,
    /// A `not*` field or `notValues`.
    negate: bool,
}

impl Check {
    /// Whether the check holds for the request.
    fn holds(&self, cx: &Cx<'_, '_>) -> bool {
        self.matcher.any(cx) != self.negate
    }
}

/// Whether every check holds.
fn all(checks: &[Check], cx: &Cx<'_, '_>) -> bool {
    checks.iter().all(|c| c.holds(cx))
}

/// A compiled rule of one policy.
#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    /// Index of the policy in [`super::AuthzPolicies`].
    pub(crate) policy: usize,
    /// Index of the rule in the policy's `rules`.
    pub(crate) index: usize,
    /// Prefilter: the request's [`method_bit`] must be in it.
    method_mask: u16,
    /// Prefilter: the destination port must be one of these (every `to` entry lists ports).
    ports: Option<Box<[u16]>>,
    /// Prefilter: the rule cannot match without a peer identity.
    needs_peer: bool,
    /// Prefilter: the rule cannot match without a JWT.
    needs_jwt: bool,
    /// `from` entries (empty: any source).
    from: Box<[Box<[Check]>]>,
    /// `to` entries (empty: any operation).
    to: Box<[Box<[Check]>]>,
    /// `when` conditions.
    when: Box<[Check]>,
}

impl CompiledRule {
    /// Whether the rule matches the request.
    pub(crate) fn matches(&self, cx: &Cx<'_, '_>) -> bool {
        if self.method_mask & cx.method_bit == 0
            || self
                .ports
                .as_ref()
                .is_some_and(|p| !p.contains(&cx.req.destination_port))
            || (self.needs_peer && cx.req.peer_principal.is_none())
            || (self.needs_jwt && cx.req.claims.is_none())
        {
            return false;
        }
        (self.to.is_empty() || self.to.iter().any(|op| all(op, cx)))
            && (self.from.is_empty() || self.from.iter().any(|src| all(src, cx)))
            && all(&self.when, cx)
    }
}

/// What a rule can be found by, for [`super::index::RuleIndex`].
pub(crate) enum IndexKeys<'r> {
    /// Every `to` entry requires one of these paths: `(literal, exact)`, the literal being
    /// the whole path when `exact`, else a prefix of it.
    Paths(Vec<(&'r str, bool)>),
    /// Every `from` entry requires one of these exact principals.
    Principals(Vec<&'r str>),
    /// Nothing selective.
    None,
}

impl CompiledRule {
    /// What the rule can be found by: paths when every `to` entry names path literals,
    /// else exact principals when every `from` entry does.
    pub(crate) fn index_keys(&self) -> IndexKeys<'_> {
        let paths = keys(&self.to, |m| match m {
            Matcher::Path(pats) => pats
                .iter()
                .map(|p| Some(p.literal()).filter(|(lit, _)| !lit.is_empty()))
                .collect(),
            _ => None,
        });
        if let Some(paths) = paths {
            return IndexKeys::Paths(paths);
        }
        let principals = keys(&self.from, |m| match m {
            Matcher::Principal(pats) => pats.iter().map(|p| p.exact()).collect(),
            _ => None,
        });
        principals.map_or(IndexKeys::None, IndexKeys::Principals)
    }
}

/// The keys `pick` finds in the first positive check it accepts of every entry; `None` when
/// there are no entries or one of them has no such check.
fn keys<'r, K>(
    entries: &'r [Box<[Check]>],
    pick: impl Fn(&'r Matcher) -> Option<Vec<K>>,
) -> Option<Vec<K>> {
    if entries.is_empty() {
        return None;
    }
    let mut all = Vec::new();
    for entry in entries {
        let found = entry
            .iter()
            .filter(|c| !c.negate)
            .find_map(|c| pick(&c.matcher))?;
        all.extend(found);
    }
    Some(all)
}

/// A problem found while compiling, reported as a warning: the field path under `spec` and
/// the message.
pub(crate) type Problem = (String, String);

/// Compiles rules of one policy for HTTP or TCP.
pub(crate) struct RuleCompiler<'c> {
    /// The policy's action (ALLOW drops a rule on errors, the others drop values).
    pub(crate) action: Action,
    /// Compiling for TCP connections.
    pub(crate) tcp: bool,
    /// The policy's namespace (completes a bare `serviceAccounts` entry).
    pub(crate) namespace: &'c str,
    /// The mesh's trust domain (a principal's `cluster.local` stands for it).
    pub(crate) trust_domain: &'c str,
}

/// One field as it is being compiled.
enum Key {
    Principal,
    Namespace,
    ServiceAccount,
    TrustDomain,
    RequestPrincipal,
    PeerIp,
    RemoteIp,
    DestinationIp,
    Port,
    Method,
    Host,
    Path,
    Header(HeaderName),
    Claim(Box<[String]>),
    Sni,
    Absent,
}

impl Key {
    /// Whether the field is only known for HTTP requests.
    fn is_http_only(&self) -> bool {
        matches!(
            self,
            Key::RequestPrincipal
                | Key::Method
                | Key::Host
                | Key::Path
                | Key::Header(_)
                | Key::Claim(_)
        )
    }
}

/// The outcome of compiling one rule.
pub(crate) enum Compiled {
    /// The rule, ready.
    Rule(CompiledRule),
    /// The rule is left out (never matches); the reason, for a warning, unless it is the
    /// expected TCP treatment of HTTP-only fields.
    Dropped(Option<String>),
}

impl RuleCompiler<'_> {
    /// Compiles `rule` (`rules[index]` of policy number `policy`), adding problems to
    /// `problems`.
    pub(crate) fn compile(
        &self,
        rule: &Rule,
        policy: usize,
        index: usize,
        problems: &mut Vec<Problem>,
    ) -> Compiled {
        let base = format!("spec.rules[{index}]");
        let mut state = State {
            drop: None,
            http_only_drop: false,
        };

        let mut when = Vec::new();
        for (k, cond) in rule.when.iter().enumerate() {
            let path = format!("{base}.when[{k}]");
            match self.condition_key(cond) {
                Ok(key) => self.field(
                    &mut when,
                    key,
                    &cond.values,
                    &cond.not_values,
                    [&format!("{path}.values"), &format!("{path}.notValues")],
                    &mut state,
                    problems,
                ),
                Err(e) => {
                    // Istio's model.New refuses the whole rule, whatever the action.
                    return Compiled::Dropped(Some(format!(
                        "{path}.key: {e}: rule {index} is skipped"
                    )));
                }
            }
        }

        let mut from = Vec::new();
        for (j, entry) in rule.from.iter().flatten().enumerate() {
            let path = format!("{base}.from[{j}].source");
            let mut checks = Vec::new();
            if let Some(src) = &entry.source {
                self.source(&mut checks, src, &path, &mut state, problems);
            }
            from.push(finish(checks));
        }

        let mut to = Vec::new();
        for (j, entry) in rule.to.iter().flatten().enumerate() {
            let path = format!("{base}.to[{j}].operation");
            let mut checks = Vec::new();
            if let Some(op) = &entry.operation {
                self.operation(&mut checks, op, &path, &mut state, problems);
            }
            to.push(finish(checks));
        }

        if let Some(reason) = state.drop {
            return Compiled::Dropped(Some(reason));
        }
        if state.http_only_drop {
            return Compiled::Dropped(None);
        }
        let when = finish(when);
        Compiled::Rule(CompiledRule {
            policy,
            index,
            method_mask: method_mask(&to),
            ports: port_filter(&to),
            needs_peer: needs(&from, &when, Matcher::reads_peer),
            needs_jwt: needs(&from, &when, Matcher::reads_jwt),
            from: from.into_boxed_slice(),
            to: to.into_boxed_slice(),
            when,
        })
    }

    /// The fields of a `source`.
    fn source(
        &self,
        checks: &mut Vec<Check>,
        s: &Source,
        path: &str,
        state: &mut State,
        problems: &mut Vec<Problem>,
    ) {
        let fields = [
            (
                Key::Principal,
                &s.principals,
                &s.not_principals,
                "Principals",
            ),
            (
                Key::RequestPrincipal,
                &s.request_principals,
                &s.not_request_principals,
                "RequestPrincipals",
            ),
            (
                Key::Namespace,
                &s.namespaces,
                &s.not_namespaces,
                "Namespaces",
            ),
            (
                Key::ServiceAccount,
                &s.service_accounts,
                &s.not_service_accounts,
                "ServiceAccounts",
            ),
            (Key::PeerIp, &s.ip_blocks, &s.not_ip_blocks, "IpBlocks"),
            (
                Key::RemoteIp,
                &s.remote_ip_blocks,
                &s.not_remote_ip_blocks,
                "RemoteIpBlocks",
            ),
            (
                Key::TrustDomain,
                &s.trust_domains,
                &s.not_trust_domains,
                "TrustDomains",
            ),
        ];
        for (key, values, not_values, name) in fields {
            let paths = field_paths(path, name);
            self.field(
                checks,
                key,
                values,
                not_values,
                [&paths[0], &paths[1]],
                state,
                problems,
            );
        }
    }

    /// The fields of an `operation`.
    fn operation(
        &self,
        checks: &mut Vec<Check>,
        o: &Operation,
        path: &str,
        state: &mut State,
        problems: &mut Vec<Problem>,
    ) {
        let fields = [
            (Key::Host, &o.hosts, &o.not_hosts, "Hosts"),
            (Key::Port, &o.ports, &o.not_ports, "Ports"),
            (Key::Method, &o.methods, &o.not_methods, "Methods"),
            (Key::Path, &o.paths, &o.not_paths, "Paths"),
        ];
        for (key, values, not_values, name) in fields {
            let paths = field_paths(path, name);
            self.field(
                checks,
                key,
                values,
                not_values,
                [&paths[0], &paths[1]],
                state,
                problems,
            );
        }
    }

    /// The field a `when` key names (Istio's list in `model.New`).
    fn condition_key(&self, cond: &Condition) -> Result<Key, String> {
        let key = cond.key.as_str();
        let bracketed = |prefix: &str| {
            key.strip_prefix(prefix)
                .and_then(bracketed_names)
                .ok_or_else(|| format!("bad key ({key}): should have format a[b]"))
        };
        Ok(match key {
            "source.ip" => Key::PeerIp,
            "remote.ip" => Key::RemoteIp,
            "destination.ip" => Key::DestinationIp,
            "destination.port" => Key::Port,
            "source.namespace" => Key::Namespace,
            "source.serviceAccount" => Key::ServiceAccount,
            "source.principal" => Key::Principal,
            "source.trustDomain" => Key::TrustDomain,
            "request.auth.principal" => Key::RequestPrincipal,
            "request.auth.audiences" => Key::Claim(["aud".to_string()].into()),
            "request.auth.presenter" => Key::Claim(["azp".to_string()].into()),
            "connection.sni" => Key::Sni,
            _ if key.starts_with("request.headers") => {
                let name = key
                    .strip_prefix("request.headers[")
                    .and_then(|r| r.strip_suffix(']'))
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| format!("bad key ({key}): should have format a[b]"))?;
                let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("bad key ({key}): {name:?} is not a header name"))?;
                Key::Header(name)
            }
            _ if key.starts_with("request.auth.claims") => {
                Key::Claim(bracketed("request.auth.claims")?.into())
            }
            _ if key.starts_with("experimental.envoy.filters.") => Key::Absent,
            _ => return Err(format!("unknown attribute {key}")),
        })
    }

    /// Compiles one field (`values` must match, `not_values` must not) into `checks`;
    /// `paths` are the field paths of the two lists, for problems.
    #[allow(clippy::too_many_arguments)]
    fn field(
        &self,
        checks: &mut Vec<Check>,
        key: Key,
        values: &[String],
        not_values: &[String],
        paths: [&str; 2],
        state: &mut State,
        problems: &mut Vec<Problem>,
    ) {
        if values.is_empty() && not_values.is_empty() {
            return;
        }
        if self.tcp && key.is_http_only() {
            // Istio: "is HTTP only" is an error for ALLOW (the rule is skipped on the TCP
            // filter chain) and ignored for the other actions (the field is left out).
            if self.action == Action::Allow {
                state.http_only_drop = true;
            }
            return;
        }
        if matches!(key, Key::Absent) && !self.tcp {
            let [p, _] = paths;
            problems.push((
                p.trim_end_matches(".values").to_string(),
                "Envoy filter metadata is not available in tower-mesh: the attribute is \
                 treated as absent (`values` never match, `notValues` always do)"
                    .to_string(),
            ));
        }
        for ((list, negate), path) in [(values, false), (not_values, true)].into_iter().zip(paths) {
            if list.is_empty() {
                continue;
            }
            let mut errors = Vec::new();
            let matcher = self.build(&key, list, &mut errors);
            for (n, e) in &errors {
                let at = format!("{path}[{n}]");
                if self.action == Action::Allow {
                    state.drop.get_or_insert_with(|| format!("{at}: {e}"));
                } else if !self.tcp {
                    problems.push((at, format!("{e}: the value is ignored")));
                }
            }
            // Istio's checkError: ALLOW loses the rule (above); the other actions keep the
            // values that compile, and lose the field when none does.
            if errors.len() < list.len() {
                checks.push(Check { matcher, negate });
            }
        }
    }

    /// Builds the matcher from the values that compile, recording the others in `errors`.
    fn build(&self, key: &Key, list: &[String], errors: &mut Vec<(usize, String)>) -> Matcher {
        let strs = || list.iter().map(|v| StrPattern::parse(v)).collect();
        let mut nets = || {
            list.iter()
                .enumerate()
                .filter_map(|(n, v)| parse_ip_block(v).map_err(|e| errors.push((n, e))).ok())
                .collect::<Box<[IpNet]>>()
        };
        match key {
            Key::Principal => Matcher::Principal(
                list.iter()
                    .map(|v| StrPattern::parse(&migrate_trust_domain(v, self.trust_domain)))
                    .collect(),
            ),
            Key::Namespace => {
                Matcher::Namespace(list.iter().map(|v| NamespaceGlob::parse(v)).collect())
            }
            Key::ServiceAccount => Matcher::ServiceAccount(
                list.iter()
                    .map(|v| ServiceAccount::parse(v, self.namespace))
                    .collect(),
            ),
            Key::TrustDomain => Matcher::TrustDomain(strs()),
            Key::RequestPrincipal => {
                Matcher::RequestPrincipal(list.iter().map(|v| request_principal(v)).collect())
            }
            Key::PeerIp => Matcher::PeerIp(nets()),
            Key::RemoteIp => Matcher::RemoteIp(nets()),
            Key::DestinationIp => Matcher::DestinationIp(nets()),
            Key::Port => Matcher::Port(
                list.iter()
                    .enumerate()
                    .filter_map(|(n, v)| parse_port(v).map_err(|e| errors.push((n, e))).ok())
                    .collect(),
            ),
            Key::Method => {
                let mut mask = 0;
                let mut others = Vec::new();
                for v in list {
                    match method_bit(v) {
                        METHOD_OTHER => others.push(StrPattern::parse(v)),
                        bit => mask |= bit,
                    }
                }
                Matcher::Method {
                    mask,
                    others: others.into_boxed_slice(),
                }
            }
            Key::Host => Matcher::Host(strs()),
            Key::Path => Matcher::Path(list.iter().map(|v| PathPattern::parse(v)).collect()),
            Key::Header(name) => Matcher::Header(name.clone(), strs()),
            Key::Claim(path) => Matcher::Claim(path.clone(), strs()),
            Key::Sni => Matcher::Sni(strs()),
            Key::Absent => Matcher::Absent,
        }
    }
}

/// The paths of a field and its `not*` twin: `Principals` → `<path>.principals`,
/// `<path>.notPrincipals`.
fn field_paths(path: &str, capitalised: &str) -> [String; 2] {
    let mut lower = capitalised.to_string();
    if let Some(first) = lower.get_mut(..1) {
        first.make_ascii_lowercase();
    }
    [
        format!("{path}.{lower}"),
        format!("{path}.not{capitalised}"),
    ]
}

/// What compiling one rule found.
struct State {
    /// An ALLOW rule with a value that does not compile: why it is dropped.
    drop: Option<String>,
    /// An ALLOW rule with HTTP-only fields, compiled for TCP.
    http_only_drop: bool,
}

/// Orders checks cheapest first.
fn finish(mut checks: Vec<Check>) -> Box<[Check]> {
    checks.sort_by_key(|c| c.matcher.cost());
    checks.into_boxed_slice()
}

/// The methods prefilter: when every `to` entry requires well-known methods, their bits.
fn method_mask(to: &[Box<[Check]>]) -> u16 {
    if to.is_empty() {
        return METHOD_ANY;
    }
    let mut mask = 0;
    for op in to {
        let methods = op
            .iter()
            .filter(|c| !c.negate)
            .find_map(|c| match &c.matcher {
                Matcher::Method { mask, others } if others.is_empty() => Some(*mask),
                _ => None,
            });
        match methods {
            Some(bits) => mask |= bits,
            None => return METHOD_ANY,
        }
    }
    mask
}

/// The ports prefilter: when every `to` entry requires ports, all of them.
fn port_filter(to: &[Box<[Check]>]) -> Option<Box<[u16]>> {
    if to.is_empty() {
        return None;
    }
    let mut ports = Vec::new();
    for op in to {
        let listed = op
            .iter()
            .filter(|c| !c.negate)
            .find_map(|c| match &c.matcher {
                Matcher::Port(p) => Some(p),
                _ => None,
            })?;
        ports.extend_from_slice(listed);
    }
    ports.sort_unstable();
    ports.dedup();
    Some(ports.into_boxed_slice())
}

/// Whether the rule can only match when the attribute `reads` is present: a positive check
/// reading it in every `from` entry, or in `when`.
fn needs(from: &[Box<[Check]>], when: &[Check], reads: fn(&Matcher) -> bool) -> bool {
    let required = |checks: &[Check]| checks.iter().any(|c| !c.negate && reads(&c.matcher));
    required(when) || (!from.is_empty() && from.iter().all(|src| required(src)))
}

/// Istio's trust-domain handling of `principals` / `source.principal`
/// (`trustdomain.Bundle.ReplaceTrustDomainAliases`, with no aliases): in a principal of the
/// form `<td>/ns/<ns>/sa/<sa>`, the trust domain `cluster.local` stands for the mesh's own
/// trust domain. Anything else is kept as written.
fn migrate_trust_domain(principal: &str, trust_domain: &str) -> String {
    let parts = principal.split('/').count();
    match principal.split_once('/') {
        Some((CLUSTER_LOCAL, rest)) if parts == 5 && trust_domain != CLUSTER_LOCAL => {
            format!("{trust_domain}/{rest}")
        }
        _ => principal.to_string(),
    }
}

/// A `requestPrincipals` value as Istio's `requestPrincipalGenerator` splits it: the issuer
/// is everything before the last `/`, the subject what follows; `*` means "any non-empty",
/// a leading `*` makes the issuer a suffix match (or, without `/`, the subject), a trailing
/// `*` makes the subject a prefix match (or, without `/`, the issuer).
fn request_principal(value: &str) -> (StrPattern, StrPattern) {
    let split = value.rsplit_once('/');
    let (iss, sub) = split.unwrap_or((value, ""));
    let exact = |s: &str| StrPattern::Exact(s.into());
    if value == "*" {
        return (StrPattern::Present, StrPattern::Present);
    }
    if let Some(rest) = value.strip_prefix('*') {
        return match split {
            Some(_) if iss == "*" => (StrPattern::Present, exact(sub)),
            Some(_) => (
                StrPattern::Suffix(iss.strip_prefix('*').unwrap_or(iss).into()),
                exact(sub),
            ),
            None => (StrPattern::Present, StrPattern::Suffix(rest.into())),
        };
    }
    if let Some(rest) = value.strip_suffix('*') {
        return match split {
            Some(_) if sub == "*" => (exact(iss), StrPattern::Present),
            Some(_) => (
                exact(iss),
                StrPattern::Prefix(sub.strip_suffix('*').unwrap_or(sub).into()),
            ),
            None => (StrPattern::Prefix(rest.into()), StrPattern::Present),
        };
    }
    (exact(iss), exact(sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_principals_split_like_istio() {
        let p = |v| request_principal(v);
        assert_eq!(p("*"), (StrPattern::Present, StrPattern::Present));
        assert_eq!(
            p("https://issuer.example/alice"),
            (
                StrPattern::Exact("https://issuer.example".into()),
                StrPattern::Exact("alice".into())
            )
        );
        assert_eq!(
            p("https://issuer.example/*"),
            (
                StrPattern::Exact("https://issuer.example".into()),
                StrPattern::Present
            )
        );
        assert_eq!(
            p("*/alice"),
            (StrPattern::Present, StrPattern::Exact("alice".into()))
        );
        assert_eq!(
            p("*example/alice"),
            (
                StrPattern::Suffix("example".into()),
                StrPattern::Exact("alice".into())
            )
        );
        assert_eq!(
            p("iss/al*"),
            (
                StrPattern::Exact("iss".into()),
                StrPattern::Prefix("al".into())
            )
        );
        assert_eq!(
            p("*ice"),
            (StrPattern::Present, StrPattern::Suffix("ice".into()))
        );
        assert_eq!(
            p("iss*"),
            (StrPattern::Prefix("iss".into()), StrPattern::Present)
        );
    }

    #[test]
    fn cluster_local_principals_mean_the_mesh_trust_domain() {
        assert_eq!(
            migrate_trust_domain("cluster.local/ns/a/sa/b", "example.org"),
            "example.org/ns/a/sa/b"
        );
        assert_eq!(
            migrate_trust_domain("other.td/ns/a/sa/b", "example.org"),
            "other.td/ns/a/sa/b"
        );
        assert_eq!(
            migrate_trust_domain("cluster.local/ns/a/sa/b", "cluster.local"),
            "cluster.local/ns/a/sa/b"
        );
        // Not Istio's form, or a wildcard: kept.
        assert_eq!(
            migrate_trust_domain("cluster.local/ns/a*", "example.org"),
            "cluster.local/ns/a*"
        );
        assert_eq!(migrate_trust_domain("*", "example.org"), "*");
    }

    #[test]
    fn method_bits_are_distinct() {
        let bits: Vec<u16> = METHODS.iter().map(|m| method_bit(m)).collect();
        for (i, b) in bits.iter().enumerate() {
            assert_eq!(b.count_ones(), 1);
            assert_eq!(METHOD_ANY & b, *b);
            assert!(bits.iter().skip(i + 1).all(|o| o != b));
        }
        assert_eq!(method_bit("PURGE"), METHOD_OTHER);
        assert_eq!(method_bit("get"), METHOD_OTHER);
    }
}
