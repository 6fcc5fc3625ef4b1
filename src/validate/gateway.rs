//! Validation rules for Gateway.

use crate::config::Resource;
use crate::config::gateway::Gateway;
use crate::path::FieldPath;
use crate::validate::Findings;

/// Checks every rule for a Gateway.
pub(crate) fn check(
    _res: &Resource,
    _spec: &Gateway,
    _path: &FieldPath<'_>,
    _out: &mut Findings<'_>,
) {
}
