//! `ServiceEntry` (stub: to be written).

use crate::config::decode::{Cx, Decode, Fields};
use crate::path::FieldPath;
use crate::yaml::Node;

/// The `spec` of a ServiceEntry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServiceEntry {}

impl Decode for ServiceEntry {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let f = Fields::new(node, path, cx)?;
        f.finish(cx);
        Some(ServiceEntry {})
    }
}
