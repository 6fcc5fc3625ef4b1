//! `networking.istio.io` Sidecar: scopes the configuration of the proxies it selects: which
//! inbound ports they listen on, which hosts they can reach (the visibility filter on
//! VirtualServices, DestinationRules and ServiceEntries), and what happens to traffic to
//! unknown destinations.
//!
//! `ServerTlsSettings` and `ConnectionPoolSettings` here have the same schema as the
//! Gateway's server TLS settings and the DestinationRule's connection pool; they are defined
//! in this module so that the Sidecar model stands on its own.

use std::time::Duration;

use crate::config::common::{PortSelector, WorkloadSelector};
use crate::config::decode::{Cx, Decode, Fields};
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
    /// passing it through (only with `ALLOW_ANY`).
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

/// `outboundTrafficPolicy.egressProxy`: a destination (Istio's `Destination` shape).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Destination {
    /// `host` (required): the registry host name of the egress proxy.
    pub host: String,
    /// `subset`: a DestinationRule subset of the host; empty = none.
    pub subset: String,
    /// `port`: the port of the host; required for the egress proxy.
    pub port: Option<PortSelector>,
}

/// Server-side TLS settings of an ingress listener (the schema of Istio's
/// `ServerTLSSettings`, shared with Gateway servers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ServerTlsSettings {
    /// `httpsRedirect`: answer plain HTTP with a 301 to HTTPS (not supported on Sidecars).
    pub https_redirect: bool,
    /// `mode`; absent = `PASSTHROUGH`.
    pub mode: Option<ServerTlsMode>,
    /// `serverCertificate`: path of the server certificate file.
    pub server_certificate: String,
    /// `privateKey`: path of the private key file.
    pub private_key: String,
    /// `caCertificates`: path of the CA bundle verifying client certificates.
    pub ca_certificates: String,
    /// `caCrl`: path of the certificate revocation list for client certificates.
    pub ca_crl: String,
    /// `credentialName`: a secret holding the certificates (not supported on Sidecars).
    pub credential_name: String,
    /// `credentialNames`: one or two secrets (e.g. RSA + ECDSA; not supported on Sidecars).
    pub credential_names: Vec<String>,
    /// `tlsCertificates`: one or two inline certificate sets (not supported on Sidecars).
    pub tls_certificates: Vec<TlsCertificate>,
    /// `caCertCredentialName`: a secret or config map holding the CA certificates.
    pub ca_cert_credential_name: String,
    /// `subjectAltNames`: accepted client identities (not supported on Sidecars).
    pub subject_alt_names: Vec<String>,
    /// `verifyCertificateSpki`: base64 SHA-256 hashes of authorized client SPKIs.
    pub verify_certificate_spki: Vec<String>,
    /// `verifyCertificateHash`: hex SHA-256 hashes of authorized client certificates.
    pub verify_certificate_hash: Vec<String>,
    /// `minProtocolVersion`; absent = TLS 1.2.
    pub min_protocol_version: Option<TlsProtocol>,
    /// `maxProtocolVersion`; absent = TLS 1.3.
    pub max_protocol_version: Option<TlsProtocol>,
    /// `cipherSuites`; absent = Envoy's default list.
    pub cipher_suites: Vec<String>,
    /// `ecdhCurves`; absent = Envoy's default curves.
    pub ecdh_curves: Vec<String>,
    /// `insecureSkipVerify` (nullable): accept client certificates that fail verification.
    pub insecure_skip_verify: Option<bool>,
}

/// A `tlsCertificates[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TlsCertificate {
    /// `serverCertificate`: path of the certificate file.
    pub server_certificate: String,
    /// `privateKey`: path of the private key file.
    pub private_key: String,
    /// `caCertificates`: path of the CA bundle.
    pub ca_certificates: String,
}

crate::istio_enum! {
    /// `tls.mode` of a server.
    pub enum ServerTlsMode {
        /// Forward TLS untouched, routing on SNI (the default).
        Passthrough => "PASSTHROUGH",
        /// Terminate TLS with the server certificate.
        Simple => "SIMPLE",
        /// Terminate TLS and require a client certificate.
        Mutual => "MUTUAL",
        /// SNI-routed passthrough without routes (gateways only).
        AutoPassthrough => "AUTO_PASSTHROUGH",
        /// Mesh mTLS with Istio's certificates (gateways only).
        IstioMutual => "ISTIO_MUTUAL",
        /// Terminate TLS; verify a client certificate if one is sent.
        OptionalMutual => "OPTIONAL_MUTUAL",
    }
}

crate::istio_enum! {
    /// A TLS protocol version bound.
    pub enum TlsProtocol {
        /// Envoy's default.
        TlsAuto => "TLS_AUTO",
        /// TLS 1.0.
        Tlsv10 => "TLSV1_0",
        /// TLS 1.1.
        Tlsv11 => "TLSV1_1",
        /// TLS 1.2.
        Tlsv12 => "TLSV1_2",
        /// TLS 1.3.
        Tlsv13 => "TLSV1_3",
    }
}

/// Connection pool settings of an inbound listener (the schema of Istio's
/// `ConnectionPoolSettings`, shared with DestinationRule).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ConnectionPoolSettings {
    /// `tcp`: settings for every connection.
    pub tcp: Option<TcpSettings>,
    /// `http`: HTTP settings.
    pub http: Option<HttpSettings>,
}

/// `connectionPool.tcp`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TcpSettings {
    /// `maxConnections`: maximum HTTP/1 or TCP connections; 0 (absent) = 2^32-1.
    pub max_connections: i32,
    /// `connectTimeout`; absent = 10s.
    pub connect_timeout: Option<Duration>,
    /// `tcpKeepalive`: SO_KEEPALIVE settings; absent = no keepalive.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// `maxConnectionDuration`; absent = unlimited.
    pub max_connection_duration: Option<Duration>,
    /// `idleTimeout`; absent = 1h; `0s` disables it.
    pub idle_timeout: Option<Duration>,
}

/// `connectionPool.tcp.tcpKeepalive`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TcpKeepalive {
    /// `probes`: probes without answer before the connection is dead; 0 = the OS default.
    pub probes: u32,
    /// `time`: idle time before probing; absent = the OS default (Linux 2h).
    pub time: Option<Duration>,
    /// `interval`: time between probes; absent = the OS default (Linux 75s).
    pub interval: Option<Duration>,
}

/// `connectionPool.http`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct HttpSettings {
    /// `http1MaxPendingRequests`: requests queued while waiting for a connection; 0 (absent)
    /// = 2^32-1.
    pub http1_max_pending_requests: i32,
    /// `http2MaxRequests`: maximum active requests; 0 (absent) = 2^32-1.
    pub http2_max_requests: i32,
    /// `maxRequestsPerConnection`: 0 (absent) = unlimited; 1 disables keep-alive.
    pub max_requests_per_connection: i32,
    /// `maxRetries`: outstanding retries across the cluster; 0 (absent) = 2^32-1.
    pub max_retries: i32,
    /// `idleTimeout`: idle timeout of pooled connections; absent = 1h.
    pub idle_timeout: Option<Duration>,
    /// `h2UpgradePolicy`; absent = `DEFAULT` (the mesh setting).
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// `useClientProtocol`: keep the client's HTTP version upstream.
    pub use_client_protocol: bool,
    /// `maxConcurrentStreams`: per HTTP/2 connection; 0 (absent) = 2^31-1.
    pub max_concurrent_streams: i32,
    /// `http2KeepAlive`: HTTP/2 PING keepalive; absent = none.
    pub http2_keep_alive: Option<Http2KeepAlive>,
}

/// `connectionPool.http.http2KeepAlive`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Http2KeepAlive {
    /// `interval`: time between PING frames.
    pub interval: Option<Duration>,
    /// `timeout`: how long to wait for a PING answer before closing the connection.
    pub timeout: Option<Duration>,
}

crate::istio_enum! {
    /// `connectionPool.http.h2UpgradePolicy`.
    pub enum H2UpgradePolicy {
        /// The mesh-wide default.
        Default => "DEFAULT",
        /// Never upgrade HTTP/1.1 to HTTP/2.
        DoNotUpgrade => "DO_NOT_UPGRADE",
        /// Upgrade HTTP/1.1 connections to HTTP/2.
        Upgrade => "UPGRADE",
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

impl Decode for Destination {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let d = Destination {
            host: f.get("host", cx).unwrap_or_default(),
            subset: f.get("subset", cx).unwrap_or_default(),
            port: f.get("port", cx),
        };
        f.finish(cx);
        Some(d)
    }
}

impl Decode for ServerTlsSettings {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let t = ServerTlsSettings {
            https_redirect: f.flag("httpsRedirect", cx),
            mode: f.get("mode", cx),
            server_certificate: f.get("serverCertificate", cx).unwrap_or_default(),
            private_key: f.get("privateKey", cx).unwrap_or_default(),
            ca_certificates: f.get("caCertificates", cx).unwrap_or_default(),
            ca_crl: f.get("caCrl", cx).unwrap_or_default(),
            credential_name: f.get("credentialName", cx).unwrap_or_default(),
            credential_names: f.list("credentialNames", cx),
            tls_certificates: f.list("tlsCertificates", cx),
            ca_cert_credential_name: f.get("caCertCredentialName", cx).unwrap_or_default(),
            subject_alt_names: f.list("subjectAltNames", cx),
            verify_certificate_spki: f.list("verifyCertificateSpki", cx),
            verify_certificate_hash: f.list("verifyCertificateHash", cx),
            min_protocol_version: f.get("minProtocolVersion", cx),
            max_protocol_version: f.get("maxProtocolVersion", cx),
            cipher_suites: f.list("cipherSuites", cx),
            ecdh_curves: f.list("ecdhCurves", cx),
            insecure_skip_verify: f.get("insecureSkipVerify", cx),
        };
        f.finish(cx);
        Some(t)
    }
}

impl Decode for TlsCertificate {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let c = TlsCertificate {
            server_certificate: f.get("serverCertificate", cx).unwrap_or_default(),
            private_key: f.get("privateKey", cx).unwrap_or_default(),
            ca_certificates: f.get("caCertificates", cx).unwrap_or_default(),
        };
        f.finish(cx);
        Some(c)
    }
}

impl Decode for ConnectionPoolSettings {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let c = ConnectionPoolSettings {
            tcp: f.get("tcp", cx),
            http: f.get("http", cx),
        };
        f.finish(cx);
        Some(c)
    }
}

impl Decode for TcpSettings {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let t = TcpSettings {
            max_connections: f.get("maxConnections", cx).unwrap_or(0),
            connect_timeout: f.get("connectTimeout", cx),
            tcp_keepalive: f.get("tcpKeepalive", cx),
            max_connection_duration: f.get("maxConnectionDuration", cx),
            idle_timeout: f.get("idleTimeout", cx),
        };
        f.finish(cx);
        Some(t)
    }
}

impl Decode for TcpKeepalive {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let k = TcpKeepalive {
            probes: f.get("probes", cx).unwrap_or(0),
            time: f.get("time", cx),
            interval: f.get("interval", cx),
        };
        f.finish(cx);
        Some(k)
    }
}

impl Decode for HttpSettings {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let h = HttpSettings {
            http1_max_pending_requests: f.get("http1MaxPendingRequests", cx).unwrap_or(0),
            http2_max_requests: f.get("http2MaxRequests", cx).unwrap_or(0),
            max_requests_per_connection: f.get("maxRequestsPerConnection", cx).unwrap_or(0),
            max_retries: f.get("maxRetries", cx).unwrap_or(0),
            idle_timeout: f.get("idleTimeout", cx),
            h2_upgrade_policy: f.get("h2UpgradePolicy", cx),
            use_client_protocol: f.flag("useClientProtocol", cx),
            max_concurrent_streams: f.get("maxConcurrentStreams", cx).unwrap_or(0),
            http2_keep_alive: f.get("http2KeepAlive", cx),
        };
        f.finish(cx);
        Some(h)
    }
}

impl Decode for Http2KeepAlive {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let k = Http2KeepAlive {
            interval: f.get("interval", cx),
            timeout: f.get("timeout", cx),
        };
        f.finish(cx);
        Some(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert_eq!(tls.server_certificate, "/etc/cert.pem");
        assert_eq!(tls.private_key, "/etc/key.pem");
        assert_eq!(tls.ca_certificates, "/etc/ca.pem");
        assert_eq!(tls.ca_crl, "/etc/crl.pem");
        assert_eq!(tls.ca_cert_credential_name, "ca-cm");
        assert_eq!(tls.verify_certificate_spki, ["spki"]);
        assert_eq!(tls.verify_certificate_hash, ["hash"]);
        assert_eq!(tls.min_protocol_version, Some(TlsProtocol::Tlsv12));
        assert_eq!(tls.max_protocol_version, Some(TlsProtocol::Tlsv13));
        assert_eq!(tls.cipher_suites, ["ECDHE-RSA-AES256-GCM-SHA384"]);
        assert_eq!(tls.ecdh_curves, ["X25519"]);
        assert_eq!(tls.insecure_skip_verify, Some(false));
        let pool = ing.connection_pool.as_ref().expect("pool");
        let tcp = pool.tcp.as_ref().expect("tcp");
        assert_eq!(tcp.max_connections, 100);
        assert_eq!(tcp.connect_timeout, Some(Duration::from_millis(30)));
        assert_eq!(
            tcp.tcp_keepalive,
            Some(TcpKeepalive {
                probes: 3,
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
            (10, 20, 1, 3, 50)
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
            inbound.http.as_ref().map(|h| h.http1_max_pending_requests),
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
        assert_eq!(tcp.tcp_keepalive.as_ref().map(|k| k.probes), Some(1));
        let ing = &sc.ingress[0];
        assert_eq!(ing.default_endpoint, "unix:///sock");
        assert_eq!(ing.capture_mode, Some(CaptureMode::Default));
        let tls = ing.tls.as_ref().expect("tls");
        assert!(tls.https_redirect);
        assert_eq!(tls.credential_name, "c");
        assert_eq!(tls.credential_names, ["a", "b"]);
        assert_eq!(tls.subject_alt_names, ["x"]);
        assert_eq!(
            tls.tls_certificates,
            [TlsCertificate {
                server_certificate: "s".into(),
                private_key: "k".into(),
                ca_certificates: "c".into(),
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
