//! Validation rules for RequestAuthentication.

use crate::config::Resource;
use crate::config::request_authentication::RequestAuthentication;
use crate::path::FieldPath;
use crate::validate::Findings;

/// Checks every rule for a RequestAuthentication.
pub(crate) fn check(
    _res: &Resource,
    _spec: &RequestAuthentication,
    _path: &FieldPath<'_>,
    _out: &mut Findings<'_>,
) {
}
