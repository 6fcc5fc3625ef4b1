//! Checks across resources (beyond Istio's webhook, as `istioctl analyze` does).

use crate::config::Resource;
use crate::validate::ValidationError;

/// Runs the cross-resource checks.
pub(crate) fn check(_resources: &[Resource]) -> Vec<ValidationError> {
    Vec::new()
}
