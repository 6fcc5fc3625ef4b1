//! Helpers for the rule tests: load a YAML string, validate it, and assert on the findings.

use crate::config::Loader;
use crate::validate::{Severity, ValidationError, validate};

/// Loads and validates `yaml`, returning every problem.
pub fn findings(yaml: &str) -> Vec<ValidationError> {
    validate(&Loader::new().load_str(yaml)).problems
}

fn render(all: &[ValidationError]) -> String {
    all.iter().map(|p| format!("\n  {p}")).collect()
}

/// Asserts that `yaml` has no errors (warnings are allowed).
#[track_caller]
pub fn passes(yaml: &str) {
    let all = findings(yaml);
    assert!(
        !all.iter().any(ValidationError::is_error),
        "expected no errors, got:{}\nfor:\n{yaml}",
        render(&all)
    );
}

/// Asserts that `yaml` has an error at exactly `path` whose message contains `needle`.
#[track_caller]
pub fn fails(yaml: &str, path: &str, needle: &str) {
    let all = findings(yaml);
    assert!(
        all.iter()
            .any(|p| p.severity == Severity::Error && p.path == path && p.message.contains(needle)),
        "expected an error at {path} containing {needle:?}, got:{}\nfor:\n{yaml}",
        render(&all)
    );
}

/// Asserts that `yaml` has no errors and a warning at `path` whose message contains `needle`.
#[track_caller]
pub fn warns(yaml: &str, path: &str, needle: &str) {
    let all = findings(yaml);
    assert!(
        !all.iter().any(ValidationError::is_error),
        "expected only warnings, got:{}\nfor:\n{yaml}",
        render(&all)
    );
    assert!(
        all.iter().any(|p| p.severity == Severity::Warning
            && p.path == path
            && p.message.contains(needle)),
        "expected a warning at {path} containing {needle:?}, got:{}\nfor:\n{yaml}",
        render(&all)
    );
}

/// Asserts that `yaml` has no errors and no finding at all at `path`.
#[track_caller]
pub fn no_finding(yaml: &str, path: &str) {
    let all = findings(yaml);
    assert!(
        !all.iter().any(|p| p.is_error() || p.path == path),
        "expected nothing at {path} and no errors, got:{}\nfor:\n{yaml}",
        render(&all)
    );
}
