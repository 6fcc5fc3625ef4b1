//! `security.istio.io` PeerAuthentication: which mutual-TLS mode a workload accepts.
//!
//! Precedence (applied by the security layers, not here): workload selector > namespace >
//! mesh (root namespace) > the built-in PERMISSIVE; `UNSET` at any level inherits.

use std::collections::BTreeMap;

use crate::config::common::MatchLabelsSelector;
use crate::config::decode::{Cx, Decode, Fields};
use crate::path::FieldPath;
use crate::yaml::Node;

/// The `spec` of a PeerAuthentication.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PeerAuthentication {
    /// `selector`: the workloads it applies to; absent = the whole namespace (or mesh, in the
    /// root namespace).
    pub selector: Option<MatchLabelsSelector>,
    /// `mtls`: the workload-wide mode.
    pub mtls: Option<MutualTls>,
    /// `portLevelMtls`: per workload port, keyed by the port number as written.
    pub port_level_mtls: Option<BTreeMap<String, MutualTls>>,
}

/// `mtls` / a `portLevelMtls` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MutualTls {
    /// `mode`; absent = `UNSET`.
    pub mode: Option<MtlsMode>,
}

crate::istio_enum! {
    /// `mtls.mode`.
    pub enum MtlsMode {
        /// Inherit from the parent scope.
        Unset => "UNSET",
        /// Plaintext only.
        Disable => "DISABLE",
        /// Accept both mTLS and plaintext.
        Permissive => "PERMISSIVE",
        /// Require mTLS with a client certificate.
        Strict => "STRICT",
    }
}

impl Decode for PeerAuthentication {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let spec = PeerAuthentication {
            selector: f.get("selector", cx),
            mtls: f.get("mtls", cx),
            port_level_mtls: f.get("portLevelMtls", cx),
        };
        f.finish(cx);
        Some(spec)
    }
}

impl Decode for MutualTls {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let m = MutualTls {
            mode: f.get("mode", cx),
        };
        f.finish(cx);
        Some(m)
    }
}
