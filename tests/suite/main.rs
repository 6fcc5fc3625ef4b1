//! Integration tests: Istio's own files as a conformance suite, the CLI as a process, and
//! replays of inputs the fuzzer found. One test binary, so the crate is linked once.

mod corpus;
mod regressions;
mod schema;

#[cfg(feature = "cli")]
mod cli;

use std::path::{Path, PathBuf};

/// Writes a line straight to stderr: the test harness captures `println!`/`eprintln!`, and
/// these lines (agreement figures, skip notes) are meant to be seen on every run.
pub fn say(line: String) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// `../shared/<rel>` beside the checkout (Istio's corpus and CRDs). A user's fresh clone does
/// not have it: then the caller skips with a one-line note; under `CI=true` it must be there.
pub fn shared(rel: &str, what: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {what} is missing at {}", path.display());
    }
    say(format!(
        "note: skipping the {what} test: {} not found (it sits beside the repository in CI)",
        path.display()
    ));
    None
}
