//! Validation rules for ServiceEntry.

use crate::config::Resource;
use crate::config::service_entry::ServiceEntry;
use crate::path::FieldPath;
use crate::validate::Findings;

/// Checks every rule for a ServiceEntry.
pub(crate) fn check(
    _res: &Resource,
    _spec: &ServiceEntry,
    _path: &FieldPath<'_>,
    _out: &mut Findings<'_>,
) {
}
