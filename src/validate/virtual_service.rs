//! Validation rules for VirtualService.

use crate::config::Resource;
use crate::config::virtual_service::VirtualService;
use crate::path::FieldPath;
use crate::validate::Findings;

/// Checks every rule for a VirtualService.
pub(crate) fn check(
    _res: &Resource,
    _spec: &VirtualService,
    _path: &FieldPath<'_>,
    _out: &mut Findings<'_>,
) {
}
