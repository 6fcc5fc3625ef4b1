//! PeerAuthentication resolution: the mutual-TLS mode each port of a workload accepts.
//!
//! Istio composes at most three policies for a workload (`ComposePeerAuthentication` in
//! istiod), and so do we:
//!
//! 1. **mesh**: a policy in the root namespace without a selector;
//! 2. **namespace**: a policy in the workload's namespace without a selector (or with an
//!    empty `matchLabels`);
//! 3. **workload**: a policy in the workload's namespace whose `selector.matchLabels` are all
//!    labels of the workload.
//!
//! When several policies compete for one level, the oldest `metadata.creationTimestamp` wins
//! (an absent timestamp counts as Kubernetes' zero time, the oldest of all); ties keep the
//! first in loader order. The winner is chosen *before* looking at its mode, so an older
//! `UNSET` policy shadows a newer `STRICT` one at the same level, as in Istio.
//!
//! The mode is then resolved from the widest level to the narrowest: built-in `PERMISSIVE`,
//! then mesh, namespace and workload `mtls.mode`, each `UNSET` (or absent) keeping its
//! parent's. `portLevelMtls` is read from the workload-level policy only (Istio ignores it on
//! mesh and namespace policies, and validation rejects it there); an `UNSET` port inherits the
//! workload-level result. Selector policies in the root namespace are ignored (Istio does not
//! apply workload-scoped PeerAuthentication across namespaces).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::authn::scope::{is_namespace_wide, older, selects};
use crate::config::peer_authentication::{MtlsMode, MutualTls, PeerAuthentication};
use crate::config::{ConfigSet, Resource, Spec};
use crate::route::SourceIdentity;

/// The PeerAuthentication in force for one workload: a resolved mode per port.
///
/// [`PeerAuthn::mode_for_port`] never returns [`MtlsMode::Unset`]: it is `STRICT` (mTLS with a
/// client certificate only), `PERMISSIVE` (mTLS or plaintext on the same port) or `DISABLE`
/// (plaintext only), as Envoy's inbound listener is built for that port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAuthn {
    mode: MtlsMode,
    per_port: BTreeMap<u16, MtlsMode>,
    selected: SelectedPolicies,
}

/// The policies [`PeerAuthn::compile`] chose at each level (`namespace/name`), for logs and
/// debugging ("why is this port STRICT?").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SelectedPolicies {
    /// The mesh-wide policy (root namespace, no selector), if any.
    pub mesh: Option<Arc<str>>,
    /// The namespace-wide policy, if any.
    pub namespace: Option<Arc<str>>,
    /// The workload-level policy (selector matching the workload), if any.
    pub workload: Option<Arc<str>>,
}

impl Default for PeerAuthn {
    /// No policy at all: Istio's built-in `PERMISSIVE` on every port.
    fn default() -> Self {
        PeerAuthn {
            mode: MtlsMode::Permissive,
            per_port: BTreeMap::new(),
            selected: SelectedPolicies::default(),
        }
    }
}

impl PeerAuthn {
    /// Resolves the PeerAuthentication policies of `set` for `workload` (its namespace and
    /// labels), with `root_namespace` holding the mesh-wide policy (`istio-system` by
    /// default). See the [module docs](self) for the precedence rules.
    pub fn compile(set: &ConfigSet, workload: &SourceIdentity, root_namespace: &str) -> PeerAuthn {
        let mut mesh: Option<Chosen<'_>> = None;
        let mut namespace: Option<Chosen<'_>> = None;
        let mut wl: Option<Chosen<'_>> = None;
        for r in &set.resources {
            let Spec::PeerAuthentication(pa) = &r.spec else {
                continue;
            };
            let ns = r.metadata.namespace.as_str();
            if is_namespace_wide(pa.selector.as_ref()) {
                if ns == root_namespace {
                    keep_oldest(&mut mesh, r, pa);
                } else if ns == workload.namespace {
                    keep_oldest(&mut namespace, r, pa);
                }
            } else if ns != root_namespace
                && ns == workload.namespace
                && selects(pa.selector.as_ref(), workload)
            {
                keep_oldest(&mut wl, r, pa);
            }
        }

        let mut mode = MtlsMode::Permissive;
        for (_, pa) in [mesh, namespace, wl].into_iter().flatten() {
            if let Some(m) = set_mode(pa.mtls) {
                mode = m;
            }
        }
        let mut per_port = BTreeMap::new();
        if let Some((_, pa)) = wl {
            for (port, mtls) in pa.port_level_mtls.iter().flatten() {
                // Keys are validated (1..65535); anything else cannot name a port.
                let Ok(port) = port.trim().parse::<u16>() else {
                    continue;
                };
                if port == 0 {
                    continue;
                }
                per_port.insert(port, set_mode(Some(*mtls)).unwrap_or(mode));
            }
        }
        let key = |slot: Option<Chosen<'_>>| slot.map(|(r, _)| Arc::<str>::from(r.key()));
        PeerAuthn {
            mode,
            per_port,
            selected: SelectedPolicies {
                mesh: key(mesh),
                namespace: key(namespace),
                workload: key(wl),
            },
        }
    }

    /// The mode in force on workload port `port` (the container port, not the Service port):
    /// the workload policy's `portLevelMtls[port]` if it names the port, else the
    /// workload-wide mode. Never `UNSET`.
    pub fn mode_for_port(&self, port: u16) -> MtlsMode {
        self.per_port.get(&port).copied().unwrap_or(self.mode)
    }

    /// The workload-wide mode (ports without a `portLevelMtls` entry). Never `UNSET`.
    pub fn workload_mode(&self) -> MtlsMode {
        self.mode
    }

    /// The ports with their own mode (`portLevelMtls` of the workload policy), resolved.
    pub fn port_modes(&self) -> impl Iterator<Item = (u16, MtlsMode)> + '_ {
        self.per_port.iter().map(|(p, m)| (*p, *m))
    }

    /// Which policies were chosen at each level.
    pub fn selected(&self) -> &SelectedPolicies {
        &self.selected
    }
}

/// A policy chosen for a level, with its spec.
type Chosen<'a> = (&'a Resource, &'a PeerAuthentication);

/// Keeps the older of the current choice and `candidate` (Istio's `Before`: ties keep the
/// current one, i.e. loader order).
fn keep_oldest<'a>(
    slot: &mut Option<Chosen<'a>>,
    candidate: &'a Resource,
    pa: &'a PeerAuthentication,
) {
    if slot.is_none_or(|(current, _)| older(candidate, current)) {
        *slot = Some((candidate, pa));
    }
}

/// A set mode, or `None` for `UNSET` / absent (inherit).
fn set_mode(mtls: Option<MutualTls>) -> Option<MtlsMode> {
    match mtls?.mode? {
        MtlsMode::Unset => None,
        m => Some(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Loader;

    const ROOT: &str = "istio-system";

    fn workload(ns: &str, labels: &[(&str, &str)]) -> SourceIdentity {
        SourceIdentity {
            namespace: ns.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// One PeerAuthentication document: `meta` goes inside `metadata: {...}`.
    fn pa(meta: &str, spec: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{{meta}}}\nspec: {spec}\n---\n"
        )
    }

    fn compile(docs: &[String], wl: &SourceIdentity) -> PeerAuthn {
        let set = Loader::new().load_str(&docs.concat());
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        PeerAuthn::compile(&set, wl, ROOT)
    }

    fn app() -> SourceIdentity {
        workload("foo", &[("app", "web"), ("version", "v1")])
    }

    #[test]
    fn no_policy_is_permissive() {
        let p = compile(&[], &app());
        assert_eq!(p.mode_for_port(8080), MtlsMode::Permissive);
        assert_eq!(p, PeerAuthn::default());
    }

    #[test]
    fn mesh_policy_applies_to_every_namespace() {
        let p = compile(
            &[pa(
                "name: default, namespace: istio-system",
                "{mtls: {mode: STRICT}}",
            )],
            &app(),
        );
        assert_eq!(p.mode_for_port(80), MtlsMode::Strict);
        assert_eq!(p.selected().mesh.as_deref(), Some("istio-system/default"));
    }

    #[test]
    fn namespace_policy_overrides_mesh() {
        let docs = [
            pa(
                "name: default, namespace: istio-system",
                "{mtls: {mode: STRICT}}",
            ),
            pa("name: ns, namespace: foo", "{mtls: {mode: DISABLE}}"),
        ];
        assert_eq!(compile(&docs, &app()).mode_for_port(80), MtlsMode::Disable);
        // Another namespace's policy does not apply.
        let other = workload("bar", &[("app", "web")]);
        assert_eq!(compile(&docs, &other).mode_for_port(80), MtlsMode::Strict);
    }

    #[test]
    fn workload_policy_overrides_namespace() {
        let docs = [
            pa("name: ns, namespace: foo", "{mtls: {mode: STRICT}}"),
            pa(
                "name: web, namespace: foo",
                "{selector: {matchLabels: {app: web}}, mtls: {mode: PERMISSIVE}}",
            ),
        ];
        let p = compile(&docs, &app());
        assert_eq!(p.mode_for_port(80), MtlsMode::Permissive);
        assert_eq!(p.selected().workload.as_deref(), Some("foo/web"));
        // A workload the selector does not match keeps the namespace mode.
        let db = workload("foo", &[("app", "db")]);
        assert_eq!(compile(&docs, &db).mode_for_port(80), MtlsMode::Strict);
    }

    #[test]
    fn selector_must_be_a_subset_of_the_workload_labels() {
        let docs = [pa(
            "name: web, namespace: foo",
            "{selector: {matchLabels: {app: web, version: v2}}, mtls: {mode: STRICT}}",
        )];
        assert_eq!(
            compile(&docs, &app()).mode_for_port(80),
            MtlsMode::Permissive
        );
        let v2 = workload("foo", &[("app", "web"), ("version", "v2"), ("x", "y")]);
        assert_eq!(compile(&docs, &v2).mode_for_port(80), MtlsMode::Strict);
    }

    #[test]
    fn unset_inherits_at_every_level() {
        let docs = [
            pa(
                "name: default, namespace: istio-system",
                "{mtls: {mode: STRICT}}",
            ),
            pa("name: ns, namespace: foo", "{mtls: {mode: UNSET}}"),
            pa(
                "name: web, namespace: foo",
                "{selector: {matchLabels: {app: web}}}",
            ),
        ];
        let p = compile(&docs, &app());
        assert_eq!(p.mode_for_port(80), MtlsMode::Strict);
        assert_eq!(p.selected().namespace.as_deref(), Some("foo/ns"));
        assert_eq!(p.selected().workload.as_deref(), Some("foo/web"));
    }

    #[test]
    fn port_level_overrides_and_unset_port_inherits_the_workload_result() {
        let docs = [
            pa("name: ns, namespace: foo", "{mtls: {mode: STRICT}}"),
            pa(
                "name: web, namespace: foo",
                "{selector: {matchLabels: {app: web}}, portLevelMtls: {'8080': {mode: DISABLE}, '9090': {mode: UNSET}, '7070': {mode: PERMISSIVE}}}",
            ),
        ];
        let p = compile(&docs, &app());
        assert_eq!(p.mode_for_port(8080), MtlsMode::Disable);
        assert_eq!(p.mode_for_port(7070), MtlsMode::Permissive);
        assert_eq!(
            p.mode_for_port(9090),
            MtlsMode::Strict,
            "UNSET port inherits"
        );
        assert_eq!(p.mode_for_port(80), MtlsMode::Strict);
        assert_eq!(p.workload_mode(), MtlsMode::Strict);
        assert_eq!(p.port_modes().count(), 3);
    }

    #[test]
    fn port_level_on_namespace_or_mesh_policies_is_ignored() {
        let mut set = Loader::new().load_str(&pa(
            "name: ns, namespace: foo",
            "{mtls: {mode: STRICT}, portLevelMtls: {'8080': {mode: DISABLE}}}",
        ));
        set.problems.clear();
        let p = PeerAuthn::compile(&set, &app(), ROOT);
        assert_eq!(p.mode_for_port(8080), MtlsMode::Strict);
    }

    #[test]
    fn selector_policies_in_the_root_namespace_are_ignored() {
        let docs = [pa(
            "name: web, namespace: istio-system",
            "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}",
        )];
        assert_eq!(
            compile(&docs, &app()).mode_for_port(80),
            MtlsMode::Permissive
        );
        // Even for a workload living in the root namespace.
        let sys = workload(ROOT, &[("app", "web")]);
        assert_eq!(compile(&docs, &sys).mode_for_port(80), MtlsMode::Permissive);
    }

    #[test]
    fn empty_match_labels_is_namespace_wide() {
        let docs = [pa(
            "name: ns, namespace: foo",
            "{selector: {matchLabels: {}}, mtls: {mode: STRICT}}",
        )];
        let p = compile(&docs, &workload("foo", &[]));
        assert_eq!(p.mode_for_port(80), MtlsMode::Strict);
        assert_eq!(p.selected().namespace.as_deref(), Some("foo/ns"));
    }

    #[test]
    fn oldest_policy_wins_at_one_level() {
        let docs = [
            pa(
                "name: newer, namespace: foo, creationTimestamp: '2024-05-02T00:00:00Z'",
                "{mtls: {mode: STRICT}}",
            ),
            pa(
                "name: older, namespace: foo, creationTimestamp: '2024-05-01T00:00:00Z'",
                "{mtls: {mode: DISABLE}}",
            ),
        ];
        let p = compile(&docs, &app());
        assert_eq!(p.mode_for_port(80), MtlsMode::Disable);
        assert_eq!(p.selected().namespace.as_deref(), Some("foo/older"));
    }

    #[test]
    fn the_oldest_wins_even_when_its_mode_is_unset() {
        let docs = [
            pa(
                "name: default, namespace: istio-system",
                "{mtls: {mode: DISABLE}}",
            ),
            pa(
                "name: older, namespace: foo, creationTimestamp: '2024-05-01T00:00:00Z'",
                "{mtls: {mode: UNSET}}",
            ),
            pa(
                "name: newer, namespace: foo, creationTimestamp: '2024-06-01T00:00:00Z'",
                "{mtls: {mode: STRICT}}",
            ),
        ];
        // The older UNSET policy is chosen, so the mesh mode shows through.
        assert_eq!(compile(&docs, &app()).mode_for_port(80), MtlsMode::Disable);
    }

    #[test]
    fn ties_and_absent_timestamps_keep_loader_order() {
        let docs = [
            pa("name: first, namespace: foo", "{mtls: {mode: STRICT}}"),
            pa("name: second, namespace: foo", "{mtls: {mode: DISABLE}}"),
        ];
        assert_eq!(compile(&docs, &app()).mode_for_port(80), MtlsMode::Strict);
        let same = "creationTimestamp: '2024-05-01T00:00:00Z'";
        let docs = [
            pa(
                &format!("name: first, namespace: foo, {same}"),
                "{mtls: {mode: DISABLE}}",
            ),
            pa(
                &format!("name: second, namespace: foo, {same}"),
                "{mtls: {mode: STRICT}}",
            ),
        ];
        assert_eq!(compile(&docs, &app()).mode_for_port(80), MtlsMode::Disable);
        // An absent timestamp is Kubernetes' zero time: older than any real one.
        let docs = [
            pa(
                &format!("name: dated, namespace: foo, {same}"),
                "{mtls: {mode: DISABLE}}",
            ),
            pa("name: undated, namespace: foo", "{mtls: {mode: STRICT}}"),
        ];
        assert_eq!(compile(&docs, &app()).mode_for_port(80), MtlsMode::Strict);
    }

    #[test]
    fn oldest_wins_among_workload_policies() {
        let docs = [
            pa(
                "name: b, namespace: foo, creationTimestamp: '2024-05-02T00:00:00Z'",
                "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}",
            ),
            pa(
                "name: a, namespace: foo, creationTimestamp: '2024-05-01T00:00:00Z'",
                "{selector: {matchLabels: {version: v1}}, portLevelMtls: {'80': {mode: DISABLE}}}",
            ),
        ];
        let p = compile(&docs, &app());
        assert_eq!(p.selected().workload.as_deref(), Some("foo/a"));
        assert_eq!(p.mode_for_port(80), MtlsMode::Disable);
        assert_eq!(p.mode_for_port(81), MtlsMode::Permissive);
    }
}
