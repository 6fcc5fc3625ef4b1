//! Every input the fuzzer ever crashed or hung on (`tests/data/fuzz-regressions/`) is replayed
//! through load + validate: it must finish and must not panic.

use std::fs;
use std::path::Path;

use tower_mesh::config::Loader;
use tower_mesh::validate::validate;

#[test]
fn fuzz_regressions_load_and_validate_without_panicking() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz-regressions");
    let mut n = 0;
    for entry in fs::read_dir(&dir).expect("tests/data/fuzz-regressions") {
        let path = entry.expect("entry").path();
        let bytes = fs::read(&path).expect("read");
        let text = String::from_utf8_lossy(&bytes);
        let set = Loader::new().load_str(&text);
        let _ = validate(&set);
        n += 1;
    }
    assert!(n > 0, "no regression inputs in {}", dir.display());
}
