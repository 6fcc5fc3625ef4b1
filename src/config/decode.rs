//! Converting the YAML [`Node`] tree into the typed model, reporting every problem.
//!
//! A serde-derive pass stops at the first error; Istio users fixing a file want all of them.
//! So every model type implements [`Decode`] by hand (with the helpers here): a field that
//! fails to decode is recorded in the [`Cx`] with its path and left out (`None`), and decoding
//! goes on with the rest of the document.
//!
//! Field names are Istio's camelCase names; the snake_case spelling that protobuf's JSON parser
//! also accepts (`per_try_timeout`, `consecutive_5xx_errors`) matches too. A field the schema
//! does not have is an error naming it, as strict field validation in the API server does.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::path::FieldPath;
use crate::yaml::{Node, Value};

/// A problem found while decoding: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeProblem {
    /// Field path inside the resource (`spec.http[0].timeout`).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// Line of the offending node in its file (0 when unknown).
    pub line: u32,
}

/// The decoding context: collects problems.
#[derive(Debug, Default)]
pub struct Cx {
    problems: Vec<DecodeProblem>,
}

impl Cx {
    /// A fresh context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem at `path`, located at `node`.
    pub fn error(&mut self, path: &FieldPath<'_>, node: &Node, message: impl Into<String>) {
        self.problems.push(DecodeProblem {
            path: path.to_string(),
            message: message.into(),
            line: node.line,
        });
    }

    /// Records a "wrong type" problem.
    pub fn type_error(&mut self, path: &FieldPath<'_>, node: &Node, expected: &str) {
        let got = match &node.value {
            Value::String(s) => format!("string {s:?}"),
            Value::Int(i) => format!("integer {i}"),
            Value::Float(f) => format!("number {f}"),
            Value::Bool(b) => format!("boolean {b}"),
            other => other.type_name().to_string(),
        };
        self.error(path, node, format!("expected {expected}, found {got}"));
    }

    /// The problems recorded so far.
    pub fn problems(&self) -> &[DecodeProblem] {
        &self.problems
    }

    /// Takes the recorded problems, leaving the context empty.
    pub fn take_problems(&mut self) -> Vec<DecodeProblem> {
        std::mem::take(&mut self.problems)
    }
}

/// A type that can be decoded from a YAML node.
pub trait Decode: Sized {
    /// Decodes `node` found at `path`. On failure, records the problems in `cx` and returns
    /// `None`; a partly wrong object still returns `Some` with the bad fields left out.
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self>;
}

/// Reads the fields of a mapping node, and on [`Fields::finish`] reports the ones nobody
/// asked for as unknown.
///
/// ```
/// use tower_mesh::config::decode::{Cx, Fields};
/// use tower_mesh::path::FieldPath;
/// use tower_mesh::yaml::{Limits, parse_stream};
///
/// let docs = parse_stream("attempts: 3\nbogus: 1\n", &Limits::default()).unwrap();
/// let node = docs[0].root.clone().unwrap().unwrap();
/// let mut cx = Cx::new();
/// let retries = FieldPath::ROOT.field("retries");
/// let mut f = Fields::new(&node, &retries, &mut cx).unwrap();
/// let attempts: Option<i32> = f.get("attempts", &mut cx);
/// f.finish(&mut cx);
/// assert_eq!(attempts, Some(3));
/// assert_eq!(cx.problems()[0].path, "retries.bogus");
/// assert_eq!(cx.problems()[0].message, "unknown field \"bogus\"");
/// ```
pub struct Fields<'n, 'p> {
    node: &'n Node,
    entries: &'n [(String, Node)],
    used: Vec<bool>,
    path: &'p FieldPath<'p>,
}

impl<'n, 'p> Fields<'n, 'p> {
    /// Starts reading `node` as an object. A non-object is recorded as an error (`None`).
    /// `null` reads as an empty object.
    pub fn new(node: &'n Node, path: &'p FieldPath<'p>, cx: &mut Cx) -> Option<Self> {
        let entries: &[(String, Node)] = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => &[],
            _ => {
                cx.type_error(path, node, "an object");
                return None;
            }
        };
        Some(Fields {
            node,
            entries,
            used: vec![false; entries.len()],
            path,
        })
    }

    /// The node of field `name` (camelCase, or its snake_case spelling), marking it used.
    /// An explicit `null` counts as absent, as in protobuf JSON.
    pub fn node(&mut self, name: &str) -> Option<&'n Node> {
        let mut found = None;
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if key_matches(k, name) {
                self.used[i] = true;
                if found.is_none() {
                    found = Some(v);
                }
            }
        }
        found.filter(|n| n.value != Value::Null)
    }

    /// Whether field `name` is present (even as `null`), without marking it used.
    pub fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|(k, _)| key_matches(k, name))
    }

    /// Decodes field `name`; `None` when absent or invalid (the problem is recorded).
    pub fn get<T: Decode>(&mut self, name: &str, cx: &mut Cx) -> Option<T> {
        let node = self.node(name)?;
        let path = self.path.field(name);
        T::decode(node, &path, cx)
    }

    /// Decodes a list field; an absent or `null` list is empty.
    pub fn list<T: Decode>(&mut self, name: &str, cx: &mut Cx) -> Vec<T> {
        self.get::<Vec<T>>(name, cx).unwrap_or_default()
    }

    /// Decodes a map field; an absent or `null` map is empty.
    pub fn map<T: Decode>(&mut self, name: &str, cx: &mut Cx) -> BTreeMap<String, T> {
        self.get::<BTreeMap<String, T>>(name, cx)
            .unwrap_or_default()
    }

    /// Decodes a boolean field; absent means `false` (protobuf's default).
    pub fn flag(&mut self, name: &str, cx: &mut Cx) -> bool {
        self.get::<bool>(name, cx).unwrap_or(false)
    }

    /// Marks field `name` as known without decoding it (for fields read elsewhere).
    pub fn skip(&mut self, name: &str) {
        let _ = self.node(name);
    }

    /// The object node being read.
    pub fn object(&self) -> &'n Node {
        self.node
    }

    /// Reports every field that was not read as unknown.
    pub fn finish(self, cx: &mut Cx) {
        for (i, (k, v)) in self.entries.iter().enumerate() {
            if !self.used[i] {
                let path = self.path.field(k);
                cx.error(&path, v, format!("unknown field \"{k}\""));
            }
        }
    }
}

/// Whether a key written in the document names the camelCase field `name`: either exactly, or
/// as the snake_case spelling protobuf's JSON parser accepts (`per_try_timeout`,
/// `consecutive_5xx_errors`).
pub fn key_matches(key: &str, name: &str) -> bool {
    if key == name {
        return true;
    }
    if !key.contains('_') {
        return false;
    }
    // camelize `key` on the fly and compare with `name`.
    let mut want = name.chars();
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        let c = if c == '_' {
            match chars.next() {
                Some(n) => n.to_ascii_uppercase(),
                None => return false,
            }
        } else {
            c
        };
        if want.next() != Some(c) {
            return false;
        }
    }
    want.next().is_none()
}

impl Decode for Node {
    fn decode(node: &Node, _: &FieldPath<'_>, _: &mut Cx) -> Option<Self> {
        Some(node.clone())
    }
}

impl Decode for String {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::String(s) => Some(s.clone()),
            _ => {
                cx.type_error(path, node, "a string");
                None
            }
        }
    }
}

impl Decode for bool {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                cx.type_error(path, node, "a boolean");
                None
            }
        }
    }
}

macro_rules! decode_int {
    ($($t:ty => $what:literal),* $(,)?) => {$(
        impl Decode for $t {
            fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
                match node.value {
                    Value::Int(i) => match <$t>::try_from(i) {
                        Ok(v) => Some(v),
                        Err(_) => {
                            cx.error(path, node, format!(
                                "{i} is out of range for {}", $what));
                            None
                        }
                    },
                    Value::Float(f) if f.fract() == 0.0 && f.is_finite() => {
                        if f >= <$t>::MIN as f64 && f <= <$t>::MAX as f64 {
                            Some(f as $t)
                        } else {
                            cx.error(path, node, format!("{f} is out of range for {}", $what));
                            None
                        }
                    }
                    _ => {
                        cx.type_error(path, node, $what);
                        None
                    }
                }
            }
        }
    )*};
}

decode_int! {
    i32 => "a 32-bit integer",
    u32 => "a non-negative 32-bit integer",
    i64 => "a 64-bit integer",
    u64 => "a non-negative 64-bit integer",
}

impl Decode for f64 {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        match node.value {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) if f.is_finite() => Some(f),
            _ => {
                cx.type_error(path, node, "a number");
                None
            }
        }
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Seq(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| T::decode(item, &path.index(i), cx))
                    .collect(),
            ),
            Value::Null => Some(Vec::new()),
            _ => {
                cx.type_error(path, node, "a list");
                None
            }
        }
    }
}

impl<T: Decode> Decode for BTreeMap<String, T> {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::Map(entries) => Some(
                entries
                    .iter()
                    .filter_map(|(k, v)| T::decode(v, &path.key(k), cx).map(|v| (k.clone(), v)))
                    .collect(),
            ),
            Value::Null => Some(BTreeMap::new()),
            _ => {
                cx.type_error(path, node, "a map");
                None
            }
        }
    }
}

impl Decode for Duration {
    /// A Go-style duration string (`"1.5s"`, `"100ms"`, `"1h2m"`).
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        match &node.value {
            Value::String(s) => match crate::config::duration::parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    cx.error(path, node, format!("invalid duration {s:?}: {e}"));
                    None
                }
            },
            _ => {
                cx.type_error(path, node, "a duration string such as \"1.5s\"");
                None
            }
        }
    }
}

/// Declares an Istio enum: a Rust enum whose variants decode from (and display as) Istio's
/// names, rejecting anything else with the list of supported values.
///
/// ```text
/// istio_enum! {
///     /// Mutual TLS mode.
///     pub enum Mode {
///         /// Inherit from the parent.
///         Unset => "UNSET",
///         Strict => "STRICT",
///     }
/// }
/// ```
#[macro_export]
#[doc(hidden)]
macro_rules! istio_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in schema order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// Istio's name for this value.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parses Istio's name for a value (exact, case-sensitive as in the CRD).
            pub fn from_name(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::config::decode::Decode for $name {
            fn decode(
                node: &$crate::yaml::Node,
                path: &$crate::path::FieldPath<'_>,
                cx: &mut $crate::config::decode::Cx,
            ) -> Option<Self> {
                match &node.value {
                    $crate::yaml::Value::String(s) => match $name::from_name(s) {
                        Some(v) => Some(v),
                        None => {
                            let supported: Vec<String> =
                                $name::ALL.iter().map(|v| format!("\"{}\"", v.as_str())).collect();
                            cx.error(path, node, format!(
                                "Unsupported value: \"{}\": supported values: {}",
                                s, supported.join(", ")));
                            None
                        }
                    },
                    _ => {
                        cx.type_error(path, node, "a string");
                        None
                    }
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::{Limits, parse_stream};

    fn node(s: &str) -> Node {
        parse_stream(s, &Limits::default()).expect("stream")[0]
            .root
            .clone()
            .expect("ok")
            .expect("some")
    }

    #[test]
    fn snake_case_keys_match_camel_case_names() {
        assert!(key_matches("perTryTimeout", "perTryTimeout"));
        assert!(key_matches("per_try_timeout", "perTryTimeout"));
        assert!(key_matches(
            "consecutive_5xx_errors",
            "consecutive5xxErrors"
        ));
        assert!(key_matches(
            "http1_max_pending_requests",
            "http1MaxPendingRequests"
        ));
        assert!(!key_matches("pertrytimeout", "perTryTimeout"));
        assert!(!key_matches("per_try", "perTryTimeout"));
    }

    #[test]
    fn unknown_fields_are_all_reported_with_paths() {
        let n = node("a: 1\nbogus: 2\nother: x\n");
        let mut cx = Cx::new();
        let root = FieldPath::ROOT;
        let spec = root.field("spec");
        let mut f = Fields::new(&n, &spec, &mut cx).expect("object");
        let a: Option<i32> = f.get("a", &mut cx);
        assert_eq!(a, Some(1));
        f.finish(&mut cx);
        let paths: Vec<_> = cx.problems().iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["spec.bogus", "spec.other"]);
        assert!(cx.problems()[0].message.contains("unknown field \"bogus\""));
        assert_eq!(cx.problems()[0].line, 2);
    }

    #[test]
    fn wrong_types_are_reported_and_decoding_continues() {
        let n = node("list: [1, x, 3]\nn: \"7\"\n");
        let mut cx = Cx::new();
        let root = FieldPath::ROOT;
        let mut f = Fields::new(&n, &root, &mut cx).expect("object");
        let list: Vec<u32> = f.list("list", &mut cx);
        let n7: Option<u32> = f.get("n", &mut cx);
        f.finish(&mut cx);
        assert_eq!(list, [1, 3]);
        assert_eq!(n7, None);
        let paths: Vec<_> = cx.problems().iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["list[1]", "n"]);
    }

    #[test]
    fn negative_is_out_of_range_for_unsigned() {
        let n = node("-1");
        let mut cx = Cx::new();
        assert_eq!(u32::decode(&n, &FieldPath::ROOT, &mut cx), None);
        assert!(cx.problems()[0].message.contains("out of range"));
    }

    crate::istio_enum! {
        /// Test enum.
        enum Mode {
            /// a
            Unset => "UNSET",
            /// b
            Strict => "STRICT",
        }
    }

    #[test]
    fn enums_decode_and_list_supported_values() {
        let mut cx = Cx::new();
        assert_eq!(
            Mode::decode(&node("STRICT"), &FieldPath::ROOT, &mut cx),
            Some(Mode::Strict)
        );
        assert_eq!(Mode::decode(&node("BLAH"), &FieldPath::ROOT, &mut cx), None);
        assert_eq!(
            cx.problems()[0].message,
            "Unsupported value: \"BLAH\": supported values: \"UNSET\", \"STRICT\""
        );
    }
}
