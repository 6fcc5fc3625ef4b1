//! Validation rules for WorkloadEntry (the single-endpoint rules of 107 and 111, with 6 and
//! 13), and the endpoint checks shared with ServiceEntry `endpoints[]`.

use std::collections::BTreeSet;

use crate::config::Resource;
use crate::config::workload_entry::{UNIX_ADDRESS_PREFIX, WorkloadEntry};
use crate::path::FieldPath;
use crate::validate::Findings;
use crate::validate::common::{check_label_map, check_port, is_dns_label, is_ip, validate_fqdn};

/// Checks every rule for a WorkloadEntry.
pub(crate) fn check(
    _res: &Resource,
    spec: &WorkloadEntry,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    check_endpoint(spec, path, out, &EndpointRules::STANDALONE);
}

/// What an endpoint's address may be, and which rule number reports a bad one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AddressRule {
    /// Any address accepted by the CRD (ServiceEntry resolution NONE / DYNAMIC_DNS, where
    /// endpoints are rejected anyway).
    Any,
    /// An IP or `unix://` socket (ServiceEntry `STATIC`): rule 107.
    IpOrUnix,
    /// An IP, an FQDN or a `unix://` socket (a WorkloadEntry): rule 107.
    IpFqdnOrUnix,
    /// An IP or an FQDN, and an address is required even with `network` (ServiceEntry `DNS`
    /// / `DNS_ROUND_ROBIN`): rule 108.
    IpOrFqdn,
}

/// How to check one endpoint.
pub(crate) struct EndpointRules<'a> {
    /// The accepted addresses.
    pub address: AddressRule,
    /// The names of the service entry's ports, when the endpoint belongs to one (endpoint
    /// `ports` keys must be among them: rule 107).
    pub service_ports: Option<&'a BTreeSet<&'a str>>,
}

impl EndpointRules<'static> {
    /// A WorkloadEntry resource.
    pub const STANDALONE: EndpointRules<'static> = EndpointRules {
        address: AddressRule::IpFqdnOrUnix,
        service_ports: None,
    };
}

/// Rules 107/108/111 with 6 and 13 for one endpoint (a WorkloadEntry spec or a ServiceEntry
/// `endpoints[]` entry) at `path`.
pub(crate) fn check_endpoint(
    we: &WorkloadEntry,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
    rules: &EndpointRules<'_>,
) {
    let addr = we.address.as_str();
    let addr_path = path.field("address");

    // Rule 111: an address, or at least a network.
    if addr.is_empty() {
        if we.network.is_empty() {
            out.error(111, path, "Address is required: address is required");
            return;
        }
        if rules.address == AddressRule::IpOrFqdn {
            out.error(
                108,
                &addr_path,
                "endpoint address \"\" is not a valid FQDN or an IP address",
            );
        } else {
            out.warn(
                111,
                &addr_path,
                format!("address is unset with network {:?}", we.network),
            );
        }
    }

    // Rule 111 (CRD): field lengths.
    for (field, value, max) in [
        ("address", &we.address, 256),
        ("network", &we.network, 2048),
        ("locality", &we.locality, 2048),
        ("serviceAccount", &we.service_account, 253),
    ] {
        if value.len() > max {
            out.error(
                111,
                &path.field(field),
                format!(
                    "Too long: may not be more than {max} bytes (found {})",
                    value.len()
                ),
            );
        }
    }

    let ports_path = path.field("ports");
    if let Some(socket) = addr.strip_prefix(UNIX_ADDRESS_PREFIX) {
        if let Err(e) = validate_unix_address(socket) {
            out.error(111, &addr_path, e);
        }
        if !we.ports.is_empty() {
            out.error(
                111,
                &ports_path,
                format!("UDS may not include ports: unix endpoint {addr} must not include ports"),
            );
        }
        if rules.address == AddressRule::IpOrFqdn {
            out.error(
                108,
                &addr_path,
                format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
            );
        }
        if rules.address == AddressRule::IpOrUnix
            && let Some(ports) = rules.service_ports
            && ports.len() != 1
        {
            out.error(
                107,
                path,
                format!(
                    "exactly 1 service port required for unix endpoints (found {})",
                    ports.len()
                ),
            );
        }
    } else if !addr.is_empty() && !is_ip(addr) {
        match rules.address {
            AddressRule::Any => {}
            AddressRule::IpOrUnix => out.error(
                107,
                &addr_path,
                format!("endpoint address {addr:?} is not a valid IP address"),
            ),
            AddressRule::IpFqdnOrUnix | AddressRule::IpOrFqdn => {
                if validate_fqdn(addr).is_err() {
                    let rule = if rules.address == AddressRule::IpOrFqdn {
                        108
                    } else {
                        107
                    };
                    out.error(
                        rule,
                        &addr_path,
                        format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
                    );
                }
            }
        }
    }

    // Ports: names valid (111), numbers valid (6), names declared by the service entry (107).
    if we.ports.len() > 128 {
        out.error(
            111,
            &ports_path,
            format!("Too many: {}: must have at most 128 items", we.ports.len()),
        );
    }
    for (name, &number) in &we.ports {
        let p = ports_path.key(name);
        if !is_port_map_name(name) {
            out.error(
                111,
                &p,
                format!("port name must be valid: invalid port name: {name:?}"),
            );
        }
        check_port(out, &p, number);
        if let Some(declared) = rules.service_ports
            && !declared.contains(name.as_str())
        {
            out.error(
                107,
                &p,
                format!("endpoint port {number} ({name:?}) is not defined by the service entry"),
            );
        }
    }

    // Rule 13: labels are Kubernetes labels.
    if we.labels.len() > 256 {
        out.error(
            111,
            &path.field("labels"),
            format!("Too many: {}: must have at most 256 items", we.labels.len()),
        );
    }
    check_label_map(out, &path.field("labels"), &we.labels);
}

/// An endpoint `ports` key as the CRD accepts it: a DNS label shorter than 63 characters.
fn is_port_map_name(name: &str) -> bool {
    name.len() < 63 && is_dns_label(name)
}

/// The path part of a `unix://` address: an absolute file path (not a directory) or an
/// abstract socket (`@name`).
pub(crate) fn validate_unix_address(socket: &str) -> Result<(), String> {
    if socket.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if socket.starts_with('@') {
        return Ok(());
    }
    if !socket.starts_with('/') {
        return Err(format!(
            "UDS must be an absolute path or abstract socket: {socket} is not an absolute path to a file"
        ));
    }
    if socket.ends_with('/') {
        return Err(format!(
            "UDS may not be a dir: {socket} is not an absolute path to a file"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::validate::testing::*;

    fn we(spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: vm, namespace: foo}}\nspec:\n{spec}"
        )
    }

    #[test]
    fn rule_107_workload_entry_address_forms() {
        passes(&we("  address: 10.0.0.1\n"));
        passes(&we("  address: \"2001:db8::1\"\n"));
        passes(&we("  address: vm1.example.com\n"));
        passes(&we("  address: unix:///var/run/app.sock\n"));
        passes(&we("  address: unix://@abstract\n"));
        fails(
            &we("  address: \"not a host!\"\n"),
            "spec.address",
            "is not a valid FQDN or an IP address",
        );
        fails(
            &we("  address: vm1.example.123\n"),
            "spec.address",
            "is not a valid FQDN or an IP address",
        );
    }

    #[test]
    fn rule_111_workload_entry_crd_rules() {
        // An address, or a network.
        fails(&we("  labels: {app: a}\n"), "spec", "Address is required");
        warns(
            &we("  network: vpc-1\n"),
            "spec.address",
            "address is unset with network",
        );
        // Unix sockets: absolute path or abstract, not a directory, no ports.
        fails(
            &we("  address: unix://relative.sock\n"),
            "spec.address",
            "UDS must be an absolute path or abstract socket",
        );
        fails(
            &we("  address: unix:///var/run/\n"),
            "spec.address",
            "UDS may not be a dir",
        );
        fails(
            &we("  address: unix:///var/run/a.sock\n  ports: {http: 8080}\n"),
            "spec.ports",
            "UDS may not include ports",
        );
        // Port names.
        passes(&we("  address: 10.0.0.1\n  ports: {http-web: 8080}\n"));
        fails(
            &we("  address: 10.0.0.1\n  ports: {\"http_web\": 8080}\n"),
            "spec.ports[http_web]",
            "port name must be valid",
        );
        // Lengths.
        fails(
            &we(&format!(
                "  address: 10.0.0.1\n  serviceAccount: {}\n",
                "a".repeat(254)
            )),
            "spec.serviceAccount",
            "Too long",
        );
        // Weight is a uint32 (decoder).
        passes(&we("  address: 10.0.0.1\n  weight: 4294967295\n"));
        fails(
            &we("  address: 10.0.0.1\n  weight: -1\n"),
            "spec.weight",
            "out of range",
        );
    }

    #[test]
    fn workload_entry_ports_and_labels() {
        // Rule 6 on endpoint ports.
        fails(
            &we("  address: 10.0.0.1\n  ports: {http: 0}\n"),
            "spec.ports[http]",
            "1..65535",
        );
        fails(
            &we("  address: 10.0.0.1\n  ports: {http: 70000}\n"),
            "spec.ports[http]",
            "1..65535",
        );
        // Rule 13 on labels.
        passes(&we(
            "  address: 10.0.0.1\n  labels: {app.kubernetes.io/name: x}\n",
        ));
        fails(
            &we("  address: 10.0.0.1\n  labels: {app: \"bad value\"}\n"),
            "spec.labels[app]",
            "invalid tag value",
        );
    }
}
