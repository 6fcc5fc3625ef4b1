//! `Gateway` (stub: to be written).

use crate::config::decode::{Cx, Decode, Fields};
use crate::path::FieldPath;
use crate::yaml::Node;

/// The `spec` of a Gateway.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Gateway {}

impl Decode for Gateway {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let f = Fields::new(node, path, cx)?;
        f.finish(cx);
        Some(Gateway {})
    }
}
