//! AuthorizationPolicy enforcement: which requests a workload accepts.
//!
//! [`AuthzPolicies::compile`] picks the policies that apply to one workload and compiles each
//! rule once into matchers; [`AuthzPolicies::evaluate`] then decides a request
//! ([`AuthzRequest`], a borrowed view) without allocating, in Istio's order:
//!
//! 1. **CUSTOM**: for each ext-authz provider with a matching CUSTOM rule, the
//!    [`Decision`] lists a [`CustomCheck`]; the caller asks the provider
//!    ([`ExtAuthzProviders::check`]) and denies if it denies.
//! 2. **DENY**: a matching DENY rule denies (403 `RBAC: access denied`).
//! 3. No ALLOW policy applies to the workload: allow.
//! 4. A matching ALLOW rule allows.
//! 5. Otherwise deny: ALLOW policies exist and none matched.
//!
//! **AUDIT** policies only mark the request ([`Decision::audit`]). Policies annotated
//! `istio.io/dry-run: "true"` are evaluated and reported ([`Decision::dry_run_deny`],
//! [`Decision::dry_run_allow`], and a log line) but never enforced.
//!
//! Empty policies follow Istio's documentation: an ALLOW policy without `rules` (or with
//! `rules: []`) matches nothing, so on its workloads everything is denied ("allow-nothing");
//! `rules: [{}]` holds one empty rule that matches everything ("allow-all"); a DENY with
//! `rules: [{}]` denies everything.
//!
//! **Which policies apply** (Istio's `selector` semantics): a policy in the workload's
//! namespace without `selector` applies to every workload of the namespace, with `selector`
//! to the workloads whose labels include `selector.matchLabels`; a policy in the root
//! namespace (`istio-system`) applies mesh-wide, and its `selector` picks workloads in *every*
//! namespace (istio.io: "If the authorization policy is in the root namespace, the selector
//! will additionally match with workloads in all namespaces"). Policies with `targetRef` or
//! `targetRefs` attach to Gateways, Services or ServiceEntries (ambient waypoints, gateways),
//! never to a sidecar workload: they are skipped, with a warning.
//!
//! **Logs**: every decision is a `tracing` event with target `tower_mesh::authz` naming the
//! policy (`namespace/name`) and the rule index that decided: `debug!` for an allow,
//! `info!` for a deny (Istio users' most common complaint is that nothing says which policy
//! denied them).
//!
//! ```
//! use tower_mesh::authz::{AuthzPolicies, AuthzRequest, Verdict};
//! use tower_mesh::config::Loader;
//! use tower_mesh::route::matcher::SourceIdentity;
//!
//! let set = Loader::new().load_str(r#"
//! apiVersion: security.istio.io/v1
//! kind: AuthorizationPolicy
//! metadata: {name: reader, namespace: shop}
//! spec:
//!   rules:
//!   - from: [{source: {principals: ["cluster.local/ns/web/sa/frontend"]}}]
//!     to: [{operation: {methods: [GET], paths: ["/items/{*}"]}}]
//! "#);
//! let workload = SourceIdentity { namespace: "shop".into(), labels: Default::default() };
//! let (policies, warnings) =
//!     AuthzPolicies::compile(&set, &workload, "istio-system", "cluster.local");
//! assert!(warnings.is_empty());
//!
//! let headers = http::HeaderMap::new();
//! let get = AuthzRequest::http("GET", "shop", "/items/42", &headers, 8080)
//!     .with_peer("spiffe://cluster.local/ns/web/sa/frontend");
//! assert!(policies.evaluate(&get).is_allowed());
//!
//! let delete = AuthzRequest { method: "DELETE", ..get };
//! let decision = policies.evaluate(&delete);
//! assert_eq!(decision.verdict, Verdict::DeniedNoMatch);
//! assert_eq!(decision.error().map(|e| e.to_string()).as_deref(), Some("RBAC: access denied"));
//! ```

mod ext;
mod index;
mod pattern;
mod request;
mod rule;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use crate::config::authorization_policy::{Action, AuthorizationPolicy};
use crate::config::{ConfigSet, Kind, Resource, Spec};
use crate::error::Error;
use crate::route::matcher::SourceIdentity;
use crate::validate::{ResourceRef, Severity, ValidationError};

pub use ext::{CheckRequest, CheckResponse, ExtAuthz, ExtAuthzProviders};
pub use request::AuthzRequest;

use index::RuleIndex;
use rule::{Compiled, CompiledRule, Cx, RuleCompiler};

/// The annotation that puts an ALLOW or DENY policy in dry-run mode (`istio.io/dry-run`,
/// a Go `strconv.ParseBool` value: `true`, `1`, `t`, `TRUE`, ...).
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";

/// The rule that matched: its policy (`namespace/name`) and its index in the policy's
/// `rules`. Displays as `namespace/name rules[2]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MatchedRule {
    /// The policy, as `namespace/name`.
    pub policy: Arc<str>,
    /// The index of the rule in `spec.rules`.
    pub rule: usize,
}

impl fmt::Display for MatchedRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rules[{}]", self.policy, self.rule)
    }
}

/// The outcome of the DENY and ALLOW steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No DENY rule matched and no ALLOW policy applies to the workload.
    AllowedNoPolicy,
    /// This ALLOW rule matched (and no DENY rule did).
    Allowed(MatchedRule),
    /// This DENY rule matched.
    Denied(MatchedRule),
    /// ALLOW policies apply to the workload and none of their rules matched.
    DeniedNoMatch,
}

/// A CUSTOM policy matched: the caller must ask `provider` before letting the request on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomCheck {
    /// The ext-authz provider (`provider.name`).
    pub provider: Arc<str>,
    /// The first matching CUSTOM rule of that provider.
    pub matched: MatchedRule,
}

/// The result of the dry-run policies of one action, as Envoy's shadow rules report it
/// (`shadow_engine_result`, `shadow_effective_policy_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRun {
    /// Whether the dry-run policies, were they enforced, would let the request through.
    pub allowed: bool,
    /// The dry-run rule that matched, if any.
    pub matched: Option<MatchedRule>,
}

/// What [`AuthzPolicies::evaluate`] decided, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allow or deny, after DENY and ALLOW (assuming every [`custom`](Self::custom) check
    /// allows).
    pub verdict: Verdict,
    /// The ext-authz checks to run first, one per provider, in policy order; empty when no
    /// CUSTOM rule matched. A provider that denies (or is not registered) denies the request.
    pub custom: Vec<CustomCheck>,
    /// The first matching AUDIT rule: the request should be audited.
    pub audit: Option<MatchedRule>,
    /// The dry-run DENY policies' result; `None` when there are none.
    pub dry_run_deny: Option<DryRun>,
    /// The dry-run ALLOW policies' result; `None` when there are none.
    pub dry_run_allow: Option<DryRun>,
}

impl Decision {
    /// Whether the request may go on (CUSTOM checks aside).
    pub fn is_allowed(&self) -> bool {
        matches!(self.verdict, Verdict::AllowedNoPolicy | Verdict::Allowed(_))
    }

    /// The rule that decided, if one did.
    pub fn matched(&self) -> Option<&MatchedRule> {
        match &self.verdict {
            Verdict::Allowed(m) | Verdict::Denied(m) => Some(m),
            Verdict::AllowedNoPolicy | Verdict::DeniedNoMatch => None,
        }
    }

    /// The error a denied request answers with: [`Error::Denied`] (403 `RBAC: access
    /// denied`) naming the DENY policy; `None` when allowed.
    pub fn error(&self) -> Option<Error> {
        match &self.verdict {
            Verdict::Denied(m) => Some(Error::Denied {
                policy: Some(m.policy.clone()),
            }),
            Verdict::DeniedNoMatch => Some(Error::Denied { policy: None }),
            Verdict::AllowedNoPolicy | Verdict::Allowed(_) => None,
        }
    }
}

/// One policy that applies to the workload.
#[derive(Debug, Clone)]
struct PolicyInfo {
    /// `namespace/name`.
    name: Arc<str>,
    /// `action`.
    action: Action,
    /// `provider.name` of a CUSTOM policy.
    provider: Option<Arc<str>>,
    /// Annotated `istio.io/dry-run: "true"`.
    dry_run: bool,
}

/// The compiled rules, by action, for HTTP requests or for TCP connections.
#[derive(Debug, Clone, Default)]
struct RuleSet {
    /// Enforced CUSTOM rules.
    custom: RuleIndex,
    /// Enforced DENY rules.
    deny: RuleIndex,
    /// Enforced ALLOW rules.
    allow: RuleIndex,
    /// AUDIT rules.
    audit: RuleIndex,
    /// Dry-run DENY rules.
    dry_deny: RuleIndex,
    /// Dry-run ALLOW rules.
    dry_allow: RuleIndex,
}

impl RuleSet {
    /// The bucket of a policy's rules.
    fn bucket(&mut self, action: Action, dry_run: bool) -> &mut RuleIndex {
        match (action, dry_run) {
            (Action::Custom, _) => &mut self.custom,
            (Action::Audit, _) => &mut self.audit,
            (Action::Deny, false) => &mut self.deny,
            (Action::Deny, true) => &mut self.dry_deny,
            (Action::Allow, false) => &mut self.allow,
            (Action::Allow, true) => &mut self.dry_allow,
        }
    }
}

impl RuleSet {
    /// Indexes every bucket (CUSTOM rules are all tried: one per provider is wanted).
    fn build(&mut self) {
        for index in [
            &mut self.deny,
            &mut self.allow,
            &mut self.audit,
            &mut self.dry_deny,
            &mut self.dry_allow,
        ] {
            index.build();
        }
    }
}

/// The AuthorizationPolicies of one workload, compiled. Cheap to evaluate, immutable; share
/// it behind an `Arc` and recompile on a config change. The default value has no policy
/// (everything is allowed).
#[derive(Debug, Clone, Default)]
pub struct AuthzPolicies {
    /// The applying policies: root namespace first, then the workload's, each in loader
    /// order.
    policies: Vec<PolicyInfo>,
    /// Rules for HTTP requests.
    http: RuleSet,
    /// Rules for TCP connections.
    tcp: RuleSet,
    /// How many enforced ALLOW policies apply (with rules or not).
    allow_policies: usize,
    /// How many dry-run DENY policies apply.
    dry_deny_policies: usize,
    /// How many dry-run ALLOW policies apply.
    dry_allow_policies: usize,
}

impl AuthzPolicies {
    /// Compiles the AuthorizationPolicies of `set` that apply to `workload` (see the module
    /// docs), with `root_namespace` the mesh's root namespace and `trust_domain` the mesh's
    /// trust domain (a principal written `cluster.local/ns/..` stands for it, as in Istio).
    ///
    /// The warnings say what could not be enforced as written: a rule skipped or a value
    /// ignored (for a config that failed validation), a `targetRefs` policy, a dry-run
    /// annotation that does not parse or sits on an AUDIT/CUSTOM policy, an
    /// `experimental.envoy.filters.*` condition.
    pub fn compile(
        set: &ConfigSet,
        workload: &SourceIdentity,
        root_namespace: &str,
        trust_domain: &str,
    ) -> (AuthzPolicies, Vec<ValidationError>) {
        let mut out = AuthzPolicies::default();
        let mut warnings = Vec::new();
        let namespaces: &[&str] = if root_namespace == workload.namespace {
            &[root_namespace]
        } else {
            &[root_namespace, &workload.namespace]
        };
        for ns in namespaces {
            for res in &set.resources {
                let Spec::AuthorizationPolicy(spec) = &res.spec else {
                    continue;
                };
                if res.metadata.namespace != *ns {
                    continue;
                }
                if !spec.target_refs.is_empty() || spec.target_ref.is_some() {
                    warnings.push(warning(
                        res,
                        "spec.targetRefs",
                        "a policy with targetRef(s) applies to Gateways and Services, not to \
                         a sidecar workload: not enforced here",
                    ));
                    continue;
                }
                let selected = spec.selector.as_ref().is_none_or(|sel| {
                    sel.match_labels
                        .iter()
                        .all(|(k, v)| workload.labels.get(k) == Some(v))
                });
                if selected {
                    out.add(res, spec, trust_domain, &mut warnings);
                }
            }
        }
        out.http.build();
        out.tcp.build();
        (out, warnings)
    }

    /// Compiles one applying policy.
    fn add(
        &mut self,
        res: &Resource,
        spec: &AuthorizationPolicy,
        trust_domain: &str,
        warnings: &mut Vec<ValidationError>,
    ) {
        let dry_run = match res.metadata.annotations.get(DRY_RUN_ANNOTATION) {
            None => false,
            Some(v) => match parse_bool(v) {
                Some(on) => on,
                None => {
                    warnings.push(warning(
                        res,
                        "metadata.annotations",
                        &format!(
                            "{DRY_RUN_ANNOTATION}: {v:?} is not a boolean: the policy is enforced"
                        ),
                    ));
                    false
                }
            },
        };
        if dry_run && matches!(spec.action, Action::Audit | Action::Custom) {
            // Istio puts them in shadow rules that nothing reads: they have no effect.
            warnings.push(warning(
                res,
                "metadata.annotations",
                &format!(
                    "{DRY_RUN_ANNOTATION} is only supported for ALLOW and DENY policies: this \
                     {} policy is not enforced at all",
                    spec.action
                ),
            ));
            return;
        }
        let policy = self.policies.len();
        self.policies.push(PolicyInfo {
            name: res.key().into(),
            action: spec.action,
            provider: (spec.action == Action::Custom).then(|| {
                spec.provider
                    .as_ref()
                    .map(|p| p.name.as_str())
                    .unwrap_or_default()
                    .into()
            }),
            dry_run,
        });
        match (spec.action, dry_run) {
            (Action::Allow, false) => self.allow_policies += 1,
            (Action::Allow, true) => self.dry_allow_policies += 1,
            (Action::Deny, true) => self.dry_deny_policies += 1,
            _ => {}
        }
        for tcp in [false, true] {
            let compiler = RuleCompiler {
                action: spec.action,
                tcp,
                namespace: &res.metadata.namespace,
                trust_domain,
            };
            let set = if tcp { &mut self.tcp } else { &mut self.http };
            let mut problems = Vec::new();
            for (index, rule) in spec.rules.iter().flatten().enumerate() {
                match compiler.compile(rule, policy, index, &mut problems) {
                    Compiled::Rule(r) => set.bucket(spec.action, dry_run).push(r),
                    Compiled::Dropped(Some(reason)) if !tcp => {
                        problems.push((format!("spec.rules[{index}]"), reason));
                    }
                    Compiled::Dropped(_) => {}
                }
            }
            if !tcp {
                for (path, message) in problems {
                    warnings.push(warning(res, &path, &message));
                }
            }
        }
    }

    /// How many policies apply to the workload.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether no policy applies (every request is allowed).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The applying policies, as `namespace/name`, in evaluation order.
    pub fn policy_names(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|p| &*p.name)
    }

    /// The ext-authz providers the CUSTOM policies name (each once), to check against the
    /// [`ExtAuthzProviders`] registry when the config loads.
    pub fn custom_providers(&self) -> impl Iterator<Item = &str> {
        let mut seen: Vec<&str> = Vec::new();
        self.policies
            .iter()
            .filter_map(|p| p.provider.as_deref())
            .filter(move |name| {
                let new = !seen.contains(name);
                if new {
                    seen.push(name);
                }
                new
            })
    }

    /// The rule at `rule` as a [`MatchedRule`].
    fn matched(&self, rule: &CompiledRule) -> MatchedRule {
        MatchedRule {
            policy: self
                .policies
                .get(rule.policy)
                .map(|p| p.name.clone())
                .unwrap_or_else(|| Arc::from("?")),
            rule: rule.index,
        }
    }

    /// Decides `req` (see the module docs for the order). Allocates nothing unless a CUSTOM
    /// rule matches.
    pub fn evaluate(&self, req: &AuthzRequest<'_>) -> Decision {
        let set = if req.is_http { &self.http } else { &self.tcp };
        let cx = Cx::new(req);

        let mut custom: Vec<CustomCheck> = Vec::new();
        for r in set.custom.rules() {
            let Some(provider) = self
                .policies
                .get(r.policy)
                .and_then(|p| p.provider.as_ref())
            else {
                continue;
            };
            if custom.iter().any(|c| c.provider == *provider) || !r.matches(&cx) {
                continue;
            }
            custom.push(CustomCheck {
                provider: provider.clone(),
                matched: self.matched(r),
            });
        }

        let verdict = if let Some(r) = set.deny.first(&cx) {
            Verdict::Denied(self.matched(r))
        } else if self.allow_policies == 0 {
            Verdict::AllowedNoPolicy
        } else if let Some(r) = set.allow.first(&cx) {
            Verdict::Allowed(self.matched(r))
        } else {
            Verdict::DeniedNoMatch
        };
        let audit = if set.audit.is_empty() {
            None
        } else {
            set.audit.first(&cx).map(|r| self.matched(r))
        };
        let dry_run_deny = (self.dry_deny_policies > 0).then(|| {
            let matched = set.dry_deny.first(&cx).map(|r| self.matched(r));
            DryRun {
                allowed: matched.is_none(),
                matched,
            }
        });
        let dry_run_allow = (self.dry_allow_policies > 0).then(|| {
            let matched = set.dry_allow.first(&cx).map(|r| self.matched(r));
            DryRun {
                allowed: matched.is_some(),
                matched,
            }
        });
        let decision = Decision {
            verdict,
            custom,
            audit,
            dry_run_deny,
            dry_run_allow,
        };
        self.log(req, &decision);
        decision
    }

    /// The decision's log events (target `tower_mesh::authz`).
    fn log(&self, req: &AuthzRequest<'_>, d: &Decision) {
        const TARGET: &str = "tower_mesh::authz";
        let principal = req.peer_principal.unwrap_or("-");
        match &d.verdict {
            Verdict::Denied(m) => tracing::info!(
                target: TARGET,
                policy = &*m.policy,
                rule = m.rule,
                method = req.method,
                path = req.path,
                principal,
                "RBAC: access denied by DENY policy {m}"
            ),
            Verdict::DeniedNoMatch => tracing::info!(
                target: TARGET,
                method = req.method,
                path = req.path,
                principal,
                "RBAC: access denied: no rule of the ALLOW policies [{}] matched",
                AllowNames(self)
            ),
            Verdict::Allowed(m) => tracing::debug!(
                target: TARGET,
                policy = &*m.policy,
                rule = m.rule,
                method = req.method,
                path = req.path,
                principal,
                "allowed by ALLOW policy {m}"
            ),
            Verdict::AllowedNoPolicy => tracing::debug!(
                target: TARGET,
                method = req.method,
                path = req.path,
                principal,
                "allowed: no ALLOW policy applies"
            ),
        }
        for c in &d.custom {
            tracing::debug!(
                target: TARGET,
                provider = &*c.provider,
                policy = &*c.matched.policy,
                rule = c.matched.rule,
                "CUSTOM policy {} asks provider {}",
                c.matched,
                c.provider
            );
        }
        if let Some(m) = &d.audit {
            tracing::debug!(target: TARGET, policy = &*m.policy, rule = m.rule, "AUDIT policy {m} matched");
        }
        if let Some(DryRun {
            allowed: false,
            matched: Some(m),
        }) = &d.dry_run_deny
        {
            tracing::info!(
                target: TARGET,
                policy = &*m.policy,
                rule = m.rule,
                method = req.method,
                path = req.path,
                principal,
                "dry-run: DENY policy {m} would deny this request"
            );
        }
        if let Some(DryRun { allowed, matched }) = &d.dry_run_allow {
            match matched {
                Some(m) => tracing::debug!(
                    target: TARGET,
                    policy = &*m.policy,
                    rule = m.rule,
                    "dry-run: ALLOW policy {m} would allow this request"
                ),
                None if !allowed => tracing::info!(
                    target: TARGET,
                    method = req.method,
                    path = req.path,
                    principal,
                    "dry-run: no dry-run ALLOW policy matches: this request would be denied"
                ),
                None => {}
            }
        }
    }
}

/// The enforced ALLOW policies' names, written only if a log line is emitted.
struct AllowNames<'a>(&'a AuthzPolicies);

impl fmt::Display for AllowNames<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names = self
            .0
            .policies
            .iter()
            .filter(|p| p.action == Action::Allow && !p.dry_run)
            .map(|p| &*p.name);
        if let Some(first) = names.next() {
            f.write_str(first)?;
        }
        for name in names {
            write!(f, ", {name}")?;
        }
        Ok(())
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A compile warning about `res`.
fn warning(res: &Resource, path: &str, message: &str) -> ValidationError {
    ValidationError {
        severity: Severity::Warning,
        resource: Some(ResourceRef {
            kind: Kind::AuthorizationPolicy,
            namespace: res.metadata.namespace.clone(),
            name: res.metadata.name.clone(),
        }),
        path: path.to_string(),
        message: message.to_string(),
        rule: None,
        source: res.source.clone(),
    }
}
