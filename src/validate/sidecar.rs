//! Validation rules for Sidecar.

use crate::config::Resource;
use crate::config::sidecar::Sidecar;
use crate::path::FieldPath;
use crate::validate::Findings;

/// Checks every rule for a Sidecar.
pub(crate) fn check(
    _res: &Resource,
    _spec: &Sidecar,
    _path: &FieldPath<'_>,
    _out: &mut Findings<'_>,
) {
}
