//! The mesh's event counters (`tower_mesh_*`), fed by the [`MeshEvent`] stream.
//!
//! A task reads [`Mesh::subscribe`](crate::Mesh::subscribe)'s broadcast channel and counts:
//!
//! - `tower_mesh_retries_total{cluster}`: retries made ([`MeshEvent::Retried`]);
//! - `tower_mesh_retries_refused_total{cluster, limit}`: retries not made because the
//!   DestinationRule's `retryBudget` or `connectionPool.http.maxRetries` refused them
//!   ([`MeshEvent::RetryRefused`]);
//! - `tower_mesh_outlier_ejections_total{cluster, reason}` and
//!   `tower_mesh_outlier_returns_total{cluster}`: outlier detection ejecting an endpoint and
//!   returning it ([`MeshEvent::Ejected`], [`MeshEvent::Returned`]);
//! - `tower_mesh_identity_rotations_total`, `tower_mesh_identity_reload_failures_total` and
//!   `tower_mesh_identity_expiry_warnings_total`: the workload certificate
//!   ([`MeshEvent::Identity`]);
//! - `tower_mesh_config_watch_errors_total` ([`MeshEvent::WatchError`]);
//! - `tower_mesh_events_missed_total`: events this task missed because it fell more than the
//!   channel's capacity behind (so the counters above are a lower bound when it is not 0).
//!
//! Config reloads are counted where they happen, not here
//! (`tower_mesh_config_reloads_total{outcome}`), so they are exact even without a runtime.
//! There is no event for a retry that *is* made: the retry count is not here (Envoy's
//! `upstream_rq_retry`); the outbound metrics' `URX` flag shows retries exhausted.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast;

use crate::mesh::MeshEvent;
use crate::tls::IdentityEvent;

type ClusterLabels = [(&'static str, String); 1];
type ClusterReasonLabels = [(&'static str, String); 2];

/// Handles to the event counters (cheap to clone; updates are atomic).
#[derive(Debug, Clone, Default)]
pub(crate) struct EventCounters {
    retries: Family<ClusterLabels, Counter>,
    retries_refused: Family<ClusterReasonLabels, Counter>,
    ejections: Family<ClusterReasonLabels, Counter>,
    returns: Family<ClusterLabels, Counter>,
    rotations: Counter,
    identity_failures: Counter,
    expiry_warnings: Counter,
    watch_errors: Counter,
    missed: Counter,
}

impl EventCounters {
    /// Registers the counters in `registry` under the `tower_mesh` prefix.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let c = EventCounters::default();
        let sub = registry.sub_registry_with_prefix("tower_mesh");
        sub.register(
            "retries",
            "Retries made, by cluster (Envoy's upstream_rq_retry)",
            c.retries.clone(),
        );
        sub.register(
            "retries_refused",
            "Retries not made: refused by the DestinationRule's retryBudget or connectionPool.http.maxRetries",
            c.retries_refused.clone(),
        );
        sub.register(
            "outlier_ejections",
            "Endpoints ejected by outlier detection, by cluster and detector",
            c.ejections.clone(),
        );
        sub.register(
            "outlier_returns",
            "Ejected endpoints returned to service, by cluster",
            c.returns.clone(),
        );
        sub.register(
            "identity_rotations",
            "Workload certificate rotations",
            c.rotations.clone(),
        );
        sub.register(
            "identity_reload_failures",
            "Workload certificate reloads refused (the previous certificate keeps serving)",
            c.identity_failures.clone(),
        );
        sub.register(
            "identity_expiry_warnings",
            "Warnings that the workload certificate expires soon or has expired",
            c.expiry_warnings.clone(),
        );
        sub.register(
            "config_watch_errors",
            "Failures of the config file watcher",
            c.watch_errors.clone(),
        );
        sub.register(
            "events_missed",
            "Mesh events the counters missed because they fell behind the event channel",
            c.missed.clone(),
        );
        c
    }

    /// Counts one event.
    pub(crate) fn count(&self, event: &MeshEvent) {
        match event {
            MeshEvent::Retried { cluster } => {
                self.retries
                    .get_or_create(&[("cluster", cluster.to_string())])
                    .inc();
            }
            MeshEvent::RetryRefused { cluster, limit } => {
                self.retries_refused
                    .get_or_create(&[
                        ("cluster", cluster.to_string()),
                        ("limit", (*limit).to_string()),
                    ])
                    .inc();
            }
            MeshEvent::Ejected {
                cluster, reason, ..
            } => {
                self.ejections
                    .get_or_create(&[
                        ("cluster", cluster.to_string()),
                        ("reason", (*reason).to_string()),
                    ])
                    .inc();
            }
            MeshEvent::Returned { cluster, .. } => {
                self.returns
                    .get_or_create(&[("cluster", cluster.to_string())])
                    .inc();
            }
            MeshEvent::Identity(IdentityEvent::Rotated { .. }) => {
                self.rotations.inc();
            }
            MeshEvent::Identity(IdentityEvent::ReloadFailed { .. }) => {
                self.identity_failures.inc();
            }
            MeshEvent::Identity(IdentityEvent::Expiring(_)) => {
                self.expiry_warnings.inc();
            }
            MeshEvent::WatchError { .. } => {
                self.watch_errors.inc();
            }
            // Counted where they happen (`tower_mesh_config_reloads_total`).
            MeshEvent::Reloaded { .. } | MeshEvent::ReloadFailed { .. } => {}
        }
    }

    /// Counts the events of `rx` until the channel closes (when the mesh is dropped).
    pub(crate) async fn run(self, mut rx: broadcast::Receiver<MeshEvent>) {
        loop {
            match rx.recv().await {
                Ok(event) => self.count(&event),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.missed.inc_by(n);
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }

    /// Spawns [`run`](Self::run) on the current tokio runtime; without one, says so (the
    /// counters then stay at zero).
    pub(crate) fn spawn(self, rx: broadcast::Receiver<MeshEvent>) {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(self.run(rx));
            }
            Err(_) => tracing::warn!(
                "tower-mesh: the mesh was built outside a tokio runtime; the tower_mesh_* event counters (retries refused, ejections, identity) will stay at 0"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::state::ClusterKey;
    use prometheus_client::encoding::text::encode;

    #[tokio::test]
    async fn events_are_counted_by_cluster_and_reason() {
        let mut registry = Registry::default();
        let c = EventCounters::register(&mut registry);
        let (tx, rx) = broadcast::channel(16);
        let task = tokio::spawn(c.run(rx));
        let cluster = ClusterKey::new("my-app.default.svc.cluster.local", None, 80);
        let addr: std::net::SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        for _ in 0..2 {
            let _ = tx.send(MeshEvent::RetryRefused {
                cluster: cluster.clone(),
                limit: "trafficPolicy.retryBudget",
            });
        }
        for _ in 0..3 {
            let _ = tx.send(MeshEvent::Retried {
                cluster: cluster.clone(),
            });
        }
        let _ = tx.send(MeshEvent::Ejected {
            cluster: cluster.clone(),
            addr,
            until: std::time::Instant::now(),
            reason: "CONSECUTIVE_5XX",
        });
        let _ = tx.send(MeshEvent::Returned {
            cluster: cluster.clone(),
            addr,
        });
        drop(tx);
        task.await.expect("the task ends when the channel closes");
        let mut t = String::new();
        encode(&mut t, &registry).expect("encodes");
        for line in [
            "tower_mesh_retries_total{cluster=\"outbound|80||my-app.default.svc.cluster.local\"} 3",
            "tower_mesh_retries_refused_total{cluster=\"outbound|80||my-app.default.svc.cluster.local\",limit=\"trafficPolicy.retryBudget\"} 2",
            "tower_mesh_outlier_ejections_total{cluster=\"outbound|80||my-app.default.svc.cluster.local\",reason=\"CONSECUTIVE_5XX\"} 1",
            "tower_mesh_outlier_returns_total{cluster=\"outbound|80||my-app.default.svc.cluster.local\"} 1",
            "tower_mesh_events_missed_total 0",
        ] {
            assert!(t.contains(line), "missing {line:?} in\n{t}");
        }
    }

    #[tokio::test]
    async fn events_missed_by_a_slow_reader_are_counted() {
        let mut registry = Registry::default();
        let c = EventCounters::register(&mut registry);
        let (tx, rx) = broadcast::channel(2);
        for _ in 0..5 {
            let _ = tx.send(MeshEvent::WatchError {
                message: "x".into(),
            });
        }
        drop(tx);
        c.run(rx).await;
        let mut t = String::new();
        encode(&mut t, &registry).expect("encodes");
        assert!(t.contains("tower_mesh_events_missed_total 3"), "{t}");
        assert!(t.contains("tower_mesh_config_watch_errors_total 2"), "{t}");
    }
}
