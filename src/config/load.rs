//! Loading Istio resources from strings, files and directories.
//!
//! - Multi-document YAML (and JSON) streams; a Kubernetes `List` is unwrapped.
//! - Every (group, kind) we do not model (Deployment, Service, EnvoyFilter, Telemetry, the
//!   Kubernetes Gateway API's kinds, ...) is skipped and reported in [`ConfigSet::skipped`].
//! - A missing `metadata.namespace` is `default`.
//! - Each resource keeps its [`Source`] (file, document index); resources are ordered by path
//!   then document index, which is how we break Istio's "oldest wins" ties.
//! - Every problem of a document is reported, not only the first: syntax errors with file and
//!   line, unknown fields, wrong types, bad enum values and durations with their field paths.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::decode::{Cx, Fields};
use crate::config::{Kind, Metadata, Resource, Source, decode_spec};
use crate::path::FieldPath;
use crate::validate::{ResourceRef, Severity, ValidationError};
use crate::yaml::{self, Limits, Node, Value};

/// A document that was read but not loaded, because tower-mesh does not model its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its `apiVersion`.
    pub api_version: String,
    /// Its `kind`.
    pub kind: String,
    /// `namespace/name`, when it has a name.
    pub name: String,
    /// Where it is.
    pub source: Source,
}

/// What a [`Loader`] read: the resources, what it skipped, and the problems it found.
#[derive(Debug, Clone, Default)]
pub struct ConfigSet {
    /// The loaded resources, ordered by file path then document index.
    pub resources: Vec<Resource>,
    /// Documents of kinds we do not model.
    pub skipped: Vec<Skipped>,
    /// Syntax and decoding problems (validation rules are applied by
    /// [`validate`](crate::validate::validate)).
    pub problems: Vec<ValidationError>,
    /// How many files were read.
    pub files: usize,
}

impl ConfigSet {
    /// Adds everything from `other`, keeping resources ordered by file path then document
    /// index (how Istio's "oldest wins" ties are broken here).
    pub fn extend(&mut self, other: ConfigSet) {
        self.resources.extend(other.resources);
        self.resources.sort_by(|a, b| a.source.cmp(&b.source));
        self.skipped.extend(other.skipped);
        self.problems.extend(other.problems);
        self.files += other.files;
    }

    /// Whether the loader found any error (syntax, unknown field, bad value).
    pub fn has_errors(&self) -> bool {
        self.problems.iter().any(ValidationError::is_error)
    }
}

/// Reads Istio YAML. Configure limits with [`Loader::limits`].
///
/// ```
/// use tower_mesh::config::Loader;
///
/// let set = Loader::new().load_str(
///     "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
///      metadata: {name: my-app}\nspec: {host: my-app}\n",
/// );
/// assert_eq!(set.resources.len(), 1);
/// assert_eq!(set.resources[0].metadata.namespace, "default");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Loader {
    limits: Limits,
}

const YAML_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

impl Loader {
    /// A loader with the default [`Limits`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the limits on input size, nesting and alias expansion.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Loads every document of a string (no file name in messages).
    pub fn load_str(&self, text: &str) -> ConfigSet {
        self.load_text(text, None)
    }

    /// Loads a string as if it were the file `name` (for messages and ordering).
    pub fn load_named_str(&self, text: &str, name: &Path) -> ConfigSet {
        self.load_text(text, Some(Arc::from(name)))
    }

    /// Loads a file, or every `.yaml`, `.yml` and `.json` file under a directory
    /// (recursively, in path order).
    pub fn load_path(&self, path: &Path) -> ConfigSet {
        let mut set = ConfigSet::default();
        if path.is_dir() {
            let mut files = Vec::new();
            if let Err(e) = collect_files(path, &mut files, 0) {
                set.problems
                    .push(file_problem(path, format!("cannot read directory: {e}")));
            }
            files.sort();
            for f in files {
                set.extend(self.load_file(&f));
            }
        } else {
            set.extend(self.load_file(path));
        }
        set
    }

    fn load_file(&self, path: &Path) -> ConfigSet {
        match fs::metadata(path) {
            Ok(m) if m.len() > self.limits.max_input_bytes as u64 => {
                let mut set = ConfigSet::default();
                set.problems.push(file_problem(
                    path,
                    format!(
                        "file is {} bytes, larger than the limit of {} bytes",
                        m.len(),
                        self.limits.max_input_bytes
                    ),
                ));
                return set;
            }
            Ok(_) => {}
            Err(e) => {
                let mut set = ConfigSet::default();
                set.problems
                    .push(file_problem(path, format!("cannot read: {e}")));
                return set;
            }
        }
        match fs::read(path) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => {
                    let mut set = self.load_text(&text, Some(Arc::from(path)));
                    set.files = 1;
                    set
                }
                Err(_) => {
                    let mut set = ConfigSet::default();
                    set.problems
                        .push(file_problem(path, "file is not valid UTF-8"));
                    set
                }
            },
            Err(e) => {
                let mut set = ConfigSet::default();
                set.problems
                    .push(file_problem(path, format!("cannot read: {e}")));
                set
            }
        }
    }

    fn load_text(&self, text: &str, file: Option<Arc<Path>>) -> ConfigSet {
        let mut set = ConfigSet::default();
        let docs = match yaml::parse_stream(text, &self.limits) {
            Ok(docs) => docs,
            Err(e) => {
                set.problems.push(syntax_problem(&file, 0, e));
                return set;
            }
        };
        let mut index = 0usize;
        for doc in docs {
            let source = Source {
                file: file.clone(),
                document: index,
                line: doc.first_line,
            };
            match doc.root {
                Ok(None) => continue,
                Ok(Some(root)) => {
                    index += 1;
                    self.load_document(&root, source, &mut set, 0);
                }
                Err(e) => {
                    index += 1;
                    set.problems.push(syntax_problem(&file, source.document, e));
                }
            }
        }
        set
    }

    fn load_document(&self, root: &Node, source: Source, set: &mut ConfigSet, depth: usize) {
        let source = Source {
            line: if root.line > 0 {
                root.line
            } else {
                source.line
            },
            ..source
        };
        let Value::Map(_) = &root.value else {
            set.problems.push(doc_problem(
                &source,
                format!("expected a Kubernetes object, found {}", root.type_name()),
            ));
            return;
        };
        let api_version = root.get("apiVersion").and_then(Node::as_str).unwrap_or("");
        let kind_name = root.get("kind").and_then(Node::as_str).unwrap_or("");
        if api_version.is_empty() || kind_name.is_empty() {
            let missing = if api_version.is_empty() {
                "apiVersion"
            } else {
                "kind"
            };
            set.problems.push(doc_problem(
                &source,
                format!("{missing} is required (a string)"),
            ));
            return;
        }
        // A Kubernetes List (`v1 List`, or any `*List` kind) carries its resources in `items`.
        if kind_name == "List" || (kind_name.ends_with("List") && root.get("items").is_some()) {
            if depth > 0 {
                set.problems
                    .push(doc_problem(&source, "nested List is not supported"));
                return;
            }
            match root.get("items").map(|n| &n.value) {
                Some(Value::Seq(items)) => {
                    for item in items {
                        self.load_document(item, source.clone(), set, depth + 1);
                    }
                }
                None | Some(Value::Null) => {}
                Some(_) => set
                    .problems
                    .push(doc_problem(&source, "List items must be a list")),
            }
            return;
        }
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let Some(kind) = Kind::from_group_kind(group, kind_name) else {
            let name = root
                .get("metadata")
                .and_then(|m| m.get("name"))
                .and_then(Node::as_str)
                .unwrap_or("");
            let ns = root
                .get("metadata")
                .and_then(|m| m.get("namespace"))
                .and_then(Node::as_str)
                .unwrap_or("default");
            set.skipped.push(Skipped {
                api_version: api_version.to_string(),
                kind: kind_name.to_string(),
                name: if name.is_empty() {
                    String::new()
                } else {
                    format!("{ns}/{name}")
                },
                source,
            });
            return;
        };
        let mut cx = Cx::new();
        let root_path = FieldPath::ROOT;
        let mut fields = match Fields::new(root, &root_path, &mut cx) {
            Some(f) => f,
            None => return,
        };
        fields.skip("apiVersion");
        fields.skip("kind");
        fields.skip("status");
        let metadata = decode_metadata(fields.node("metadata"), &mut cx);
        if !kind.served_versions().contains(&version) {
            let p = root_path.field("apiVersion");
            cx.error(
                &p,
                root,
                format!(
                    "{kind} is not served at version {version:?} (served: {})",
                    kind.served_versions().join(", ")
                ),
            );
        }
        let spec_node = fields.node("spec");
        let spec_path = root_path.field("spec");
        if spec_node.is_none() && matches!(kind, Kind::ServiceEntry | Kind::WorkloadEntry) {
            cx.error(&spec_path, root, "spec: Required value");
        }
        let null = Node::new(Value::Null);
        let spec = decode_spec(kind, spec_node.unwrap_or(&null), &spec_path, &mut cx);
        fields.finish(&mut cx);

        let reference = ResourceRef {
            kind,
            namespace: metadata.namespace.clone(),
            name: metadata.name.clone(),
        };
        let problems = cx.take_problems();
        let decode_errors = problems.iter().map(|p| p.path.clone()).collect();
        for p in problems {
            set.problems.push(ValidationError {
                severity: Severity::Error,
                resource: Some(reference.clone()),
                path: p.path,
                message: p.message,
                rule: None,
                source: Source {
                    line: if p.line > 0 { p.line } else { source.line },
                    ..source.clone()
                },
            });
        }
        if let Some(spec) = spec {
            set.resources.push(Resource {
                api_version: api_version.to_string(),
                metadata,
                spec,
                source,
                decode_errors,
            });
        }
    }
}

fn decode_metadata(node: Option<&Node>, cx: &mut Cx) -> Metadata {
    let mut meta = Metadata {
        namespace: "default".into(),
        ..Metadata::default()
    };
    let root = FieldPath::ROOT;
    let path = root.field("metadata");
    let Some(node) = node else {
        cx.error(&path, &Node::new(Value::Null), "metadata.name is required");
        return meta;
    };
    let Some(mut f) = Fields::new(node, &path, cx) else {
        return meta;
    };
    meta.name = f.get("name", cx).unwrap_or_default();
    if meta.name.is_empty() {
        let p = path.field("name");
        cx.error(&p, node, "metadata.name is required");
    }
    if let Some(ns) = f.get::<String>("namespace", cx)
        && !ns.is_empty()
    {
        meta.namespace = ns;
    }
    meta.labels = f.map("labels", cx);
    meta.annotations = f.map("annotations", cx);
    meta.creation_timestamp = f.get("creationTimestamp", cx);
    // Other metadata (uid, resourceVersion, generation, managedFields, ...) is tolerated.
    meta
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) -> std::io::Result<()> {
    if depth > 32 {
        return Ok(());
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let ft = entry.file_type()?;
        if ft.is_dir() {
            collect_files(&path, out, depth + 1)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| YAML_EXTENSIONS.contains(&e))
        {
            out.push(path);
        }
    }
    Ok(())
}

fn file_problem(path: &Path, message: impl Into<String>) -> ValidationError {
    ValidationError {
        severity: Severity::Error,
        resource: None,
        path: String::new(),
        message: message.into(),
        rule: None,
        source: Source {
            file: Some(Arc::from(path)),
            document: 0,
            line: 0,
        },
    }
}

fn doc_problem(source: &Source, message: impl Into<String>) -> ValidationError {
    ValidationError {
        severity: Severity::Error,
        resource: None,
        path: String::new(),
        message: message.into(),
        rule: None,
        source: source.clone(),
    }
}

fn syntax_problem(
    file: &Option<Arc<Path>>,
    document: usize,
    e: yaml::SyntaxError,
) -> ValidationError {
    ValidationError {
        severity: Severity::Error,
        resource: None,
        path: String::new(),
        message: format!("YAML syntax error: {}", e.message),
        rule: None,
        source: Source {
            file: file.clone(),
            document,
            line: e.line,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PA: &str = "apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: strict
  namespace: foo
spec:
  mtls:
    mode: STRICT
";

    #[test]
    fn loads_and_skips() {
        let text = format!(
            "{PA}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\n---\n\
             apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\n"
        );
        let set = Loader::new().load_str(&text);
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        assert_eq!(set.resources.len(), 1);
        assert_eq!(set.resources[0].kind(), Kind::PeerAuthentication);
        assert_eq!(set.resources[0].metadata.namespace, "foo");
        assert_eq!(set.skipped.len(), 2);
        assert_eq!(set.skipped[0].kind, "Deployment");
        assert_eq!(set.skipped[0].source.document, 1);
        assert_eq!(set.skipped[1].kind, "Gateway");
    }

    #[test]
    fn every_served_version_loads_into_the_same_type() {
        for v in ["v1", "v1beta1"] {
            let set = Loader::new().load_str(&PA.replace("v1beta1", v));
            assert!(set.problems.is_empty());
            assert_eq!(set.resources.len(), 1);
        }
        let set = Loader::new().load_str(&PA.replace("v1beta1", "v1alpha3"));
        assert!(set.problems[0].message.contains("not served"));
    }

    #[test]
    fn unwraps_lists_and_defaults_namespace() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: security.istio.io/v1\n  \
                    kind: PeerAuthentication\n  metadata: {name: a}\n  spec: {}\n";
        let set = Loader::new().load_str(text);
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        assert_eq!(set.resources.len(), 1);
        assert_eq!(set.resources[0].metadata.namespace, "default");
    }

    #[test]
    fn reports_every_problem_of_a_document() {
        let text = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
                    metadata: {name: a}\nbogus: 1\nspec:\n  mtls: {mode: BLAH, extra: 2}\n  other: x\n";
        let set = Loader::new().load_str(text);
        let paths: Vec<_> = set.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["spec.mtls.mode", "spec.mtls.extra", "spec.other", "bogus"]
        );
        assert_eq!(set.problems[0].source.line, 6);
    }

    #[test]
    fn syntax_errors_carry_file_and_line_and_other_documents_still_load() {
        let text = format!("{PA}---\nkind: [unclosed\n");
        let set = Loader::new().load_named_str(&text, Path::new("mesh/a.yaml"));
        assert_eq!(set.resources.len(), 1);
        let e = &set.problems[0];
        assert!(e.message.starts_with("YAML syntax error"), "{e}");
        assert!(e.source.line >= 10, "line {}", e.source.line);
        assert!(e.to_string().contains("mesh/a.yaml:"), "{e}");
    }

    #[test]
    fn sets_merge_in_path_then_document_order() {
        let loader = Loader::new();
        let mut set = loader.load_named_str(&PA.replace("strict", "z"), Path::new("b.yaml"));
        let two = format!(
            "{}---\n{}",
            PA.replace("strict", "x"),
            PA.replace("strict", "y")
        );
        set.extend(loader.load_named_str(&two, Path::new("a.yaml")));
        let names: Vec<_> = set
            .resources
            .iter()
            .map(|r| r.metadata.name.as_str())
            .collect();
        assert_eq!(names, ["x", "y", "z"]);
    }

    #[test]
    fn loads_directories_recursively_in_path_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).expect("mkdir");
        fs::write(sub.join("b.yml"), PA.replace("strict", "b")).expect("write");
        fs::write(dir.path().join("a.yaml"), PA.replace("strict", "a")).expect("write");
        fs::write(dir.path().join("notes.txt"), "not yaml").expect("write");
        let set = Loader::new().load_path(dir.path());
        assert_eq!(set.files, 2);
        let names: Vec<_> = set
            .resources
            .iter()
            .map(|r| r.metadata.name.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
    }
}
