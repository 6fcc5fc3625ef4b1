//! Warnings for fields tower-mesh parses but does not act on, so nothing is silently ignored.
//!
//! The list is the part of Istio's API that no tower-mesh layer implements or plans to (see
//! the crate's roadmap: routing, resilience, security, proxy and telemetry). Each warning says
//! why, and what to use instead where there is something. A layer that starts honouring a
//! field removes it from here, with a test that the warning is gone.

use crate::config::destination_rule::{LbPolicy, TrafficPolicy};
use crate::config::{Resource, Spec};
use crate::path::FieldPath;
use crate::validate::{Findings, Severity};

fn warn(out: &mut Findings<'_>, path: &FieldPath<'_>, why: &str) {
    out.unnumbered(
        Severity::Warning,
        path,
        format!("parsed but not enforced by tower-mesh: {why}"),
    );
}

const NETWORK: &str = "multi-network routing (through east-west gateways) is not implemented";
const TARGET_REFS: &str =
    "policies attached through targetRef(s) are not applied yet; use a selector";

/// Warns about every field set in `res` that tower-mesh does not enforce.
pub(crate) fn check(res: &Resource, out: &mut Findings<'_>) {
    let root = FieldPath::ROOT;
    let spec = root.field("spec");
    match &res.spec {
        Spec::DestinationRule(dr) => {
            if let Some(tp) = &dr.traffic_policy {
                traffic_policy(out, &spec.field("trafficPolicy"), tp);
            }
            let subsets = spec.field("subsets");
            for (i, s) in dr.subsets.iter().enumerate() {
                if let Some(tp) = &s.traffic_policy {
                    let p = subsets.index(i);
                    traffic_policy(out, &p.field("trafficPolicy"), tp);
                }
            }
        }
        Spec::AuthorizationPolicy(ap) => {
            if ap.target_ref.is_some() || !ap.target_refs.is_empty() {
                let field = if ap.target_ref.is_some() {
                    "targetRef"
                } else {
                    "targetRefs"
                };
                warn(out, &spec.field(field), TARGET_REFS);
            }
            let rules = spec.field("rules");
            for (i, rule) in ap.rules.iter().flatten().enumerate() {
                let r = rules.index(i);
                let when = r.field("when");
                for (j, c) in rule.when.iter().enumerate() {
                    if c.key.starts_with("experimental.") {
                        let cp = when.index(j);
                        warn(
                            out,
                            &cp.field("key"),
                            "experimental Envoy filter-metadata conditions have no in-process equivalent",
                        );
                    }
                }
            }
        }
        Spec::RequestAuthentication(ra)
            if ra.target_ref.is_some() || !ra.target_refs.is_empty() =>
        {
            let field = if ra.target_ref.is_some() {
                "targetRef"
            } else {
                "targetRefs"
            };
            warn(out, &spec.field(field), TARGET_REFS);
        }
        Spec::VirtualService(vs) => {
            if !vs.tcp.is_empty() {
                warn(
                    out,
                    &spec.field("tcp"),
                    "TCP routes are not implemented; tower-mesh routes HTTP (and TLS by SNI in proxy mode)",
                );
            }
            let http = spec.field("http");
            for (i, route) in vs.http.iter().enumerate() {
                let r = http.index(i);
                let matches = r.field("match");
                for (j, m) in route.matches.iter().enumerate() {
                    if !m.stat_prefix.is_empty() {
                        let mp = matches.index(j);
                        warn(
                            out,
                            &mp.field("statPrefix"),
                            "per-route Envoy stats prefixes have no equivalent; metrics carry the route name",
                        );
                    }
                }
            }
        }
        Spec::ServiceEntry(se) => {
            if !se.addresses.is_empty() {
                warn(
                    out,
                    &spec.field("addresses"),
                    "virtual IPs are not needed in-process: requests are routed by host",
                );
            }
            let endpoints = spec.field("endpoints");
            for (i, e) in se.endpoints.iter().enumerate() {
                if !e.network.is_empty() {
                    let ep = endpoints.index(i);
                    warn(out, &ep.field("network"), NETWORK);
                }
            }
        }
        Spec::WorkloadEntry(we) if !we.network.is_empty() => {
            warn(out, &spec.field("network"), NETWORK);
        }
        Spec::Sidecar(sc) => {
            if !sc.ingress.is_empty() {
                warn(
                    out,
                    &spec.field("ingress"),
                    "inbound listeners are set in code (the inbound layer or the proxy's flags)",
                );
            }
            if sc.inbound_connection_pool.is_some() {
                warn(
                    out,
                    &spec.field("inboundConnectionPool"),
                    "inbound connection limits are set in code",
                );
            }
            let egress = spec.field("egress");
            for (i, e) in sc.egress.iter().enumerate() {
                let ep = egress.index(i);
                if e.port.is_some() || !e.bind.is_empty() || e.capture_mode.is_some() {
                    warn(
                        out,
                        &ep,
                        "egress listener ports, binds and capture modes do not apply in-process; only `hosts` (which services are visible) does",
                    );
                }
            }
            if sc
                .outbound_traffic_policy
                .as_ref()
                .is_some_and(|o| o.egress_proxy.is_some())
            {
                let op = spec.field("outboundTrafficPolicy");
                warn(
                    out,
                    &op.field("egressProxy"),
                    "unknown hosts pass through directly, not through an egress proxy",
                );
            }
        }
        Spec::Gateway(gw) => {
            let servers = spec.field("servers");
            for (i, server) in gw.servers.iter().enumerate() {
                let sp = servers.index(i);
                if server.default_endpoint.is_some() {
                    warn(
                        out,
                        &sp.field("defaultEndpoint"),
                        "gateway servers forward to their VirtualServices' destinations",
                    );
                }
                let Some(tls) = &server.tls else { continue };
                let tp = sp.field("tls");
                let secrets = [
                    ("credentialName", tls.credential_name.is_some()),
                    ("credentialNames", tls.credential_names.is_some()),
                    (
                        "caCertCredentialName",
                        tls.ca_cert_credential_name.is_some(),
                    ),
                ];
                for (field, set) in secrets {
                    if set {
                        warn(
                            out,
                            &tp.field(field),
                            "Kubernetes secrets are not read in-process; use serverCertificate, privateKey and caCertificates files",
                        );
                    }
                }
                let lists = [
                    (
                        "cipherSuites",
                        tls.cipher_suites.is_empty(),
                        "rustls' own TLS 1.2/1.3 cipher suites are used",
                    ),
                    (
                        "ecdhCurves",
                        tls.ecdh_curves.is_empty(),
                        "rustls' own key-exchange groups are used",
                    ),
                    (
                        "verifyCertificateSpki",
                        tls.verify_certificate_spki.is_empty(),
                        "client certificate pinning is not implemented",
                    ),
                    (
                        "verifyCertificateHash",
                        tls.verify_certificate_hash.is_empty(),
                        "client certificate pinning is not implemented",
                    ),
                ];
                for (field, empty, why) in lists {
                    if !empty {
                        warn(out, &tp.field(field), why);
                    }
                }
                if tls.ca_crl.is_some() {
                    warn(
                        out,
                        &tp.field("caCrl"),
                        "certificate revocation lists are not checked",
                    );
                }
            }
        }
        _ => {}
    }
}

fn traffic_policy(out: &mut Findings<'_>, path: &FieldPath<'_>, tp: &TrafficPolicy) {
    if tp.tunnel.is_some() {
        warn(
            out,
            &path.field("tunnel"),
            "tunnelling TCP over HTTP CONNECT/POST is not implemented",
        );
    }
    if tp.proxy_protocol.is_some() {
        warn(
            out,
            &path.field("proxyProtocol"),
            "the PROXY protocol header is not sent upstream",
        );
    }
    let sections = std::iter::once((None, &tp.load_balancer, &tp.connection_pool, &tp.tls)).chain(
        tp.port_level_settings
            .iter()
            .enumerate()
            .map(|(i, p)| (Some(i), &p.load_balancer, &p.connection_pool, &p.tls)),
    );
    let pls = path.field("portLevelSettings");
    for (index, lb, pool, tls) in sections {
        let indexed;
        let base: &FieldPath<'_> = match index {
            Some(i) => {
                indexed = pls.index(i);
                &indexed
            }
            None => path,
        };
        if let Some(lb) = lb {
            let lbp = base.field("loadBalancer");
            if matches!(lb.lb_policy, Some(LbPolicy::BackendUtilization(_))) {
                warn(
                    out,
                    &lbp.field("backendUtilization"),
                    "load reports (ORCA) from backends are not read; use LEAST_REQUEST",
                );
            }
            if lb.zone_aware_lb_setting.is_some() {
                warn(
                    out,
                    &lbp.field("zoneAwareLbSetting"),
                    "zone-aware routing is not implemented; localityLbSetting is",
                );
            }
            if lb
                .locality_lb_setting
                .as_ref()
                .is_some_and(|l| !l.failover_priority.is_empty())
            {
                let l = lbp.field("localityLbSetting");
                warn(
                    out,
                    &l.field("failoverPriority"),
                    "failover by label priority is not implemented; failover by region is",
                );
            }
        }
        if let Some(pool) = pool {
            let pp = base.field("connectionPool");
            if let Some(tcp) = &pool.tcp {
                let t = pp.field("tcp");
                if tcp.tcp_keepalive.is_some() {
                    warn(
                        out,
                        &t.field("tcpKeepalive"),
                        "TCP keepalive probes are left to the OS defaults",
                    );
                }
                if tcp.max_connection_duration.is_some() {
                    warn(
                        out,
                        &t.field("maxConnectionDuration"),
                        "connections are not closed by age; use maxRequestsPerConnection",
                    );
                }
            }
            if let Some(http) = &pool.http {
                let h = pp.field("http");
                if http.max_concurrent_streams.is_some() {
                    warn(
                        out,
                        &h.field("maxConcurrentStreams"),
                        "the HTTP/2 stream limit is the server's; use http2MaxRequests",
                    );
                }
                if http.http2_keep_alive.is_some() {
                    warn(
                        out,
                        &h.field("http2KeepAlive"),
                        "HTTP/2 PING keepalive is not sent",
                    );
                }
            }
        }
        if let Some(tls) = tls {
            let tp = base.field("tls");
            if !tls.credential_name.is_empty() {
                warn(
                    out,
                    &tp.field("credentialName"),
                    "Kubernetes secrets are not read in-process; use clientCertificate, privateKey and caCertificates files",
                );
            }
            if !tls.ca_crl.is_empty() {
                warn(
                    out,
                    &tp.field("caCrl"),
                    "certificate revocation lists are not checked",
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::testing::*;

    #[test]
    fn unenforced_destination_rule_fields_warn() {
        let dr = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d}
spec:
  host: reviews
  trafficPolicy:
    proxyProtocol: {version: V1}
    connectionPool:
      tcp: {tcpKeepalive: {time: 7200s}}
";
        warns(dr, "spec.trafficPolicy.proxyProtocol", "not enforced");
        warns(
            dr,
            "spec.trafficPolicy.connectionPool.tcp.tcpKeepalive",
            "not enforced",
        );
        no_finding(
            "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d}
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 10}
",
            "spec.trafficPolicy.connectionPool.tcp.maxConnections",
        );
    }

    #[test]
    fn fields_the_mesh_now_enforces_do_not_warn() {
        // exportTo and workloadSelector (snapshot visibility), warmup (balancer slow start),
        // outlierDetectionHttpErrorCodes (outlier detection).
        let dr = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: d}
spec:
  host: reviews
  exportTo: [\".\"]
  workloadSelector: {matchLabels: {app: web}}
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 60s}}
    outlierDetection: {consecutive5xxErrors: 3, outlierDetectionHttpErrorCodes: [500]}
";
        for path in [
            "spec.exportTo",
            "spec.workloadSelector",
            "spec.trafficPolicy.loadBalancer.warmup",
            "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes",
        ] {
            no_finding(dr, path);
        }
        no_finding(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: s}
spec:
  hosts: [vm.example.internal]
  exportTo: [\"*\"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: vm}}
",
            "spec.workloadSelector",
        );
    }

    #[test]
    fn unenforced_authorization_fields_warn() {
        warns(
            "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: a}
spec:
  targetRefs: [{kind: Service, group: \"\", name: reviews}]
  rules: [{}]
",
            "spec.targetRefs",
            "not enforced",
        );
    }

    #[test]
    fn unenforced_gateway_fields_warn() {
        let gw = |tls: &str| {
            format!(
                "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [\"*.example.com\"]
    tls: {tls}
"
            )
        };
        warns(
            &gw("{mode: SIMPLE, credentialName: example-cert}"),
            "spec.servers[0].tls.credentialName",
            "Kubernetes secrets",
        );
        no_finding(
            &gw("{mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}"),
            "spec.servers[0].tls.credentialName",
        );
    }

    #[test]
    fn unenforced_service_entry_and_virtual_service_fields_warn() {
        let se = |addresses: &str| {
            format!(
                "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: s}}
spec:
  hosts: [api.example.com]
  addresses: {addresses}
  ports: [{{number: 443, name: tls, protocol: TLS}}]
  resolution: DNS
"
            )
        };
        warns(&se("[10.0.0.1]"), "spec.addresses", "routed by host");
        no_finding(&se("[]"), "spec.addresses");
        warns(
            "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: v}
spec:
  hosts: [db]
  tcp:
  - route:
    - destination: {host: db}
",
            "spec.tcp",
            "TCP routes are not implemented",
        );
    }
}
