//! `/config_dump`: the compiled snapshot as JSON (Envoy's `/config_dump`, in Istio's words).

use std::time::Duration;

use serde_json::{Value, json};

use crate::Mesh;
use crate::config::destination_rule::{
    ClientTlsSettings, ConnectionPoolSettings, LbPolicy, LoadBalancerSettings, OutlierDetection,
};
use crate::mesh::{ReloadOutcome, ReloadStatus};
use crate::resilience::circuit::CircuitLimits;
use crate::route::action::RouteAction;
use crate::route::matcher::{HttpMatcher, StringMatcher};
use crate::route::table::CompiledRoute;
use crate::snapshot::{Cluster, Provenance, Snapshot};
use crate::validate::ValidationError;

use super::time::rfc3339;

/// The `/config_dump` document of `mesh`: the snapshot serving (version, settings, every
/// source resource, virtual hosts with their routes, clusters with their policies,
/// DestinationRules, inbound policies) and the last reload's outcome.
///
/// `status` sums it up in one line: `serving version 1, last reload failed: …`.
pub fn config_dump_json(mesh: &Mesh) -> Value {
    let snapshot = mesh.snapshot();
    let reload = mesh.reload_status();
    snapshot_json(&snapshot, &reload)
}

fn snapshot_json(snapshot: &Snapshot, reload: &ReloadStatus) -> Value {
    let settings = snapshot.settings();
    let mut vhosts: Vec<_> = snapshot.virtual_hosts().collect();
    vhosts.sort_by(|a, b| a.host().cmp(b.host()));
    let mut clusters: Vec<_> = snapshot.clusters().collect();
    clusters.sort_by(|a, b| a.key().cmp(b.key()));
    let mut drs: Vec<_> = snapshot.destination_rules().iter().collect();
    drs.sort_by(|a, b| a.host().cmp(b.host()));
    json!({
        "version": snapshot.version(),
        "status": status_line(snapshot.version(), reload),
        "reload": reload_json(reload),
        "settings": {
            "namespace": settings.source.namespace,
            "labels": settings.source.labels,
            "gateway": settings.gateway,
            "cluster_domain": settings.cluster_domain.as_str(),
            "root_namespace": settings.root_namespace,
            "trust_domain": settings.trust_domain,
            "locality": settings.locality,
            "outbound_policy": match settings.outbound_policy {
                crate::OutboundPolicy::AllowAny => "ALLOW_ANY",
                crate::OutboundPolicy::RegistryOnly => "REGISTRY_ONLY",
            },
        },
        "resources": snapshot.sources().iter().map(|p| provenance(p)).collect::<Vec<_>>(),
        "virtual_hosts": vhosts.iter().map(|v| json!({
            "host": &**v.host(),
            "routes": v.routes().map(|t| t.routes().iter().map(|r| route_json(r)).collect::<Vec<_>>()),
        })).collect::<Vec<_>>(),
        "clusters": clusters.iter().map(|c| cluster_json(c)).collect::<Vec<_>>(),
        "destination_rules": drs.iter().map(|d| {
            let rule = d.rule();
            json!({
                "host": d.host(),
                "sources": d.sources().iter().map(provenance).collect::<Vec<_>>(),
                "traffic_policy_source": d.traffic_policy_source().map(provenance),
                "subsets": rule.subsets.iter().map(|s| json!({
                    "name": s.name,
                    "labels": s.labels,
                    "source": d.subset_source(&s.name).map(provenance),
                })).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
        "policies": policies_json(snapshot),
    })
}

/// `serving version N`, and how the last reload went.
fn status_line(version: u64, reload: &ReloadStatus) -> String {
    match &reload.last {
        None => format!("serving version {version}"),
        Some(last) => match &last.outcome {
            ReloadOutcome::Ok { .. } => format!(
                "serving version {version}, last reload ok at {}",
                rfc3339(last.at)
            ),
            ReloadOutcome::Failed { message, .. } => format!(
                "serving version {version}, last reload failed at {}: {message}",
                rfc3339(last.at)
            ),
        },
    }
}

fn reload_json(reload: &ReloadStatus) -> Value {
    let last = reload.last.as_ref().map(|last| match &last.outcome {
        ReloadOutcome::Ok { version } => json!({
            "at": rfc3339(last.at),
            "ok": true,
            "version": version,
        }),
        ReloadOutcome::Failed { message, errors } => json!({
            "at": rfc3339(last.at),
            "ok": false,
            "message": &**message,
            "errors": errors.iter().map(validation_error).collect::<Vec<_>>(),
        }),
    });
    json!({
        "serving": reload.serving,
        "serving_since": rfc3339(reload.serving_since),
        "last": last,
    })
}

/// A validation error: its text, and where it points.
pub(super) fn validation_error(e: &ValidationError) -> Value {
    json!({
        "severity": format!("{:?}", e.severity).to_ascii_lowercase(),
        "resource": e.resource.as_ref().map(|r| json!({
            "kind": r.kind.as_str(),
            "namespace": r.namespace,
            "name": r.name,
        })),
        "path": e.path,
        "message": e.message,
        "rule": e.rule,
        "file": e.source.file.as_ref().map(|f| f.display().to_string()),
        "line": e.source.line,
        "text": e.to_string(),
    })
}

/// The resource an entry came from.
fn provenance(p: &Provenance) -> Value {
    json!({
        "kind": p.kind.as_str(),
        "namespace": p.namespace,
        "name": p.name,
        "file": p.source.file.as_ref().map(|f| f.display().to_string()),
        "line": p.source.line,
    })
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn string_matcher(m: &StringMatcher) -> Value {
    match m {
        StringMatcher::Exact { value, ignore_case } => {
            json!({"exact": &**value, "ignore_case": ignore_case})
        }
        StringMatcher::Prefix { value, ignore_case } => {
            json!({"prefix": &**value, "ignore_case": ignore_case})
        }
        StringMatcher::Regex(r) => json!({"regex": r.regex().as_str()}),
        StringMatcher::Present => json!({"present": true}),
    }
}

fn matcher_json(m: &HttpMatcher) -> Value {
    json!({
        "name": m.name(),
        "uri": m.uri().map(string_matcher),
        "gateways": m.gateways(),
        "catch_all": m.is_catch_all(),
    })
}

fn route_json(r: &CompiledRoute) -> Value {
    let action = match r.action() {
        RouteAction::Forward(f) => json!({
            "route": f.destinations().iter().map(|d| json!({
                "host": &**d.host(),
                "subset": d.subset().map(|s| &**s),
                "port": d.port(),
                "weight": d.weight(),
            })).collect::<Vec<_>>(),
            "rewrite": f.rewrite().is_some(),
        }),
        RouteAction::Redirect(redirect) => json!({
            "redirect": {"code": redirect.code().as_u16()},
        }),
        RouteAction::DirectResponse(d) => json!({
            "direct_response": {
                "status": d.status().as_u16(),
                "body_bytes": d.body().map(bytes::Bytes::len),
            },
        }),
    };
    json!({
        "name": r.name(),
        "source": provenance(r.provenance()),
        "delegated_from": r.root_provenance().map(|p| provenance(p)),
        "match": r.blocks().iter().map(|b| json!({
            "name": b.name(),
            "matchers": b.matchers().iter().map(matcher_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "action": action,
        "timeout_ms": r.timeout().map(millis),
        "retries": r.retries().map(|h| json!({
            "attempts": h.attempts,
            "per_try_timeout_ms": h.per_try_timeout.map(millis),
            "retry_on": h.retry_on,
            "backoff_ms": h.backoff.map(millis),
        })),
        "fault": r.fault().map(|f| json!({
            "delay": f.delay.as_ref().map(|d| json!({
                "fixed_delay_ms": d.fixed_delay.map(millis),
                "percentage": d.percentage.map(|p| p.value()),
            })),
            "abort": f.abort.as_ref().map(|a| json!({
                "http_status": a.http_status,
                "grpc_status": a.grpc_status,
                "percentage": a.percentage.map(|p| p.value()),
            })),
        })),
        "mirrors": r.mirrors().iter().map(|m| json!({
            "host": &**m.host(),
            "subset": m.subset().map(|s| &**s),
            "port": m.port(),
            "percentage": m.percentage().value(),
        })).collect::<Vec<_>>(),
    })
}

fn cluster_json(c: &Cluster) -> Value {
    let key = c.key();
    let policy = c.policy();
    let limits = CircuitLimits::of(c);
    json!({
        "name": key.to_string(),
        "host": &*key.host,
        "subset": key.subset.as_deref(),
        "port": key.port,
        "protocol": match c.protocol_for(http::Version::HTTP_11) {
            crate::pool::UpstreamProtocol::Http1 => "HTTP/1.1",
            crate::pool::UpstreamProtocol::Http2 => "HTTP/2",
            crate::pool::UpstreamProtocol::Alpn => "ALPN (h2 or HTTP/1.1)",
        },
        "source": c.provenance().map(|p| provenance(p)),
        "load_balancer": lb_json(policy.load_balancer.as_ref()),
        "connection_pool": pool_json(policy.connection_pool.as_ref()),
        "circuit_limits": {
            "max_connections": limits.max_connections,
            "max_pending_requests": limits.max_pending_requests,
            "max_requests": limits.max_requests,
            "max_retries": limits.max_retries,
        },
        "outlier_detection": policy.outlier_detection.as_ref().map(outlier_json),
        "tls": policy.tls.as_ref().map(tls_json),
        "retry_budget": policy.retry_budget.as_ref().map(|b| json!({
            "percent": b.percent,
            "min_retry_concurrency": b.min_retry_concurrency,
            "budget_interval_ms": b.budget_interval.map(millis),
        })),
    })
}

fn lb_json(lb: Option<&LoadBalancerSettings>) -> Value {
    let Some(lb) = lb else {
        return json!({"simple": "LEAST_REQUEST", "default": true});
    };
    match &lb.lb_policy {
        Some(LbPolicy::Simple(s)) => json!({"simple": s.as_str()}),
        Some(LbPolicy::ConsistentHash(h)) => {
            use crate::config::destination_rule::{HashAlgorithm, HashKey};
            let key = match &h.hash_key {
                Some(HashKey::HttpHeaderName(n)) => json!({"http_header_name": n}),
                Some(HashKey::HttpCookie(c)) => {
                    json!({"http_cookie": {"name": c.name, "path": c.path}})
                }
                Some(HashKey::UseSourceIp(b)) => json!({"use_source_ip": b}),
                Some(HashKey::HttpQueryParameterName(n)) => {
                    json!({"http_query_parameter_name": n})
                }
                None => Value::Null,
            };
            let table = match &h.hash_algorithm {
                Some(HashAlgorithm::Maglev(_)) => "maglev",
                Some(HashAlgorithm::RingHash(_)) | None => "ring_hash",
            };
            json!({"consistent_hash": {"key": key, "table": table}})
        }
        Some(LbPolicy::BackendUtilization(_)) => json!({"backend_utilization": true}),
        None => json!({"simple": "LEAST_REQUEST", "default": true}),
    }
}

fn pool_json(pool: Option<&ConnectionPoolSettings>) -> Value {
    let Some(pool) = pool else {
        return Value::Null;
    };
    json!({
        "tcp": pool.tcp.as_ref().map(|t| json!({
            "max_connections": t.max_connections,
            "connect_timeout_ms": t.connect_timeout.map(millis),
            "max_connection_duration_ms": t.max_connection_duration.map(millis),
            "idle_timeout_ms": t.idle_timeout.map(millis),
        })),
        "http": pool.http.as_ref().map(|h| json!({
            "http1_max_pending_requests": h.http1_max_pending_requests,
            "http2_max_requests": h.http2_max_requests,
            "max_requests_per_connection": h.max_requests_per_connection,
            "max_retries": h.max_retries,
            "idle_timeout_ms": h.idle_timeout.map(millis),
            "h2_upgrade_policy": h.h2_upgrade_policy.map(|p| p.as_str()),
            "use_client_protocol": h.use_client_protocol,
            "max_concurrent_streams": h.max_concurrent_streams,
        })),
    })
}

fn outlier_json(od: &OutlierDetection) -> Value {
    json!({
        "consecutive_5xx_errors": od.consecutive_5xx_errors,
        "consecutive_gateway_errors": od.consecutive_gateway_errors,
        "split_external_local_origin_errors": od.split_external_local_origin_errors,
        "consecutive_local_origin_failures": od.consecutive_local_origin_failures,
        "interval_ms": od.interval.map(millis),
        "base_ejection_time_ms": od.base_ejection_time.map(millis),
        "max_ejection_percent": od.max_ejection_percent,
        "min_health_percent": od.min_health_percent,
    })
}

/// `tls` without secrets: file paths are shown, never their contents.
fn tls_json(tls: &ClientTlsSettings) -> Value {
    let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
    json!({
        "mode": tls.mode.map(|m| m.as_str()),
        "client_certificate": non_empty(&tls.client_certificate),
        "private_key": non_empty(&tls.private_key),
        "ca_certificates": non_empty(&tls.ca_certificates),
        "credential_name": non_empty(&tls.credential_name),
        "subject_alt_names": tls.subject_alt_names,
        "sni": non_empty(&tls.sni),
        "insecure_skip_verify": tls.insecure_skip_verify,
    })
}

/// PeerAuthentication, RequestAuthentication and AuthorizationPolicy as compiled for this
/// workload, each policy with its resource (found by kind and `namespace/name` among the
/// snapshot's sources).
fn policies_json(snapshot: &Snapshot) -> Value {
    use crate::config::Kind;
    let security = snapshot.security();
    let source_of = |kind: Kind, key: &str| -> Value {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        snapshot
            .sources()
            .iter()
            .find(|p| p.kind == kind && p.namespace == ns && p.name == name)
            .map_or_else(
                || json!({"kind": kind.as_str(), "namespace": ns, "name": name}),
                |p| provenance(p),
            )
    };
    let selected = security.peer.selected();
    let peer_source = |s: &Option<std::sync::Arc<str>>| {
        s.as_deref().map(|k| source_of(Kind::PeerAuthentication, k))
    };
    json!({
        "peer_authentication": {
            "mode": security.peer.workload_mode().as_str(),
            "port_modes": security.peer.port_modes()
                .map(|(port, mode)| json!({"port": port, "mode": mode.as_str()}))
                .collect::<Vec<_>>(),
            "mesh": peer_source(&selected.mesh),
            "namespace": peer_source(&selected.namespace),
            "workload": peer_source(&selected.workload),
        },
        "request_authentication": {
            "issuers": security.jwt.issuers().collect::<Vec<_>>(),
        },
        "authorization_policies": security.authz.policy_names()
            .map(|n| source_of(Kind::AuthorizationPolicy, n))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: my-app, namespace: default}
spec:
  hosts: [my-app.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 127.0.0.1, ports: {http: 18081}, labels: {version: v1}}
  - {address: 127.0.0.1, ports: {http: 18082}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: my-app, namespace: default}
spec:
  host: my-app
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {http: {http2MaxRequests: 7}}
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: my-app, namespace: default}
spec:
  hosts: [my-app]
  http:
  - name: split
    match: [{uri: {prefix: /api}}]
    timeout: 2s
    route:
    - {destination: {host: my-app, subset: v1}, weight: 80}
    - {destination: {host: my-app, subset: v2}, weight: 20}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-all, namespace: default}
spec:
  rules: [{}]
"#;

    fn mesh() -> Mesh {
        match Mesh::builder().config_str("mesh.yaml", CONFIG).build() {
            Ok(m) => m,
            Err(e) => panic!("config refused: {e}"),
        }
    }

    #[test]
    fn routes_carry_their_match_weights_and_source() {
        let dump = config_dump_json(&mesh());
        assert_eq!(dump["version"], 1);
        assert_eq!(dump["status"], "serving version 1");
        let vhosts = dump["virtual_hosts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let Some(vh) = vhosts
            .iter()
            .find(|v| v["host"] == "my-app.default.svc.cluster.local")
        else {
            panic!("no vhost in {dump:#}")
        };
        let route = &vh["routes"][0];
        assert_eq!(route["name"], "split");
        assert_eq!(route["source"]["kind"], "VirtualService");
        assert_eq!(route["source"]["name"], "my-app");
        assert_eq!(route["source"]["file"], "mesh.yaml");
        assert_eq!(route["timeout_ms"], 2000.0);
        assert_eq!(route["match"][0]["matchers"][0]["uri"]["prefix"], "/api");
        let dests = &route["action"]["route"];
        assert_eq!(dests[0]["subset"], "v1");
        assert_eq!(dests[0]["weight"], 80);
        assert_eq!(dests[1]["subset"], "v2");
        assert_eq!(dests[1]["weight"], 20);
    }

    #[test]
    fn clusters_carry_their_policies_and_source() {
        let dump = config_dump_json(&mesh());
        let clusters = dump["clusters"].as_array().cloned().unwrap_or_default();
        let names: Vec<_> = clusters.iter().map(|c| c["name"].clone()).collect();
        assert_eq!(
            names,
            [
                "outbound|80||my-app.default.svc.cluster.local",
                "outbound|80|v1|my-app.default.svc.cluster.local",
                "outbound|80|v2|my-app.default.svc.cluster.local",
            ],
        );
        let Some(v1) = clusters.get(1) else {
            panic!("no cluster")
        };
        assert_eq!(v1["source"]["kind"], "ServiceEntry");
        assert_eq!(v1["load_balancer"]["simple"], "ROUND_ROBIN");
        assert_eq!(v1["circuit_limits"]["max_requests"], 7);
        assert_eq!(v1["outlier_detection"]["consecutive_5xx_errors"], 3);
        assert_eq!(v1["outlier_detection"]["base_ejection_time_ms"], 30000.0);
        let dr = &dump["destination_rules"][0];
        assert_eq!(dr["sources"][0]["kind"], "DestinationRule");
        assert_eq!(dr["subsets"][1]["name"], "v2");
        let authz = &dump["policies"]["authorization_policies"][0];
        assert_eq!(authz["kind"], "AuthorizationPolicy");
        assert_eq!(authz["name"], "allow-all");
        assert_eq!(authz["file"], "mesh.yaml");
        assert_eq!(dump["resources"].as_array().map(Vec::len), Some(4));
    }
}
