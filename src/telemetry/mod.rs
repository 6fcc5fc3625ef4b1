//! Telemetry: Istio's standard metrics, trace propagation and the access log, as layers.
//!
//! # Istio's request metrics (feature `metrics`)
//!
//! On the prometheus-client `Registry` given to
//! [`MeshBuilder::metrics`](crate::MeshBuilder::metrics), with Istio's names, labels and
//! default buckets:
//!
//! - `istio_requests_total` (counter);
//! - `istio_request_duration_milliseconds` (histogram, Istio's default buckets), from the
//!   request's arrival until its response body has ended;
//! - `istio_request_bytes` (histogram; the request's `content-length`, 0 without one);
//! - `istio_response_bytes` (histogram; the response body bytes sent).
//!
//! Two reporters, as an Istio sidecar has:
//!
//! - `reporter="destination"`: the inbound stack ([`Mesh::inbound`](crate::Mesh::inbound)),
//!   outermost, so requests that authentication or authorization answer (401, 403) count too;
//! - `reporter="source"`: [`OutboundMetricsLayer`], placed right below
//!   [`RouteLayer`](crate::RouteLayer) in an outbound stack.
//!
//! Labels: `reporter`, `source_workload` (this workload's `app` label outbound; `unknown`
//! inbound: Istio learns the peer's by metadata exchange, which an in-process mesh does not
//! do), `source_workload_namespace` and `source_principal` (inbound from the peer's SPIFFE ID
//! under mutual TLS, else `unknown`; outbound this workload's), `destination_service` (the
//! destination host), `destination_service_name` (its first label; `PassthroughCluster` for
//! passthrough, as Istio reports it), `destination_workload` and
//! `destination_workload_namespace` (this workload inbound; `unknown` outbound, as without
//! metadata exchange), `destination_principal` (this workload's SPIFFE ID inbound; `unknown`
//! outbound), `request_protocol` (`http` / `grpc`), `response_code`, `response_flags`
//! (Envoy's, `-` for none) and `connection_security_policy` (`mutual_tls` / `none` inbound;
//! `unknown` outbound, as Istio's source reporter says). A request is recorded once, when
//! its response body ends or is dropped.
//!
//! The mesh's own counters (`tower_mesh_*`, fed by the [`MeshEvent`](crate::MeshEvent)
//! stream) are listed in [`MeshBuilder::metrics`](crate::MeshBuilder::metrics).
//!
//! # Traces and the access log (always available)
//!
//! [`trace::TraceLayer`] continues W3C / B3 traces, adds `x-request-id`, and opens a
//! `tracing` span per request at `DEBUG` level (a subscriber at `INFO`, the usual production
//! level, pays nothing for it); [`access_log::AccessLogLayer`] writes Envoy's default access
//! log line (or JSON) through `tracing` at target `tower_mesh::access_log`.
//!
//! # Where the layers go
//!
//! Outbound (client or sidecar), outermost first:
//!
//! 1. [`trace::TraceLayer`] (so the generated `x-request-id` is logged);
//! 2. [`access_log::AccessLogLayer`] (sees every request, including those the router
//!    answers itself: `NR`, `NC`, redirects);
//! 3. [`RouteLayer`](crate::RouteLayer);
//! 4. [`OutboundMetricsLayer`] (reads the [`RouteDecision`](crate::RouteDecision); the router's
//!    own answers are not seen here: they never reach a destination);
//! 5. the resilience stack (fault, mirror, timeout, retry, …): one recorded request per
//!    caller request, with the final response code and flags (`URX`, `UO`, `FI`, …).
//!
//! [`trace::TraceLayer`] may also sit right below the router, where its span names the route
//! and destination. Inbound: [`trace::TraceLayer`] and [`access_log::AccessLogLayer`] around
//! [`Mesh::inbound`](crate::Mesh::inbound), which records `reporter="destination"` itself.

pub mod access_log;
#[cfg(feature = "metrics")]
pub(crate) mod events;
#[cfg(feature = "metrics")]
mod istio;
#[cfg(feature = "metrics")]
pub mod outbound;
pub mod trace;

pub use access_log::{AccessLogFormat, AccessLogLayer, AccessLogService};
#[cfg(feature = "metrics")]
pub(crate) use istio::{IstioMetrics, LocalWorkload, Measured, RequestLabels};
#[cfg(feature = "metrics")]
pub use outbound::{OutboundMetrics, OutboundMetricsLayer};
pub use trace::{TraceContext, TraceFormat, TraceLayer, TraceService};
