//! The one place that knows about the YAML library.
//!
//! Documents are parsed into a plain [`Node`] tree (scalars, sequences, mappings, each with
//! its line and column), and everything after this module works on that tree. Keeping the
//! parser behind this module means it can be swapped without touching the config model.
//!
//! The parser is [`serde_saphyr`]: it never panics on input and enforces budgets (nesting
//! depth, alias expansion, node count), which [`Limits`] exposes. A stream is split into its
//! documents before parsing, so a syntax error in one document does not hide the others, and
//! each document is held to [`Limits::max_document_bytes`].

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A parsed YAML (or JSON) value with its position in the source.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// 1-based line of the node in its file (0 when unknown).
    pub line: u32,
    /// 1-based column of the node (0 when unknown).
    pub column: u32,
}

/// The value of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// A floating-point number (and integers beyond `i64`).
    Float(f64),
    /// A string scalar (quoted, or plain and not a number, bool or null).
    String(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order. Keys that were not strings are rendered as strings.
    Map(Vec<(String, Node)>),
}

impl Node {
    /// A node with no position, for values built in code.
    pub fn new(value: Value) -> Self {
        Node {
            value,
            line: 0,
            column: 0,
        }
    }

    /// The entry `key` of a mapping node, if this is a mapping and has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string value, if this is a string scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the node's type for error messages ("string", "object", ...).
    pub fn type_name(&self) -> &'static str {
        self.value.type_name()
    }
}

impl Value {
    /// A short name of the value's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "number",
            Value::String(_) => "string",
            Value::Seq(_) => "array",
            Value::Map(_) => "object",
        }
    }
}

/// Limits that bound the work and memory spent on one input.
///
/// The defaults accept any real Istio configuration (the Kubernetes API server itself caps an
/// object at 1.5 MiB) and refuse deep nesting, alias bombs and multi-megabyte documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted file or string, in bytes. Default 64 MiB.
    pub max_input_bytes: usize,
    /// Largest accepted single document, in bytes. Default 1.5 MiB (the Kubernetes object
    /// size limit).
    pub max_document_bytes: usize,
    /// Deepest accepted nesting of sequences and mappings. Default 64.
    pub max_depth: usize,
    /// Most YAML nodes accepted in one document, counting alias expansions. Default 250,000.
    pub max_nodes: usize,
    /// Most alias references (`*name`) accepted in one document. Default 1,000.
    pub max_aliases: usize,
    /// Most documents accepted in one input. Default 100,000.
    pub max_documents: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: 64 * 1024 * 1024,
            max_document_bytes: 1536 * 1024,
            max_depth: 64,
            max_nodes: 250_000,
            max_aliases: 1_000,
            max_documents: 100_000,
        }
    }
}

/// A document that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// 1-based line in the whole input (0 when unknown).
    pub line: u32,
    /// 1-based column (0 when unknown).
    pub column: u32,
    /// What is wrong.
    pub message: String,
}

/// One document of a stream: its parse result, and the line it starts on.
#[derive(Debug, Clone)]
pub struct Document {
    /// 1-based line of the document's first line in the input.
    pub first_line: u32,
    /// The parsed root node, `None` for an empty document, or the syntax error.
    pub root: Result<Option<Node>, SyntaxError>,
}

/// Parses every document of a YAML stream (JSON is YAML too).
///
/// Empty documents (only comments, or nothing between two `---`) come back as `Ok(None)`.
/// An input larger than [`Limits::max_input_bytes`] or with more than
/// [`Limits::max_documents`] documents is refused whole.
pub fn parse_stream(input: &str, limits: &Limits) -> Result<Vec<Document>, SyntaxError> {
    if input.len() > limits.max_input_bytes {
        return Err(SyntaxError {
            line: 0,
            column: 0,
            message: format!(
                "input is {} bytes, larger than the limit of {} bytes",
                input.len(),
                limits.max_input_bytes
            ),
        });
    }
    let chunks = split_documents(input);
    if chunks.len() > limits.max_documents {
        return Err(SyntaxError {
            line: 0,
            column: 0,
            message: format!(
                "input has {} documents, more than the limit of {}",
                chunks.len(),
                limits.max_documents
            ),
        });
    }
    Ok(chunks
        .into_iter()
        .map(|(first_line, text)| Document {
            first_line,
            root: parse_document(text, first_line, limits),
        })
        .collect())
}

/// Splits a stream at document markers (`---` at the start of a line), returning each
/// document's text and the 1-based line its text starts on. The marker line itself belongs to
/// the document it opens (it may carry content, as in `--- {a: 1}`).
fn split_documents(input: &str) -> Vec<(u32, &str)> {
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1u32;
    let mut offset = 0usize;
    let mut line_no = 1u32;
    for line in input.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        let is_marker = bare == "---"
            || bare.starts_with("--- ")
            || bare.starts_with("---\t")
            || bare == "..."
            || bare.starts_with("... ");
        if is_marker && offset > start {
            out.push((start_line, &input[start..offset]));
            start = offset;
            start_line = line_no;
        }
        offset += line.len();
        line_no = line_no.saturating_add(1);
    }
    if offset > start || out.is_empty() {
        out.push((start_line, &input[start..]));
    }
    out
}

fn parse_document(
    text: &str,
    first_line: u32,
    limits: &Limits,
) -> Result<Option<Node>, SyntaxError> {
    if text.len() > limits.max_document_bytes {
        return Err(SyntaxError {
            line: first_line,
            column: 0,
            message: format!(
                "document is {} bytes, larger than the limit of {} bytes",
                text.len(),
                limits.max_document_bytes
            ),
        });
    }
    // A lone "..." end marker, or a chunk with only comments and blank lines, is empty.
    let is_blank = text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t == "---" || t == "..."
    });
    if is_blank {
        return Ok(None);
    }
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = limits.max_depth;
    budget.max_nodes = limits.max_nodes;
    budget.max_aliases = limits.max_aliases;
    budget.max_documents = 2;
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = limits.max_nodes;
    alias_limits.max_replay_stack_depth = limits.max_depth;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits = alias_limits;
    options.with_snippet = false;
    // YAML 1.2 booleans only: `n`, `no`, `on` and `off` stay strings (header and label names).
    options.strict_booleans = true;
    let offset = first_line.saturating_sub(1);
    let mut roots: Vec<Option<Spanned>> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (to_u32(l.line()), to_u32(l.column())))
            .unwrap_or((0, 0));
        SyntaxError {
            line: if line == 0 { 0 } else { line + offset },
            column,
            message: clean_message(&e.to_string()),
        }
    })?;
    match roots.len() {
        0 => Ok(None),
        1 => {
            let index = LineIndex::new(text);
            Ok(roots.pop().flatten().map(|s| s.into_node(offset, &index)))
        }
        _ => Err(SyntaxError {
            line: first_line,
            column: 0,
            message: "unexpected document marker inside a document".into(),
        }),
    }
}

fn to_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// serde-saphyr appends " at line X column Y" to some messages; we report the position
/// ourselves (shifted to the whole input), so drop it.
fn clean_message(msg: &str) -> String {
    let msg = msg.trim();
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains("column") => msg[..i].trim_end().to_string(),
        _ => msg.to_string(),
    }
}

/// The raw tree as it comes out of the deserializer, positions relative to the document.
struct Spanned {
    value: RawValue,
    line: u32,
    column: u32,
}

enum RawValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Seq(Vec<Spanned>),
    Map(Vec<(Key, Spanned)>),
}

/// A mapping key: any scalar, rendered as a string (JSON object keys are strings, and Istio's
/// maps such as `portLevelMtls` are keyed by strings).
struct Key(String);

/// Start offsets of the lines of a document, to look at the source of a node.
struct LineIndex<'t> {
    text: &'t str,
    starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    fn new(text: &'t str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, starts }
    }

    /// The source text from 1-based (line, column in characters) to the end of that line.
    fn rest_of_line(&self, line: u32, column: u32) -> Option<&'t str> {
        let start = *self.starts.get((line as usize).checked_sub(1)?)?;
        let line_text = self.text[start..].split('\n').next()?;
        let skip = (column as usize).checked_sub(1)?;
        let byte = line_text
            .char_indices()
            .nth(skip)
            .map_or(line_text.len(), |(i, _)| i);
        Some(&line_text[byte..])
    }
}

impl Spanned {
    fn into_node(self, offset: u32, index: &LineIndex<'_>) -> Node {
        let value = match self.value {
            RawValue::Null => Value::Null,
            RawValue::Bool(b) => Value::Bool(b),
            RawValue::Int(i) => Value::Int(i),
            RawValue::Float(f) => Value::Float(f),
            RawValue::String(s) => Value::String(s),
            RawValue::Seq(items) => Value::Seq(
                items
                    .into_iter()
                    .map(|n| n.into_flow_item(offset, index))
                    .collect(),
            ),
            RawValue::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.0, v.into_node(offset, index)))
                    .collect(),
            ),
        };
        Node {
            value,
            line: if self.line == 0 {
                0
            } else {
                self.line + offset
            },
            column: self.column,
        }
    }
}

impl Spanned {
    /// A sequence item. In a flow sequence, YAML reads `[2001:db8::]` as a one-entry mapping
    /// `{"2001:db8:": null}` (a `:` before `]` or `,` is an indicator), while Go's YAML parser,
    /// which Kubernetes and Istio use, reads the plain scalar `2001:db8::`. IPv6 addresses in
    /// ServiceEntry `addresses` are written this way, so we read them as Kubernetes does.
    fn into_flow_item(self, offset: u32, index: &LineIndex<'_>) -> Node {
        if let RawValue::Map(entries) = &self.value
            && let [(Key(key), value)] = entries.as_slice()
            && matches!(value.value, RawValue::Null)
            && let Some(rest) = index.rest_of_line(self.line, self.column)
            && let Some(after) = rest.strip_prefix(key.as_str())
            && let Some(after) = after.strip_prefix(':')
            && after.starts_with([',', ']'])
        {
            return Node {
                value: Value::String(format!("{key}:")),
                line: self.line + offset,
                column: self.column,
            };
        }
        self.into_node(offset, index)
    }
}

impl<'de> Deserialize<'de> for Spanned {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<RawValue>::deserialize(d)?;
        Ok(Spanned {
            value: s.value,
            line: to_u32(s.referenced.line()),
            column: to_u32(s.referenced.column()),
        })
    }
}

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Int(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<RawValue, E> {
        Ok(i64::try_from(v).map_or(RawValue::Float(v as f64), RawValue::Int))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawValue, E> {
        Ok(i64::try_from(v).map_or(RawValue::Float(v as f64), RawValue::Int))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<RawValue, E> {
        Ok(i64::try_from(v).map_or(RawValue::Float(v as f64), RawValue::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::String(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<RawValue, E> {
        Ok(RawValue::String(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_none<E: de::Error>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<RawValue, D::Error> {
        RawValue::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned>()? {
            items.push(item);
        }
        Ok(RawValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Key>()? {
            let value = map.next_value::<Spanned>()?;
            entries.push((key, value));
        }
        Ok(RawValue::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawValue::deserialize(d)?;
        let text = match raw {
            RawValue::Null => "null".to_string(),
            RawValue::Bool(b) => b.to_string(),
            RawValue::Int(i) => i.to_string(),
            RawValue::Float(f) => f.to_string(),
            RawValue::String(s) => s,
            RawValue::Seq(_) | RawValue::Map(_) => {
                return Err(de::Error::custom("a mapping key must be a scalar"));
            }
        };
        Ok(Key(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Vec<Document> {
        parse_stream(s, &Limits::default()).expect("stream")
    }

    #[test]
    fn splits_documents_and_keeps_lines() {
        let docs = parse("a: 1\n---\n# only a comment\n---\nb:\n  c: [x, 2]\n");
        assert_eq!(docs.len(), 3);
        assert!(docs[1].root.as_ref().expect("ok").is_none());
        let root = docs[2].root.clone().expect("ok").expect("some");
        assert_eq!(docs[2].first_line, 4);
        let c = root.get("b").and_then(|b| b.get("c")).expect("c");
        assert_eq!(c.line, 6);
        match &c.value {
            Value::Seq(items) => {
                assert_eq!(items[0].value, Value::String("x".into()));
                assert_eq!(items[1].value, Value::Int(2));
            }
            other => panic!("not a seq: {other:?}"),
        }
    }

    #[test]
    fn syntax_error_reports_line_in_whole_stream() {
        let docs = parse("a: 1\n---\nb: [1, 2\nc: 3\n");
        assert!(docs[0].root.is_ok());
        let err = docs[1].root.clone().expect_err("syntax error");
        assert!(
            err.line >= 3,
            "line {} should be in the second document",
            err.line
        );
    }

    #[test]
    fn quoted_numbers_stay_strings_and_keys_are_strings() {
        let docs = parse("m:\n  8080: {mode: STRICT}\n  x: \"80\"\n");
        let root = docs[0].root.clone().expect("ok").expect("some");
        let m = root.get("m").expect("m");
        assert!(m.get("8080").is_some());
        assert_eq!(m.get("x").and_then(Node::as_str), Some("80"));
    }

    #[test]
    fn ipv6_addresses_in_flow_sequences_read_as_kubernetes_reads_them() {
        let docs = parse("addresses: [1.2.3.4, 001:db8::, \"2001:db8::\"]\nm: [{a: 1}]\n");
        let root = docs[0].root.clone().expect("ok").expect("some");
        let Some(Value::Seq(items)) = root.get("addresses").map(|n| n.value.clone()) else {
            panic!("not a seq");
        };
        let texts: Vec<_> = items.iter().filter_map(Node::as_str).collect();
        assert_eq!(texts, ["1.2.3.4", "001:db8::", "2001:db8::"]);
        let m = root.get("m").expect("m");
        assert!(matches!(&m.value, Value::Seq(v) if matches!(v[0].value, Value::Map(_))));
    }

    #[test]
    fn json_is_accepted() {
        let docs = parse("{\"kind\": \"VirtualService\", \"spec\": {\"hosts\": [\"a\"]}}");
        let root = docs[0].root.clone().expect("ok").expect("some");
        assert_eq!(
            root.get("kind").and_then(Node::as_str),
            Some("VirtualService")
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let docs = parse(&deep);
        assert!(docs[0].root.is_err());
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = format!("*a{}", i - 1);
            s.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        let docs = parse(&s);
        assert!(docs[0].root.is_err(), "billion laughs must be refused");
    }

    #[test]
    fn oversized_document_is_refused() {
        let limits = Limits {
            max_document_bytes: 100,
            ..Limits::default()
        };
        let big = format!("a: \"{}\"\n", "x".repeat(200));
        let docs = parse_stream(&big, &limits).expect("stream");
        let err = docs[0].root.clone().expect_err("too big");
        assert!(err.message.contains("larger than the limit"));
    }
}
