//! Arbitrary bytes through load + validate: must never panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
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
});
