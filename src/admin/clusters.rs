//! `/clusters`: the live state of every cluster (Envoy's `/clusters`, as JSON).

use std::time::Instant;

use serde_json::{Value, json};

use crate::Mesh;
use crate::snapshot::Cluster;

use super::time::{rfc3339, wall_clock};

/// The `/clusters` document of `mesh`: for each cluster of the snapshot serving (sorted by
/// Envoy's name, `outbound|80|v1|my-app.default.svc.cluster.local`), the circuit-breaker
/// counters and, per endpoint, its address, labels, weight, locality, health (`HEALTHY`, or
/// `EJECTED` by outlier detection with until when), requests in flight and a latency
/// estimate ([`LbState::latency_ewma`](crate::balance::LbState::latency_ewma): an EWMA of
/// the time from the pick to the end of the response body, `null` before the first
/// response).
pub fn clusters_json(mesh: &Mesh) -> Value {
    let snapshot = mesh.snapshot();
    let mut clusters: Vec<_> = snapshot.clusters().collect();
    clusters.sort_by(|a, b| a.key().cmp(b.key()));
    let now = Instant::now();
    json!({
        "version": snapshot.version(),
        "clusters": clusters.iter().map(|c| cluster(c, now)).collect::<Vec<_>>(),
    })
}

fn cluster(c: &Cluster, now: Instant) -> Value {
    let state = c.state();
    let breaker = &state.circuit_breaker;
    let overflows = breaker.overflows();
    let endpoints = c.endpoints().load();
    json!({
        "name": c.key().to_string(),
        "host": &*c.key().host,
        "subset": c.key().subset.as_deref(),
        "port": c.key().port,
        "requests_total": state.requests(),
        "circuit_breaker": {
            "requests": breaker.requests(),
            "pending": breaker.pending(),
            "connections": breaker.connections(),
            "retries": breaker.retries(),
            "overflows": {
                "requests": overflows.requests,
                "pending": overflows.pending,
                "connections": overflows.connections,
                "retries": overflows.retries,
            },
        },
        "outlier_detection": c.policy().outlier_detection.is_some(),
        "ejections_overflow": state.outlier.ejections_overflow(),
        "endpoints": endpoints.iter().map(|e| {
            let until = state.outlier.ejected_until(&e.addr, now);
            json!({
                "address": e.addr.to_string(),
                "labels": &*e.labels,
                "weight": e.weight,
                "locality": e.locality.as_deref(),
                "health": if until.is_some() { "EJECTED" } else { "HEALTHY" },
                "ejected_until": until.map(|u| rfc3339(wall_clock(u, now))),
                "ejected_for_ms": until.map(|u| (u - now).as_secs_f64() * 1e3),
                "in_flight": state.lb.in_flight(e.addr),
                "latency_ewma_ms": state.lb.latency_ewma(e.addr).map(|d| d.as_secs_f64() * 1e3),
            })
        }).collect::<Vec<_>>(),
    })
}
