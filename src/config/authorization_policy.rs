//! `security.istio.io` AuthorizationPolicy: access control on workloads.
//!
//! Semantics kept faithful for enforcement (see `ISTIO.md` §9):
//! * `rules` absent ([`AuthorizationPolicy::rules`] is `None`) and `rules: []` both match
//!   nothing: an ALLOW policy without matching rules denies everything on its workloads
//!   ("allow-nothing"). `rules: [{}]` holds one empty rule, which matches every request.
//!   DENY and CUSTOM policies without `rules` are rejected by validation.
//! * A rule matches when any `from` matches, any `to` matches and every `when` matches; a
//!   missing `from`/`to`/`when` is no constraint. `from: []` / `to: []` are rejected.
//! * Within a [`Source`] or [`Operation`], the lists are ANDed, the values of one list ORed; a
//!   `not*` list must not match.
//! * String values match exactly, by prefix (`abc*`), by suffix (`*abc`), or `*` = any
//!   non-empty value.

use crate::config::common::{MatchLabelsSelector, PolicyTargetReference};
use crate::config::decode::{Cx, Decode, Fields};
use crate::path::FieldPath;
use crate::yaml::{Node, Value};

/// The `spec` of an AuthorizationPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AuthorizationPolicy {
    /// `selector`: the workloads it applies to; absent (with no `targetRef(s)`) = every
    /// workload of the namespace (of the mesh, in the root namespace).
    pub selector: Option<MatchLabelsSelector>,
    /// `targetRef`: a single resource the policy attaches to (exclusive with `selector` and
    /// `targetRefs`).
    pub target_ref: Option<PolicyTargetReference>,
    /// `targetRefs`: the resources (Gateway, GatewayClass, Service, ServiceEntry) the policy
    /// attaches to; at most 16.
    pub target_refs: Vec<PolicyTargetReference>,
    /// `action`; absent = `ALLOW`.
    pub action: Action,
    /// `provider`: the ext-authz provider of a CUSTOM policy (only with `action: CUSTOM`).
    pub provider: Option<ExtensionProvider>,
    /// `rules`: the policy matches a request when any rule matches. `None` (absent or `null`)
    /// and `Some([])` match nothing; `Some([Rule::default()])` matches everything.
    pub rules: Option<Vec<Rule>>,
}

impl AuthorizationPolicy {
    /// Whether the policy can never match a request: no rule at all (`rules` absent or
    /// empty). For an ALLOW policy this means "allow nothing" on its workloads.
    pub fn matches_nothing(&self) -> bool {
        self.rules.as_ref().is_none_or(Vec::is_empty)
    }
}

crate::istio_enum! {
    /// `action` of an AuthorizationPolicy.
    #[derive(Default)]
    pub enum Action {
        /// Allow a request that matches a rule (the default).
        #[default]
        Allow => "ALLOW",
        /// Deny a request that matches a rule (403).
        Deny => "DENY",
        /// Only mark a matching request for audit logging; never changes the decision.
        Audit => "AUDIT",
        /// Delegate the decision for a matching request to `provider`.
        Custom => "CUSTOM",
    }
}

/// `provider` (Istio's `AuthorizationPolicy.ExtensionProvider`) of a CUSTOM policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ExtensionProvider {
    /// `name`: an extension provider of MeshConfig (`""` when unset, which is invalid).
    pub name: String,
}

/// An entry of `rules`: matches when any `from`, any `to` and every `when` matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Rule {
    /// `from`: request sources; `None` = any source. `Some([])` is rejected by validation.
    pub from: Option<Vec<RuleFrom>>,
    /// `to`: request operations; `None` = any operation. `Some([])` is rejected by validation.
    pub to: Option<Vec<RuleTo>>,
    /// `when`: extra conditions, all of which must match; empty = none.
    pub when: Vec<Condition>,
}

/// An entry of `rules[].from` (Istio's `Rule.From`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RuleFrom {
    /// `source`; required (validation rejects an entry without it).
    pub source: Option<Source>,
}

/// An entry of `rules[].to` (Istio's `Rule.To`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RuleTo {
    /// `operation`; required (validation rejects an entry without it).
    pub operation: Option<Operation>,
}

/// `source` of a `from` entry: who sends the request. Every list set must match (AND); a
/// list matches when any of its values does (OR); a `not*` list must match none.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Source {
    /// `principals`: peer identities (SPIFFE id without `spiffe://`, e.g.
    /// `cluster.local/ns/default/sa/sleep`); needs mTLS.
    pub principals: Vec<String>,
    /// `notPrincipals`.
    pub not_principals: Vec<String>,
    /// `requestPrincipals`: JWT identities `<iss>/<sub>` (HTTP only).
    pub request_principals: Vec<String>,
    /// `notRequestPrincipals`.
    pub not_request_principals: Vec<String>,
    /// `namespaces`: the peer's namespace, from its certificate.
    pub namespaces: Vec<String>,
    /// `notNamespaces`.
    pub not_namespaces: Vec<String>,
    /// `serviceAccounts`: `ns/sa`, or `sa` in the policy's namespace; no wildcards; at most
    /// 16; exclusive with `principals`/`namespaces`.
    pub service_accounts: Vec<String>,
    /// `notServiceAccounts`.
    pub not_service_accounts: Vec<String>,
    /// `ipBlocks`: IPs or CIDR blocks of the direct peer.
    pub ip_blocks: Vec<String>,
    /// `notIpBlocks`.
    pub not_ip_blocks: Vec<String>,
    /// `remoteIpBlocks`: IPs or CIDR blocks of the original client (X-Forwarded-For / proxy
    /// protocol).
    pub remote_ip_blocks: Vec<String>,
    /// `notRemoteIpBlocks`.
    pub not_remote_ip_blocks: Vec<String>,
    /// `trustDomains`: the peer's trust domain.
    pub trust_domains: Vec<String>,
    /// `notTrustDomains`.
    pub not_trust_domains: Vec<String>,
}

impl Source {
    /// Every list with its camelCase field name, in schema order.
    pub fn lists(&self) -> [(&'static str, &[String]); 14] {
        [
            ("principals", &self.principals),
            ("notPrincipals", &self.not_principals),
            ("requestPrincipals", &self.request_principals),
            ("notRequestPrincipals", &self.not_request_principals),
            ("namespaces", &self.namespaces),
            ("notNamespaces", &self.not_namespaces),
            ("serviceAccounts", &self.service_accounts),
            ("notServiceAccounts", &self.not_service_accounts),
            ("ipBlocks", &self.ip_blocks),
            ("notIpBlocks", &self.not_ip_blocks),
            ("remoteIpBlocks", &self.remote_ip_blocks),
            ("notRemoteIpBlocks", &self.not_remote_ip_blocks),
            ("trustDomains", &self.trust_domains),
            ("notTrustDomains", &self.not_trust_domains),
        ]
    }

    /// Whether no field is set (such a source is rejected by validation).
    pub fn is_empty(&self) -> bool {
        self.lists().iter().all(|(_, l)| l.is_empty())
    }
}

/// `operation` of a `to` entry: what the request does. Lists combine as in [`Source`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Operation {
    /// `hosts`: the `Host`/`:authority` (case-insensitive; HTTP only).
    pub hosts: Vec<String>,
    /// `notHosts`.
    pub not_hosts: Vec<String>,
    /// `ports`: destination ports, as decimal strings.
    pub ports: Vec<String>,
    /// `notPorts`.
    pub not_ports: Vec<String>,
    /// `methods`: HTTP methods (case-sensitive; gRPC is always `POST`; HTTP only).
    pub methods: Vec<String>,
    /// `notMethods`.
    pub not_methods: Vec<String>,
    /// `paths`: normalized request paths; path templates `{*}` / `{**}` allowed (HTTP only).
    pub paths: Vec<String>,
    /// `notPaths`.
    pub not_paths: Vec<String>,
}

impl Operation {
    /// Every list with its camelCase field name, in schema order.
    pub fn lists(&self) -> [(&'static str, &[String]); 8] {
        [
            ("hosts", &self.hosts),
            ("notHosts", &self.not_hosts),
            ("ports", &self.ports),
            ("notPorts", &self.not_ports),
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
            ("paths", &self.paths),
            ("notPaths", &self.not_paths),
        ]
    }

    /// Whether no field is set (such an operation is rejected by validation).
    pub fn is_empty(&self) -> bool {
        self.lists().iter().all(|(_, l)| l.is_empty())
    }
}

/// An entry of `rules[].when`: an Istio attribute and the values it must (not) have.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Condition {
    /// `key`: the attribute (`request.headers[x-token]`, `source.ip`, ...); required.
    pub key: String,
    /// `values`: the attribute must match one of these (when set).
    pub values: Vec<String>,
    /// `notValues`: the attribute must match none of these.
    pub not_values: Vec<String>,
}

/// Records `what` as an error when `node` is `null`: a list item that must be an object.
fn reject_null(node: &Node, path: &FieldPath<'_>, cx: &mut Cx, what: &str) -> bool {
    if node.value == Value::Null {
        cx.error(
            path,
            node,
            format!("{what}: expected an object, found null"),
        );
        true
    } else {
        false
    }
}

impl Decode for AuthorizationPolicy {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let spec = AuthorizationPolicy {
            selector: f.get("selector", cx),
            target_ref: f.get("targetRef", cx),
            target_refs: f.list("targetRefs", cx),
            action: f.get("action", cx).unwrap_or_default(),
            provider: f.get("provider", cx),
            rules: f.get("rules", cx),
        };
        f.finish(cx);
        Some(spec)
    }
}

impl Decode for ExtensionProvider {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let p = ExtensionProvider {
            name: f.get("name", cx).unwrap_or_default(),
        };
        f.finish(cx);
        Some(p)
    }
}

impl Decode for Rule {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        if reject_null(node, path, cx, "`rule` must not be nil") {
            return None;
        }
        let mut f = Fields::new(node, path, cx)?;
        let r = Rule {
            from: f.get("from", cx),
            to: f.get("to", cx),
            when: f.list("when", cx),
        };
        f.finish(cx);
        Some(r)
    }
}

impl Decode for RuleFrom {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        if reject_null(node, path, cx, "`from` must not be nil") {
            return None;
        }
        let mut f = Fields::new(node, path, cx)?;
        let r = RuleFrom {
            source: f.get("source", cx),
        };
        f.finish(cx);
        Some(r)
    }
}

impl Decode for RuleTo {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        if reject_null(node, path, cx, "`to` must not be nil") {
            return None;
        }
        let mut f = Fields::new(node, path, cx)?;
        let r = RuleTo {
            operation: f.get("operation", cx),
        };
        f.finish(cx);
        Some(r)
    }
}

impl Decode for Source {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let s = Source {
            principals: f.list("principals", cx),
            not_principals: f.list("notPrincipals", cx),
            request_principals: f.list("requestPrincipals", cx),
            not_request_principals: f.list("notRequestPrincipals", cx),
            namespaces: f.list("namespaces", cx),
            not_namespaces: f.list("notNamespaces", cx),
            service_accounts: f.list("serviceAccounts", cx),
            not_service_accounts: f.list("notServiceAccounts", cx),
            ip_blocks: f.list("ipBlocks", cx),
            not_ip_blocks: f.list("notIpBlocks", cx),
            remote_ip_blocks: f.list("remoteIpBlocks", cx),
            not_remote_ip_blocks: f.list("notRemoteIpBlocks", cx),
            trust_domains: f.list("trustDomains", cx),
            not_trust_domains: f.list("notTrustDomains", cx),
        };
        f.finish(cx);
        Some(s)
    }
}

impl Decode for Operation {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let o = Operation {
            hosts: f.list("hosts", cx),
            not_hosts: f.list("notHosts", cx),
            ports: f.list("ports", cx),
            not_ports: f.list("notPorts", cx),
            methods: f.list("methods", cx),
            not_methods: f.list("notMethods", cx),
            paths: f.list("paths", cx),
            not_paths: f.list("notPaths", cx),
        };
        f.finish(cx);
        Some(o)
    }
}

impl Decode for Condition {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        if reject_null(node, path, cx, "`when` must not be nil") {
            return None;
        }
        let mut f = Fields::new(node, path, cx)?;
        let c = Condition {
            key: f.get("key", cx).unwrap_or_default(),
            values: f.list("values", cx),
            not_values: f.list("notValues", cx),
        };
        f.finish(cx);
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Loader, Spec};

    fn load(spec: &str) -> (AuthorizationPolicy, Vec<String>) {
        let yaml = format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: a, namespace: foo}}\nspec:\n{spec}"
        );
        let set = Loader::new().load_str(&yaml);
        let problems = set.problems.iter().map(|p| p.to_string()).collect();
        let Some(Spec::AuthorizationPolicy(ap)) = set.resources.first().map(|r| r.spec.clone())
        else {
            panic!("no AuthorizationPolicy loaded: {problems:?}");
        };
        (ap, problems)
    }

    #[test]
    fn full_policy_loads_every_field() {
        let (ap, problems) = load(
            r#"  selector: {matchLabels: {app: httpbin}}
  action: DENY
  rules:
  - from:
    - source:
        principals: [a]
        notPrincipals: [b]
        requestPrincipals: [c]
        notRequestPrincipals: [d]
        namespaces: [e]
        notNamespaces: [f]
        ipBlocks: [1.2.3.4]
        notIpBlocks: [5.6.0.0/16]
        remoteIpBlocks: [7.7.7.7]
        notRemoteIpBlocks: [8.8.0.0/16]
        trustDomains: [td]
        notTrustDomains: [ntd]
    - source:
        serviceAccounts: [ns/sa]
        notServiceAccounts: [other]
    to:
    - operation:
        hosts: [h]
        notHosts: [nh]
        ports: ["80"]
        notPorts: ["81"]
        methods: [GET]
        notMethods: [POST]
        paths: [/p]
        notPaths: [/np]
    when:
    - key: request.headers[x]
      values: [v]
      notValues: [nv]
"#,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(ap.action, Action::Deny);
        assert_eq!(ap.selector.map(|s| s.match_labels.len()), Some(1));
        let rules = ap.rules.expect("rules");
        let from = rules[0].from.as_ref().expect("from");
        let src = from[0].source.as_ref().expect("source");
        assert_eq!(src.principals, ["a"]);
        assert_eq!(src.not_principals, ["b"]);
        assert_eq!(src.request_principals, ["c"]);
        assert_eq!(src.not_request_principals, ["d"]);
        assert_eq!(src.namespaces, ["e"]);
        assert_eq!(src.not_namespaces, ["f"]);
        assert_eq!(src.ip_blocks, ["1.2.3.4"]);
        assert_eq!(src.not_ip_blocks, ["5.6.0.0/16"]);
        assert_eq!(src.remote_ip_blocks, ["7.7.7.7"]);
        assert_eq!(src.not_remote_ip_blocks, ["8.8.0.0/16"]);
        assert_eq!(src.trust_domains, ["td"]);
        assert_eq!(src.not_trust_domains, ["ntd"]);
        let src2 = from[1].source.as_ref().expect("source");
        assert_eq!(src2.service_accounts, ["ns/sa"]);
        assert_eq!(src2.not_service_accounts, ["other"]);
        let op = rules[0].to.as_ref().expect("to")[0]
            .operation
            .clone()
            .expect("operation");
        assert_eq!(op.hosts, ["h"]);
        assert_eq!(op.not_hosts, ["nh"]);
        assert_eq!(op.ports, ["80"]);
        assert_eq!(op.not_ports, ["81"]);
        assert_eq!(op.methods, ["GET"]);
        assert_eq!(op.not_methods, ["POST"]);
        assert_eq!(op.paths, ["/p"]);
        assert_eq!(op.not_paths, ["/np"]);
        assert_eq!(
            rules[0].when,
            [Condition {
                key: "request.headers[x]".into(),
                values: vec!["v".into()],
                not_values: vec!["nv".into()],
            }]
        );
    }

    #[test]
    fn custom_provider_and_target_refs_load() {
        let (ap, problems) = load(
            "  action: CUSTOM\n  provider: {name: ext}\n  targetRefs:\n  - {kind: Gateway, group: gateway.networking.k8s.io, name: gw}\n  targetRef: {kind: Service, name: s}\n  rules: [{}]\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(ap.action, Action::Custom);
        assert_eq!(ap.provider.map(|p| p.name).as_deref(), Some("ext"));
        assert_eq!(ap.target_refs[0].kind, "Gateway");
        assert_eq!(ap.target_ref.map(|r| r.name).as_deref(), Some("s"));
    }

    #[test]
    fn absent_empty_and_empty_rule_are_distinct() {
        let (none, _) = load("  action: ALLOW\n");
        assert_eq!(none.action, Action::Allow);
        assert_eq!(none.rules, None);
        assert!(none.matches_nothing());
        let (null, _) = load("  rules: ~\n");
        assert_eq!(null.rules, None);
        let (empty, _) = load("  rules: []\n");
        assert_eq!(empty.rules, Some(vec![]));
        assert!(empty.matches_nothing());
        let (all, _) = load("  rules: [{}]\n");
        assert_eq!(all.rules, Some(vec![Rule::default()]));
        assert!(!all.matches_nothing());
        // Absent `from`/`to` differ from empty lists.
        let (r, _) = load("  rules: [{from: [], to: []}]\n");
        let rules = r.rules.expect("rules");
        assert_eq!(rules[0].from, Some(vec![]));
        assert_eq!(rules[0].to, Some(vec![]));
        // The default action is ALLOW.
        assert_eq!(AuthorizationPolicy::default().action, Action::Allow);
    }

    #[test]
    fn snake_case_aliases_and_unknown_fields() {
        let (ap, problems) = load(
            "  rules:\n  - from:\n    - source: {not_principals: [x], remote_ip_blocks: [1.1.1.1]}\n    when:\n    - {key: source.ip, not_values: [1.2.3.4]}\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let rules = ap.rules.expect("rules");
        let src = rules[0].from.as_ref().expect("from")[0]
            .source
            .clone()
            .expect("source");
        assert_eq!(src.not_principals, ["x"]);
        assert_eq!(src.remote_ip_blocks, ["1.1.1.1"]);
        assert_eq!(rules[0].when[0].not_values, ["1.2.3.4"]);
        let (_, problems) = load("  rules:\n  - to:\n    - operation: {verbs: [GET]}\n");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("spec.rules[0].to[0].operation.verbs")
                    && p.contains("unknown field")),
            "{problems:?}"
        );
    }

    #[test]
    fn null_list_items_are_errors_not_empty_objects() {
        let (ap, problems) = load("  rules: [~]\n");
        assert_eq!(ap.rules, Some(vec![]));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("spec.rules[0]") && p.contains("must not be nil")),
            "{problems:?}"
        );
    }
}
