//! Validation as strict as Istio's: every rule of Istio's webhook and CRD schema for the kinds
//! we model, numbered as in Part two of our Istio reference (`ISTIO.md`).
//!
//! Every problem is a [`ValidationError`] naming the kind, `namespace/name`, the field path
//! (`spec.http[0].route[1].weight`) and what is wrong. Warnings (Istio's W rows, and our own
//! additions) have [`Severity::Warning`] and never make a config invalid.
//!
//! ```
//! use tower_mesh::config::Loader;
//!
//! let yaml = r#"
//! apiVersion: networking.istio.io/v1
//! kind: VirtualService
//! metadata: {name: reviews}
//! spec:
//!   hosts: [reviews]
//!   http:
//!   - retries: {attempts: 3, retryOn: flaky}
//!     route:
//!     - destination: {host: reviews}
//! "#;
//! let set = Loader::new().load_str(yaml);
//! let report = tower_mesh::validate::validate(&set);
//! assert!(report.has_errors());
//! assert_eq!(
//!     report.problems[0].to_string(),
//!     "error: VirtualService default/reviews: spec.http[0].retries.retryOn: \
//!      \"flaky\" is not a valid retryOn policy"
//! );
//! ```

pub mod common;

mod authorization_policy;
mod cross;
mod destination_rule;
mod gateway;
mod peer_authentication;
mod request_authentication;
mod service_entry;
mod sidecar;
mod unenforced;
mod virtual_service;
mod workload_entry;

#[cfg(test)]
pub(crate) mod testing;

use std::fmt;

use crate::config::{ConfigSet, Kind, Resource, Source, Spec};
use crate::path::FieldPath;

/// How serious a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// The config is rejected (Istio would refuse it).
    Error,
    /// The config is accepted, but something deserves a look.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// The resource a problem belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceRef {
    /// Its kind.
    pub kind: Kind,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One problem found in the config: a YAML syntax error, a decoding error (unknown field,
/// wrong type, bad enum value, bad duration) or a broken validation rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Error or warning.
    pub severity: Severity,
    /// The resource, when the problem is inside one (`None` for syntax errors and documents
    /// whose kind could not be read).
    pub resource: Option<ResourceRef>,
    /// The field path (`spec.http[0].timeout`); empty for whole-document problems.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// The number of the rule in `ISTIO.md` Part two, when the problem is one of Istio's
    /// numbered rules.
    pub rule: Option<u16>,
    /// Where the document (or the offending node) is.
    pub source: Source,
}

impl fmt::Display for ValidationError {
    /// `error: VirtualService default/reviews: spec.http[0].retries.retryOn: "flaky" is not a
    /// valid retryOn policy`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.severity)?;
        match &self.resource {
            Some(r) => write!(f, "{r}: ")?,
            None => write!(f, "{}: ", self.source)?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ValidationError {}

impl ValidationError {
    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// The outcome of validating a [`ConfigSet`]: the loader's problems followed by the rules'.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every problem, errors and warnings, in the order of the input.
    pub problems: Vec<ValidationError>,
}

impl Report {
    /// Whether any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(ValidationError::is_error)
    }

    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &ValidationError> {
        self.problems.iter().filter(|p| p.is_error())
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &ValidationError> {
        self.problems.iter().filter(|p| !p.is_error())
    }
}

/// Validates everything in `set`: the loader's problems, every rule per resource, and the
/// checks across resources (a route naming a subset no DestinationRule defines).
pub fn validate(set: &ConfigSet) -> Report {
    let mut problems = set.problems.clone();
    for res in &set.resources {
        problems.extend(validate_resource(res));
    }
    problems.extend(cross::check(&set.resources));
    // Keep the order of the input: by source, then errors before warnings.
    problems.sort_by(|a, b| {
        a.source
            .file
            .cmp(&b.source.file)
            .then(a.source.document.cmp(&b.source.document))
    });
    Report { problems }
}

/// Validates one resource against every rule for its kind.
pub fn validate_resource(res: &Resource) -> Vec<ValidationError> {
    let mut out = Findings::new(res);
    let root = FieldPath::ROOT;
    common::check_metadata(res, &mut out);
    let spec_path = root.field("spec");
    match &res.spec {
        Spec::VirtualService(s) => virtual_service::check(res, s, &spec_path, &mut out),
        Spec::DestinationRule(s) => destination_rule::check(res, s, &spec_path, &mut out),
        Spec::Gateway(s) => gateway::check(res, s, &spec_path, &mut out),
        Spec::ServiceEntry(s) => service_entry::check(res, s, &spec_path, &mut out),
        Spec::Sidecar(s) => sidecar::check(res, s, &spec_path, &mut out),
        Spec::WorkloadEntry(s) => workload_entry::check(res, s, &spec_path, &mut out),
        Spec::PeerAuthentication(s) => peer_authentication::check(res, s, &spec_path, &mut out),
        Spec::AuthorizationPolicy(s) => authorization_policy::check(res, s, &spec_path, &mut out),
        Spec::RequestAuthentication(s) => {
            request_authentication::check(res, s, &spec_path, &mut out)
        }
    }
    unenforced::check(res, &mut out);
    out.into_problems()
}

/// Collects the problems of one resource. Problems at or under a path that already failed to
/// decode are dropped: the decoder has said what is wrong there.
pub struct Findings<'r> {
    resource: &'r Resource,
    problems: Vec<ValidationError>,
}

impl<'r> Findings<'r> {
    /// An empty collector for `resource`.
    pub fn new(resource: &'r Resource) -> Self {
        Findings {
            resource,
            problems: Vec::new(),
        }
    }

    /// The resource being checked.
    pub fn resource(&self) -> &'r Resource {
        self.resource
    }

    /// Records an error of rule `rule` at `path`.
    pub fn error(&mut self, rule: u16, path: &FieldPath<'_>, message: impl Into<String>) {
        self.push(Severity::Error, Some(rule), path, message.into());
    }

    /// Records a warning of rule `rule` at `path`.
    pub fn warn(&mut self, rule: u16, path: &FieldPath<'_>, message: impl Into<String>) {
        self.push(Severity::Warning, Some(rule), path, message.into());
    }

    /// Records a problem that is not one of Istio's numbered rules.
    pub fn unnumbered(
        &mut self,
        severity: Severity,
        path: &FieldPath<'_>,
        message: impl Into<String>,
    ) {
        self.push(severity, None, path, message.into());
    }

    fn push(
        &mut self,
        severity: Severity,
        rule: Option<u16>,
        path: &FieldPath<'_>,
        message: String,
    ) {
        let path = path.to_string();
        let shadowed = self.resource.decode_errors.iter().any(|bad| {
            path == *bad
                || (path.starts_with(bad.as_str())
                    && matches!(path.as_bytes().get(bad.len()), Some(b'.') | Some(b'[')))
        });
        if shadowed {
            return;
        }
        self.problems.push(ValidationError {
            severity,
            resource: Some(resource_ref(self.resource)),
            path,
            message,
            rule,
            source: self.resource.source.clone(),
        });
    }

    /// The problems found.
    pub fn into_problems(self) -> Vec<ValidationError> {
        self.problems
    }
}

/// The [`ResourceRef`] of a resource.
pub fn resource_ref(res: &Resource) -> ResourceRef {
    ResourceRef {
        kind: res.kind(),
        namespace: res.metadata.namespace.clone(),
        name: res.metadata.name.clone(),
    }
}
