//! # tower-mesh
//!
//! A service mesh inside your process: Istio's configuration (VirtualService, DestinationRule,
//! Gateway, ServiceEntry, Sidecar, WorkloadEntry, PeerAuthentication, AuthorizationPolicy,
//! RequestAuthentication), parsed and validated as strictly as Istio does, and enforced by
//! Tower layers.
//!
//! This release holds the foundation: the typed config model ([`config`]), loading from
//! strings, files and directories ([`config::Loader`]), and validation of every rule Istio
//! enforces ([`validate`]).
//!
//! ```
//! use tower_mesh::config::{Loader, Spec};
//!
//! let yaml = r#"
//! apiVersion: networking.istio.io/v1alpha3
//! kind: VirtualService
//! metadata: {name: my-app}
//! spec:
//!   hosts: [my-app]
//!   http:
//!   - route:
//!     - destination: {host: my-app, subset: v1}
//!       weight: 80
//!     - destination: {host: my-app, subset: v2}
//!       weight: 20
//! "#;
//! let set = Loader::new().load_str(yaml);
//! let report = tower_mesh::validate::validate(&set);
//! assert!(!report.has_errors());
//! assert!(matches!(set.resources[0].spec, Spec::VirtualService(_)));
//! ```

#[cfg(feature = "admin")]
pub mod admin;
pub mod authn;
pub mod authz;
pub mod balance;
pub mod body;
pub mod client;
pub mod config;
mod dice;
pub mod error;
mod in_place;
pub mod inbound;
pub mod mesh;
#[cfg(feature = "metrics")]
mod metrics;
pub mod path;
pub mod pool;
pub mod proxy;
pub mod registry;
pub mod resilience;
pub mod route;
pub mod server;
pub mod snapshot;
pub mod telemetry;
pub mod tls;
pub mod validate;
#[cfg(feature = "watch")]
pub mod watch;
pub mod yaml;

pub use client::{MeshClient, Upstream};
pub use error::Error;
pub use inbound::{InboundLayer, InboundService};
pub use mesh::{
    ConfigSource, Mesh, MeshBuilder, MeshEvent, MeshSettings, OutboundPolicy, ReloadSummary,
};
pub use route::{RouteDecision, RouteLayer};
pub use server::serve;

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
