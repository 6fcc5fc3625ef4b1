//! Validation rules for WorkloadEntry.

use crate::config::Resource;
use crate::config::workload_entry::WorkloadEntry;
use crate::path::FieldPath;
use crate::validate::Findings;

/// Checks every rule for a WorkloadEntry.
pub(crate) fn check(
    _res: &Resource,
    _spec: &WorkloadEntry,
    _path: &FieldPath<'_>,
    _out: &mut Findings<'_>,
) {
}
