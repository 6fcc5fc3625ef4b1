//! Integration tests: Istio's own files as a conformance suite, the CLI as a process, and
//! replays of inputs the fuzzer found. One test binary, so the crate is linked once.

mod corpus;
mod regressions;
mod schema;

#[cfg(feature = "cli")]
mod cli;
