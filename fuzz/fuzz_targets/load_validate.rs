//! Arbitrary bytes through load + validate, and (when valid) compile into a mesh snapshot and
//! resolve every host: must never panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_mesh::Mesh;
use tower_mesh::config::Loader;
use tower_mesh::validate::validate;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let set = Loader::new().load_str(&text);
    let report = validate(&set);
    // Rendering every problem exercises the Display paths too.
    for p in &report.problems {
        let _ = p.to_string();
    }
    if report.has_errors() {
        return;
    }
    // Valid config compiles (route tables, clusters, endpoints) without panicking; outside a
    // runtime, DNS ServiceEntries are refused with an error, not a panic.
    if let Ok(mesh) = Mesh::builder().config_str("fuzz.yaml", text.as_ref()).build() {
        let snapshot = mesh.snapshot();
        let hosts: Vec<String> = snapshot.virtual_hosts().map(|v| v.host().to_string()).collect();
        for host in hosts {
            let _ = snapshot.resolve(&host);
            let _ = snapshot.resolve(&format!("{host}:80"));
        }
    }
});
