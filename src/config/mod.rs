//! Istio's configuration model: one Rust type per kind, one module per kind.
//!
//! Every apiVersion Istio serves for a kind (`networking.istio.io/v1alpha3`, `v1beta1`, `v1`;
//! `security.istio.io/v1beta1`, `v1`) has the same schema and loads into the same type. Field
//! names follow Istio's (camelCase in YAML, snake_case in Rust); enums are Rust enums;
//! durations are [`std::time::Duration`]; percentages are [`Percent`].
//!
//! Use [`Loader`] to read files, directories or strings into a
//! [`ConfigSet`], then [`validate`](crate::validate) to check them as strictly as Istio.

pub mod common;
pub mod decode;
pub mod duration;
pub mod load;

pub mod authorization_policy;
pub mod destination_rule;
pub mod gateway;
pub mod peer_authentication;
pub mod request_authentication;
pub mod service_entry;
pub mod sidecar;
pub mod virtual_service;
pub mod workload_entry;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

pub use authorization_policy::AuthorizationPolicy;
pub use common::{Percent, PortSelector, StringMatch};
pub use destination_rule::DestinationRule;
pub use gateway::Gateway;
pub use load::{ConfigSet, Loader, Skipped};
pub use peer_authentication::PeerAuthentication;
pub use request_authentication::RequestAuthentication;
pub use service_entry::ServiceEntry;
pub use sidecar::Sidecar;
pub use virtual_service::VirtualService;
pub use workload_entry::WorkloadEntry;

/// The Istio kinds tower-mesh models and enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `networking.istio.io` VirtualService.
    VirtualService,
    /// `networking.istio.io` DestinationRule.
    DestinationRule,
    /// `networking.istio.io` Gateway (not the Kubernetes Gateway API's Gateway).
    Gateway,
    /// `networking.istio.io` ServiceEntry.
    ServiceEntry,
    /// `networking.istio.io` Sidecar.
    Sidecar,
    /// `networking.istio.io` WorkloadEntry.
    WorkloadEntry,
    /// `security.istio.io` PeerAuthentication.
    PeerAuthentication,
    /// `security.istio.io` AuthorizationPolicy.
    AuthorizationPolicy,
    /// `security.istio.io` RequestAuthentication.
    RequestAuthentication,
}

/// `networking.istio.io`.
pub const NETWORKING_GROUP: &str = "networking.istio.io";
/// `security.istio.io`.
pub const SECURITY_GROUP: &str = "security.istio.io";

impl Kind {
    /// Every modelled kind.
    pub const ALL: [Kind; 9] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::Sidecar,
        Kind::WorkloadEntry,
        Kind::PeerAuthentication,
        Kind::AuthorizationPolicy,
        Kind::RequestAuthentication,
    ];

    /// The kind's name as written in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::Sidecar => "Sidecar",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::RequestAuthentication => "RequestAuthentication",
        }
    }

    /// The API group.
    pub fn group(self) -> &'static str {
        match self {
            Kind::PeerAuthentication | Kind::AuthorizationPolicy | Kind::RequestAuthentication => {
                SECURITY_GROUP
            }
            _ => NETWORKING_GROUP,
        }
    }

    /// The versions Istio serves for this kind (all with the same schema).
    pub fn served_versions(self) -> &'static [&'static str] {
        match self.group() {
            SECURITY_GROUP => &["v1", "v1beta1"],
            _ => &["v1", "v1beta1", "v1alpha3"],
        }
    }

    /// The modelled kind for a (group, kind) pair, if any.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.group() == group && k.as_str() == kind)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a resource came from: file (if any), document index, line.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Source {
    /// The file, or `None` for a string or standard input.
    pub file: Option<Arc<Path>>,
    /// 0-based index of the document among the non-empty documents of its input.
    pub document: usize,
    /// 1-based line where the document (or the offending node) starts (0 when unknown).
    pub line: u32,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(p) => write!(f, "{}", p.display())?,
            None => f.write_str("<input>")?,
        }
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        Ok(())
    }
}

/// The Kubernetes object metadata Istio reads. Other metadata fields are tolerated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Metadata {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`; `default` when absent.
    pub namespace: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `metadata.creationTimestamp`, when present (RFC 3339 text).
    pub creation_timestamp: Option<String>,
}

/// The typed `spec` of a resource.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Spec {
    /// A VirtualService.
    VirtualService(VirtualService),
    /// A DestinationRule.
    DestinationRule(DestinationRule),
    /// A Gateway.
    Gateway(Gateway),
    /// A ServiceEntry.
    ServiceEntry(ServiceEntry),
    /// A Sidecar.
    Sidecar(Sidecar),
    /// A WorkloadEntry.
    WorkloadEntry(WorkloadEntry),
    /// A PeerAuthentication.
    PeerAuthentication(PeerAuthentication),
    /// An AuthorizationPolicy.
    AuthorizationPolicy(AuthorizationPolicy),
    /// A RequestAuthentication.
    RequestAuthentication(RequestAuthentication),
}

impl Spec {
    /// The kind of this spec.
    pub fn kind(&self) -> Kind {
        match self {
            Spec::VirtualService(_) => Kind::VirtualService,
            Spec::DestinationRule(_) => Kind::DestinationRule,
            Spec::Gateway(_) => Kind::Gateway,
            Spec::ServiceEntry(_) => Kind::ServiceEntry,
            Spec::Sidecar(_) => Kind::Sidecar,
            Spec::WorkloadEntry(_) => Kind::WorkloadEntry,
            Spec::PeerAuthentication(_) => Kind::PeerAuthentication,
            Spec::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Spec::RequestAuthentication(_) => Kind::RequestAuthentication,
        }
    }
}

/// One loaded Istio resource.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// The `apiVersion` it was written with (`networking.istio.io/v1beta1`).
    pub api_version: String,
    /// Its metadata.
    pub metadata: Metadata,
    /// Its typed spec.
    pub spec: Spec,
    /// Where it came from.
    pub source: Source,
    /// Field paths that failed to decode (their problems are reported by the loader);
    /// validation does not report again at or under these paths.
    pub decode_errors: Vec<String>,
}

impl Resource {
    /// The resource's kind.
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.metadata.namespace, self.metadata.name)
    }
}

/// Decodes a kind's spec node. Implemented by the spec type of each kind.
pub(crate) fn decode_spec(
    kind: Kind,
    node: &crate::yaml::Node,
    path: &crate::path::FieldPath<'_>,
    cx: &mut decode::Cx,
) -> Option<Spec> {
    use decode::Decode;
    Some(match kind {
        Kind::VirtualService => Spec::VirtualService(VirtualService::decode(node, path, cx)?),
        Kind::DestinationRule => Spec::DestinationRule(DestinationRule::decode(node, path, cx)?),
        Kind::Gateway => Spec::Gateway(Gateway::decode(node, path, cx)?),
        Kind::ServiceEntry => Spec::ServiceEntry(ServiceEntry::decode(node, path, cx)?),
        Kind::Sidecar => Spec::Sidecar(Sidecar::decode(node, path, cx)?),
        Kind::WorkloadEntry => Spec::WorkloadEntry(WorkloadEntry::decode(node, path, cx)?),
        Kind::PeerAuthentication => {
            Spec::PeerAuthentication(PeerAuthentication::decode(node, path, cx)?)
        }
        Kind::AuthorizationPolicy => {
            Spec::AuthorizationPolicy(AuthorizationPolicy::decode(node, path, cx)?)
        }
        Kind::RequestAuthentication => {
            Spec::RequestAuthentication(RequestAuthentication::decode(node, path, cx)?)
        }
    })
}
