//! `networking.istio.io` WorkloadEntry: one non-Kubernetes workload (a VM, a bare-metal host)
//! described with its address, ports and labels.
//!
//! The same type is the element of a ServiceEntry's `endpoints[]`: an inline endpoint of the
//! service entry's hosts.

use std::collections::BTreeMap;

use crate::config::decode::{Cx, Decode, Fields};
use crate::path::FieldPath;
use crate::yaml::Node;

/// The `spec` of a WorkloadEntry, and an entry of a ServiceEntry's `endpoints[]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct WorkloadEntry {
    /// `address`: the endpoint's address without the port: an IP, a DNS name (ServiceEntry
    /// resolution `DNS`), or a Unix domain socket `unix:///absolute/path` / `unix://@abstract`.
    /// Empty when absent; required unless `network` is set.
    pub address: String,
    /// `ports`: service port name → port number on this endpoint, overriding the service
    /// entry port's `targetPort` (or number). Absent = the service port numbers.
    pub ports: BTreeMap<String, u32>,
    /// `labels`: the endpoint's labels (DestinationRule subsets select on them).
    pub labels: BTreeMap<String, String>,
    /// `network`: the L3 network the endpoint lives in; empty = the proxy's own network.
    pub network: String,
    /// `locality`: `region/zone/subzone` for locality-aware load balancing; empty = unknown.
    pub locality: String,
    /// `weight`: relative load-balancing weight; 0 (absent) means the default of 1.
    pub weight: u32,
    /// `serviceAccount`: the workload's service account when it runs a sidecar (its SPIFFE
    /// identity); empty when absent.
    pub service_account: String,
}

impl WorkloadEntry {
    /// Whether `address` is a Unix domain socket (`unix://...`).
    pub fn is_unix(&self) -> bool {
        self.address.starts_with(UNIX_ADDRESS_PREFIX)
    }
}

/// The prefix marking a Unix domain socket address.
pub const UNIX_ADDRESS_PREFIX: &str = "unix://";

impl Decode for WorkloadEntry {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let we = WorkloadEntry {
            address: f.get("address", cx).unwrap_or_default(),
            ports: f.map("ports", cx),
            labels: f.map("labels", cx),
            network: f.get("network", cx).unwrap_or_default(),
            locality: f.get("locality", cx).unwrap_or_default(),
            weight: f.get("weight", cx).unwrap_or(0),
            service_account: f.get("serviceAccount", cx).unwrap_or_default(),
        };
        f.finish(cx);
        Some(we)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Loader, Spec};

    #[test]
    fn full_workload_entry_loads() {
        let set = Loader::new().load_str(
            "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm1, namespace: ns1}
spec:
  address: 10.0.0.5
  ports: {http: 8080, grpc: 9090}
  labels: {app: reviews, version: v1}
  network: vpc-1
  locality: us-east1/us-east1-b/rack1
  weight: 3
  serviceAccount: reviews-sa
",
        );
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        let Spec::WorkloadEntry(we) = &set.resources[0].spec else {
            panic!("not a WorkloadEntry");
        };
        assert_eq!(we.address, "10.0.0.5");
        assert_eq!(we.ports.get("http"), Some(&8080));
        assert_eq!(we.ports.get("grpc"), Some(&9090));
        assert_eq!(we.labels.get("version").map(String::as_str), Some("v1"));
        assert_eq!(we.network, "vpc-1");
        assert_eq!(we.locality, "us-east1/us-east1-b/rack1");
        assert_eq!(we.weight, 3);
        assert_eq!(we.service_account, "reviews-sa");
        assert!(!we.is_unix());
    }

    #[test]
    fn snake_case_and_unknown_fields() {
        let set = Loader::new().load_str(
            "apiVersion: networking.istio.io/v1beta1
kind: WorkloadEntry
metadata: {name: vm1}
spec:
  address: unix:///var/run/app.sock
  service_account: sa
  bogus: 1
  weight: -1
",
        );
        let Spec::WorkloadEntry(we) = &set.resources[0].spec else {
            panic!("not a WorkloadEntry");
        };
        assert_eq!(we.service_account, "sa");
        assert!(we.is_unix());
        let paths: Vec<_> = set.problems.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"spec.bogus"), "{paths:?}");
        assert!(paths.contains(&"spec.weight"), "{paths:?}");
    }
}
