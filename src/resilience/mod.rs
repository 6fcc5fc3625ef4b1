//! The resilience layers (issue 5, in progress): what the MeshClient stacks between the
//! router and the connection pools, driven by VirtualService `timeout`, `retries`, `fault`,
//! `mirror` and DestinationRule `connectionPool`, `outlierDetection`, `retryBudget`.
//!
//! Each is a public Tower layer over `Service<Request<MeshBody>, Response =
//! Response<MeshBody>, Error = tower_mesh::Error>`, reading the request's
//! [`RouteDecision`](crate::route::RouteDecision); per-destination state lives in the
//! [`ClusterState`](crate::snapshot::ClusterState) and survives reloads.
pub mod circuit;
pub mod fault;
pub mod mirror;
pub mod outlier;
pub mod retry;
