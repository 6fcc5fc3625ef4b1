//! `VirtualService` (stub: to be written).

use crate::config::decode::{Cx, Decode, Fields};
use crate::path::FieldPath;
use crate::yaml::Node;

/// The `spec` of a VirtualService.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VirtualService {}

impl Decode for VirtualService {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let f = Fields::new(node, path, cx)?;
        f.finish(cx);
        Some(VirtualService {})
    }
}
