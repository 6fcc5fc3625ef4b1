//! Warnings for fields tower-mesh parses but does not act on.

use crate::config::Resource;
use crate::validate::Findings;

/// Warns about every field set in `res` that tower-mesh does not enforce.
pub(crate) fn check(_res: &Resource, _out: &mut Findings<'_>) {}
