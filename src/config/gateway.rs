//! `networking.istio.io` Gateway: a load balancer at the edge of the mesh, listening on a set
//! of ports for a set of hosts (not the Kubernetes Gateway API's `Gateway`, which has an
//! unrelated schema in another API group).
//!
//! A VirtualService binds to a Gateway by naming it in `gateways` (`<namespace>/<name>`); its
//! hosts must then intersect the hosts of one of the gateway's servers.

use std::collections::BTreeMap;

use crate::config::decode::{Cx, Decode, Fields};
use crate::path::FieldPath;
use crate::yaml::Node;

/// The `spec` of a Gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Gateway {
    /// `selector`: labels choosing the gateway pods/VMs this configuration applies to
    /// (a plain label map, not `matchLabels`). Empty = every workload; by default the
    /// selector matches pods in all namespaces.
    pub selector: BTreeMap<String, String>,
    /// `servers`: the listeners (at least one is required).
    pub servers: Vec<Server>,
}

/// `servers[]`: one listener of the gateway: a port, the hosts served on it and how TLS is
/// handled.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Server {
    /// `port`: where the proxy listens (required).
    pub port: Option<Port>,
    /// `bind`: the IP address or `unix://` domain socket the listener binds to; absent =
    /// every address (`0.0.0.0`).
    pub bind: Option<String>,
    /// `hosts`: the hosts exposed on this port, each `[namespace/]dnsName` (required, at
    /// least one). The namespace part (`*` by default, `.` = the gateway's namespace)
    /// restricts which namespaces' VirtualServices may bind.
    pub hosts: Vec<String>,
    /// `tls`: TLS settings. Required on HTTPS/TLS ports; on plain HTTP ports only
    /// `httpsRedirect` may be used; other protocols take none.
    pub tls: Option<ServerTlsSettings>,
    /// `defaultEndpoint`: where traffic goes when nothing else matches (`127.0.0.1:PORT`
    /// or `unix://path`); absent = no default endpoint.
    pub default_endpoint: Option<String>,
    /// `name`: an optional name for the server, unique across all servers when set
    /// (used as a stats prefix).
    pub name: Option<String>,
}

/// `servers[].port`: the port a server listens on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Port {
    /// `number`: the port number (1..65535, or 0 with a `unix://` bind). Required by the
    /// schema: `None` when absent.
    pub number: Option<u32>,
    /// `protocol`: the protocol exposed on the port, case-insensitive: `HTTP`, `HTTPS`,
    /// `GRPC`, `GRPC-WEB`, `HTTP2`, `MONGO`, `MYSQL`, `REDIS`, `TCP`, `TLS`, `UDP` (and
    /// `HTTP_PROXY`). Required.
    pub protocol: String,
    /// `name`: the label of the port (required, unique across the gateway's servers).
    pub name: String,
    /// `targetPort`: deprecated; has no effect on Gateways (0 = unset).
    pub target_port: u32,
}

/// `servers[].tls` (Istio's `ServerTLSSettings`): how a server handles TLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ServerTlsSettings {
    /// `httpsRedirect`: send a 301 redirect to HTTPS for every plain HTTP request (HTTP
    /// servers only). Default `false`.
    pub https_redirect: bool,
    /// `mode`: how TLS is handled; absent = `PASSTHROUGH`.
    pub mode: Option<ServerTlsMode>,
    /// `serverCertificate`: path of the server certificate file (SIMPLE/MUTUAL without
    /// `credentialName`).
    pub server_certificate: Option<String>,
    /// `privateKey`: path of the server private key file (SIMPLE/MUTUAL without
    /// `credentialName`).
    pub private_key: Option<String>,
    /// `caCertificates`: path of the CA bundle verifying client certificates (required for
    /// MUTUAL / OPTIONAL_MUTUAL without `credentialName`).
    pub ca_certificates: Option<String>,
    /// `caCrl`: path of the certificate revocation list for client certificates.
    pub ca_crl: Option<String>,
    /// `credentialName`: the Kubernetes secret holding the certificate, key (and CA) on
    /// gateways running on Kubernetes.
    pub credential_name: Option<String>,
    /// `credentialNames`: like `credentialName`, for up to two certificates (e.g. RSA and
    /// ECDSA). The schema wants 1–2 entries when present, so an empty list written out
    /// (`Some(vec![])`) differs from an absent one (`None`).
    pub credential_names: Option<Vec<String>>,
    /// `caCertCredentialName`: for mutual TLS, the secret or config map holding only the CA
    /// certificates.
    pub ca_cert_credential_name: Option<String>,
    /// `tlsCertificates`: certificate/key file pairs; 1–2 entries when present (`None` when
    /// absent, as for `credentialNames`).
    pub tls_certificates: Option<Vec<TlsCertificate>>,
    /// `subjectAltNames`: allowed subject alternative names of client certificates.
    pub subject_alt_names: Vec<String>,
    /// `verifyCertificateSpki`: base64-encoded SHA-256 hashes of the SPKIs of authorized
    /// client certificates.
    pub verify_certificate_spki: Vec<String>,
    /// `verifyCertificateHash`: hex-encoded SHA-256 hashes of authorized client
    /// certificates.
    pub verify_certificate_hash: Vec<String>,
    /// `minProtocolVersion`: minimum TLS version; absent = `TLS_AUTO` (TLS 1.2 on servers).
    pub min_protocol_version: Option<TlsProtocol>,
    /// `maxProtocolVersion`: maximum TLS version; absent = `TLS_AUTO` (TLS 1.3).
    pub max_protocol_version: Option<TlsProtocol>,
    /// `cipherSuites`: if set, only these cipher suites (OpenSSL names); absent = Envoy's
    /// default list.
    pub cipher_suites: Vec<String>,
    /// `ecdhCurves`: if set, only these ECDH curves; absent = Envoy's defaults.
    pub ecdh_curves: Vec<String>,
    /// `insecureSkipVerify`: accept client certificates that fail verification; absent =
    /// unset (`false`).
    pub insecure_skip_verify: Option<bool>,
}

/// `tls.tlsCertificates[]`: one server certificate and key (and optionally its CA bundle).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TlsCertificate {
    /// `serverCertificate`: path of the certificate file.
    pub server_certificate: Option<String>,
    /// `privateKey`: path of the private key file.
    pub private_key: Option<String>,
    /// `caCertificates`: path of the CA bundle.
    pub ca_certificates: Option<String>,
}

impl ServerTlsSettings {
    /// The effective `mode` (`PASSTHROUGH` when absent).
    pub fn effective_mode(&self) -> ServerTlsMode {
        self.mode.unwrap_or(ServerTlsMode::Passthrough)
    }

    /// `credentialNames`, empty when absent.
    pub fn credential_names(&self) -> &[String] {
        self.credential_names.as_deref().unwrap_or_default()
    }

    /// `tlsCertificates`, empty when absent.
    pub fn tls_certificates(&self) -> &[TlsCertificate] {
        self.tls_certificates.as_deref().unwrap_or_default()
    }
}

crate::istio_enum! {
    /// `tls.mode` of a gateway server.
    pub enum ServerTlsMode {
        /// Forward the connection as is, routing on SNI (the default).
        Passthrough => "PASSTHROUGH",
        /// Terminate TLS with a server certificate.
        Simple => "SIMPLE",
        /// Terminate TLS and require a client certificate verified against a CA.
        Mutual => "MUTUAL",
        /// Passthrough where the SNI encodes the destination (no VirtualService needed).
        AutoPassthrough => "AUTO_PASSTHROUGH",
        /// Terminate with Istio's mesh mTLS certificates.
        IstioMutual => "ISTIO_MUTUAL",
        /// Like MUTUAL, but a client certificate is optional (verified when sent).
        OptionalMutual => "OPTIONAL_MUTUAL",
    }
}

crate::istio_enum! {
    /// `tls.minProtocolVersion` / `tls.maxProtocolVersion`.
    pub enum TlsProtocol {
        /// Envoy's default (min TLS 1.2, max TLS 1.3 on servers).
        TlsAuto => "TLS_AUTO",
        /// TLS 1.0.
        TlsV1_0 => "TLSV1_0",
        /// TLS 1.1.
        TlsV1_1 => "TLSV1_1",
        /// TLS 1.2.
        TlsV1_2 => "TLSV1_2",
        /// TLS 1.3.
        TlsV1_3 => "TLSV1_3",
    }
}

impl Decode for Gateway {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let spec = Gateway {
            selector: f.map("selector", cx),
            servers: f.list("servers", cx),
        };
        f.finish(cx);
        Some(spec)
    }
}

impl Decode for Server {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let server = Server {
            port: f.get("port", cx),
            bind: f.get("bind", cx),
            hosts: f.list("hosts", cx),
            tls: f.get("tls", cx),
            default_endpoint: f.get("defaultEndpoint", cx),
            name: f.get("name", cx),
        };
        f.finish(cx);
        Some(server)
    }
}

impl Decode for Port {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let port = Port {
            number: f.get("number", cx),
            protocol: f.get("protocol", cx).unwrap_or_default(),
            name: f.get("name", cx).unwrap_or_default(),
            target_port: f.get("targetPort", cx).unwrap_or(0),
        };
        f.finish(cx);
        Some(port)
    }
}

impl Decode for ServerTlsSettings {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let tls = ServerTlsSettings {
            https_redirect: f.flag("httpsRedirect", cx),
            mode: f.get("mode", cx),
            server_certificate: f.get("serverCertificate", cx),
            private_key: f.get("privateKey", cx),
            ca_certificates: f.get("caCertificates", cx),
            ca_crl: f.get("caCrl", cx),
            credential_name: f.get("credentialName", cx),
            credential_names: f.get("credentialNames", cx),
            ca_cert_credential_name: f.get("caCertCredentialName", cx),
            tls_certificates: f.get("tlsCertificates", cx),
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
        Some(tls)
    }
}

impl Decode for TlsCertificate {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let cert = TlsCertificate {
            server_certificate: f.get("serverCertificate", cx),
            private_key: f.get("privateKey", cx),
            ca_certificates: f.get("caCertificates", cx),
        };
        f.finish(cx);
        Some(cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Loader, Spec};

    fn load(yaml: &str) -> (Gateway, Vec<String>) {
        let set = Loader::new().load_str(yaml);
        let problems = set.problems.iter().map(|p| p.to_string()).collect();
        let Spec::Gateway(gw) = &set.resources[0].spec else {
            panic!("not a gateway: {:?}", set.resources[0].spec);
        };
        (gw.clone(), problems)
    }

    #[test]
    fn decodes_every_field() {
        let (gw, problems) = load(
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - name: https-main
    bind: 10.0.0.1
    defaultEndpoint: 127.0.0.1:8080
    port: {number: 443, protocol: HTTPS, name: https, targetPort: 8443}
    hosts: [prod/bookinfo.example.com, "*.example.com"]
    tls:
      httpsRedirect: false
      mode: MUTUAL
      serverCertificate: /etc/certs/server.pem
      privateKey: /etc/certs/key.pem
      caCertificates: /etc/certs/ca.pem
      caCrl: /etc/certs/crl.pem
      credentialName: cred
      credentialNames: [rsa, ecdsa]
      caCertCredentialName: ca-cred
      tlsCertificates:
      - {serverCertificate: /a.pem, privateKey: /a.key, caCertificates: /a-ca.pem}
      subjectAltNames: [spiffe://cluster.local/ns/a/sa/b]
      verifyCertificateSpki: [abc=]
      verifyCertificateHash: ["00:11"]
      minProtocolVersion: TLSV1_2
      maxProtocolVersion: TLSV1_3
      cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256]
      ecdhCurves: [X25519]
      insecureSkipVerify: true
"#,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(gw.selector["istio"], "ingressgateway");
        let s = &gw.servers[0];
        assert_eq!(s.name.as_deref(), Some("https-main"));
        assert_eq!(s.bind.as_deref(), Some("10.0.0.1"));
        assert_eq!(s.default_endpoint.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(
            s.port,
            Some(Port {
                number: Some(443),
                protocol: "HTTPS".into(),
                name: "https".into(),
                target_port: 8443,
            })
        );
        assert_eq!(s.hosts, ["prod/bookinfo.example.com", "*.example.com"]);
        let tls = s.tls.as_ref().expect("tls");
        assert!(!tls.https_redirect);
        assert_eq!(tls.mode, Some(ServerTlsMode::Mutual));
        assert_eq!(
            tls.server_certificate.as_deref(),
            Some("/etc/certs/server.pem")
        );
        assert_eq!(tls.private_key.as_deref(), Some("/etc/certs/key.pem"));
        assert_eq!(tls.ca_certificates.as_deref(), Some("/etc/certs/ca.pem"));
        assert_eq!(tls.ca_crl.as_deref(), Some("/etc/certs/crl.pem"));
        assert_eq!(tls.credential_name.as_deref(), Some("cred"));
        assert_eq!(tls.credential_names(), ["rsa", "ecdsa"]);
        assert_eq!(tls.ca_cert_credential_name.as_deref(), Some("ca-cred"));
        assert_eq!(
            tls.tls_certificates(),
            [TlsCertificate {
                server_certificate: Some("/a.pem".into()),
                private_key: Some("/a.key".into()),
                ca_certificates: Some("/a-ca.pem".into()),
            }]
        );
        assert_eq!(tls.subject_alt_names, ["spiffe://cluster.local/ns/a/sa/b"]);
        assert_eq!(tls.verify_certificate_spki, ["abc="]);
        assert_eq!(tls.verify_certificate_hash, ["00:11"]);
        assert_eq!(tls.min_protocol_version, Some(TlsProtocol::TlsV1_2));
        assert_eq!(tls.max_protocol_version, Some(TlsProtocol::TlsV1_3));
        assert_eq!(tls.cipher_suites, ["ECDHE-RSA-AES128-GCM-SHA256"]);
        assert_eq!(tls.ecdh_curves, ["X25519"]);
        assert_eq!(tls.insecure_skip_verify, Some(true));
    }

    #[test]
    fn snake_case_aliases_defaults_and_unknown_fields() {
        let (gw, problems) = load(
            r#"
apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata: {name: gw}
spec:
  servers:
  - port: {number: 80, protocol: http, name: http, target_port: 0}
    default_endpoint: unix:///var/run/app.sock
    hosts: ["*"]
    tls: {https_redirect: true, credential_name: x, min_protocol_version: TLSV1_1, tls_certificates: [{server_certificate: /c, private_key: /k}]}
  - port: {protocol: TCP, name: tcp}
    hosts: ["*"]
    bogus: 1
    tls: {mode: STRICT}
"#,
        );
        let s = &gw.servers[0];
        assert_eq!(
            s.default_endpoint.as_deref(),
            Some("unix:///var/run/app.sock")
        );
        let tls = s.tls.as_ref().expect("tls");
        assert!(tls.https_redirect);
        assert_eq!(tls.effective_mode(), ServerTlsMode::Passthrough);
        assert_eq!(tls.credential_name.as_deref(), Some("x"));
        assert_eq!(tls.min_protocol_version, Some(TlsProtocol::TlsV1_1));
        assert_eq!(tls.tls_certificates()[0].private_key.as_deref(), Some("/k"));
        assert_eq!(tls.credential_names, None);
        // Absent port number stays absent; bad enum and unknown field are reported.
        assert_eq!(gw.servers[1].port.as_ref().and_then(|p| p.number), None);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("spec.servers[1].bogus: unknown field")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("spec.servers[1].tls.mode: Unsupported value: \"STRICT\"")),
            "{problems:?}"
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
    }
}
