//! Validation rules for Gateway (rules 6 and 112–122).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};

use crate::config::Resource;
use crate::config::gateway::{
    Gateway, Port, Server, ServerTlsMode, ServerTlsSettings, TlsProtocol,
};
use crate::path::FieldPath;
use crate::validate::Findings;
use crate::validate::common::{Protocol, check_port, is_dns_label, validate_wildcard_domain};

/// The prefix of a `bind` naming a Unix domain socket.
const UNIX_ADDRESS_PREFIX: &str = "unix://";

/// The cipher suites Istio accepts in `tls.cipherSuites` (BoringSSL's names, without PSK).
const VALID_CIPHER_SUITES: [&str; 15] = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

/// Checks every rule for a Gateway.
pub(crate) fn check(res: &Resource, spec: &Gateway, path: &FieldPath<'_>, out: &mut Findings<'_>) {
    // Rule 112: the name is a DNS label (no dots).
    let name = &res.metadata.name;
    if !is_dns_label(name) {
        let meta = FieldPath::ROOT.field("metadata");
        out.error(
            112,
            &meta.field("name"),
            format!("invalid gateway name: {name:?}"),
        );
    }
    // Rule 113: at least one server.
    let servers_path = path.field("servers");
    if spec.servers.is_empty() {
        out.error(113, &servers_path, "gateway must have at least one server");
    }
    let mut port_names: BTreeSet<&str> = BTreeSet::new();
    for (i, server) in spec.servers.iter().enumerate() {
        let sp = servers_path.index(i);
        check_server(server, &sp, out);
        // Rule 115: port names are unique across servers; rule 117 (W): httpsRedirect on a
        // non-HTTP server.
        if let Some(port) = &server.port {
            if !port_names.insert(port.name.as_str()) {
                let pp = sp.field("port");
                out.error(
                    115,
                    &pp.field("name"),
                    format!(
                        "port names in servers must be unique: duplicate name {:?}",
                        port.name
                    ),
                );
            }
            let http = Protocol::parse(&port.protocol).is_some_and(Protocol::is_http);
            if let Some(tls) = &server.tls
                && tls.https_redirect
                && !http
            {
                let tp = sp.field("tls");
                out.warn(
                    117,
                    &tp.field("httpsRedirect"),
                    "tls.httpsRedirect should only be used with http servers",
                );
            }
        }
    }
}

/// Rules 6, 114–121 for one server.
fn check_server(server: &Server, path: &FieldPath<'_>, out: &mut Findings<'_>) {
    // Rule 114: hosts.
    let hosts_path = path.field("hosts");
    if server.hosts.is_empty() {
        out.error(
            114,
            &hosts_path,
            "server config must contain at least one host",
        );
    }
    for (i, host) in server.hosts.iter().enumerate() {
        check_host(host, &hosts_path.index(i), out);
    }
    let bind = server.bind.as_deref().unwrap_or("");
    let port_path = path.field("port");
    let port_ok = check_server_port(server.port.as_ref(), bind, &port_path, out);
    check_bind(server.port.as_ref(), bind, path, out);
    let tls_path = path.field("tls");
    if let Some(tls) = &server.tls {
        check_tls(tls, &tls_path, out);
    }
    // Rule 117: the protocol decides whether TLS settings are needed or allowed (checked only
    // when the port itself is valid, as Istio does).
    let Some(port) = server.port.as_ref().filter(|_| port_ok) else {
        return;
    };
    let Some(protocol) = Protocol::parse(&port.protocol) else {
        return;
    };
    match &server.tls {
        None if protocol.is_tls() => out.error(
            117,
            &tls_path,
            format!(
                "server must have TLS settings for HTTPS/TLS protocols (protocol {})",
                port.protocol
            ),
        ),
        Some(tls) if !protocol.is_tls() => {
            if protocol.is_http() {
                let passthrough = matches!(
                    tls.effective_mode(),
                    ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
                );
                if !passthrough
                    || is_set(&tls.ca_certificates)
                    || is_set(&tls.private_key)
                    || is_set(&tls.server_certificate)
                {
                    out.error(
                        117,
                        &tls_path,
                        "server cannot have TLS settings for plain text HTTP ports (only httpsRedirect is allowed)",
                    );
                }
            } else {
                out.error(
                    117,
                    &tls_path,
                    format!(
                        "server cannot have TLS settings for non HTTPS/TLS ports (protocol {})",
                        port.protocol
                    ),
                );
            }
        }
        _ => {}
    }
}

/// Rule 114: one `[namespace/]dnsName` entry of `hosts`.
fn check_host(host: &str, path: &FieldPath<'_>, out: &mut Findings<'_>) {
    let Some((ns, dns_name)) = host.split_once('/') else {
        check_host_name(host, path, out);
        return;
    };
    if ns.is_empty() || dns_name.is_empty() {
        out.error(
            114,
            path,
            format!("config namespace and dnsName in host entry cannot be empty: {host:?}"),
        );
    }
    if ns != "*" && ns != "." && !is_dns_label(ns) {
        out.error(
            114,
            path,
            format!("invalid namespace value {ns:?} in gateway"),
        );
    }
    check_host_name(dns_name, path, out);
}

/// Rule 114: the dnsName part of a host: not a short name, a wildcard domain or an IP, no
/// partial wildcard.
fn check_host_name(name: &str, path: &FieldPath<'_>, out: &mut Findings<'_>) {
    if name != "*" && !name.contains('.') {
        out.error(
            114,
            path,
            format!("short names (non FQDN) are not allowed: {name:?}"),
        );
    }
    if let Err(e) = validate_wildcard_domain(name)
        && !is_go_ip(name)
    {
        out.error(114, path, e);
    }
    if name.contains('*') && name.len() != 1 && !name.starts_with("*.") {
        out.error(114, path, format!("partial wildcard {name:?} not allowed"));
    }
}

/// Rules 115 and 6: the server's port. Returns whether the port has no error.
fn check_server_port(
    port: Option<&Port>,
    bind: &str,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) -> bool {
    let Some(port) = port else {
        out.error(115, path, "port is required");
        return false;
    };
    let mut ok = true;
    if Protocol::parse(&port.protocol).is_none() {
        out.error(
            115,
            &path.field("protocol"),
            format!(
                "invalid protocol {:?}, supported protocols are HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP, TLS, UDP",
                port.protocol
            ),
        );
        ok = false;
    }
    let number_path = path.field("number");
    match port.number {
        None => {
            out.error(115, &number_path, "port number is required");
            ok = false;
        }
        Some(n) => {
            if (n > 0 || !bind.starts_with(UNIX_ADDRESS_PREFIX)) && !(1..=65535).contains(&n) {
                check_port(out, &number_path, n);
                ok = false;
            }
        }
    }
    if port.target_port > 0 {
        out.error(
            115,
            &path.field("targetPort"),
            "targetPort has no impact on Gateways",
        );
        ok = false;
    }
    if port.name.is_empty() {
        out.error(115, &path.field("name"), "port name must be set");
        ok = false;
    }
    ok
}

/// Rule 116: `bind` is an IP address, or a `unix://` socket with port number 0.
fn check_bind(port: Option<&Port>, bind: &str, path: &FieldPath<'_>, out: &mut Findings<'_>) {
    let bind_path = path.field("bind");
    if let Some(addr) = bind.strip_prefix(UNIX_ADDRESS_PREFIX) {
        if addr.is_empty() {
            out.error(116, &bind_path, "unix address must not be empty");
        } else if !addr.starts_with('@') && (!addr.starts_with('/') || addr.ends_with('/')) {
            out.error(
                116,
                &bind_path,
                format!("{addr} is not an absolute path to a file"),
            );
        }
        if let Some(n) = port.and_then(|p| p.number)
            && n != 0
        {
            let pp = path.field("port");
            out.error(
                116,
                &pp.field("number"),
                format!("port number must be 0 for unix domain socket, found {n}"),
            );
        }
    } else if !bind.is_empty() && !is_go_ip(bind) {
        out.error(116, &bind_path, format!("{bind} is not a valid IP"));
    }
}

/// Rules 118–122: the server's TLS settings.
fn check_tls(tls: &ServerTlsSettings, path: &FieldPath<'_>, out: &mut Findings<'_>) {
    check_ciphers(tls, path, out);
    let mode = tls.effective_mode();
    let credential_names = tls.credential_names();
    let tls_certificates = tls.tls_certificates();
    // Rule 120 (CRD): credentialNames and tlsCertificates hold 1 or 2 entries.
    for (field, len) in [
        (
            "credentialNames",
            tls.credential_names.as_ref().map(Vec::len),
        ),
        (
            "tlsCertificates",
            tls.tls_certificates.as_ref().map(Vec::len),
        ),
    ] {
        match len {
            Some(0) => out.error(
                120,
                &path.field(field),
                format!("{field} must have at least 1 item"),
            ),
            Some(n) if n > 2 => out.error(
                120,
                &path.field(field),
                format!("{field} must have at most 2 items, found {n}"),
            ),
            _ => {}
        }
    }
    // Rule 120: a single source of certificates (Istio's webhook counts non-empty values and
    // skips the check for ISTIO_MUTUAL; the CRD's own rules count fields that are present).
    let sources = [
        is_set(&tls.server_certificate) && is_set(&tls.private_key),
        is_set(&tls.credential_name),
        !credential_names.is_empty(),
        !tls_certificates.is_empty(),
    ];
    let several_sources =
        mode != ServerTlsMode::IstioMutual && sources.iter().filter(|s| **s).count() > 1;
    if several_sources {
        out.error(
            120,
            path,
            "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified",
        );
    } else {
        if tls.tls_certificates.is_some() && tls.credential_names.is_some() {
            out.error(
                120,
                path,
                "only one of credentialNames or tlsCertificates can be set",
            );
        }
        if tls.credential_name.is_some() && tls.credential_names.is_some() {
            out.error(
                120,
                path,
                "only one of credentialName or credentialNames can be set",
            );
        }
    }
    // Rule 118: ISTIO_MUTUAL uses the mesh certificates, nothing else.
    if mode == ServerTlsMode::IstioMutual {
        for (set, field, what) in [
            (
                is_set(&tls.server_certificate),
                "serverCertificate",
                "server certificate",
            ),
            (is_set(&tls.private_key), "privateKey", "private key"),
            (is_set(&tls.ca_certificates), "caCertificates", "CA bundle"),
            (
                !tls_certificates.is_empty(),
                "tlsCertificates",
                "tlsCertificates",
            ),
            (
                is_set(&tls.credential_name),
                "credentialName",
                "credentialName",
            ),
            (
                !credential_names.is_empty(),
                "credentialNames",
                "credentialNames",
            ),
        ] {
            if set {
                out.error(
                    118,
                    &path.field(field),
                    format!("ISTIO_MUTUAL TLS cannot have associated {what}"),
                );
            }
        }
        return;
    }
    // Rule 122 (W): passthrough modes ignore certificates.
    if matches!(
        mode,
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
    ) && (is_set(&tls.ca_crl)
        || is_set(&tls.server_certificate)
        || is_set(&tls.private_key)
        || is_set(&tls.ca_certificates)
        || !tls_certificates.is_empty()
        || is_set(&tls.credential_name)
        || !credential_names.is_empty())
    {
        out.warn(
            122,
            path,
            format!("{mode} mode does not use certificates, they will be ignored"),
        );
    }
    let terminating = matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    );
    // With a credential name, certificates come from the secret: nothing more to check.
    if terminating && (is_set(&tls.credential_name) || !credential_names.is_empty()) {
        return;
    }
    // Rule 119: terminating modes need a certificate and key (per tlsCertificates entry),
    // and a client CA bundle for mutual modes.
    if terminating {
        let prefix = if mode == ServerTlsMode::Simple {
            "SIMPLE TLS"
        } else {
            "MUTUAL TLS"
        };
        if mode != ServerTlsMode::Simple && !is_set(&tls.ca_certificates) {
            out.error(
                119,
                &path.field("caCertificates"),
                format!("{prefix} requires a client CA bundle"),
            );
        }
        if tls_certificates.is_empty() {
            check_cert_pair(prefix, &tls.server_certificate, &tls.private_key, path, out);
        } else {
            let list = path.field("tlsCertificates");
            for (i, cert) in tls_certificates.iter().enumerate() {
                check_cert_pair(
                    prefix,
                    &cert.server_certificate,
                    &cert.private_key,
                    &list.index(i),
                    out,
                );
            }
        }
    }
    // Rule 121: CRLs.
    if is_set(&tls.ca_crl) {
        let crl = path.field("caCrl");
        if is_set(&tls.credential_name) {
            out.error(
                121,
                &crl,
                "CRL is not supported with credentialName. CRL has to be specified in the credential",
            );
        }
        if mode == ServerTlsMode::Simple {
            out.error(121, &crl, "CRL is not supported with SIMPLE TLS");
        }
    }
}

/// Rule 119: a certificate and its key, under `path`.
fn check_cert_pair(
    prefix: &str,
    cert: &Option<String>,
    key: &Option<String>,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    if !is_set(cert) {
        out.error(
            119,
            &path.field("serverCertificate"),
            format!("{prefix} requires a server certificate"),
        );
    }
    if !is_set(key) {
        out.error(
            119,
            &path.field("privateKey"),
            format!("{prefix} requires a private key"),
        );
    }
}

/// Rule 122 (W): unknown or duplicate cipher suites, and old TLS versions without ciphers.
fn check_ciphers(tls: &ServerTlsSettings, path: &FieldPath<'_>, out: &mut Findings<'_>) {
    if matches!(
        tls.min_protocol_version,
        Some(TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1)
    ) && tls.cipher_suites.is_empty()
    {
        out.warn(
            122,
            &path.field("minProtocolVersion"),
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers",
        );
    }
    let list = path.field("cipherSuites");
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for (i, cs) in tls.cipher_suites.iter().enumerate() {
        if !is_valid_cipher_suite(cs) {
            out.warn(
                122,
                &list.index(i),
                format!("ignoring invalid cipher suite {cs:?}"),
            );
        } else if !seen.insert(cs) {
            out.warn(
                122,
                &list.index(i),
                format!("ignoring duplicate cipher suite {cs:?}"),
            );
        }
    }
}

/// Istio's `IsValidCipherSuite`: a known name, `ALL`, empty, or an expression starting with
/// an operator (`-`, `+`, `!`, `[`...), which is not parsed.
fn is_valid_cipher_suite(cs: &str) -> bool {
    let Some(&first) = cs.as_bytes().first() else {
        return true;
    };
    // Go looks at the first byte as a Latin-1 rune.
    cs == "ALL" || !char::from(first).is_alphanumeric() || VALID_CIPHER_SUITES.contains(&cs)
}

/// A non-empty string field (proto3 treats `""` as unset).
fn is_set(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

/// Go's `netip.ParseAddr`: an IPv4 or IPv6 address, IPv6 with an optional `%zone`.
fn is_go_ip(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    match s.split_once('%') {
        Some((addr, zone)) => !zone.is_empty() && addr.parse::<Ipv6Addr>().is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_valid_cipher_suite;
    use crate::validate::testing::*;

    /// A Gateway named `name` with the given `servers:` block (already indented).
    fn gw_named(name: &str, servers: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n{servers}"
        )
    }

    fn gw(servers: &str) -> String {
        gw_named("gw", servers)
    }

    /// One server with `port` (flow map body), hosts `*.example.com` and `extra` lines.
    fn server(port: &str, extra: &str) -> String {
        gw(&format!(
            "  servers:\n  - port: {{{port}}}\n    hosts: [\"*.example.com\"]\n{extra}"
        ))
    }

    /// An HTTPS server with the given `tls` flow map body.
    fn https(tls: &str) -> String {
        server(
            "number: 443, name: https, protocol: HTTPS",
            &format!("    tls: {{{tls}}}\n"),
        )
    }

    const HTTP: &str = "number: 80, name: http, protocol: HTTP";

    #[test]
    fn rule_006_gateway_port_number() {
        passes(&server(HTTP, ""));
        fails(
            &server("number: 0, name: http, protocol: HTTP", ""),
            "spec.servers[0].port.number",
            "1..65535",
        );
        fails(
            &server("number: 65536, name: http, protocol: HTTP", ""),
            "spec.servers[0].port.number",
            "1..65535",
        );
        // 0 is fine with a unix domain socket bind.
        passes(&server(
            "number: 0, name: http, protocol: HTTP",
            "    bind: unix:///var/run/gw.sock\n",
        ));
    }

    #[test]
    fn rule_112_gateway_name_dns_label() {
        passes(&gw_named(
            "my-Gateway1",
            "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
        ));
        fails(
            &gw_named(
                "gw.example",
                "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
            ),
            "metadata.name",
            "invalid gateway name: \"gw.example\"",
        );
        fails(
            &gw_named(
                &"a".repeat(64),
                "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n",
            ),
            "metadata.name",
            "invalid gateway name",
        );
    }

    #[test]
    fn rule_113_at_least_one_server() {
        passes(&server(HTTP, ""));
        fails(&gw(""), "spec.servers", "at least one server");
        fails(
            &gw("  servers: []\n"),
            "spec.servers",
            "at least one server",
        );
        fails(
            &gw("  servers: null\n"),
            "spec.servers",
            "at least one server",
        );
    }

    fn hosts(list: &str) -> String {
        gw(&format!(
            "  servers:\n  - port: {{{HTTP}}}\n    hosts: {list}\n"
        ))
    }

    #[test]
    fn rule_114_server_hosts() {
        passes(&hosts(
            "[\"*\", \"*.example.com\", foo.example.com, \"prod/foo.example.com\", \"./a.b.com\", \"*/*\", 10.1.2.3, \"ns/192.168.0.1\"]",
        ));
        fails(&hosts("[]"), "spec.servers[0].hosts", "at least one host");
        fails(
            &gw(&format!("  servers:\n  - port: {{{HTTP}}}\n")),
            "spec.servers[0].hosts",
            "at least one host",
        );
        fails(
            &hosts("[reviews]"),
            "spec.servers[0].hosts[0]",
            "short names (non FQDN) are not allowed",
        );
        fails(
            &hosts("[\"ns/reviews\"]"),
            "spec.servers[0].hosts[0]",
            "short names",
        );
        fails(
            &hosts("[\"Bad_NS/foo.example.com\"]"),
            "spec.servers[0].hosts[0]",
            "invalid namespace value \"Bad_NS\" in gateway",
        );
        fails(
            &hosts("[\"~/foo.example.com\"]"),
            "spec.servers[0].hosts[0]",
            "invalid namespace value \"~\"",
        );
        fails(
            &hosts("[\"/foo.example.com\"]"),
            "spec.servers[0].hosts[0]",
            "cannot be empty",
        );
        fails(
            &hosts("[\"foo.*.com\"]"),
            "spec.servers[0].hosts[0]",
            "partial wildcard \"foo.*.com\" not allowed",
        );
        fails(
            &hosts("[\"*foo.example.com\"]"),
            "spec.servers[0].hosts[0]",
            "partial wildcard",
        );
        fails(
            &hosts("[\"foo..example.com\"]"),
            "spec.servers[0].hosts[0]",
            "invalid",
        );
        fails(
            &hosts("[\"a.123\"]"),
            "spec.servers[0].hosts[0]",
            "all-numeric",
        );
    }

    #[test]
    fn rule_115_server_port() {
        passes(&server("number: 8080, name: grpc, protocol: grpc-web", ""));
        passes(&server("number: 8080, name: m, protocol: Mongo", ""));
        passes(&server("number: 8080, name: u, protocol: UDP", ""));
        fails(
            &gw("  servers:\n  - hosts: [\"*\"]\n"),
            "spec.servers[0].port",
            "port is required",
        );
        fails(
            &server("number: 80, name: http, protocol: HTTP3", ""),
            "spec.servers[0].port.protocol",
            "invalid protocol \"HTTP3\"",
        );
        fails(
            &server("number: 80, name: http", ""),
            "spec.servers[0].port.protocol",
            "invalid protocol \"\"",
        );
        fails(
            &server("name: http, protocol: HTTP", ""),
            "spec.servers[0].port.number",
            "port number is required",
        );
        fails(
            &server("number: 80, protocol: HTTP", ""),
            "spec.servers[0].port.name",
            "port name must be set",
        );
        fails(
            &server("number: 80, name: \"\", protocol: HTTP", ""),
            "spec.servers[0].port.name",
            "port name must be set",
        );
        fails(
            &server(
                "number: 80, name: http, protocol: HTTP, targetPort: 8080",
                "",
            ),
            "spec.servers[0].port.targetPort",
            "targetPort has no impact on Gateways",
        );
        let two = |second: &str| {
            gw(&format!(
                "  servers:\n  - port: {{{HTTP}}}\n    hosts: [\"*\"]\n  - port: {{number: 8080, name: {second}, protocol: HTTP}}\n    hosts: [\"*\"]\n"
            ))
        };
        passes(&two("http-alt"));
        fails(
            &two("http"),
            "spec.servers[1].port.name",
            "port names in servers must be unique: duplicate name \"http\"",
        );
    }

    #[test]
    fn rule_116_server_bind() {
        passes(&server(HTTP, "    bind: 10.0.0.1\n"));
        passes(&server(HTTP, "    bind: \"::1\"\n"));
        passes(&server(HTTP, "    bind: \"fe80::1%eth0\"\n"));
        passes(&server(
            "number: 0, name: http, protocol: HTTP",
            "    bind: unix://@abstract\n",
        ));
        fails(
            &server(HTTP, "    bind: 10.0.0.300\n"),
            "spec.servers[0].bind",
            "10.0.0.300 is not a valid IP",
        );
        fails(
            &server(HTTP, "    bind: 10.0.0.0/8\n"),
            "spec.servers[0].bind",
            "is not a valid IP",
        );
        fails(
            &server(HTTP, "    bind: unix:///var/run/gw.sock\n"),
            "spec.servers[0].port.number",
            "port number must be 0 for unix domain socket",
        );
        fails(
            &server(
                "number: 0, name: http, protocol: HTTP",
                "    bind: unix://relative.sock\n",
            ),
            "spec.servers[0].bind",
            "not an absolute path",
        );
        fails(
            &server(
                "number: 0, name: http, protocol: HTTP",
                "    bind: unix:///var/run/\n",
            ),
            "spec.servers[0].bind",
            "not an absolute path",
        );
        fails(
            &server(
                "number: 0, name: http, protocol: HTTP",
                "    bind: \"unix://\"\n",
            ),
            "spec.servers[0].bind",
            "unix address must not be empty",
        );
    }

    #[test]
    fn rule_117_tls_settings_match_protocol() {
        passes(&https("mode: SIMPLE, credentialName: cert"));
        passes(&server(HTTP, "    tls: {httpsRedirect: true}\n"));
        passes(&server(
            "number: 443, name: tls, protocol: TLS",
            "    tls: {mode: PASSTHROUGH}\n",
        ));
        fails(
            &server("number: 443, name: https, protocol: HTTPS", ""),
            "spec.servers[0].tls",
            "server must have TLS settings for HTTPS/TLS protocols",
        );
        fails(
            &server("number: 443, name: tls, protocol: tls", ""),
            "spec.servers[0].tls",
            "must have TLS settings",
        );
        fails(
            &server(HTTP, "    tls: {mode: SIMPLE, credentialName: cert}\n"),
            "spec.servers[0].tls",
            "server cannot have TLS settings for plain text HTTP ports",
        );
        fails(
            &server(HTTP, "    tls: {serverCertificate: /c.pem}\n"),
            "spec.servers[0].tls",
            "plain text HTTP ports",
        );
        fails(
            &server("number: 31400, name: tcp, protocol: TCP", "    tls: {}\n"),
            "spec.servers[0].tls",
            "server cannot have TLS settings for non HTTPS/TLS ports",
        );
        // An invalid port skips the protocol/TLS check (as Istio does).
        let all = findings(&server("number: 443, name: \"\", protocol: HTTPS", ""));
        assert!(
            !all.iter().any(|p| p.path == "spec.servers[0].tls"),
            "{all:?}"
        );
        // W: httpsRedirect on a non-HTTP server.
        warns(
            &https("mode: SIMPLE, credentialName: cert, httpsRedirect: true"),
            "spec.servers[0].tls.httpsRedirect",
            "should only be used with http servers",
        );
        no_finding(
            &server(HTTP, "    tls: {httpsRedirect: true}\n"),
            "spec.servers[0].tls.httpsRedirect",
        );
    }

    #[test]
    fn rule_118_istio_mutual_has_no_certificates() {
        passes(&https("mode: ISTIO_MUTUAL"));
        passes(&https("mode: ISTIO_MUTUAL, subjectAltNames: [a]"));
        for (field, value, what) in [
            ("serverCertificate", "/c.pem", "server certificate"),
            ("privateKey", "/k.pem", "private key"),
            ("caCertificates", "/ca.pem", "CA bundle"),
            ("credentialName", "cred", "credentialName"),
            ("credentialNames", "[a]", "credentialNames"),
            (
                "tlsCertificates",
                "[{serverCertificate: /c, privateKey: /k}]",
                "tlsCertificates",
            ),
        ] {
            fails(
                &https(&format!("mode: ISTIO_MUTUAL, {field}: {value}")),
                &format!("spec.servers[0].tls.{field}"),
                &format!("ISTIO_MUTUAL TLS cannot have associated {what}"),
            );
        }
    }

    #[test]
    fn rule_119_terminating_modes_need_certificates() {
        passes(&https(
            "mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem",
        ));
        passes(&https(
            "mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: /ca.pem",
        ));
        passes(&https("mode: OPTIONAL_MUTUAL, credentialName: cred"));
        passes(&https("mode: MUTUAL, credentialNames: [rsa, ecdsa]"));
        passes(&https(
            "mode: SIMPLE, tlsCertificates: [{serverCertificate: /a, privateKey: /b}, {serverCertificate: /c, privateKey: /d}]",
        ));
        fails(
            &https("mode: SIMPLE, privateKey: /k.pem"),
            "spec.servers[0].tls.serverCertificate",
            "SIMPLE TLS requires a server certificate",
        );
        fails(
            &https("mode: SIMPLE, serverCertificate: /c.pem"),
            "spec.servers[0].tls.privateKey",
            "SIMPLE TLS requires a private key",
        );
        fails(
            &https("mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem"),
            "spec.servers[0].tls.caCertificates",
            "MUTUAL TLS requires a client CA bundle",
        );
        fails(
            &https("mode: OPTIONAL_MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem"),
            "spec.servers[0].tls.caCertificates",
            "MUTUAL TLS requires a client CA bundle",
        );
        fails(
            &https("mode: MUTUAL, caCertificates: /ca, serverCertificate: /c.pem"),
            "spec.servers[0].tls.privateKey",
            "MUTUAL TLS requires a private key",
        );
        fails(
            &https(
                "mode: SIMPLE, tlsCertificates: [{serverCertificate: /a, privateKey: /b}, {serverCertificate: /c}]",
            ),
            "spec.servers[0].tls.tlsCertificates[1].privateKey",
            "SIMPLE TLS requires a private key",
        );
    }

    #[test]
    fn rule_120_one_certificate_source() {
        passes(&https("mode: SIMPLE, credentialName: cred"));
        passes(&https("mode: SIMPLE, credentialNames: [a, b]"));
        fails(
            &https("mode: SIMPLE, credentialName: cred, serverCertificate: /c, privateKey: /k"),
            "spec.servers[0].tls",
            "only one of credential_name, credential_names, server_certificate/private_key, tls_certificates should be specified",
        );
        fails(
            &https(
                "mode: SIMPLE, credentialNames: [a], tlsCertificates: [{serverCertificate: /c, privateKey: /k}]",
            ),
            "spec.servers[0].tls",
            "only one of credential_name",
        );
        // The CRD counts fields that are present, even empty.
        fails(
            &https("mode: SIMPLE, credentialName: \"\", credentialNames: [a]"),
            "spec.servers[0].tls",
            "only one of credentialName or credentialNames can be set",
        );
        fails(
            &https("mode: SIMPLE, credentialNames: [a, b, c]"),
            "spec.servers[0].tls.credentialNames",
            "at most 2 items",
        );
        fails(
            &https("mode: SIMPLE, credentialName: a, credentialNames: []"),
            "spec.servers[0].tls.credentialNames",
            "at least 1 item",
        );
        fails(
            &https(
                "mode: SIMPLE, tlsCertificates: [{serverCertificate: /a, privateKey: /b}, {serverCertificate: /c, privateKey: /d}, {serverCertificate: /e, privateKey: /f}]",
            ),
            "spec.servers[0].tls.tlsCertificates",
            "at most 2 items",
        );
    }

    #[test]
    fn rule_121_crl_restrictions() {
        passes(&https(
            "mode: MUTUAL, serverCertificate: /c, privateKey: /k, caCertificates: /ca, caCrl: /crl",
        ));
        // With credentialName in a terminating mode Istio skips the file checks.
        passes(&https("mode: MUTUAL, credentialName: cred, caCrl: /crl"));
        fails(
            &https("mode: SIMPLE, serverCertificate: /c, privateKey: /k, caCrl: /crl"),
            "spec.servers[0].tls.caCrl",
            "CRL is not supported with SIMPLE TLS",
        );
        fails(
            &https("mode: PASSTHROUGH, credentialName: cred, caCrl: /crl"),
            "spec.servers[0].tls.caCrl",
            "CRL is not supported with credentialName",
        );
    }

    #[test]
    fn rule_122_cipher_and_version_warnings() {
        let simple = "mode: SIMPLE, credentialName: cred";
        no_finding(
            &https(&format!(
                "{simple}, cipherSuites: [ECDHE-RSA-AES256-GCM-SHA384, \"-AES128-SHA\", ALL]"
            )),
            "spec.servers[0].tls.cipherSuites[0]",
        );
        warns(
            &https(&format!(
                "{simple}, cipherSuites: [ECDHE-RSA-AES256-GCM-SHA384, FOO-BAR]"
            )),
            "spec.servers[0].tls.cipherSuites[1]",
            "ignoring invalid cipher suite \"FOO-BAR\"",
        );
        warns(
            &https(&format!("{simple}, cipherSuites: [AES128-SHA, AES128-SHA]")),
            "spec.servers[0].tls.cipherSuites[1]",
            "ignoring duplicate cipher suite",
        );
        no_finding(
            &https(&format!(
                "{simple}, minProtocolVersion: TLSV1_1, cipherSuites: [AES128-SHA]"
            )),
            "spec.servers[0].tls.minProtocolVersion",
        );
        warns(
            &https(&format!("{simple}, minProtocolVersion: TLSV1_0")),
            "spec.servers[0].tls.minProtocolVersion",
            "TLS version below TLSV1_2",
        );
        no_finding(&https("mode: PASSTHROUGH"), "spec.servers[0].tls");
        warns(
            &https("mode: PASSTHROUGH, credentialName: cred"),
            "spec.servers[0].tls",
            "PASSTHROUGH mode does not use certificates",
        );
        warns(
            &https("mode: AUTO_PASSTHROUGH, serverCertificate: /c"),
            "spec.servers[0].tls",
            "AUTO_PASSTHROUGH mode does not use certificates",
        );
        assert!(is_valid_cipher_suite(""));
        assert!(is_valid_cipher_suite(
            "[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]"
        ));
        assert!(!is_valid_cipher_suite("TLS_AES_128_GCM_SHA256"));
    }
}
