//! The compiled, immutable view of a config for the request path (issue 4, in progress).
//!
//! So far: host names (short-name expansion, the most-specific-first [`HostIndex`], authority
//! resolution as Istio's virtual-host domains) and the DestinationRule policy merge
//! ([`DestinationRuleIndex`], [`ClusterPolicy`]). The route tables and the `Snapshot` that
//! ties them together come next.

pub mod hosts;
pub mod policy;

pub use hosts::{ClusterDomain, HostIndex, expand_host};
pub use policy::{ClusterPolicy, DestinationRuleIndex, MergedDestinationRule, Provenance};
