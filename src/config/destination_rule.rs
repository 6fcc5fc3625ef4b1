//! `DestinationRule` (stub: to be written).

use crate::config::decode::{Cx, Decode, Fields};
use crate::path::FieldPath;
use crate::yaml::Node;

/// The `spec` of a DestinationRule.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DestinationRule {}

impl Decode for DestinationRule {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let f = Fields::new(node, path, cx)?;
        f.finish(cx);
        Some(DestinationRule {})
    }
}
