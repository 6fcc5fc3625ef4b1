//! DestinationRule policy: the effective [`ClusterPolicy`] of one (host, subset, port), and
//! the merge of several DestinationRules for one host.
//!
//! Istio resolves a DestinationRule's policy in three layers, and the layers replace whole
//! sections rather than merging fields (ISTIO.md §3.1, Istio's `MergeTrafficPolicy`):
//!
//! 1. **Rule level**: `trafficPolicy` gives `loadBalancer`, `connectionPool`,
//!    `outlierDetection`, `tls`, `tunnel`, `proxyProtocol` and `retryBudget`.
//! 2. **Port level**: a `trafficPolicy.portLevelSettings` entry whose `port.number` is the
//!    destination port replaces `loadBalancer`, `connectionPool`, `outlierDetection` and `tls`
//!    *together*: a section the entry omits falls back to Istio's default, not to the
//!    rule-level value. `tunnel`, `proxyProtocol` and `retryBudget` are not port-level fields
//!    and stay.
//! 3. **Subset level**: `subsets[i].trafficPolicy` replaces each top-level section it sets
//!    (a whole section: a subset `connectionPool` with only `tcp` drops the parent's `http`)
//!    and inherits the others from the port-resolved parent. If the subset policy has its own
//!    matching `portLevelSettings` entry, the four port-level sections all come from it.
//!
//! Several DestinationRules for one host ([`MergedDestinationRule`], ISTIO.md §3 "Lookup")
//! are merged as Istio's `mergeDestinationRule` does: subsets concatenated (the first rule to
//! define a subset name wins), the top-level `trafficPolicy` of the first rule that has one;
//! nothing deeper. [`DestinationRuleIndex`] groups the rules of a config by host and answers
//! with the most specific host (exact before wildcard).
//!
//! ```
//! use tower_mesh::config::Loader;
//! use tower_mesh::snapshot::hosts::ClusterDomain;
//! use tower_mesh::snapshot::policy::DestinationRuleIndex;
//!
//! let set = Loader::new().load_str(r#"
//! apiVersion: networking.istio.io/v1
//! kind: DestinationRule
//! metadata: {name: reviews, namespace: default}
//! spec:
//!   host: reviews
//!   trafficPolicy:
//!     loadBalancer: {simple: ROUND_ROBIN}
//!     portLevelSettings:
//!     - port: {number: 9443}
//!       tls: {mode: SIMPLE}
//!   subsets:
//!   - name: v1
//!     labels: {version: v1}
//! "#);
//! let index = DestinationRuleIndex::build(&set.resources, &ClusterDomain::default());
//! let host = "reviews.default.svc.cluster.local";
//! assert!(index.policy(host, Some("v1"), Some(9080)).load_balancer.is_some());
//! // The port-level entry replaces loadBalancer too: it omits it, so the default applies.
//! assert!(index.policy(host, Some("v1"), Some(9443)).load_balancer.is_none());
//! ```

use std::fmt;

use crate::config::destination_rule::{
    ClientTlsSettings, ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection,
    PortTrafficPolicy, ProxyProtocol, RetryBudget, Subset, TrafficPolicy, TunnelSettings,
};
use crate::config::{DestinationRule, Kind, Resource, Source, Spec};
use crate::snapshot::hosts::{ClusterDomain, HostIndex, expand_host};

/// The effective DestinationRule policy for one (host, subset, port): plain data, so it can be
/// compared across reloads and used as a cache key by the layers.
///
/// Each section is the object Istio applies; `None` means "not configured": Istio's default
/// applies (`LEAST_REQUEST`, unlimited pools, no outlier detection, auto mTLS, no tunnel, no
/// PROXY header, no retry budget).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterPolicy {
    /// `loadBalancer`.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// `connectionPool`.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// `outlierDetection`.
    pub outlier_detection: Option<OutlierDetection>,
    /// `tls`.
    pub tls: Option<ClientTlsSettings>,
    /// `tunnel` (never port-level).
    pub tunnel: Option<TunnelSettings>,
    /// `proxyProtocol` (never port-level).
    pub proxy_protocol: Option<ProxyProtocol>,
    /// `retryBudget` (never port-level).
    pub retry_budget: Option<RetryBudget>,
}

impl ClusterPolicy {
    /// A `trafficPolicy` resolved for `port`: its sections, with the four port-level sections
    /// replaced together by a matching `portLevelSettings` entry.
    pub fn resolve(policy: &TrafficPolicy, port: Option<u32>) -> Self {
        let mut out = ClusterPolicy::default();
        out.override_with(policy, port);
        out
    }

    /// Applies `policy` over `self` as a subset policy applies over its parent: each section
    /// `policy` sets replaces the parent's; then a `portLevelSettings` entry of `policy`
    /// matching `port` replaces loadBalancer, connectionPool, outlierDetection and tls
    /// together (omitted ones become `None`, i.e. the defaults).
    fn override_with(&mut self, policy: &TrafficPolicy, port: Option<u32>) {
        fn set<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
            if value.is_some() {
                slot.clone_from(value);
            }
        }
        set(&mut self.load_balancer, &policy.load_balancer);
        set(&mut self.connection_pool, &policy.connection_pool);
        set(&mut self.outlier_detection, &policy.outlier_detection);
        set(&mut self.tls, &policy.tls);
        set(&mut self.tunnel, &policy.tunnel);
        set(&mut self.proxy_protocol, &policy.proxy_protocol);
        set(&mut self.retry_budget, &policy.retry_budget);
        if let Some(p) = port_level(policy, port) {
            self.load_balancer.clone_from(&p.load_balancer);
            self.connection_pool.clone_from(&p.connection_pool);
            self.outlier_detection.clone_from(&p.outlier_detection);
            self.tls.clone_from(&p.tls);
        }
    }
}

/// The first `portLevelSettings` entry of `policy` for `port` (none when `port` is `None`).
fn port_level(policy: &TrafficPolicy, port: Option<u32>) -> Option<&PortTrafficPolicy> {
    let port = port?;
    policy
        .port_level_settings
        .iter()
        .find(|p| p.port.is_some_and(|s| s.number == port))
}

/// The effective policy of `dr` for traffic to `subset` (none = the whole service) on
/// destination port `port` (none = no port-level entry applies), by the rules of the module
/// docs: rule level, resolved for the port; then the subset's sections; then the subset's own
/// port-level entry.
///
/// A `subset` that `dr` does not define contributes nothing (the rule-level policy is
/// returned): whether the subset exists is the router's question (Istio answers 503 NC).
pub fn effective_policy(
    dr: &DestinationRule,
    subset: Option<&str>,
    port: Option<u32>,
) -> ClusterPolicy {
    let mut out = match &dr.traffic_policy {
        Some(tp) => ClusterPolicy::resolve(tp, port),
        None => ClusterPolicy::default(),
    };
    if let Some(name) = subset
        && let Some(tp) = dr
            .subsets
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.traffic_policy.as_ref())
    {
        out.override_with(tp, port);
    }
    out
}

/// The resource a compiled entry came from, for errors, config dumps and "why did this
/// request go there".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Provenance {
    /// The resource's kind.
    pub kind: Kind,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The file (if any), document and line.
    pub source: Source,
}

impl Provenance {
    /// The provenance of `res`.
    pub fn of(res: &Resource) -> Self {
        Provenance {
            kind: res.kind(),
            namespace: res.metadata.namespace.clone(),
            name: res.metadata.name.clone(),
            source: res.source.clone(),
        }
    }
}

impl fmt::Display for Provenance {
    /// `DestinationRule default/reviews (rules.yaml:12)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{} ({})",
            self.kind, self.namespace, self.name, self.source
        )
    }
}

/// The DestinationRules for one host merged into one, as Istio's `mergeDestinationRule` does
/// (ISTIO.md §3 "Lookup"), with the provenance of each part.
///
/// Rules are merged in the order given, which stands for Istio's order (oldest first):
/// - subsets are concatenated; a subset whose name an earlier rule already defined is ignored;
/// - the top-level `trafficPolicy` is the first one found;
/// - `exportTo` and `workloadSelector` are the first rule's; nothing deeper is merged.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedDestinationRule {
    /// The merged spec; its `host` is the expanded host.
    rule: DestinationRule,
    /// Every rule that contributed, in merge order.
    sources: Vec<Provenance>,
    /// Index into `sources` of the rule that gave `trafficPolicy`.
    traffic_policy_from: Option<usize>,
    /// Index into `sources` of the rule that gave each subset (parallel to `rule.subsets`).
    subsets_from: Vec<usize>,
}

impl MergedDestinationRule {
    /// An empty merge for `host` (already expanded): no policy, no subsets, no sources.
    pub fn new(host: impl Into<String>) -> Self {
        MergedDestinationRule {
            rule: DestinationRule {
                host: host.into(),
                ..DestinationRule::default()
            },
            sources: Vec::new(),
            traffic_policy_from: None,
            subsets_from: Vec::new(),
        }
    }

    /// Merges the next (younger) rule `dr`, which came from `from`.
    pub fn merge(&mut self, from: Provenance, dr: &DestinationRule) {
        let index = self.sources.len();
        if self.sources.is_empty() {
            self.rule.export_to.clone_from(&dr.export_to);
            self.rule
                .workload_selector
                .clone_from(&dr.workload_selector);
        }
        self.sources.push(from);
        if self.rule.traffic_policy.is_none() && dr.traffic_policy.is_some() {
            self.rule.traffic_policy.clone_from(&dr.traffic_policy);
            self.traffic_policy_from = Some(index);
        }
        for subset in &dr.subsets {
            if self.subset(&subset.name).is_none() {
                self.rule.subsets.push(subset.clone());
                self.subsets_from.push(index);
            }
        }
    }

    /// The host the rules apply to (expanded).
    pub fn host(&self) -> &str {
        &self.rule.host
    }

    /// The merged rule: what Istio applies for the host.
    pub fn rule(&self) -> &DestinationRule {
        &self.rule
    }

    /// Every rule that contributed, in merge order.
    pub fn sources(&self) -> &[Provenance] {
        &self.sources
    }

    /// The subset named `name`, if a rule defines it.
    pub fn subset(&self, name: &str) -> Option<&Subset> {
        self.rule.subsets.iter().find(|s| s.name == name)
    }

    /// The rule that defined subset `name`.
    pub fn subset_source(&self, name: &str) -> Option<&Provenance> {
        let i = self.rule.subsets.iter().position(|s| s.name == name)?;
        self.sources.get(*self.subsets_from.get(i)?)
    }

    /// The rule whose top-level `trafficPolicy` applies, if any has one.
    pub fn traffic_policy_source(&self) -> Option<&Provenance> {
        self.sources.get(self.traffic_policy_from?)
    }

    /// The effective policy for `subset` and `port` ([`effective_policy`] of the merged rule).
    pub fn policy(&self, subset: Option<&str>, port: Option<u32>) -> ClusterPolicy {
        effective_policy(&self.rule, subset, port)
    }
}

/// The DestinationRules of a config, merged per host and indexed for lookup by the most
/// specific host (an exact host before a wildcard, the longest wildcard first).
///
/// Built from the rules that apply to the caller, in Istio's order (oldest first). Choosing
/// those rules (`exportTo` visibility, `workloadSelector`, Istio's preference for a rule in
/// the caller's namespace, then the service's, then the root namespace) is left to the caller;
/// rules for the same expanded host are merged whatever their namespace.
#[derive(Debug, Clone, Default)]
pub struct DestinationRuleIndex {
    hosts: HostIndex<MergedDestinationRule>,
}

impl DestinationRuleIndex {
    /// Indexes the DestinationRules among `resources` (other kinds are skipped), expanding
    /// short hosts with each rule's namespace and merging rules for the same host in order.
    pub fn build<'a>(
        resources: impl IntoIterator<Item = &'a Resource>,
        domain: &ClusterDomain,
    ) -> Self {
        let mut hosts = HostIndex::new();
        for res in resources {
            let Spec::DestinationRule(dr) = &res.spec else {
                continue;
            };
            let host = expand_host(&dr.host, &res.metadata.namespace, domain).to_ascii_lowercase();
            hosts
                .get_or_insert_with(&host, || MergedDestinationRule::new(host.as_str()))
                .merge(Provenance::of(res), dr);
        }
        DestinationRuleIndex { hosts }
    }

    /// The merged rule for a concrete host, by the most specific host pattern.
    pub fn lookup(&self, host: &str) -> Option<&MergedDestinationRule> {
        self.hosts.lookup(host)
    }

    /// The effective policy for (host, subset, port); the defaults when no rule covers the
    /// host.
    pub fn policy(&self, host: &str, subset: Option<&str>, port: Option<u32>) -> ClusterPolicy {
        self.lookup(host)
            .map(|m| m.policy(subset, port))
            .unwrap_or_default()
    }

    /// The number of distinct hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether there is no rule.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Every merged rule, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &MergedDestinationRule> {
        self.hosts.iter().map(|(_, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::destination_rule::{ClientTlsMode, SimpleLb};
    use crate::config::{ConfigSet, Loader};

    fn load(yaml: &str) -> ConfigSet {
        let set = Loader::new().load_str(yaml);
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        set
    }

    fn dr(yaml: &str) -> DestinationRule {
        match load(yaml).resources.into_iter().next().map(|r| r.spec) {
            Some(Spec::DestinationRule(dr)) => dr,
            other => panic!("expected a DestinationRule, got {other:?}"),
        }
    }

    fn lb(p: &ClusterPolicy) -> Option<SimpleLb> {
        p.load_balancer.as_ref().and_then(|l| l.simple())
    }

    fn max_connections(p: &ClusterPolicy) -> Option<i32> {
        p.connection_pool.as_ref()?.tcp.as_ref()?.max_connections
    }

    fn ejections(p: &ClusterPolicy) -> Option<u32> {
        p.outlier_detection.as_ref()?.consecutive_5xx_errors
    }

    fn tls(p: &ClusterPolicy) -> Option<ClientTlsMode> {
        p.tls.as_ref()?.mode
    }

    /// Rule level sets every section; port 9443 sets only tls; port 9000 sets lb + pool.
    const PORTS: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {tcp: {maxConnections: 100}}
    outlierDetection: {consecutive5xxErrors: 7}
    tls: {mode: ISTIO_MUTUAL}
    proxyProtocol: {version: V2}
    retryBudget: {percent: 30}
    portLevelSettings:
    - port: {number: 9443}
      tls: {mode: SIMPLE}
    - port: {number: 9000}
      loadBalancer: {simple: RANDOM}
      connectionPool: {tcp: {maxConnections: 5}}
"#;

    #[test]
    fn without_port_level_entry_the_rule_level_policy_applies() {
        let p = effective_policy(&dr(PORTS), None, Some(9080));
        assert_eq!(lb(&p), Some(SimpleLb::RoundRobin));
        assert_eq!(max_connections(&p), Some(100));
        assert_eq!(ejections(&p), Some(7));
        assert_eq!(tls(&p), Some(ClientTlsMode::IstioMutual));
        assert_eq!(effective_policy(&dr(PORTS), None, None), p);
    }

    #[test]
    fn port_level_entry_omitting_outlier_detection_falls_back_to_default_not_rule_level() {
        let p = effective_policy(&dr(PORTS), None, Some(9000));
        assert_eq!(lb(&p), Some(SimpleLb::Random));
        assert_eq!(max_connections(&p), Some(5));
        assert_eq!(p.outlier_detection, None, "not the rule-level 7");
        assert_eq!(p.tls, None, "not the rule-level ISTIO_MUTUAL");
    }

    #[test]
    fn port_level_entry_replaces_all_four_sections_together() {
        let p = effective_policy(&dr(PORTS), None, Some(9443));
        assert_eq!(tls(&p), Some(ClientTlsMode::Simple));
        assert_eq!(p.load_balancer, None);
        assert_eq!(p.connection_pool, None);
        assert_eq!(p.outlier_detection, None);
    }

    #[test]
    fn tunnel_proxy_protocol_and_retry_budget_survive_port_level_entries() {
        let p = effective_policy(&dr(PORTS), None, Some(9443));
        assert!(p.proxy_protocol.is_some());
        assert_eq!(p.retry_budget.and_then(|b| b.percent), Some(30.0));
    }

    #[test]
    fn no_traffic_policy_means_all_defaults() {
        let p = effective_policy(
            &dr(r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: r
  subsets: [{name: v1, labels: {version: v1}}]
"#),
            Some("v1"),
            Some(80),
        );
        assert_eq!(p, ClusterPolicy::default());
    }

    const SUBSETS: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool:
      tcp: {maxConnections: 100}
      http: {http2MaxRequests: 1000}
    outlierDetection: {consecutive5xxErrors: 7}
    tls: {mode: ISTIO_MUTUAL}
    tunnel: {targetHost: proxy.example.com, targetPort: 8443}
    portLevelSettings:
    - port: {number: 9000}
      loadBalancer: {simple: RANDOM}
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      connectionPool:
        tcp: {maxConnections: 10, connectTimeout: 1s}
      proxyProtocol: {version: V1}
  - name: v3
    labels: {version: v3}
    trafficPolicy:
      loadBalancer: {simple: LEAST_REQUEST}
      portLevelSettings:
      - port: {number: 9080}
        outlierDetection: {consecutive5xxErrors: 2}
"#;

    #[test]
    fn subset_without_policy_inherits_the_port_resolved_parent() {
        let rule = dr(SUBSETS);
        assert_eq!(
            effective_policy(&rule, Some("v1"), Some(9080)),
            effective_policy(&rule, None, Some(9080))
        );
        let p = effective_policy(&rule, Some("v1"), Some(9000));
        assert_eq!(lb(&p), Some(SimpleLb::Random));
        assert_eq!(p.connection_pool, None);
    }

    #[test]
    fn subset_section_replaces_the_whole_parent_section() {
        let p = effective_policy(&dr(SUBSETS), Some("v2"), Some(9080));
        let pool = p.connection_pool.as_ref().expect("subset pool");
        let tcp = pool.tcp.as_ref().expect("tcp");
        assert_eq!(tcp.max_connections, Some(10));
        assert_eq!(tcp.connect_timeout, Some(Duration::from_secs(1)));
        assert_eq!(
            pool.http, None,
            "the parent's http settings are not merged in"
        );
        // Sections the subset does not set are inherited.
        assert_eq!(lb(&p), Some(SimpleLb::RoundRobin));
        assert_eq!(ejections(&p), Some(7));
        assert_eq!(tls(&p), Some(ClientTlsMode::IstioMutual));
        assert!(p.tunnel.is_some());
        assert!(p.proxy_protocol.is_some());
    }

    #[test]
    fn subset_section_overrides_a_parent_port_level_entry() {
        let p = effective_policy(&dr(SUBSETS), Some("v2"), Some(9000));
        assert_eq!(
            lb(&p),
            Some(SimpleLb::Random),
            "parent port-level lb inherited"
        );
        assert_eq!(
            max_connections(&p),
            Some(10),
            "subset pool over the port's default"
        );
    }

    #[test]
    fn subset_port_level_entry_gives_all_four_sections() {
        let p = effective_policy(&dr(SUBSETS), Some("v3"), Some(9080));
        assert_eq!(ejections(&p), Some(2));
        assert_eq!(p.load_balancer, None, "not the subset's LEAST_REQUEST");
        assert_eq!(p.connection_pool, None, "not the parent's pool");
        assert_eq!(p.tls, None, "not the parent's tls");
        assert!(p.tunnel.is_some(), "tunnel is not a port-level section");
        // On another port the subset's sections apply over the parent.
        let p = effective_policy(&dr(SUBSETS), Some("v3"), Some(8080));
        assert_eq!(lb(&p), Some(SimpleLb::LeastRequest));
        assert_eq!(ejections(&p), Some(7));
    }

    #[test]
    fn unknown_subset_gets_the_rule_level_policy() {
        let rule = dr(SUBSETS);
        assert_eq!(
            effective_policy(&rule, Some("v9"), Some(9080)),
            effective_policy(&rule, None, Some(9080))
        );
    }

    const MULTI: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: first, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: second, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: RANDOM}
  subsets:
  - {name: v1, labels: {version: other}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: third, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
  subsets:
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wild, namespace: default}
spec:
  host: "*.svc.cluster.local"
  trafficPolicy:
    loadBalancer: {simple: LEAST_REQUEST}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
"#;

    fn multi() -> DestinationRuleIndex {
        DestinationRuleIndex::build(&load(MULTI).resources, &ClusterDomain::default())
    }

    #[test]
    fn rules_for_one_host_concatenate_subsets_first_wins() {
        let index = multi();
        let m = index
            .lookup("reviews.default.svc.cluster.local")
            .expect("merged");
        let names: Vec<_> = m.rule().subsets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["v1", "v2", "v3"]);
        let v1 = m.subset("v1").expect("v1");
        assert_eq!(v1.labels.get("version").map(String::as_str), Some("v1"));
        assert_eq!(
            m.subset_source("v1").map(|p| p.name.as_str()),
            Some("first")
        );
        assert_eq!(
            m.subset_source("v2").map(|p| p.name.as_str()),
            Some("second")
        );
        assert_eq!(
            m.subset_source("v3").map(|p| p.name.as_str()),
            Some("third")
        );
        assert_eq!(m.subset_source("v9"), None);
    }

    #[test]
    fn top_level_policy_comes_from_the_first_rule_that_has_one() {
        let index = multi();
        let m = index
            .lookup("reviews.default.svc.cluster.local")
            .expect("merged");
        assert_eq!(lb(&m.policy(None, None)), Some(SimpleLb::Random));
        assert_eq!(
            m.traffic_policy_source().map(|p| p.name.as_str()),
            Some("second")
        );
        let names: Vec<_> = m.sources().iter().map(|p| p.to_string()).collect();
        assert_eq!(
            names,
            [
                "DestinationRule default/first (<input>:2)",
                "DestinationRule default/second (<input>:10)",
                "DestinationRule default/third (<input>:21)",
            ]
        );
    }

    #[test]
    fn exact_host_rule_beats_a_wildcard_rule() {
        let index = multi();
        assert_eq!(index.len(), 2, "VirtualService skipped, reviews merged");
        let host = "reviews.default.svc.cluster.local";
        assert_eq!(lb(&index.policy(host, None, None)), Some(SimpleLb::Random));
        // Rules for different hosts are never merged: the wildcard has no subsets of reviews.
        let other = index
            .lookup("ratings.default.svc.cluster.local")
            .expect("wildcard");
        assert_eq!(other.host(), "*.svc.cluster.local");
        assert!(other.subset("v1").is_none());
        assert_eq!(
            lb(&index.policy("ratings.default.svc.cluster.local", Some("v1"), None)),
            Some(SimpleLb::LeastRequest)
        );
    }

    #[test]
    fn host_without_rule_gets_default_policy() {
        let index = multi();
        assert!(index.lookup("api.example.com").is_none());
        assert_eq!(
            index.policy("api.example.com", Some("v1"), Some(80)),
            ClusterPolicy::default()
        );
    }

    #[test]
    fn first_rule_keeps_export_to_and_workload_selector() {
        let mut m = MergedDestinationRule::new("r.default.svc.cluster.local");
        let a = DestinationRule {
            export_to: vec![".".into()],
            ..DestinationRule::default()
        };
        let b = DestinationRule {
            export_to: vec!["*".into()],
            ..DestinationRule::default()
        };
        let prov = |name: &str| Provenance {
            kind: Kind::DestinationRule,
            namespace: "default".into(),
            name: name.into(),
            source: Source::default(),
        };
        m.merge(prov("a"), &a);
        m.merge(prov("b"), &b);
        assert_eq!(m.rule().export_to, ["."]);
        assert_eq!(m.sources().len(), 2);
        assert_eq!(m.traffic_policy_source(), None);
    }
}
