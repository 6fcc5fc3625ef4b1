//! Field paths such as `spec.http[0].route[1].weight`, built on the stack without allocating.
//!
//! Decoding and validation walk the config tree and carry a [`FieldPath`] that points at the
//! current node. It is a linked list of borrowed segments, so extending it costs nothing; it is
//! rendered to a string only when a problem is reported.

use std::fmt;

/// A position in a resource, as a chain of segments from the root.
#[derive(Clone, Copy)]
pub struct FieldPath<'a> {
    parent: Option<&'a FieldPath<'a>>,
    seg: Seg<'a>,
}

#[derive(Clone, Copy)]
enum Seg<'a> {
    Root,
    Field(&'a str),
    Index(usize),
    Key(&'a str),
}

impl FieldPath<'static> {
    /// The empty path (the resource itself).
    pub const ROOT: FieldPath<'static> = FieldPath {
        parent: None,
        seg: Seg::Root,
    };
}

impl<'a> FieldPath<'a> {
    /// The path of field `name` of the object at `self`: `spec` → `spec.hosts`.
    pub fn field(&'a self, name: &'a str) -> FieldPath<'a> {
        FieldPath {
            parent: Some(self),
            seg: Seg::Field(name),
        }
    }

    /// The path of element `i` of the list at `self`: `spec.http` → `spec.http[0]`.
    pub fn index(&'a self, i: usize) -> FieldPath<'a> {
        FieldPath {
            parent: Some(self),
            seg: Seg::Index(i),
        }
    }

    /// The path of entry `key` of the map at `self`: `metadata.labels` → `metadata.labels[app]`.
    pub fn key(&'a self, key: &'a str) -> FieldPath<'a> {
        FieldPath {
            parent: Some(self),
            seg: Seg::Key(key),
        }
    }

    /// Whether this is the root path.
    pub fn is_root(&self) -> bool {
        matches!(self.seg, Seg::Root) && self.parent.is_none()
    }

    fn write(&self, f: &mut fmt::Formatter<'_>) -> Result<bool, fmt::Error> {
        let wrote_parent = match self.parent {
            Some(p) => p.write(f)?,
            None => false,
        };
        match self.seg {
            Seg::Root => Ok(wrote_parent),
            Seg::Field(name) => {
                if wrote_parent {
                    f.write_str(".")?;
                }
                f.write_str(name)?;
                Ok(true)
            }
            Seg::Index(i) => {
                write!(f, "[{i}]")?;
                Ok(true)
            }
            Seg::Key(k) => {
                write!(f, "[{k}]")?;
                Ok(true)
            }
        }
    }
}

impl fmt::Display for FieldPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f).map(|_| ())
    }
}

impl fmt::Debug for FieldPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldPath({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fields_indices_and_keys() {
        let spec = FieldPath::ROOT.field("spec");
        let http = spec.field("http");
        let r0 = http.index(0);
        let route = r0.field("route");
        let r1 = route.index(1);
        let w = r1.field("weight");
        assert_eq!(w.to_string(), "spec.http[0].route[1].weight");
        let labels = FieldPath::ROOT.field("metadata");
        let l = labels.field("labels");
        assert_eq!(l.key("app").to_string(), "metadata.labels[app]");
        assert_eq!(FieldPath::ROOT.to_string(), "");
    }
}
