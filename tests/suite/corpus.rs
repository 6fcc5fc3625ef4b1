//! Istio's own sample and validation files (`../shared/istio-corpus`), with Istio's verdict per
//! file in `EXPECTED.tsv` and per document of `crd-validation/*` in `EXPECTED-docs.tsv`.
//!
//! The corpus lives beside the repository, not in it: without it (a user's fresh clone) the
//! test skips with a note; under `CI=true` its absence is a failure.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{say, shared};
use tower_mesh::config::Loader;
use tower_mesh::validate::{Report, validate};

fn corpus_dir() -> Option<PathBuf> {
    shared("istio-corpus/EXPECTED.tsv", "Istio corpus")
        .and_then(|p| p.parent().map(Path::to_path_buf))
}

/// `crd-validation/*-invalid.yaml` documents carry a top-level `_err` key: Istio's test
/// annotation of the expected error, not part of the schema. Drop it before loading.
fn strip_err_annotation(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("_err:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn check_file(dir: &Path, rel: &str) -> Report {
    let path = dir.join(rel);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let set = Loader::new().load_named_str(&strip_err_annotation(&text), Path::new(rel));
    validate(&set)
}

fn rows(dir: &Path, name: &str) -> Vec<Vec<String>> {
    let text = fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

#[test]
fn istio_corpus_files_agree_with_istio() {
    let Some(dir) = corpus_dir() else { return };
    let mut agree = 0;
    let mut disagreements = Vec::new();
    let expected = rows(&dir, "EXPECTED.tsv");
    for row in &expected {
        let (rel, verdict) = (&row[0], &row[1]);
        let report = check_file(&dir, rel);
        let ours = if report.has_errors() {
            "invalid"
        } else {
            "valid"
        };
        if ours == verdict {
            agree += 1;
        } else {
            let errors: Vec<String> = report.errors().map(|e| format!("    {e}")).collect();
            disagreements.push(format!(
                "  {rel}: Istio says {verdict}, we say {ours}\n{}",
                errors.join("\n")
            ));
        }
    }
    say(format!("{agree}/{} files agree with Istio", expected.len()));
    assert!(
        disagreements.is_empty(),
        "{agree}/{} files agree with Istio; these do not:\n{}",
        expected.len(),
        disagreements.join("\n")
    );
}

#[test]
fn istio_corpus_documents_agree_with_istio() {
    let Some(dir) = corpus_dir() else { return };
    let expected = rows(&dir, "EXPECTED-docs.tsv");
    let mut agree = 0;
    let mut disagreements = Vec::new();
    for row in &expected {
        let (rel, index, kind, name, verdict, gist) = (
            &row[0],
            row[1].parse::<usize>().expect("doc index"),
            &row[2],
            &row[3],
            &row[4],
            row.get(5).map(String::as_str).unwrap_or(""),
        );
        let report = check_file(&dir, rel);
        let errors: Vec<_> = report
            .errors()
            .filter(|e| e.source.document == index)
            .collect();
        // The document must be the one the table names.
        let named = errors.iter().all(|e| {
            e.resource
                .as_ref()
                .is_none_or(|r| r.kind.as_str() == kind && r.name == *name)
        });
        assert!(named, "{rel}#{index}: problems belong to another resource");
        let ours = if errors.is_empty() {
            "valid"
        } else {
            "invalid"
        };
        if ours == verdict {
            agree += 1;
        } else {
            let shown: Vec<String> = errors.iter().map(|e| format!("    {e}")).collect();
            disagreements.push(format!(
                "  {rel}#{index} {kind} {name}: Istio says {verdict} ({gist}), we say {ours}\n{}",
                shown.join("\n")
            ));
        }
    }
    say(format!(
        "{agree}/{} documents agree with Istio",
        expected.len()
    ));
    assert!(
        disagreements.is_empty(),
        "{agree}/{} documents agree with Istio; these do not:\n{}",
        expected.len(),
        disagreements.join("\n")
    );
}
