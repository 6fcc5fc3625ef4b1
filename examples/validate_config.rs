//! Load a directory of Istio YAML, validate it, and say what is in it.
//!
//! `cargo run --example validate_config [DIR]` (default: `examples/mesh`).

use std::path::PathBuf;
use std::process::ExitCode;

use tower_mesh::config::{Loader, Spec};
use tower_mesh::validate::validate;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("examples/mesh"));
    let set = Loader::new().load_path(&dir);
    let report = validate(&set);
    for res in &set.resources {
        let what = match &res.spec {
            Spec::VirtualService(vs) => format!(
                "routes {} with {} HTTP route(s)",
                vs.hosts.join(", "),
                vs.http.len()
            ),
            Spec::DestinationRule(dr) => {
                format!("policy for {} with {} subset(s)", dr.host, dr.subsets.len())
            }
            Spec::ServiceEntry(se) => format!(
                "adds {} with {} endpoint(s)",
                se.hosts.join(", "),
                se.endpoints.len()
            ),
            other => format!("{}", other.kind()),
        };
        println!("{} {}: {what} ({})", res.kind(), res.key(), res.source);
    }
    for s in &set.skipped {
        println!("skipped {} {} ({})", s.kind, s.name, s.source);
    }
    for p in &report.problems {
        println!("{p}");
    }
    if report.has_errors() {
        ExitCode::FAILURE
    } else {
        println!("{}: valid", dir.display());
        ExitCode::SUCCESS
    }
}
