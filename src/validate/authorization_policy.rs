//! Validation rules for AuthorizationPolicy.

use crate::config::Resource;
use crate::config::authorization_policy::AuthorizationPolicy;
use crate::path::FieldPath;
use crate::validate::Findings;

/// Checks every rule for a AuthorizationPolicy.
pub(crate) fn check(
    _res: &Resource,
    _spec: &AuthorizationPolicy,
    _path: &FieldPath<'_>,
    _out: &mut Findings<'_>,
) {
}
