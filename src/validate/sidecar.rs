//! Validation rules for Sidecar (rules 123–126, with 4–6 and 11–12 for its durations, ports
//! and workload selector, and the connection pool rules 82–85 Istio applies to its pools,
//! checked by the DestinationRule validator's `check_connection_pool`).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Resource;
use crate::config::gateway::{ServerTlsMode, ServerTlsSettings};
use crate::config::sidecar::{
    CaptureMode, IstioEgressListener, IstioIngressListener, OutboundTrafficPolicy,
    OutboundTrafficPolicyMode, Sidecar, SidecarPort,
};
use crate::config::workload_entry::UNIX_ADDRESS_PREFIX;
use crate::path::FieldPath;
use crate::validate::Findings;
use crate::validate::common::{Protocol, is_known_protocol};
use crate::validate::common::{
    check_port, check_selector, is_dns_label, is_ip, validate_fqdn, validate_wildcard_domain,
};
use crate::validate::destination_rule::check_connection_pool;
use crate::validate::workload_entry::validate_unix_address;

/// Checks every rule for a Sidecar.
pub(crate) fn check(res: &Resource, spec: &Sidecar, path: &FieldPath<'_>, out: &mut Findings<'_>) {
    // Rules 11-12.
    if let Some(sel) = &spec.workload_selector {
        let sel_path = path.field("workloadSelector");
        check_selector(out, &sel_path, &sel_path.field("labels"), &sel.labels);
    }

    // Rule 123.
    if spec.ingress.is_empty()
        && spec.egress.is_empty()
        && spec.outbound_traffic_policy.is_none()
        && spec.inbound_connection_pool.is_none()
    {
        out.error(
            123,
            path,
            "sidecar: empty configuration provided: set at least one of ingress, egress, outboundTrafficPolicy or inboundConnectionPool",
        );
        return;
    }

    // Rule 124.
    let ingress = path.field("ingress");
    let mut ports = BTreeSet::new();
    for (i, l) in spec.ingress.iter().enumerate() {
        check_ingress(l, &ingress.index(i), &mut ports, out);
    }
    if let Some(pool) = &spec.inbound_connection_pool {
        check_connection_pool(pool, &path.field("inboundConnectionPool"), out);
    }

    // Rule 125.
    check_egress(res, &spec.egress, &path.field("egress"), out);

    // Rule 126.
    if let Some(otp) = &spec.outbound_traffic_policy {
        check_outbound_traffic_policy(otp, &path.field("outboundTrafficPolicy"), out);
    }
}

/// Rule 124 (and 6, 82–85, 119, 121) for one ingress listener.
fn check_ingress(
    l: &IstioIngressListener,
    path: &FieldPath<'_>,
    ports: &mut BTreeSet<u32>,
    out: &mut Findings<'_>,
) {
    let Some(port) = &l.port else {
        out.error(
            124,
            &path.field("port"),
            "Required value: sidecar: port is required for ingress listeners",
        );
        return;
    };
    let port_path = path.field("port");
    check_listener_port(port, &port_path, out, 124);
    check_port(out, &port_path.field("number"), port.number);
    if !l.bind.is_empty() && !is_ip(&l.bind) {
        out.error(
            124,
            &path.field("bind"),
            format!("{} is not a valid IP", l.bind),
        );
    }
    if !ports.insert(port.number) {
        out.error(
            124,
            &port_path.field("number"),
            format!(
                "sidecar: ports on IP bound listeners must be unique (port {} is repeated)",
                port.number
            ),
        );
    }

    if !l.default_endpoint.is_empty() {
        check_default_endpoint(&l.default_endpoint, &path.field("defaultEndpoint"), out);
    }

    if let Some(tls) = &l.tls {
        check_ingress_tls(tls, &port.protocol, &path.field("tls"), out);
    }

    if let Some(pool) = &l.connection_pool {
        check_connection_pool(pool, &path.field("connectionPool"), out);
    }
}

/// The name, protocol and targetPort of a listener port (rule `rule`: 124 or 125).
fn check_listener_port(
    port: &SidecarPort,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
    rule: u16,
) {
    if !port.name.is_empty() && !is_dns_label(&port.name) {
        out.error(
            rule,
            &path.field("name"),
            format!("invalid port name: {:?}", port.name),
        );
    }
    if !is_known_protocol(&port.protocol) {
        out.error(
            rule,
            &path.field("protocol"),
            format!("unsupported protocol: {:?}", port.protocol),
        );
    }
    if port.target_port > 0 {
        out.error(
            rule,
            &path.field("targetPort"),
            "targetPort has no impact on Sidecars",
        );
    }
}

/// Rule 124: `defaultEndpoint` is `unix://...` or `HOST:PORT` with a loopback or unspecified
/// HOST (or none).
fn check_default_endpoint(ep: &str, path: &FieldPath<'_>, out: &mut Findings<'_>) {
    if let Some(socket) = ep.strip_prefix(UNIX_ADDRESS_PREFIX) {
        if let Err(e) = validate_unix_address(socket) {
            out.error(124, path, format!("sidecar: defaultEndpoint: {e}"));
        }
        return;
    }
    let (host, port) = match split_host_port(ep) {
        Ok(hp) => hp,
        Err(e) => {
            out.error(124, path, format!("sidecar: defaultEndpoint {ep:?}: {e}"));
            return;
        }
    };
    if !matches!(host, "" | "127.0.0.1" | "0.0.0.0" | "::1" | "::") {
        out.error(
            124,
            path,
            "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset",
        );
    }
    match port.parse::<u32>() {
        Ok(n) if port.bytes().all(|b| b.is_ascii_digit()) => check_port(out, path, n),
        _ => out.error(
            124,
            path,
            format!("sidecar: defaultEndpoint port ({port}) is not a number"),
        ),
    }
}

/// Go's `net.SplitHostPort`: `host:port` or `[host]:port`.
fn split_host_port(s: &str) -> Result<(&str, &str), &'static str> {
    if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err("missing ']' in address");
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err("missing port in address");
        };
        if host.contains('[') || host.contains(']') || port.contains(']') {
            return Err("unexpected ']' in address");
        }
        return Ok((host, port));
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("missing port in address");
    };
    if host.contains(':') {
        return Err("too many colons in address");
    }
    if host.contains('[') || host.contains(']') {
        return Err("unexpected '[' in address");
    }
    Ok((host, port))
}

/// Rule 124: what an ingress listener's TLS may hold; rules 119 and 121: the certificates
/// the chosen mode needs. (The Gateway validator's TLS check is not reused: it covers rules
/// 118–122 together and reports missing certificates at the certificate fields, where these
/// Sidecar findings point at `tls`.)
fn check_ingress_tls(
    tls: &ServerTlsSettings,
    protocol: &str,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    if !tls.subject_alt_names.is_empty() {
        out.error(
            124,
            &path.field("subjectAltNames"),
            "sidecar: subjectAltNames is not supported in ingress tls",
        );
    }
    if tls.https_redirect {
        out.error(
            124,
            &path.field("httpsRedirect"),
            "sidecar: httpsRedirect is not supported",
        );
    }
    if is_set(&tls.credential_name) {
        out.error(
            124,
            &path.field("credentialName"),
            "sidecar: credentialName is not currently supported",
        );
    }
    if !tls.credential_names().is_empty() {
        out.error(
            124,
            &path.field("credentialNames"),
            "sidecar: credentialNames is not currently supported",
        );
    }
    if !tls.tls_certificates().is_empty() {
        out.error(
            124,
            &path.field("tlsCertificates"),
            "sidecar: tls_certificates is not currently supported",
        );
    }
    let mode = tls.effective_mode();
    if matches!(
        mode,
        ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough
    ) {
        out.error(
            124,
            &path.field("mode"),
            format!("configuration is invalid: cannot set mode to {mode} in sidecar ingress tls"),
        );
    }
    if !Protocol::parse(protocol).is_some_and(Protocol::is_tls) {
        out.error(
            124,
            path,
            format!(
                "server cannot have TLS settings for non HTTPS/TLS ports (protocol {protocol:?})"
            ),
        );
    }

    // Rules 119 and 121 (the server TLS options, as for Gateway servers). A credentialName
    // (already rejected above) would fetch the certificates remotely.
    let remote = is_set(&tls.credential_name) || !tls.credential_names().is_empty();
    if matches!(
        mode,
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual
    ) && !remote
        && tls.tls_certificates().is_empty()
    {
        if !is_set(&tls.server_certificate) {
            out.error(
                119,
                path,
                format!("{mode} TLS requires a server certificate"),
            );
        }
        if !is_set(&tls.private_key) {
            out.error(119, path, format!("{mode} TLS requires a private key"));
        }
        if mode != ServerTlsMode::Simple
            && !is_set(&tls.ca_certificates)
            && !is_set(&tls.ca_cert_credential_name)
        {
            out.error(119, path, format!("{mode} TLS requires a client CA bundle"));
        }
    }
    if is_set(&tls.ca_crl) && mode == ServerTlsMode::Simple {
        out.error(
            121,
            &path.field("caCrl"),
            "CRL is not supported with SIMPLE TLS",
        );
    }
}

/// A non-empty string field (proto3 treats `""` as unset).
fn is_set(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

/// Rule 125: the egress listeners.
fn check_egress(
    res: &Resource,
    egress: &[IstioEgressListener],
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    let mut ports = BTreeSet::new();
    let mut sockets = BTreeSet::new();
    for (i, l) in egress.iter().enumerate() {
        let lp = path.index(i);
        match &l.port {
            // A catch-all listener (no port) must be the last one, so there is at most one.
            None => {
                if i + 1 != egress.len() {
                    out.error(
                        125,
                        &lp,
                        "sidecar: the egress listener with empty port should be the last listener in the list",
                    );
                }
            }
            Some(port) => {
                let pp = lp.field("port");
                check_listener_port(port, &pp, out, 125);
                let bind_path = lp.field("bind");
                if port.number == 0 {
                    match l.bind.strip_prefix(UNIX_ADDRESS_PREFIX) {
                        None => out.error(
                            125,
                            &bind_path,
                            "sidecar: ports with 0 value must have a unix domain socket bind address",
                        ),
                        Some(socket) => {
                            if let Err(e) = validate_unix_address(socket) {
                                out.error(125, &bind_path, e);
                            }
                        }
                    }
                    if !matches!(
                        l.capture_mode,
                        None | Some(CaptureMode::Default | CaptureMode::None)
                    ) {
                        out.error(
                            125,
                            &lp.field("captureMode"),
                            "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners",
                        );
                    }
                    if !sockets.insert(l.bind.as_str()) {
                        out.error(
                            125,
                            &bind_path,
                            "sidecar: unix domain socket values for listeners must be unique",
                        );
                    }
                } else {
                    check_port(out, &pp.field("number"), port.number);
                    if !l.bind.is_empty() && !is_ip(&l.bind) {
                        out.error(125, &bind_path, format!("{} is not a valid IP", l.bind));
                    }
                    if !ports.insert(port.number) {
                        out.error(
                            125,
                            &pp.field("number"),
                            format!(
                                "sidecar: ports on IP bound listeners must be unique (port {} is repeated)",
                                port.number
                            ),
                        );
                    }
                }
            }
        }
        check_egress_hosts(res, &l.hosts, &lp.field("hosts"), out);
    }
}

/// Rule 125: the `namespace/dnsName` hosts of one egress listener.
fn check_egress_hosts(
    res: &Resource,
    hosts: &[String],
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    if hosts.is_empty() {
        out.error(
            125,
            path,
            "Required value: sidecar: egress listener must contain at least one host",
        );
        return;
    }
    // namespace -> dnsNames seen, for the duplicate warnings.
    let mut seen: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (i, host) in hosts.iter().enumerate() {
        let p = path.index(i);
        let Some((ns, name)) = host.split_once('/') else {
            out.error(
                125,
                &p,
                format!("host must be of form namespace/dnsName, found {host:?}"),
            );
            continue;
        };
        let ns_key = if ns == "." {
            res.metadata.namespace.as_str()
        } else {
            ns
        };
        let names = seen.entry(ns_key).or_default();
        let duplicate = if name == "*" {
            !names.is_empty()
        } else {
            names.contains(name) || names.contains("*")
        };
        if duplicate {
            out.warn(125, &p, format!("duplicated egress host: {host}"));
        }
        names.insert(name);

        if ns.is_empty() || name.is_empty() {
            out.error(
                125,
                &p,
                "config namespace and dnsName in host entry cannot be empty",
            );
        }
        if !matches!(ns, "*" | "." | "~") && !is_dns_label(ns) {
            out.error(
                125,
                &p,
                format!("invalid namespace value {ns:?} in sidecar"),
            );
        }
        if name != "*" && !name.contains('.') {
            out.error(
                125,
                &p,
                format!("short names (non FQDN) are not allowed: {name:?}"),
            );
        }
        if let Err(e) = validate_wildcard_domain(name) {
            out.error(125, &p, e);
        }
        if name.contains('*') && name != "*" && !name.starts_with("*.") {
            out.error(125, &p, format!("partial wildcard {name:?} not allowed"));
        }
    }
    if seen.get("*").is_some_and(|names| names.contains("*")) && seen.len() != 1 {
        out.warn(
            125,
            path,
            "`*/*` host select all resources, no other hosts can be added",
        );
    }
}

/// Rule 126: `outboundTrafficPolicy`.
fn check_outbound_traffic_policy(
    otp: &OutboundTrafficPolicy,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    let Some(proxy) = &otp.egress_proxy else {
        return;
    };
    let pp = path.field("egressProxy");
    if otp.mode != Some(OutboundTrafficPolicyMode::AllowAny) {
        out.error(
            126,
            &pp,
            "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode",
        );
        return;
    }
    let host_path = pp.field("host");
    if proxy.host.is_empty() {
        out.error(
            126,
            &host_path,
            "Required value: egress proxy host is required",
        );
    } else if proxy.host == "*" {
        out.error(126, &host_path, "invalid destination host *");
    } else if let Err(e) = validate_fqdn(&proxy.host) {
        out.error(126, &host_path, e);
    }
    if !proxy.subset.is_empty() && !is_dns_label(&proxy.subset) {
        out.error(
            126,
            &pp.field("subset"),
            format!("subset name is invalid: {}", proxy.subset),
        );
    }
    match &proxy.port {
        None => out.error(
            126,
            &pp.field("port"),
            "sidecar: egress_proxy port must be non-nil",
        ),
        Some(port) => check_port(out, &pp.field("port").field("number"), port.number),
    }
}

#[cfg(test)]
mod tests {
    use super::split_host_port;
    use crate::validate::testing::*;

    fn sc(spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: s, namespace: foo}}\nspec:\n{spec}"
        )
    }

    fn ingress(listener: &str) -> String {
        sc(&format!("  ingress:\n  - {listener}\n"))
    }

    fn egress(listeners: &str) -> String {
        sc(&format!("  egress:\n{listeners}"))
    }

    #[test]
    fn rule_123_empty_configuration() {
        passes(&sc("  egress: [{hosts: [\"./*\"]}]\n"));
        passes(&sc("  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n"));
        passes(&sc(
            "  inboundConnectionPool: {tcp: {maxConnections: 10}}\n",
        ));
        fails(
            &sc("  {}\n"),
            "spec",
            "sidecar: empty configuration provided",
        );
        fails(
            &sc("  workloadSelector: {labels: {app: a}}\n"),
            "spec",
            "empty configuration",
        );
        fails(
            &sc("  ingress: []\n  egress: []\n"),
            "spec",
            "empty configuration",
        );
    }

    #[test]
    fn rule_124_ingress_listeners() {
        passes(&ingress(
            "{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: \"127.0.0.1:8080\"}",
        ));
        passes(&ingress(
            "{port: {number: 9080}, bind: 10.0.0.1, defaultEndpoint: \"[::1]:8080\"}",
        ));
        passes(&ingress(
            "{port: {number: 9080}, defaultEndpoint: \":8080\"}",
        ));
        passes(&ingress(
            "{port: {number: 9080}, defaultEndpoint: \"unix:///var/run/app.sock\"}",
        ));
        fails(
            &ingress("{bind: 10.0.0.1}"),
            "spec.ingress[0].port",
            "port is required for ingress listeners",
        );
        fails(
            &ingress("{port: {number: 80, name: \"bad_name\"}}"),
            "spec.ingress[0].port.name",
            "invalid port name",
        );
        fails(
            &ingress("{port: {number: 80, protocol: SMTP}}"),
            "spec.ingress[0].port.protocol",
            "unsupported protocol",
        );
        fails(
            &ingress("{port: {number: 80, targetPort: 8080}}"),
            "spec.ingress[0].port.targetPort",
            "targetPort has no impact on Sidecars",
        );
        fails(
            &ingress("{port: {number: 80}, bind: my-host}"),
            "spec.ingress[0].bind",
            "is not a valid IP",
        );
        fails(
            &sc("  ingress:\n  - port: {number: 80}\n  - port: {number: 80, name: other}\n"),
            "spec.ingress[1].port.number",
            "ports on IP bound listeners must be unique",
        );
        fails(
            &ingress("{port: {number: 80}, defaultEndpoint: \"10.1.1.1:8080\"}"),
            "spec.ingress[0].defaultEndpoint",
            "defaultEndpoint must be of form",
        );
        fails(
            &ingress("{port: {number: 80}, defaultEndpoint: \"127.0.0.1\"}"),
            "spec.ingress[0].defaultEndpoint",
            "missing port",
        );
        fails(
            &ingress("{port: {number: 80}, defaultEndpoint: \"127.0.0.1:http\"}"),
            "spec.ingress[0].defaultEndpoint",
            "is not a number",
        );
        fails(
            &ingress("{port: {number: 80}, defaultEndpoint: \"unix://rel.sock\"}"),
            "spec.ingress[0].defaultEndpoint",
            "absolute path",
        );
        // TLS limits.
        let tls = |extra: &str| {
            ingress(&format!(
                "{{port: {{number: 443, protocol: HTTPS}}, tls: {{mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem{extra}}}}}"
            ))
        };
        passes(&tls(""));
        fails(
            &tls(", subjectAltNames: [a]"),
            "spec.ingress[0].tls.subjectAltNames",
            "not supported",
        );
        fails(
            &tls(", httpsRedirect: true"),
            "spec.ingress[0].tls.httpsRedirect",
            "not supported",
        );
        fails(
            &tls(", credentialName: secret"),
            "spec.ingress[0].tls.credentialName",
            "not currently supported",
        );
        fails(
            &tls(", credentialNames: [a]"),
            "spec.ingress[0].tls.credentialNames",
            "not currently supported",
        );
        fails(
            &tls(", tlsCertificates: [{serverCertificate: a, privateKey: b}]"),
            "spec.ingress[0].tls.tlsCertificates",
            "not currently supported",
        );
        fails(
            &ingress("{port: {number: 443, protocol: HTTPS}, tls: {mode: ISTIO_MUTUAL}}"),
            "spec.ingress[0].tls.mode",
            "cannot set mode to ISTIO_MUTUAL",
        );
        fails(
            &ingress(
                "{port: {number: 80, protocol: HTTP}, tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}}",
            ),
            "spec.ingress[0].tls",
            "non HTTPS/TLS ports",
        );
    }

    #[test]
    fn sidecar_ingress_tls_certificates_rules_119_121() {
        fails(
            &ingress("{port: {number: 443, protocol: HTTPS}, tls: {mode: SIMPLE}}"),
            "spec.ingress[0].tls",
            "SIMPLE TLS requires a server certificate",
        );
        fails(
            &ingress(
                "{port: {number: 443, protocol: TLS}, tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k}}",
            ),
            "spec.ingress[0].tls",
            "MUTUAL TLS requires a client CA bundle",
        );
        passes(&ingress(
            "{port: {number: 443, protocol: TLS}, tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k, caCertificates: /ca}}",
        ));
        fails(
            &ingress(
                "{port: {number: 443, protocol: HTTPS}, tls: {mode: SIMPLE, serverCertificate: /c, privateKey: /k, caCrl: /crl}}",
            ),
            "spec.ingress[0].tls.caCrl",
            "CRL is not supported with SIMPLE TLS",
        );
    }

    #[test]
    fn rule_006_sidecar_ports() {
        fails(
            &ingress("{port: {number: 70000}}"),
            "spec.ingress[0].port.number",
            "1..65535",
        );
        fails(
            &ingress("{port: {number: 0}}"),
            "spec.ingress[0].port.number",
            "1..65535",
        );
        fails(
            &ingress("{port: {number: 80}, defaultEndpoint: \"127.0.0.1:0\"}"),
            "spec.ingress[0].defaultEndpoint",
            "1..65535",
        );
        fails(
            &egress("  - port: {number: 65536}\n    hosts: [\"./*\"]\n"),
            "spec.egress[0].port.number",
            "1..65535",
        );
        fails(
            &sc(
                "  outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: proxy.example.com, port: {number: 0}}}\n",
            ),
            "spec.outboundTrafficPolicy.egressProxy.port.number",
            "1..65535",
        );
    }

    #[test]
    fn rule_125_egress_listeners() {
        passes(&egress(
            "  - port: {number: 9080, protocol: HTTP, name: http}\n    bind: 127.0.0.1\n    hosts: [\"./*\", \"istio-system/*.example.com\"]\n  - port: {number: 0, protocol: HTTP}\n    bind: unix:///var/run/egress.sock\n    captureMode: NONE\n    hosts: [\"~/*\"]\n  - hosts: [\"*/*\"]\n",
        ));
        fails(
            &egress("  - hosts: []\n"),
            "spec.egress[0].hosts",
            "must contain at least one host",
        );
        fails(
            &egress("  - port: {number: 80}\n"),
            "spec.egress[0].hosts",
            "must contain at least one host",
        );
        fails(
            &egress("  - hosts: [api.example.com]\n"),
            "spec.egress[0].hosts[0]",
            "host must be of form namespace/dnsName",
        );
        fails(
            &egress("  - hosts: [\"Bad_NS/*\"]\n"),
            "spec.egress[0].hosts[0]",
            "invalid namespace value",
        );
        fails(
            &egress("  - hosts: [\"ns/reviews\"]\n"),
            "spec.egress[0].hosts[0]",
            "short names",
        );
        fails(
            &egress("  - hosts: [\"ns/foo*.example.com\"]\n"),
            "spec.egress[0].hosts[0]",
            "partial wildcard",
        );
        fails(
            &egress("  - hosts: [\"/*\"]\n"),
            "spec.egress[0].hosts[0]",
            "cannot be empty",
        );
        // Catch-all listener: at most one, last.
        fails(
            &egress("  - hosts: [\"./*\"]\n  - port: {number: 80}\n    hosts: [\"./*\"]\n"),
            "spec.egress[0]",
            "should be the last listener",
        );
        fails(
            &egress("  - hosts: [\"./*\"]\n  - hosts: [\"./*\"]\n"),
            "spec.egress[0]",
            "should be the last listener",
        );
        // Unix domain socket listeners.
        fails(
            &egress("  - port: {number: 0}\n    hosts: [\"./*\"]\n"),
            "spec.egress[0].bind",
            "must have a unix domain socket bind address",
        );
        fails(
            &egress(
                "  - port: {number: 0}\n    bind: unix:///a.sock\n    captureMode: IPTABLES\n    hosts: [\"./*\"]\n",
            ),
            "spec.egress[0].captureMode",
            "captureMode must be DEFAULT/NONE",
        );
        fails(
            &egress(
                "  - port: {number: 0}\n    bind: unix:///a.sock\n    hosts: [\"./*\"]\n  - port: {number: 0, name: b}\n    bind: unix:///a.sock\n    hosts: [\"./*\"]\n",
            ),
            "spec.egress[1].bind",
            "unix domain socket values for listeners must be unique",
        );
        fails(
            &egress(
                "  - port: {number: 80}\n    hosts: [\"./*\"]\n  - port: {number: 80}\n    hosts: [\"./*\"]\n",
            ),
            "spec.egress[1].port.number",
            "must be unique",
        );
        fails(
            &egress("  - port: {number: 80}\n    bind: localhost\n    hosts: [\"./*\"]\n"),
            "spec.egress[0].bind",
            "is not a valid IP",
        );
        fails(
            &egress("  - port: {number: 80, targetPort: 81}\n    hosts: [\"./*\"]\n"),
            "spec.egress[0].port.targetPort",
            "no impact",
        );
        // Duplicate hosts only warn.
        warns(
            &egress("  - hosts: [\"foo/*\", \"./*\"]\n"),
            "spec.egress[0].hosts[1]",
            "duplicated egress host",
        );
        warns(
            &egress("  - hosts: [\"*/*\", \"ns/a.example.com\"]\n"),
            "spec.egress[0].hosts",
            "`*/*` host select all resources",
        );
        no_finding(
            &egress("  - hosts: [\"foo/a.example.com\", \"bar/a.example.com\"]\n"),
            "spec.egress[0].hosts[1]",
        );
    }

    #[test]
    fn rule_126_outbound_traffic_policy() {
        passes(&sc(
            "  outboundTrafficPolicy:\n    mode: ALLOW_ANY\n    egressProxy: {host: proxy.example.com, subset: v1, port: {number: 3128}}\n",
        ));
        fails(
            &sc(
                "  outboundTrafficPolicy:\n    mode: REGISTRY_ONLY\n    egressProxy: {host: proxy.example.com, port: {number: 3128}}\n",
            ),
            "spec.outboundTrafficPolicy.egressProxy",
            "egress_proxy must be set only with ALLOW_ANY",
        );
        fails(
            &sc(
                "  outboundTrafficPolicy:\n    egressProxy: {host: proxy.example.com, port: {number: 3128}}\n",
            ),
            "spec.outboundTrafficPolicy.egressProxy",
            "only with ALLOW_ANY",
        );
        fails(
            &sc(
                "  outboundTrafficPolicy:\n    mode: ALLOW_ANY\n    egressProxy: {host: proxy.example.com}\n",
            ),
            "spec.outboundTrafficPolicy.egressProxy.port",
            "port must be non-nil",
        );
        fails(
            &sc(
                "  outboundTrafficPolicy:\n    mode: ALLOW_ANY\n    egressProxy: {host: \"*.example.com\", port: {number: 3128}}\n",
            ),
            "spec.outboundTrafficPolicy.egressProxy.host",
            "invalid",
        );
        fails(
            &sc(
                "  outboundTrafficPolicy:\n    mode: ALLOW_ANY\n    egressProxy: {host: proxy.example.com, subset: \"v_1\", port: {number: 3128}}\n",
            ),
            "spec.outboundTrafficPolicy.egressProxy.subset",
            "subset name is invalid",
        );
        // The mesh-only mode ALLOW_ANY_DYNAMIC_DNS is not a Sidecar value (decoder).
        fails(
            &sc("  outboundTrafficPolicy: {mode: ALLOW_ANY_DYNAMIC_DNS}\n"),
            "spec.outboundTrafficPolicy.mode",
            "Unsupported value",
        );
    }

    #[test]
    fn rules_011_012_sidecar_workload_selector() {
        passes(&sc(
            "  workloadSelector: {labels: {app: a}}\n  egress: [{hosts: [\"./*\"]}]\n",
        ));
        fails(
            &sc("  workloadSelector: {labels: {app: \"a*\"}}\n  egress: [{hosts: [\"./*\"]}]\n"),
            "spec.workloadSelector.labels[app]",
            "wildcard",
        );
        warns(
            &sc("  workloadSelector: {}\n  egress: [{hosts: [\"./*\"]}]\n"),
            "spec.workloadSelector",
            "without labels",
        );
    }

    #[test]
    fn sidecar_connection_pool_rules_004_005_082_to_085() {
        let pool = |p: &str| sc(&format!("  inboundConnectionPool: {p}\n"));
        passes(&pool(
            "{tcp: {connectTimeout: 10ms, idleTimeout: 0s, maxConnectionDuration: 1h, tcpKeepalive: {time: 1s, interval: 1s}}, http: {idleTimeout: 1s, http2KeepAlive: {interval: 1s, timeout: 1s}}}",
        ));
        // Rule 4.
        fails(
            &pool("{tcp: {connectTimeout: 500us}}"),
            "spec.inboundConnectionPool.tcp.connectTimeout",
            "greater than 1ms",
        );
        fails(
            &pool("{http: {idleTimeout: 1.0005s}}"),
            "spec.inboundConnectionPool.http.idleTimeout",
            "ms precision",
        );
        fails(
            &ingress("{port: {number: 80}, connectionPool: {tcp: {tcpKeepalive: {time: 0s}}}}"),
            "spec.ingress[0].connectionPool.tcp.tcpKeepalive.time",
            "greater than 1ms",
        );
        // Rule 5: a tcp idleTimeout of 0s is allowed, other values follow rule 4.
        fails(
            &pool("{tcp: {idleTimeout: 1.5005s}}"),
            "spec.inboundConnectionPool.tcp.idleTimeout",
            "ms precision",
        );
        // Rule 82.
        fails(
            &pool("{}"),
            "spec.inboundConnectionPool",
            "at least one field",
        );
        // Rule 83.
        fails(
            &pool("{http: {maxRetries: -1}}"),
            "spec.inboundConnectionPool.http.maxRetries",
            "non-negative",
        );
        fails(
            &pool("{tcp: {maxConnections: -1}}"),
            "spec.inboundConnectionPool.tcp.maxConnections",
            "non-negative",
        );
        // Rule 84.
        fails(
            &pool("{http: {useClientProtocol: true, h2UpgradePolicy: UPGRADE}}"),
            "spec.inboundConnectionPool.http",
            "use client protocol",
        );
        // Rule 85.
        fails(
            &pool("{http: {http2KeepAlive: {interval: 1s}}}"),
            "spec.inboundConnectionPool.http.http2KeepAlive.timeout",
            "required",
        );
    }

    #[test]
    fn go_split_host_port() {
        assert_eq!(split_host_port("127.0.0.1:80"), Ok(("127.0.0.1", "80")));
        assert_eq!(split_host_port("[::1]:80"), Ok(("::1", "80")));
        assert_eq!(split_host_port(":80"), Ok(("", "80")));
        assert!(split_host_port("::1:80").is_err());
        assert!(split_host_port("[::1]").is_err());
        assert!(split_host_port("host").is_err());
    }
}
