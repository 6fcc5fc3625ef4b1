//! Validation rules for ServiceEntry (rules 101–111, with 6–13 for its ports, exportTo,
//! workloadSelector and endpoint labels).

use std::collections::BTreeSet;

use crate::config::Resource;
use crate::config::service_entry::{Location, Resolution, ServiceEntry};
use crate::path::FieldPath;
use crate::validate::Findings;
use crate::validate::common::{
    Protocol, check_export_to, check_port, check_selector, is_dns_label, is_known_protocol,
    validate_fqdn, validate_ip_or_cidr, validate_wildcard_domain,
};
use crate::validate::workload_entry::{AddressRule, EndpointRules, check_endpoint};

/// The label opting a ServiceEntry into (`"true"`) or out of automatic VIP allocation.
const AUTO_ALLOCATE_LABEL: &str = "networking.istio.io/enable-autoallocate-ip";
/// The label binding a resource to a waypoint proxy.
const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";

/// Checks every rule for a ServiceEntry.
pub(crate) fn check(
    res: &Resource,
    spec: &ServiceEntry,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    let resolution = spec.resolution();

    // Rules 11-12: the workload selector.
    if let Some(sel) = &spec.workload_selector {
        let sel_path = path.field("workloadSelector");
        check_selector(out, &sel_path, &sel_path.field("labels"), &sel.labels);
    }

    // Rule 105: workloadSelector and endpoints are exclusive.
    if spec.workload_selector.is_some() && !spec.endpoints.is_empty() {
        out.error(
            105,
            path,
            "only one of WorkloadSelector or Endpoints can be set",
        );
    }

    check_hosts(spec, resolution, path, out);
    check_addresses(spec, resolution, path, out);
    let port_names = check_ports(res, spec, path, out);

    let endpoints_path = path.field("endpoints");
    // Rule 111: at most 4096 endpoints.
    if spec.endpoints.len() > 4096 {
        out.error(
            111,
            &endpoints_path,
            format!(
                "Too many: {}: must have at most 4096 items",
                spec.endpoints.len()
            ),
        );
    }

    // Rules 106-109: per resolution mode.
    let address_rule = match resolution {
        Resolution::None => {
            if !spec.endpoints.is_empty() {
                out.error(
                    106,
                    &endpoints_path,
                    "NONE mode cannot set endpoints: no endpoints should be provided for resolution type none",
                );
            }
            if spec.workload_selector.is_some() {
                out.warn(
                    106,
                    &path.field("workloadSelector"),
                    "workloadSelector should not be set when resolution mode is NONE",
                );
            }
            AddressRule::Any
        }
        Resolution::Static => AddressRule::IpOrUnix,
        Resolution::Dns | Resolution::DnsRoundRobin => {
            if spec.endpoints.is_empty() {
                for (i, host) in spec.hosts.iter().enumerate() {
                    if host != "*" && !is_fqdn_or_prefix_wildcard(host) {
                        out.error(
                            108,
                            &path.field("hosts").index(i),
                            format!(
                                "hosts must be FQDN or contain only prefix wildcards if no endpoints are provided for resolution mode {resolution}: {host:?}"
                            ),
                        );
                    }
                }
            }
            if resolution == Resolution::DnsRoundRobin && spec.endpoints.len() > 1 {
                out.error(
                    108,
                    &endpoints_path,
                    format!(
                        "DNS_ROUND_ROBIN mode cannot have multiple endpoints: there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN (found {})",
                        spec.endpoints.len()
                    ),
                );
            }
            AddressRule::IpOrFqdn
        }
        Resolution::DynamicDns => {
            check_dynamic_dns(res, spec, path, out);
            AddressRule::Any
        }
    };

    // Rules 107, 108, 111 (with 6 and 13) on each endpoint.
    let rules = EndpointRules {
        address: address_rule,
        service_ports: Some(&port_names),
    };
    for (i, ep) in spec.endpoints.iter().enumerate() {
        check_endpoint(ep, &endpoints_path.index(i), out, &rules);
    }

    // Rule 110: several hosts need ports that tell them apart (HTTP Host or TLS SNI).
    if resolution != Resolution::None && spec.hosts.len() > 1 {
        let ports = path.field("ports");
        if let Some((i, _)) =
            spec.ports.iter().enumerate().find(|(_, p)| {
                !Protocol::parse(&p.protocol).is_some_and(|p| p.is_http() || p.is_tls())
            })
        {
            out.error(
                110,
                &ports.index(i),
                format!(
                    "multiple hosts provided with non-HTTP, non-TLS ports (resolution {resolution})"
                ),
            );
        }
    }

    // Rules 7-10.
    check_export_to(
        out,
        &path.field("exportTo"),
        &spec.export_to,
        &res.metadata.namespace,
        true,
    );
}

/// Rule 101: the hosts.
fn check_hosts(
    spec: &ServiceEntry,
    resolution: Resolution,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    let hosts = path.field("hosts");
    if spec.hosts.is_empty() {
        out.error(
            101,
            &hosts,
            "Required value: service entry must have at least one host",
        );
    }
    if spec.hosts.len() > 256 {
        out.error(
            101,
            &hosts,
            format!(
                "Too many: {}: must have at most 256 items",
                spec.hosts.len()
            ),
        );
    }
    for (i, host) in spec.hosts.iter().enumerate() {
        let p = hosts.index(i);
        if host == "*" {
            out.error(101, &p, "hostname cannot be wildcard: invalid host *");
            continue;
        }
        if let Err(e) = validate_wildcard_domain(host) {
            out.error(101, &p, e);
        }
        if is_partial_wildcard(host) && resolution != Resolution::DynamicDns {
            out.warn(101, &p, format!("partial wildcard {host:?} not allowed"));
        }
    }
}

/// Rule 102: the addresses.
fn check_addresses(
    spec: &ServiceEntry,
    resolution: Resolution,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    let addresses = path.field("addresses");
    if spec.addresses.len() > 256 {
        out.error(
            102,
            &addresses,
            format!(
                "Too many: {}: must have at most 256 items",
                spec.addresses.len()
            ),
        );
    }
    for (i, a) in spec.addresses.iter().enumerate() {
        let p = addresses.index(i);
        if a.len() > 64 {
            out.error(
                102,
                &p,
                format!(
                    "Too long: may not be more than 64 bytes (found {})",
                    a.len()
                ),
            );
        }
        if let Err(e) = validate_ip_or_cidr(a) {
            out.error(102, &p, e);
        }
    }
    if spec.addresses.iter().any(|a| a.contains('/'))
        && !matches!(resolution, Resolution::None | Resolution::Static)
    {
        out.error(
            102,
            &addresses,
            format!(
                "CIDR addresses are allowed only for NONE/STATIC resolution types (resolution is {resolution})"
            ),
        );
    }
}

/// Rules 103, 104 and 6: the ports. Returns the declared port names.
fn check_ports<'s>(
    res: &Resource,
    spec: &'s ServiceEntry,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) -> BTreeSet<&'s str> {
    let ports = path.field("ports");
    if spec.ports.len() > 256 {
        out.error(
            103,
            &ports,
            format!(
                "Too many: {}: must have at most 256 items",
                spec.ports.len()
            ),
        );
    }
    let auto_allocation = res
        .metadata
        .labels
        .get(AUTO_ALLOCATE_LABEL)
        .is_some_and(|v| v == "true");
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let p = ports.index(i);
        let name_path = p.field("name");
        let number_path = p.field("number");
        if port.name.is_empty() {
            out.error(103, &name_path, "Required value: port name is required");
        } else if !is_dns_label(&port.name) {
            out.error(
                103,
                &name_path,
                format!("invalid port name: {:?}", port.name),
            );
        }
        if !names.insert(port.name.as_str()) {
            out.error(
                103,
                &name_path,
                format!(
                    "Duplicate value: service entry port name {:?} already defined",
                    port.name
                ),
            );
        }
        if !numbers.insert(port.number) {
            out.error(
                103,
                &number_path,
                format!(
                    "port number cannot be duplicated: service entry port {} already defined",
                    port.number
                ),
            );
        }
        if !is_known_protocol(&port.protocol) {
            out.error(
                103,
                &p.field("protocol"),
                format!("unsupported protocol: {:?}", port.protocol),
            );
        }
        check_port(out, &number_path, port.number);
        if let Some(target) = port.target_port {
            check_port(out, &p.field("targetPort"), target);
        }
        // Rule 104.
        if spec.addresses.is_empty()
            && !auto_allocation
            && (port.protocol.is_empty() || port.protocol == "TCP")
        {
            out.warn(
                104,
                &p,
                "addresses are required for ports serving TCP (or unset) protocol when IP autoallocation is not enabled",
            );
        }
    }
    names
}

/// Rule 109: resolution `DYNAMIC_DNS`.
fn check_dynamic_dns(
    res: &Resource,
    spec: &ServiceEntry,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    let hosts = path.field("hosts");
    for (i, host) in spec.hosts.iter().enumerate() {
        if !host.starts_with('*') {
            out.error(
                109,
                &hosts.index(i),
                format!("host must be wildcarded for resolution mode DYNAMIC_DNS: {host:?}"),
            );
        }
    }
    if !spec.addresses.is_empty() {
        out.error(
            109,
            &path.field("addresses"),
            "addresses are not supported for resolution mode DYNAMIC_DNS",
        );
    }
    if !spec.endpoints.is_empty() {
        out.error(
            109,
            &path.field("endpoints"),
            "endpoints are not supported for resolution mode DYNAMIC_DNS",
        );
    }
    let ports = path.field("ports");
    for (i, port) in spec.ports.iter().enumerate() {
        let proto = Protocol::parse(&port.protocol);
        if !matches!(
            proto,
            Some(Protocol::Http | Protocol::Tls | Protocol::Grpc | Protocol::Http2)
        ) {
            out.error(
                109,
                &ports.index(i).field("protocol"),
                format!(
                    "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution mode DYNAMIC_DNS, found {:?}",
                    port.protocol
                ),
            );
        }
    }
    if spec.location() == Location::MeshInternal
        && res.metadata.labels.contains_key(USE_WAYPOINT_LABEL)
    {
        out.error(
            109,
            &path.field("location"),
            "MESH_INTERNAL with resolution mode DYNAMIC_DNS is not supported with a waypoint",
        );
    }
}

/// A partial wildcard such as `foo*.com` or `*x` (a `*` that is not the whole host nor a
/// `*.` prefix).
fn is_partial_wildcard(host: &str) -> bool {
    host.contains('*') && host != "*" && !host.starts_with("*.")
}

/// An FQDN, or `*.` followed by an FQDN.
fn is_fqdn_or_prefix_wildcard(host: &str) -> bool {
    validate_fqdn(host.strip_prefix("*.").unwrap_or(host)).is_ok()
}

#[cfg(test)]
mod tests {
    use crate::validate::testing::*;

    fn se(spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s, namespace: foo}}\nspec:\n{spec}"
        )
    }

    fn se_labels(labels: &str, spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: s, namespace: foo, labels: {labels}}}\nspec:\n{spec}"
        )
    }

    const HTTP_PORT: &str = "  ports: [{number: 80, name: http, protocol: HTTP}]\n";

    #[test]
    fn rule_101_hosts() {
        passes(&se(&format!("  hosts: [api.example.com]\n{HTTP_PORT}")));
        passes(&se(&format!("  hosts: [\"*.example.com\"]\n{HTTP_PORT}")));
        fails(&se(HTTP_PORT), "spec.hosts", "at least one host");
        fails(&se("  hosts: []\n"), "spec.hosts", "at least one host");
        fails(
            &se("  hosts: [\"*\"]\n"),
            "spec.hosts[0]",
            "hostname cannot be wildcard",
        );
        fails(
            &se("  hosts: [\"foo.*.com\"]\n"),
            "spec.hosts[0]",
            "invalid",
        );
        fails(&se("  hosts: [\"a..b\"]\n"), "spec.hosts[0]", "invalid");
        // Partial wildcards only warn (except with DYNAMIC_DNS, where they are fine).
        warns(
            &se(&format!("  hosts: [\"*x.com\"]\n{HTTP_PORT}")),
            "spec.hosts[0]",
            "partial wildcard",
        );
        no_finding(
            &se(
                "  hosts: [\"*x.com\"]\n  resolution: DYNAMIC_DNS\n  ports: [{number: 80, name: http, protocol: HTTP}]\n",
            ),
            "spec.hosts[0]",
        );
        let many: Vec<String> = (0..257).map(|i| format!("h{i}.example.com")).collect();
        fails(
            &se(&format!("  hosts: [{}]\n{HTTP_PORT}", many.join(", "))),
            "spec.hosts",
            "at most 256",
        );
    }

    #[test]
    fn rule_102_addresses() {
        passes(&se(&format!(
            "  hosts: [a.example.com]\n  addresses: [240.0.0.1, \"2001:db8::1\", 10.0.0.0/8]\n{HTTP_PORT}"
        )));
        passes(&se(&format!(
            "  hosts: [a.example.com]\n  addresses: [10.0.0.0/8]\n  resolution: STATIC\n  endpoints: [{{address: 10.0.0.1}}]\n{HTTP_PORT}"
        )));
        fails(
            &se("  hosts: [a.example.com]\n  addresses: [1.2.3.4/99]\n"),
            "spec.addresses[0]",
            "not a valid CIDR block",
        );
        fails(
            &se("  hosts: [a.example.com]\n  addresses: [1.2.3]\n"),
            "spec.addresses[0]",
            "not a valid IP",
        );
        fails(
            &se("  hosts: [a.example.com]\n  addresses: [1.2.3.4/16]\n  resolution: DNS\n"),
            "spec.addresses",
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
        fails(
            &se(&format!(
                "  hosts: [a.example.com]\n  addresses: [\"{}\"]\n",
                "1".repeat(65)
            )),
            "spec.addresses[0]",
            "Too long",
        );
    }

    #[test]
    fn rule_103_ports() {
        passes(&se(
            "  hosts: [a.example.com]\n  addresses: [240.0.0.1]\n  ports:\n  - {number: 80, name: http, protocol: http}\n  - {number: 443, name: Https-Port, protocol: HTTPS, targetPort: 8443}\n  - {number: 3306, name: db, protocol: MySQL}\n  - {number: 9000, name: sniffed}\n",
        ));
        fails(
            &se(
                "  hosts: [a.example.com]\n  ports:\n  - {number: 1, name: a}\n  - {number: 12, name: a}\n",
            ),
            "spec.ports[1].name",
            "Duplicate value",
        );
        fails(
            &se(
                "  hosts: [a.example.com]\n  ports:\n  - {number: 1, name: a}\n  - {number: 1, name: b}\n",
            ),
            "spec.ports[1].number",
            "port number cannot be duplicated",
        );
        fails(
            &se("  hosts: [a.example.com]\n  ports: [{number: 80, name: http_web}]\n"),
            "spec.ports[0].name",
            "invalid port name",
        );
        fails(
            &se("  hosts: [a.example.com]\n  ports: [{number: 80}]\n"),
            "spec.ports[0].name",
            "Required value",
        );
        fails(
            &se("  hosts: [a.example.com]\n  ports: [{number: 80, name: x, protocol: QUIC}]\n"),
            "spec.ports[0].protocol",
            "unsupported protocol",
        );
    }

    #[test]
    fn rule_006_service_entry_port_numbers() {
        fails(
            &se("  hosts: [a.example.com]\n  ports: [{number: 99999, name: a}]\n"),
            "spec.ports[0].number",
            "1..65535",
        );
        fails(
            &se("  hosts: [a.example.com]\n  ports: [{name: a, protocol: HTTP}]\n"),
            "spec.ports[0].number",
            "1..65535",
        );
        fails(
            &se("  hosts: [a.example.com]\n  ports: [{number: 1, name: a, targetPort: 99999}]\n"),
            "spec.ports[0].targetPort",
            "1..65535",
        );
        fails(
            &se("  hosts: [a.example.com]\n  ports: [{number: 1, name: a, targetPort: 0}]\n"),
            "spec.ports[0].targetPort",
            "1..65535",
        );
    }

    #[test]
    fn rule_104_tcp_ports_without_addresses_warn() {
        warns(
            &se("  hosts: [a.example.com]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n"),
            "spec.ports[0]",
            "addresses are required",
        );
        warns(
            &se("  hosts: [a.example.com]\n  ports: [{number: 5432, name: pg}]\n"),
            "spec.ports[0]",
            "addresses are required",
        );
        no_finding(
            &se(
                "  hosts: [a.example.com]\n  addresses: [240.0.0.9]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n",
            ),
            "spec.ports[0]",
        );
        no_finding(
            &se_labels(
                "{networking.istio.io/enable-autoallocate-ip: \"true\"}",
                "  hosts: [a.example.com]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n",
            ),
            "spec.ports[0]",
        );
        no_finding(
            &se(&format!("  hosts: [a.example.com]\n{HTTP_PORT}")),
            "spec.ports[0]",
        );
    }

    #[test]
    fn rule_105_selector_and_endpoints_exclusive() {
        passes(&se(
            "  hosts: [a.example.com]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  workloadSelector: {labels: {app: vm}}\n",
        ));
        fails(
            &se(
                "  hosts: [a.example.com]\n  resolution: STATIC\n  workloadSelector: {}\n  endpoints: [{address: 1.2.3.4}]\n",
            ),
            "spec",
            "only one of WorkloadSelector or Endpoints",
        );
    }

    #[test]
    fn rule_106_resolution_none() {
        passes(&se(&format!(
            "  hosts: [a.example.com]\n  resolution: NONE\n{HTTP_PORT}"
        )));
        fails(
            &se(
                "  hosts: [a.example.com]\n  resolution: NONE\n  endpoints: [{address: 1.2.3.4}]\n",
            ),
            "spec.endpoints",
            "NONE mode cannot set endpoints",
        );
        // Default resolution is NONE.
        fails(
            &se("  hosts: [a.example.com]\n  endpoints: [{address: 1.2.3.4}]\n"),
            "spec.endpoints",
            "no endpoints should be provided",
        );
        warns(
            &se("  hosts: [a.example.com]\n  workloadSelector: {labels: {app: a}}\n"),
            "spec.workloadSelector",
            "should not be set when resolution mode is NONE",
        );
    }

    #[test]
    fn rule_107_static_endpoints() {
        passes(&se(
            "  hosts: [a.example.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints:\n  - {address: 10.0.0.1, ports: {http: 8080}}\n  - {address: \"2001:db8::2\"}\n",
        ));
        passes(&se(
            "  hosts: [a.example.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: \"unix:///var/run/a.sock\"}]\n",
        ));
        fails(
            &se(
                "  hosts: [a.example.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: a.example.com}]\n",
            ),
            "spec.endpoints[0].address",
            "is not a valid IP address",
        );
        fails(
            &se(
                "  hosts: [a.example.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.0.0.1, ports: {grpc: 9090}}]\n",
            ),
            "spec.endpoints[0].ports[grpc]",
            "is not defined by the service entry",
        );
        fails(
            &se(
                "  hosts: [a.example.com]\n  resolution: STATIC\n  ports:\n  - {number: 80, name: http, protocol: HTTP}\n  - {number: 81, name: http2, protocol: HTTP}\n  endpoints: [{address: \"unix:///var/run/a.sock\"}]\n",
            ),
            "spec.endpoints[0]",
            "exactly 1 service port required for unix endpoints",
        );
        // Rule 13 on endpoint labels.
        fails(
            &se(
                "  hosts: [a.example.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  endpoints: [{address: 10.0.0.1, labels: {\"-bad\": x}}]\n",
            ),
            "spec.endpoints[0].labels[-bad]",
            "invalid tag key",
        );
    }

    #[test]
    fn rule_108_dns_resolution() {
        passes(&se(&format!(
            "  hosts: [a.example.com]\n  resolution: DNS\n{HTTP_PORT}"
        )));
        passes(&se(&format!(
            "  hosts: [\"*.example.com\"]\n  resolution: DNS\n{HTTP_PORT}"
        )));
        passes(&se(&format!(
            "  hosts: [svc]\n  resolution: DNS\n  endpoints: [{{address: backend.example.com}}, {{address: 10.0.0.1}}]\n{HTTP_PORT}"
        )));
        fails(
            &se(&format!(
                "  hosts: [\"*x.example.com\"]\n  resolution: DNS\n{HTTP_PORT}"
            )),
            "spec.hosts[0]",
            "hosts must be FQDN",
        );
        fails(
            &se(&format!(
                "  hosts: [a.example.com]\n  resolution: DNS\n  endpoints: [{{address: \"bad host\"}}]\n{HTTP_PORT}"
            )),
            "spec.endpoints[0].address",
            "is not a valid FQDN or an IP address",
        );
        fails(
            &se(&format!(
                "  hosts: [a.example.com]\n  resolution: DNS\n  endpoints: [{{network: n1}}]\n{HTTP_PORT}"
            )),
            "spec.endpoints[0].address",
            "is not a valid FQDN or an IP address",
        );
        passes(&se(&format!(
            "  hosts: [a.example.com]\n  resolution: DNS_ROUND_ROBIN\n  endpoints: [{{address: b.example.com}}]\n{HTTP_PORT}"
        )));
        fails(
            &se(&format!(
                "  hosts: [a.example.com]\n  resolution: DNS_ROUND_ROBIN\n  endpoints: [{{address: sub1.example.com}}, {{address: sub2.example.com}}]\n{HTTP_PORT}"
            )),
            "spec.endpoints",
            "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
        );
    }

    #[test]
    fn rule_109_dynamic_dns() {
        let ok = "  hosts: [\"*.example.com\"]\n  resolution: DYNAMIC_DNS\n  ports:\n  - {number: 80, name: http, protocol: HTTP}\n  - {number: 443, name: tls, protocol: TLS}\n";
        passes(&se(ok));
        fails(
            &se(
                "  hosts: [a.example.com]\n  resolution: DYNAMIC_DNS\n  ports: [{number: 80, name: http, protocol: HTTP}]\n",
            ),
            "spec.hosts[0]",
            "host must be wildcarded",
        );
        fails(
            &se(
                "  hosts: [\"*.example.com\"]\n  resolution: DYNAMIC_DNS\n  addresses: [240.0.0.1]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n",
            ),
            "spec.addresses",
            "not supported for resolution mode DYNAMIC_DNS",
        );
        fails(
            &se(
                "  hosts: [\"*.example.com\"]\n  resolution: DYNAMIC_DNS\n  endpoints: [{address: 1.2.3.4}]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n",
            ),
            "spec.endpoints",
            "not supported for resolution mode DYNAMIC_DNS",
        );
        fails(
            &se(
                "  hosts: [\"*.example.com\"]\n  resolution: DYNAMIC_DNS\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n",
            ),
            "spec.ports[0].protocol",
            "only HTTP, TLS, GRPC, and HTTP2 protocols are supported",
        );
        passes(&se_labels(
            "{istio.io/use-waypoint: wp}",
            &format!("{ok}  location: MESH_EXTERNAL\n"),
        ));
        fails(
            &se_labels(
                "{istio.io/use-waypoint: wp}",
                &format!("{ok}  location: MESH_INTERNAL\n"),
            ),
            "spec.location",
            "waypoint",
        );
    }

    #[test]
    fn rule_110_multiple_hosts_need_http_or_tls_ports() {
        let hosts = "  hosts: [a.example.com, b.example.com]\n  addresses: [240.0.0.1]\n";
        passes(&se(&format!(
            "{hosts}  resolution: DNS\n  ports: [{{number: 80, name: http, protocol: HTTP}}, {{number: 443, name: https, protocol: HTTPS}}]\n"
        )));
        // With resolution NONE the hosts are ignored.
        passes(&se(&format!(
            "{hosts}  ports: [{{number: 5432, name: pg, protocol: TCP}}]\n"
        )));
        fails(
            &se(&format!(
                "{hosts}  resolution: DNS\n  ports: [{{number: 80, name: http, protocol: HTTP}}, {{number: 5432, name: pg, protocol: TCP}}]\n"
            )),
            "spec.ports[1]",
            "multiple hosts provided with non-HTTP, non-TLS ports",
        );
    }

    #[test]
    fn rule_111_endpoint_crd_rules() {
        let base = "  hosts: [a.example.com]\n  resolution: STATIC\n  ports: [{number: 80, name: http, protocol: HTTP}]\n";
        fails(
            &se(&format!("{base}  endpoints: [{{labels: {{app: a}}}}]\n")),
            "spec.endpoints[0]",
            "Address is required",
        );
        warns(
            &se(&format!("{base}  endpoints: [{{network: n2}}]\n")),
            "spec.endpoints[0].address",
            "address is unset with network",
        );
        fails(
            &se(&format!(
                "{base}  endpoints: [{{address: \"unix:///a.sock\", ports: {{http: 80}}}}]\n"
            )),
            "spec.endpoints[0].ports",
            "UDS may not include ports",
        );
        fails(
            &se(&format!(
                "{base}  endpoints: [{{address: \"unix://a.sock\"}}]\n"
            )),
            "spec.endpoints[0].address",
            "UDS must be an absolute path",
        );
        fails(
            &se(&format!(
                "{base}  endpoints: [{{address: 10.0.0.1, ports: {{http: 0}}}}]\n"
            )),
            "spec.endpoints[0].ports[http]",
            "1..65535",
        );
        let many: Vec<&str> = vec!["{address: 10.0.0.1}"; 4097];
        fails(
            &se(&format!("{base}  endpoints: [{}]\n", many.join(", "))),
            "spec.endpoints",
            "at most 4096",
        );
    }

    #[test]
    fn rules_007_to_012_export_to_and_selector() {
        let base = format!("  hosts: [a.example.com]\n{HTTP_PORT}");
        passes(&se(&format!("{base}  exportTo: [\"~\"]\n")));
        passes(&se(&format!("{base}  exportTo: [\".\", bar]\n")));
        fails(
            &se(&format!("{base}  exportTo: [\"Bad_NS\"]\n")),
            "spec.exportTo[0]",
            "DNS 1123 label",
        );
        fails(
            &se(&format!("{base}  exportTo: [\".\", foo]\n")),
            "spec.exportTo[1]",
            "duplicate",
        );
        fails(
            &se(&format!("{base}  exportTo: [\"*\", bar]\n")),
            "spec.exportTo",
            "public",
        );
        fails(
            &se(&format!("{base}  exportTo: [\"~\", bar]\n")),
            "spec.exportTo",
            "no one",
        );
        fails(
            &se(&format!(
                "{base}  resolution: STATIC\n  workloadSelector: {{labels: {{val: \"*\"}}}}\n"
            )),
            "spec.workloadSelector.labels[val]",
            "wildcard is not supported in selector",
        );
        warns(
            &se(&format!(
                "{base}  resolution: STATIC\n  workloadSelector: {{}}\n"
            )),
            "spec.workloadSelector",
            "without labels",
        );
    }
}
