//! `tower-mesh validate` run as a process, as a user runs it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tower-mesh"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> Output {
    bin()
        .args(args)
        .current_dir(root())
        .output()
        .expect("run tower-mesh")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn valid_config_prints_a_one_line_summary_and_exits_0() {
    let o = run(&["validate", "examples/mesh"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "only the summary on valid config without warnings: {out}"
    );
    assert!(
        lines[0]
            .starts_with("valid: 5 resources in 3 files (1 AuthorizationPolicy, 1 DestinationRule"),
        "{out}"
    );
    assert!(lines[0].contains("skipped 1 document (1 Service)"), "{out}");
    assert!(lines[0].ends_with("0 errors, 0 warnings"), "{out}");
}

#[test]
fn three_mistakes_are_all_reported_with_their_paths_and_exit_1() {
    let o = run(&["validate", "tests/data/three-mistakes.yaml"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let prefix = "error: DestinationRule bookinfo/reviews: spec.trafficPolicy.";
    for expected in [
        "loadBalancer.simple: Unsupported value: \"ROUND_ROBBIN\"",
        "connectionPool.tcp.connectTimeout: invalid duration \"10 seconds\"",
        "outlierDetection.baseEjectionTimeout: unknown field \"baseEjectionTimeout\"",
    ] {
        let line = format!("{prefix}{expected}");
        assert!(out.contains(&line), "missing {line:?} in:\n{out}");
    }
    assert!(
        out.contains("three-mistakes.yaml:"),
        "lines say where: {out}"
    );
    assert!(
        out.lines()
            .last()
            .unwrap_or("")
            .starts_with("invalid: 1 resource in 1 file"),
        "{out}"
    );
}

#[test]
fn reads_standard_input() {
    let mut child = bin()
        .args(["validate", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\n\
                spec:\n  hosts: [reviews]\n  http:\n  - retries: {attempts: 3, retryOn: flaky}\n    \
                route:\n    - destination: {host: reviews}\n";
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(
            "error: VirtualService default/reviews: spec.http[0].retries.retryOn: \"flaky\" is not a valid retryOn policy"
        ),
        "{out}"
    );
}

#[test]
fn json_output_is_machine_readable() {
    let o = run(&[
        "validate",
        "--output",
        "json",
        "tests/data/three-mistakes.yaml",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"], 3);
    let paths: Vec<&str> = v["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert!(
        paths.contains(&"spec.trafficPolicy.loadBalancer.simple"),
        "{paths:?}"
    );
    assert_eq!(v["problems"][0]["kind"], "DestinationRule");
    assert!(v["problems"][0]["line"].as_u64().unwrap_or(0) > 0);
}

#[test]
fn syntax_errors_name_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, "apiVersion: v1\nkind: [oops\n").expect("write");
    let o = run(&["validate", file.to_str().expect("utf8")]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let shown = format!("error: {}:", Path::new(&file).display());
    assert!(out.contains(&shown), "{out}");
    assert!(out.contains("YAML syntax error"), "{out}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["validate"]).status.code(), Some(2));
    assert_eq!(run(&["frobnicate"]).status.code(), Some(2));
    let o = run(&["validate", "does/not/exist.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such file"));
}
