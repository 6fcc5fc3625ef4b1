//! Validation rules for DestinationRule.

use crate::config::Resource;
use crate::config::destination_rule::DestinationRule;
use crate::path::FieldPath;
use crate::validate::Findings;

/// Checks every rule for a DestinationRule.
pub(crate) fn check(
    _res: &Resource,
    _spec: &DestinationRule,
    _path: &FieldPath<'_>,
    _out: &mut Findings<'_>,
) {
}
