//! The endpoint registry: which services exist and where their endpoints are.
//!
//! Two halves, one per lifetime:
//!
//! - [`ServiceRegistry`] is built from one config ([`ServiceRegistry::from_config`]): one
//!   [`Service`] per ServiceEntry host (Kubernetes-style services are ServiceEntries with
//!   `resolution: STATIC`), with its ports, resolution, location and the endpoints config
//!   gives it (ServiceEntry `endpoints[]`, or the WorkloadEntries its `workloadSelector`
//!   selects). It is rebuilt on every reload.
//! - [`EndpointRegistry`] is long-lived and survives reloads: the endpoint sets per (service
//!   host, port), fed by config ([`EndpointRegistry::apply_config`], which also runs the DNS
//!   resolvers of `resolution: DNS` services), by a user static map
//!   ([`EndpointRegistry::set_static`]) and by user `tower::discover::Discover` streams
//!   ([`EndpointRegistry::discover`]). A compiled config takes a [`ClusterEndpoints`] handle
//!   per cluster (host, port, DestinationRule subset); requests read it lock-free with
//!   [`ClusterEndpoints::load`], already filtered by the subset's labels.
//!
//! ```
//! use std::collections::BTreeMap;
//! use tower_mesh::registry::{Endpoint, EndpointRegistry, RoundRobin};
//!
//! let registry = EndpointRegistry::new();
//! let v1 = BTreeMap::from([("version".to_owned(), "v1".to_owned())]);
//! let cluster = registry.cluster("reviews.default.svc.cluster.local", 9080, Some(&v1));
//! assert!(cluster.load().is_empty());
//!
//! registry.set_static("reviews.default.svc.cluster.local", 9080, vec![
//!     Endpoint::new("10.0.0.1:9080".parse().unwrap()).with_labels([("version", "v1")]),
//!     Endpoint::new("10.0.0.2:9080".parse().unwrap()).with_labels([("version", "v2")]),
//! ]);
//! let endpoints = cluster.load(); // the handle sees the change, filtered by the subset
//! assert_eq!(endpoints.len(), 1);
//! let picker = RoundRobin::new();
//! assert_eq!(picker.pick(&endpoints).unwrap().addr.port(), 9080);
//! ```

mod dns;
mod endpoint;
mod service;
mod store;

pub use dns::{Resolve, ResolveFuture, SystemResolver};
pub use endpoint::{Endpoint, RoundRobin};
pub use service::{ConfigEndpoint, EndpointAddress, Service, ServicePort, ServiceRegistry};
pub use store::{ClusterEndpoints, DEFAULT_DNS_REFRESH, EndpointRegistry};

/// Errors of the endpoint registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A task had to be started (a DNS resolver, a Discover stream) outside a tokio runtime.
    #[error("{what} needs a tokio runtime: call this from inside one")]
    NoRuntime {
        /// What needed the task.
        what: &'static str,
    },
}
