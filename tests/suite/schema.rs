//! Every field of Istio's CRD schema (`../shared/istio-crds/crd-all.gen.yaml`) is in our
//! model: for each kind, a document that sets every property of the schema, recursively,
//! loads without an "unknown field" or a type error.

use std::fs;

use crate::{say, shared};
use tower_mesh::config::{Kind, Loader};
use tower_mesh::yaml::{Limits, Node, Value, parse_stream};

fn crd_file() -> Option<String> {
    let path = shared("istio-crds/crd-all.gen.yaml", "CRD schema")?;
    Some(fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn str_field<'a>(n: &'a Node, key: &str) -> Option<&'a str> {
    n.get(key).and_then(Node::as_str)
}

/// A YAML rendering of a value that sets every property of `schema`.
fn sample(schema: &Node, depth: usize, out: &mut String, indent: usize) {
    let pad = " ".repeat(indent);
    let ty = str_field(schema, "type").unwrap_or("");
    if depth > 12 {
        out.push_str("{}\n");
        return;
    }
    match ty {
        "object" => {
            if let Some(Node {
                value: Value::Map(props),
                ..
            }) = schema.get("properties")
            {
                out.push('\n');
                for (name, sub) in props {
                    out.push_str(&format!("{pad}{name}: "));
                    sample(sub, depth + 1, out, indent + 2);
                }
            } else if let Some(sub) = schema.get("additionalProperties") {
                out.push_str(&format!("\n{pad}\"8080\": "));
                sample(sub, depth + 1, out, indent + 2);
            } else {
                out.push_str("{}\n");
            }
        }
        "array" => {
            out.push('\n');
            out.push_str(&format!("{pad}- "));
            match schema.get("items") {
                Some(items) if str_field(items, "type") == Some("object") => {
                    // Render the object's first line after "- ".
                    let mut inner = String::new();
                    sample(items, depth + 1, &mut inner, indent + 2);
                    out.push_str(inner.trim_start_matches('\n').trim_start());
                    if !inner.ends_with('\n') {
                        out.push('\n');
                    }
                }
                Some(items) => sample(items, depth + 1, out, indent + 2),
                None => out.push_str("x\n"),
            }
        }
        "string" => {
            let enum_first = match schema.get("enum").map(|n| &n.value) {
                Some(Value::Seq(v)) => v.first().and_then(Node::as_str),
                _ => None,
            };
            let is_duration =
                format!("{:?}", schema.get("x-kubernetes-validations")).contains("duration(");
            let v = enum_first
                .map(str::to_string)
                .unwrap_or_else(|| if is_duration { "1s".into() } else { "x".into() });
            out.push_str(&format!("\"{v}\"\n"));
        }
        "integer" => out.push_str("1\n"),
        "number" => out.push_str("1.0\n"),
        "boolean" => out.push_str("true\n"),
        _ => {
            // x-kubernetes-int-or-string and untyped: a number.
            out.push_str("1\n");
        }
    }
}

#[test]
fn every_schema_field_is_in_the_model() {
    let Some(text) = crd_file() else { return };
    let docs = parse_stream(&text, &Limits::default()).expect("CRD file parses");
    let mut checked = 0;
    let mut failures = Vec::new();
    for doc in docs {
        let Ok(Some(crd)) = doc.root else { continue };
        let Some(spec) = crd.get("spec") else {
            continue;
        };
        let group = str_field(spec, "group").unwrap_or("");
        let kind_name = spec
            .get("names")
            .and_then(|n| str_field(n, "kind"))
            .unwrap_or("");
        let Some(kind) = Kind::from_group_kind(group, kind_name) else {
            continue;
        };
        let Some(Value::Seq(versions)) = spec.get("versions").map(|v| &v.value) else {
            continue;
        };
        for version in versions {
            let name = str_field(version, "name").unwrap_or("");
            let Some(spec_schema) = version
                .get("schema")
                .and_then(|s| s.get("openAPIV3Schema"))
                .and_then(|s| s.get("properties"))
                .and_then(|p| p.get("spec"))
            else {
                continue;
            };
            let mut body = String::new();
            sample(spec_schema, 0, &mut body, 2);
            let yaml = format!(
                "apiVersion: {group}/{name}\nkind: {kind_name}\nmetadata: {{name: schema-sample}}\nspec: {body}"
            );
            let set = Loader::new().load_str(&yaml);
            let bad: Vec<String> = set
                .problems
                .iter()
                .filter(|p| {
                    p.message.contains("unknown field") || p.message.starts_with("expected ")
                })
                .map(|p| format!("    {p}"))
                .collect();
            if !bad.is_empty() {
                failures.push(format!("  {kind} {name}:\n{}", bad.join("\n")));
            }
            checked += 1;
        }
        let _ = kind;
    }
    say(format!(
        "{checked} (kind, version) schemas checked against the model"
    ));
    assert!(checked >= 24, "only {checked} schemas found");
    assert!(
        failures.is_empty(),
        "schema fields the model does not take:\n{}",
        failures.join("\n")
    );
}
