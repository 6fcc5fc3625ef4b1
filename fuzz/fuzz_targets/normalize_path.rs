//! Arbitrary paths through every normalisation mode: never panics, and normalising twice
//! changes nothing (so a path cannot be walked to a different route by a second pass).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_mesh::route::{PathNormalization, normalize_path, split_path_query};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (path, _query) = split_path_query(&text);
    for mode in [
        PathNormalization::None,
        PathNormalization::Base,
        PathNormalization::MergeSlashes,
        PathNormalization::DecodeAndMergeSlashes,
    ] {
        let once = normalize_path(path, mode);
        let twice = normalize_path(&once, mode);
        assert_eq!(once, twice, "not idempotent in {mode:?} for {path:?}");
    }
});
