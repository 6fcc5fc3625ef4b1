//! The mesh's own metrics on a prometheus-client [`Registry`] (feature `metrics`).
//!
//! Registered under the prefix `tower_mesh` when the builder is given a registry
//! ([`MeshBuilder::metrics`](crate::MeshBuilder::metrics)):
//!
//! - `tower_mesh_config_reloads_total{outcome="ok"|"failed"}`: reloads, by outcome;
//! - `tower_mesh_config_version`: the version of the snapshot serving;
//! - `tower_mesh_config_resources`: the resources it was compiled from.
//!
//! and Istio's standard request metrics (`istio_requests_total`, …; see [`crate::telemetry`]).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The label set of the reload counter.
type Outcome = [(&'static str, &'static str); 1];

/// Handles to the mesh's metrics (cheap to clone; updates are atomic).
#[derive(Debug, Clone)]
pub(crate) struct MeshMetrics {
    reloads: Family<Outcome, Counter>,
    version: Gauge,
    resources: Gauge,
    /// Istio's request metrics.
    pub(crate) istio: crate::telemetry::IstioMetrics,
}

impl MeshMetrics {
    /// Registers the metrics in `registry` under the `tower_mesh` prefix.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = MeshMetrics {
            reloads: Family::default(),
            version: Gauge::default(),
            resources: Gauge::default(),
            istio: crate::telemetry::IstioMetrics::register(registry),
        };
        let sub = registry.sub_registry_with_prefix("tower_mesh");
        sub.register(
            "config_reloads",
            "Config reloads, by outcome (ok: a new snapshot serves; failed: refused, the last good one keeps serving)",
            metrics.reloads.clone(),
        );
        sub.register(
            "config_version",
            "Version of the config snapshot serving (1 at start, +1 per successful reload)",
            metrics.version.clone(),
        );
        sub.register(
            "config_resources",
            "Resources the serving snapshot was compiled from",
            metrics.resources.clone(),
        );
        metrics
    }

    /// A snapshot `version` of `resources` resources is serving (after a build or reload).
    pub(crate) fn serving(&self, version: u64, resources: usize) {
        self.version.set(i64::try_from(version).unwrap_or(i64::MAX));
        self.resources
            .set(i64::try_from(resources).unwrap_or(i64::MAX));
    }

    /// Counts a reload.
    pub(crate) fn reloaded(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.reloads.get_or_create(&[("outcome", outcome)]).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn metrics_encode_with_their_prefix_and_labels() {
        let mut registry = Registry::default();
        let m = MeshMetrics::register(&mut registry);
        m.serving(3, 12);
        m.reloaded(true);
        m.reloaded(false);
        m.reloaded(false);
        let mut text = String::new();
        assert!(encode(&mut text, &registry).is_ok());
        for line in [
            "tower_mesh_config_version 3",
            "tower_mesh_config_resources 12",
            "tower_mesh_config_reloads_total{outcome=\"ok\"} 1",
            "tower_mesh_config_reloads_total{outcome=\"failed\"} 2",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
