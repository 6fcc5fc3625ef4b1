//! `networking.istio.io` ServiceEntry: adds hosts (usually external services) to Istio's
//! service registry, with their ports, how their addresses are resolved, and optionally their
//! endpoints.

use crate::config::common::WorkloadSelector;
use crate::config::decode::{Cx, Decode, Fields};
use crate::config::workload_entry::WorkloadEntry;
use crate::path::FieldPath;
use crate::yaml::Node;

/// The `spec` of a ServiceEntry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ServiceEntry {
    /// `hosts` (required, 1..256): the host names the entry adds (FQDN or wildcard prefix
    /// `*.example.com`; `*` alone is not allowed). Matched against the HTTP Host header / the
    /// TLS SNI.
    pub hosts: Vec<String>,
    /// `addresses`: virtual IPs or CIDR blocks of the service; absent = traffic is matched by
    /// port only (or an auto-allocated address).
    pub addresses: Vec<String>,
    /// `ports`: the service's ports (names and numbers unique).
    pub ports: Vec<ServicePort>,
    /// `location`; absent = `MESH_EXTERNAL`.
    pub location: Option<Location>,
    /// `resolution`; absent = `NONE`.
    pub resolution: Option<Resolution>,
    /// `endpoints`: the service's endpoints (exclusive with `workloadSelector`).
    pub endpoints: Vec<WorkloadEntry>,
    /// `workloadSelector`: selects WorkloadEntries and pods as endpoints instead of
    /// `endpoints` (MESH_INTERNAL services). `Some` even when written as `{}`.
    pub workload_selector: Option<WorkloadSelector>,
    /// `exportTo`: namespaces the entry is visible to (`.`, `*`, `~`, a namespace); absent =
    /// the mesh default (every namespace).
    pub export_to: Vec<String>,
    /// `subjectAltNames`: identities the server certificate must carry when Istio originates
    /// mTLS to the service.
    pub subject_alt_names: Vec<String>,
}

impl ServiceEntry {
    /// The resolution mode, with Istio's default (`NONE`) when absent.
    pub fn resolution(&self) -> Resolution {
        self.resolution.unwrap_or(Resolution::None)
    }

    /// The location, with Istio's default (`MESH_EXTERNAL`) when absent.
    pub fn location(&self) -> Location {
        self.location.unwrap_or(Location::MeshExternal)
    }
}

/// A `ports[]` entry of a ServiceEntry (Istio's `ServicePort`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ServicePort {
    /// `number` (required): the port number (0 when absent).
    pub number: u32,
    /// `protocol`: `HTTP`, `HTTPS`, `GRPC`, `GRPC-WEB`, `HTTP2`, `HTTP_PROXY`, `MONGO`, `MYSQL`,
    /// `REDIS`, `TCP`, `TLS` or `UDP` (case-insensitive); empty = detected by sniffing.
    pub protocol: String,
    /// `name` (required): the port's name, a DNS label; endpoints' `ports` refer to it.
    pub name: String,
    /// `targetPort`: the port on the endpoints receiving the traffic; absent = `number`.
    pub target_port: Option<u32>,
}

crate::istio_enum! {
    /// `location`: whether the service is part of the mesh.
    pub enum Location {
        /// Outside the mesh: no mTLS to it, policies see it as external (the default).
        MeshExternal => "MESH_EXTERNAL",
        /// Part of the mesh (e.g. VMs with sidecars): mTLS and mesh policies apply.
        MeshInternal => "MESH_INTERNAL",
    }
}

crate::istio_enum! {
    /// `resolution`: how the proxy finds the addresses of the service's endpoints.
    pub enum Resolution {
        /// Forward to the original destination IP of the connection (the default); no
        /// endpoints allowed.
        None => "NONE",
        /// Use the IPs (or Unix sockets) of `endpoints`.
        Static => "STATIC",
        /// Resolve the endpoints' addresses (or the hosts, without endpoints) by DNS,
        /// load-balancing across every returned IP.
        Dns => "DNS",
        /// Resolve by DNS and use only the first returned IP per connection (0 or 1 endpoint).
        DnsRoundRobin => "DNS_ROUND_ROBIN",
        /// Resolve the requested host name at request time (wildcard hosts, HTTP/TLS only).
        DynamicDns => "DYNAMIC_DNS",
    }
}

impl Decode for ServiceEntry {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let spec = ServiceEntry {
            hosts: f.list("hosts", cx),
            addresses: f.list("addresses", cx),
            ports: f.list("ports", cx),
            location: f.get("location", cx),
            resolution: f.get("resolution", cx),
            endpoints: f.list("endpoints", cx),
            workload_selector: f.get("workloadSelector", cx),
            export_to: f.list("exportTo", cx),
            subject_alt_names: f.list("subjectAltNames", cx),
        };
        f.finish(cx);
        Some(spec)
    }
}

impl Decode for ServicePort {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let port = ServicePort {
            number: f.get("number", cx).unwrap_or(0),
            protocol: f.get("protocol", cx).unwrap_or_default(),
            name: f.get("name", cx).unwrap_or_default(),
            target_port: f.get("targetPort", cx),
        };
        f.finish(cx);
        Some(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Loader, Spec};

    fn load(yaml: &str) -> (ServiceEntry, Vec<String>) {
        let set = Loader::new().load_str(yaml);
        let problems = set.problems.iter().map(|p| p.to_string()).collect();
        let Spec::ServiceEntry(se) = set.resources[0].spec.clone() else {
            panic!("not a ServiceEntry");
        };
        (se, problems)
    }

    #[test]
    fn full_service_entry_loads() {
        let (se, problems) = load(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: ns1}
spec:
  hosts: [api.example.com, \"*.example.org\"]
  addresses: [240.0.0.1, 10.0.0.0/8]
  ports:
  - {number: 443, protocol: TLS, name: tls, targetPort: 8443}
  - {number: 80, protocol: http, name: http}
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
  - address: 10.1.2.3
    ports: {tls: 9443}
    labels: {version: v1}
    network: n1
    locality: r1/z1
    weight: 2
    serviceAccount: sa1
  exportTo: [\".\", other]
  subjectAltNames: [spiffe://cluster.local/ns/ns1/sa/sa1]
",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(se.hosts, ["api.example.com", "*.example.org"]);
        assert_eq!(se.addresses, ["240.0.0.1", "10.0.0.0/8"]);
        assert_eq!(
            se.ports[0],
            ServicePort {
                number: 443,
                protocol: "TLS".into(),
                name: "tls".into(),
                target_port: Some(8443),
            }
        );
        assert_eq!(se.ports[1].target_port, None);
        assert_eq!(se.location(), Location::MeshInternal);
        assert_eq!(se.resolution(), Resolution::Static);
        let ep = &se.endpoints[0];
        assert_eq!(ep.address, "10.1.2.3");
        assert_eq!(ep.ports.get("tls"), Some(&9443));
        assert_eq!(ep.labels.get("version").map(String::as_str), Some("v1"));
        assert_eq!(
            (ep.network.as_str(), ep.locality.as_str(), ep.weight),
            ("n1", "r1/z1", 2)
        );
        assert_eq!(ep.service_account, "sa1");
        assert!(se.workload_selector.is_none());
        assert_eq!(se.export_to, [".", "other"]);
        assert_eq!(
            se.subject_alt_names,
            ["spiffe://cluster.local/ns/ns1/sa/sa1"]
        );
    }

    #[test]
    fn defaults_selector_and_snake_case() {
        let (se, problems) = load(
            "apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [a.example.com]
  workload_selector: {}
  export_to: [\"*\"]
  subject_alt_names: [x]
  ports: [{number: 80, name: http, target_port: 8080}]
",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(se.resolution(), Resolution::None);
        assert_eq!(se.location(), Location::MeshExternal);
        assert_eq!(se.workload_selector, Some(WorkloadSelector::default()));
        assert_eq!(se.export_to, ["*"]);
        assert_eq!(se.subject_alt_names, ["x"]);
        assert_eq!(se.ports[0].target_port, Some(8080));
    }

    #[test]
    fn bad_enums_and_unknown_fields_are_reported() {
        let (_, problems) = load(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [a.example.com]
  resolution: DNS_ONLY
  location: OUTSIDE
  ports: [{number: 80, name: http, bogus: 1}]
  endpoints: [{address: 1.2.3.4, port: 80}]
",
        );
        let all = problems.join("\n");
        assert!(all.contains("spec.resolution: Unsupported value"), "{all}");
        assert!(all.contains("spec.location: Unsupported value"), "{all}");
        assert!(all.contains("spec.ports[0].bogus: unknown field"), "{all}");
        assert!(
            all.contains("spec.endpoints[0].port: unknown field"),
            "{all}"
        );
    }
}
