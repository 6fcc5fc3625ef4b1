//! Ingress gateway: Istio `Gateway` servers as listeners, and the VirtualServices bound to them.

pub mod hosts;
pub mod sni;
