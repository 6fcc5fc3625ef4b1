//! `networking.istio.io` Sidecar: scopes the configuration of the proxies it selects: which
//! inbound ports they listen on, which hosts they can reach (the visibility filter on
//! VirtualServices, DestinationRules and ServiceEntries), and what happens to traffic to
//! unknown destinations.
//!
//! Istio's Sidecar reuses messages of other kinds, and so does this model: `ingress[].tls` is
//! the Gateway's [`ServerTlsSettings`], `ingress[].connectionPool` and
//! `inboundConnectionPool` are the DestinationRule's [`ConnectionPoolSettings`], and
//! `outboundTrafficPolicy.egressProxy` is the VirtualService's [`Destination`] (the CRD
//! schemas of these fields are identical).

use crate::config::common::WorkloadSelector;
use crate::config::decode::{Cx, Decode, Fields};
use crate::config::destination_rule::ConnectionPoolSettings;
use crate::config::gateway::ServerTlsSettings;
use crate::config::virtual_service::Destination;
use crate::path::FieldPath;
use crate::yaml::Node;

/// The `spec` of a Sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Sidecar {
    /// `workloadSelector`: the workloads it applies to; absent = every workload of the
    /// namespace without a more specific Sidecar (at most one such default per namespace).
    pub workload_selector: Option<WorkloadSelector>,
    /// `ingress`: inbound listeners; absent = one per port of the workload's services.
    pub ingress: Vec<IstioIngressListener>,
    /// `egress`: outbound listeners and the hosts they may reach; absent = every host of
    /// every namespace (subject to `exportTo`).
    pub egress: Vec<IstioEgressListener>,
    /// `outboundTrafficPolicy`: traffic to destinations not in the registry; absent = the
    /// mesh-wide setting.
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// `inboundConnectionPool`: connection pool for every inbound listener (per-listener
    /// `connectionPool` overrides it); absent = Envoy's defaults.
    pub inbound_connection_pool: Option<ConnectionPoolSettings>,
}

/// An `ingress[]` entry (Istio's `IstioIngressListener`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct IstioIngressListener {
    /// `port` (required): the port the listener accepts traffic on.
    pub port: Option<SidecarPort>,
    /// `bind`: the IP the listener binds to; empty = the instance IP / all interfaces.
    pub bind: String,
    /// `captureMode`: how traffic reaches the listener; absent = `DEFAULT`.
    pub capture_mode: Option<CaptureMode>,
    /// `defaultEndpoint`: where inbound traffic is forwarded: `127.0.0.1:PORT`,
    /// `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT` or `unix:///path`; empty = the instance
    /// IP and the listener port.
    pub default_endpoint: String,
    /// `tls`: TLS termination for traffic arriving from outside the mesh.
    pub tls: Option<ServerTlsSettings>,
    /// `connectionPool`: connection pool for this listener; absent = `inboundConnectionPool`.
    pub connection_pool: Option<ConnectionPoolSettings>,
}

/// An `egress[]` entry (Istio's `IstioEgressListener`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct IstioEgressListener {
    /// `port`: the listener's port; absent = a catch-all listener for every port (at most one,
    /// and it must be the last).
    pub port: Option<SidecarPort>,
    /// `bind`: the IP or `unix://` socket the listener binds to; empty = decided by the
    /// capture mode.
    pub bind: String,
    /// `captureMode`: how traffic reaches the listener; absent = `DEFAULT`.
    pub capture_mode: Option<CaptureMode>,
    /// `hosts` (required): `namespace/dnsName` entries selecting what the listener exposes
    /// (namespace `*`, `.`, `~` or a name; dnsName FQDN, wildcard prefix or `*`).
    pub hosts: Vec<String>,
}

/// A listener port (Istio's `SidecarPort`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SidecarPort {
    /// `number`: the port number; 0 = a Unix domain socket listener (egress only).
    pub number: u32,
    /// `protocol`: as for service ports (`HTTP`, `HTTPS`, `GRPC`, `HTTP2`, `TCP`, `TLS`, ...,
    /// case-insensitive); empty = detected by sniffing.
    pub protocol: String,
    /// `name`: a DNS label, optional.
    pub name: String,
    /// `targetPort`: deprecated, has no effect on Sidecars (0 when absent).
    pub target_port: u32,
}

crate::istio_enum! {
    /// `captureMode` of a listener.
    pub enum CaptureMode {
        /// The environment's default capture mode.
        Default => "DEFAULT",
        /// Traffic is captured by iptables redirection.
        Iptables => "IPTABLES",
        /// No capture: the application talks to the listener directly.
        None => "NONE",
    }
}

/// `outboundTrafficPolicy`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct OutboundTrafficPolicy {
    /// `mode`; absent = `REGISTRY_ONLY`.
    pub mode: Option<OutboundTrafficPolicyMode>,
    /// `egressProxy`: where `ALLOW_ANY` traffic to unknown destinations is sent instead of
    /// passing it through (only with `ALLOW_ANY`; its `host` and `port` are required).
    pub egress_proxy: Option<Destination>,
}

crate::istio_enum! {
    /// `outboundTrafficPolicy.mode`.
    pub enum OutboundTrafficPolicyMode {
        /// Only hosts in the service registry are reachable.
        RegistryOnly => "REGISTRY_ONLY",
        /// Unknown destinations are passed through (or to `egressProxy`).
        AllowAny => "ALLOW_ANY",
    }
}

impl Decode for Sidecar {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let spec = Sidecar {
            workload_selector: f.get("workloadSelector", cx),
            ingress: f.list("ingress", cx),
            egress: f.list("egress", cx),
            outbound_traffic_policy: f.get("outboundTrafficPolicy", cx),
            inbound_connection_pool: f.get("inboundConnectionPool", cx),
        };
        f.finish(cx);
        Some(spec)
    }
}

impl Decode for IstioIngressListener {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let l = IstioIngressListener {
            port: f.get("port", cx),
            bind: f.get("bind", cx).unwrap_or_default(),
            capture_mode: f.get("captureMode", cx),
            default_endpoint: f.get("defaultEndpoint", cx).unwrap_or_default(),
            tls: f.get("tls", cx),
            connection_pool: f.get("connectionPool", cx),
        };
        f.finish(cx);
        Some(l)
    }
}

impl Decode for IstioEgressListener {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let l = IstioEgressListener {
            port: f.get("port", cx),
            bind: f.get("bind", cx).unwrap_or_default(),
            capture_mode: f.get("captureMode", cx),
            hosts: f.list("hosts", cx),
        };
        f.finish(cx);
        Some(l)
    }
}

impl Decode for SidecarPort {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let p = SidecarPort {
            number: f.get("number", cx).unwrap_or(0),
            protocol: f.get("protocol", cx).unwrap_or_default(),
            name: f.get("name", cx).unwrap_or_default(),
            target_port: f.get("targetPort", cx).unwrap_or(0),
        };
        f.finish(cx);
        Some(p)
    }
}

impl Decode for OutboundTrafficPolicy {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let p = OutboundTrafficPolicy {
            mode: f.get("mode", cx),
            egress_proxy: f.get("egressProxy", cx),
        };
        f.finish(cx);
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::common::PortSelector;
    use crate::config::destination_rule::{H2UpgradePolicy, Http2KeepAlive, TcpKeepalive};
    use crate::config::gateway::{ServerTlsMode, TlsCertificate, TlsProtocol};
    use crate::config::{Loader, Spec};

    fn load(yaml: &str) -> (Sidecar, Vec<String>) {
        let set = Loader::new().load_str(yaml);
        let problems = set.problems.iter().map(|p| p.to_string()).collect();
        let Spec::Sidecar(sc) = set.resources[0].spec.clone() else {
            panic!("not a Sidecar");
        };
        (sc, problems)
    }

    const FULL: &str = "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: s, namespace: ns1}
spec:
  workloadSelector: {labels: {app: reviews}}
  ingress:
  - port: {number: 9443, protocol: HTTPS, name: https, targetPort: 0}
    bind: 0.0.0.0
    captureMode: IPTABLES
    defaultEndpoint: 127.0.0.1:8443
    tls:
      mode: SIMPLE
      httpsRedirect: false
      serverCertificate: /etc/cert.pem
      privateKey: /etc/key.pem
      caCertificates: /etc/ca.pem
      caCrl: /etc/crl.pem
      caCertCredentialName: ca-cm
      verifyCertificateSpki: [spki]
      verifyCertificateHash: [hash]
      minProtocolVersion: TLSV1_2
      maxProtocolVersion: TLSV1_3
      cipherSuites: [ECDHE-RSA-AES256-GCM-SHA384]
      ecdhCurves: [X25519]
      insecureSkipVerify: false
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
        tcpKeepalive: {probes: 3, time: 7200s, interval: 75s}
        maxConnectionDuration: 1h
        idleTimeout: 0s
      http:
        http1MaxPendingRequests: 10
        http2MaxRequests: 20
        maxRequestsPerConnection: 1
        maxRetries: 3
        idleTimeout: 30s
        h2UpgradePolicy: DO_NOT_UPGRADE
        useClientProtocol: true
        maxConcurrentStreams: 50
        http2KeepAlive: {interval: 10s, timeout: 2s}
  egress:
  - port: {number: 0, protocol: HTTP, name: uds}
    bind: unix:///var/run/egress.sock
    captureMode: NONE
    hosts: [\"./*\"]
  - hosts: [\"istio-system/*\", \"*/api.example.com\"]
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: egress.example.com, subset: v1, port: {number: 3128}}
  inboundConnectionPool:
    http: {http1MaxPendingRequests: 1024}
";

    #[test]
    fn full_sidecar_loads() {
        let (sc, problems) = load(FULL);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            sc.workload_selector
                .as_ref()
                .and_then(|s| s.labels.get("app"))
                .map(String::as_str),
            Some("reviews")
        );
        let ing = &sc.ingress[0];
        assert_eq!(
            ing.port,
            Some(SidecarPort {
                number: 9443,
                protocol: "HTTPS".into(),
                name: "https".into(),
                target_port: 0,
            })
        );
        assert_eq!(ing.bind, "0.0.0.0");
        assert_eq!(ing.capture_mode, Some(CaptureMode::Iptables));
        assert_eq!(ing.default_endpoint, "127.0.0.1:8443");
        let tls = ing.tls.as_ref().expect("tls");
        assert_eq!(tls.mode, Some(ServerTlsMode::Simple));
        assert_eq!(tls.server_certificate.as_deref(), Some("/etc/cert.pem"));
        assert_eq!(tls.private_key.as_deref(), Some("/etc/key.pem"));
        assert_eq!(tls.ca_certificates.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(tls.ca_crl.as_deref(), Some("/etc/crl.pem"));
        assert_eq!(tls.ca_cert_credential_name.as_deref(), Some("ca-cm"));
        assert_eq!(tls.verify_certificate_spki, ["spki"]);
        assert_eq!(tls.verify_certificate_hash, ["hash"]);
        assert_eq!(tls.min_protocol_version, Some(TlsProtocol::TlsV1_2));
        assert_eq!(tls.max_protocol_version, Some(TlsProtocol::TlsV1_3));
        assert_eq!(tls.cipher_suites, ["ECDHE-RSA-AES256-GCM-SHA384"]);
        assert_eq!(tls.ecdh_curves, ["X25519"]);
        assert_eq!(tls.insecure_skip_verify, Some(false));
        let pool = ing.connection_pool.as_ref().expect("pool");
        let tcp = pool.tcp.as_ref().expect("tcp");
        assert_eq!(tcp.max_connections, Some(100));
        assert_eq!(tcp.connect_timeout, Some(Duration::from_millis(30)));
        assert_eq!(
            tcp.tcp_keepalive,
            Some(TcpKeepalive {
                probes: Some(3),
                time: Some(Duration::from_secs(7200)),
                interval: Some(Duration::from_secs(75)),
            })
        );
        assert_eq!(tcp.max_connection_duration, Some(Duration::from_secs(3600)));
        assert_eq!(tcp.idle_timeout, Some(Duration::ZERO));
        let http = pool.http.as_ref().expect("http");
        assert_eq!(
            (
                http.http1_max_pending_requests,
                http.http2_max_requests,
                http.max_requests_per_connection,
                http.max_retries,
                http.max_concurrent_streams
            ),
            (Some(10), Some(20), Some(1), Some(3), Some(50))
        );
        assert_eq!(http.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(http.h2_upgrade_policy, Some(H2UpgradePolicy::DoNotUpgrade));
        assert!(http.use_client_protocol);
        assert_eq!(
            http.http2_keep_alive,
            Some(Http2KeepAlive {
                interval: Some(Duration::from_secs(10)),
                timeout: Some(Duration::from_secs(2)),
            })
        );
        let uds = &sc.egress[0];
        assert_eq!(uds.port.as_ref().map(|p| p.number), Some(0));
        assert_eq!(uds.bind, "unix:///var/run/egress.sock");
        assert_eq!(uds.capture_mode, Some(CaptureMode::None));
        assert_eq!(uds.hosts, ["./*"]);
        assert_eq!(sc.egress[1].port, None);
        assert_eq!(sc.egress[1].hosts, ["istio-system/*", "*/api.example.com"]);
        let otp = sc.outbound_traffic_policy.as_ref().expect("otp");
        assert_eq!(otp.mode, Some(OutboundTrafficPolicyMode::AllowAny));
        assert_eq!(
            otp.egress_proxy,
            Some(Destination {
                host: "egress.example.com".into(),
                subset: "v1".into(),
                port: Some(PortSelector { number: 3128 }),
            })
        );
        let inbound = sc.inbound_connection_pool.as_ref().expect("inbound");
        assert_eq!(
            inbound
                .http
                .as_ref()
                .and_then(|h| h.http1_max_pending_requests),
            Some(1024)
        );
    }

    #[test]
    fn tls_certificate_fields_and_snake_case() {
        let (sc, problems) = load(
            "apiVersion: networking.istio.io/v1beta1
kind: Sidecar
metadata: {name: s}
spec:
  inbound_connection_pool:
    tcp: {connect_timeout: 1s, tcp_keepalive: {probes: 1}}
  outbound_traffic_policy: {mode: REGISTRY_ONLY}
  ingress:
  - port: {number: 80}
    default_endpoint: unix:///sock
    capture_mode: DEFAULT
    tls:
      https_redirect: true
      credential_name: c
      credential_names: [a, b]
      subject_alt_names: [x]
      tls_certificates: [{server_certificate: s, private_key: k, ca_certificates: c}]
",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let tcp = sc
            .inbound_connection_pool
            .as_ref()
            .and_then(|p| p.tcp.as_ref())
            .expect("tcp");
        assert_eq!(tcp.connect_timeout, Some(Duration::from_secs(1)));
        assert_eq!(tcp.tcp_keepalive.and_then(|k| k.probes), Some(1));
        let ing = &sc.ingress[0];
        assert_eq!(ing.default_endpoint, "unix:///sock");
        assert_eq!(ing.capture_mode, Some(CaptureMode::Default));
        let tls = ing.tls.as_ref().expect("tls");
        assert!(tls.https_redirect);
        assert_eq!(tls.credential_name.as_deref(), Some("c"));
        assert_eq!(tls.credential_names(), ["a", "b"]);
        assert_eq!(tls.subject_alt_names, ["x"]);
        assert_eq!(
            tls.tls_certificates(),
            [TlsCertificate {
                server_certificate: Some("s".into()),
                private_key: Some("k".into()),
                ca_certificates: Some("c".into()),
            }]
        );
    }

    #[test]
    fn bad_values_are_reported() {
        let (_, problems) = load(
            "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: s}
spec:
  outboundTrafficPolicy: {mode: ALLOW_ANY_DYNAMIC_DNS}
  egress:
  - hosts: [\"*/*\"]
    captureMode: SOMETIMES
    extra: true
  inboundConnectionPool:
    tcp: {connectTimeout: soon}
",
        );
        let all = problems.join("\n");
        assert!(
            all.contains("spec.outboundTrafficPolicy.mode: Unsupported value"),
            "{all}"
        );
        assert!(
            all.contains("spec.egress[0].captureMode: Unsupported value"),
            "{all}"
        );
        assert!(all.contains("spec.egress[0].extra: unknown field"), "{all}");
        assert!(
            all.contains("spec.inboundConnectionPool.tcp.connectTimeout: invalid duration"),
            "{all}"
        );
    }
}
