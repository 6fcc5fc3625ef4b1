//! Proxy mode: a sidecar (outbound and inbound) or an ingress gateway built from the mesh's
//! public parts, as `tower-mesh proxy` runs it.

pub mod gateway;
