//! `Sidecar` (stub: to be written).

use crate::config::decode::{Cx, Decode, Fields};
use crate::path::FieldPath;
use crate::yaml::Node;

/// The `spec` of a Sidecar.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sidecar {}

impl Decode for Sidecar {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let f = Fields::new(node, path, cx)?;
        f.finish(cx);
        Some(Sidecar {})
    }
}
