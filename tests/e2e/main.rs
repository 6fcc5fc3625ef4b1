//! End-to-end tests over real loopback sockets: test backends, gRPC through tonic, and (as the
//! request path lands) the mesh between them. One test binary, so the crate is linked once.

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod backends;
mod gateway;
mod grpc;
mod mesh_grpc;
mod perf;
mod proxy;
mod registry;
mod reload;
mod resilience;
mod routing;
mod security;
mod server;
mod telemetry;
