//! Reloading the config while traffic flows: atomic swaps drop nothing, bad configs are
//! refused while the old one keeps serving, and `Mesh::watch` follows a file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tower_mesh::mesh::ConfigSource;
use tower_mesh::{Error, Mesh, MeshEvent};

use crate::routing::{Harness, fallback, request, route, route_of, send, services_yaml, vs};
use crate::support::Backend;

/// Everything to `subset`, as route `all-<subset>`.
fn all_to(subset: &str) -> String {
    vs("all", &[route(&format!("all-{subset}"), "", subset)])
}

/// The full config (services + [`all_to`]) as one source.
fn config_all_to(v1: &Backend, v2: &Backend, subset: &str) -> ConfigSource {
    ConfigSource::yaml(
        "mesh.yaml",
        format!("{}{}", services_yaml(v1.port(), v2.port()), all_to(subset)),
    )
}

/// The backend that answers `n` requests in a row to `http://my-app/` (panics if they
/// disagree or fail).
async fn all_answered_by(h: &Harness, n: usize) -> String {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..n {
        let reply = h.get("http://my-app/").await;
        let key = match reply.status {
            StatusCode::OK => reply.backend().unwrap_or("no x-backend").to_string(),
            s => format!("status {s}"),
        };
        *seen.entry(key).or_default() += 1;
    }
    assert_eq!(seen.len(), 1, "{n} requests split: {seen:?}");
    seen.into_keys().next().unwrap_or_default()
}

/// The next event that is not a watcher error, within `within`.
async fn next_event(
    events: &mut broadcast::Receiver<MeshEvent>,
    within: Duration,
) -> Option<MeshEvent> {
    tokio::time::timeout(within, async {
        loop {
            match events.recv().await {
                Ok(MeshEvent::WatchError { message }) => {
                    eprintln!("watch error (ignored): {message}")
                }
                Ok(event) => return Some(event),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_reloads_under_load_fail_no_request() {
    const MIN_REQUESTS: usize = 20_000;
    /// A bound, should the reloads be very slow: the loop stops here regardless.
    const MAX_REQUESTS: usize = 200_000;
    const CONCURRENCY: usize = 16;
    const SWAPS: usize = 100;

    let h = Harness::start(&all_to("v1"));
    let sent = Arc::new(AtomicUsize::new(0));
    let swapping = Arc::new(AtomicBool::new(true));

    // The load: every answer must be a 200 from a backend.
    let mut load = JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (client, sent, swapping) = (h.client.clone(), sent.clone(), swapping.clone());
        load.spawn(async move {
            let mut failures: Vec<String> = Vec::new();
            let mut by_backend: BTreeMap<String, usize> = BTreeMap::new();
            loop {
                let n = sent.fetch_add(1, Ordering::SeqCst);
                if n >= MAX_REQUESTS || (n >= MIN_REQUESTS && !swapping.load(Ordering::SeqCst)) {
                    break;
                }
                match send(&client, request("GET", "http://my-app/load", &[])).await {
                    Ok(r) if r.status == StatusCode::OK && r.backend().is_some() => {
                        *by_backend
                            .entry(r.backend().unwrap_or_default().to_string())
                            .or_default() += 1;
                    }
                    Ok(r) => failures.push(format!(
                        "{} {:?} {}",
                        r.status,
                        r.headers,
                        String::from_utf8_lossy(&r.body)
                    )),
                    Err(e) => failures.push(format!("body error: {e}")),
                }
            }
            (by_backend, failures)
        });
    }

    // The swaps: all→v2, all→v1, ..., 100 of them, ending on all→v2; spread over the load
    // (each waits for ~150 more requests) so they land while requests are in flight.
    let mut versions = Vec::new();
    for i in 1..=SWAPS {
        let target = if i % 2 == 1 { "v2" } else { "v1" };
        let target = if i == SWAPS { "v2" } else { target };
        let due = i * MIN_REQUESTS * 3 / 4 / SWAPS;
        while sent.load(Ordering::SeqCst) < due {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let summary = h
            .mesh
            .reload_from([config_all_to(&h.v1, &h.v2, target)])
            .await
            .unwrap_or_else(|e| panic!("swap {i} to {target}: {e}"));
        versions.push(summary.version);
    }
    swapping.store(false, Ordering::SeqCst);

    let mut by_backend: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    while let Some(part) = load.join_next().await {
        let (seen, failed) = part.expect("load task");
        for (k, n) in seen {
            *by_backend.entry(k).or_default() += n;
        }
        failures.extend(failed);
    }
    let answered: usize = by_backend.values().sum();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during reloads; first: {:?}",
        failures.len(),
        answered + failures.len(),
        failures.first()
    );
    assert!(answered >= MIN_REQUESTS, "only {answered} requests ran");
    assert_eq!(versions, (2..=SWAPS as u64 + 1).collect::<Vec<_>>());
    assert_eq!(h.mesh.snapshot().version(), SWAPS as u64 + 1);
    assert!(
        by_backend.get("v1").copied().unwrap_or(0) > 0
            && by_backend.get("v2").copied().unwrap_or(0) > 0,
        "both backends served: {by_backend:?}"
    );
    assert_eq!(h.v1.hits() + h.v2.hits(), answered);

    // After the last swap (all→v2): the next 200 requests all go to v2.
    assert_eq!(all_answered_by(&h, 200).await, "v2");
}

#[tokio::test]
async fn a_bad_reload_is_refused_and_the_old_config_keeps_serving() {
    let h = Harness::start(&vs("all", &[route("to-v1", "", "v1"), fallback()]));
    let mut events = h.mesh.subscribe();
    assert_eq!(all_answered_by(&h, 5).await, "v1");
    let services = services_yaml(h.v1.port(), h.v2.port());

    // (name, yaml, what the error must name)
    let bad: [(&str, String, &[&str]); 3] = [
        (
            "invalid.yaml",
            format!(
                "{services}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: all\nspec: [\n"
            ),
            &["invalid.yaml", "syntax"],
        ),
        (
            "unknown-field.yaml",
            format!(
                "{services}{}",
                all_to("v2").replace("  http:\n", "  http:\n  - routez: []\n")
            ),
            &["unknown field", "routez"],
        ),
        (
            "negative-weight.yaml",
            format!(
                "{services}{}",
                vs(
                    "all",
                    &[crate::routing::route_with(
                        "split",
                        "",
                        "route:\n    - {destination: {host: my-app, subset: v1}, weight: -10}\n    - {destination: {host: my-app, subset: v2}, weight: 110}",
                    )]
                )
            ),
            &["weight", "-10"],
        ),
    ];
    for (name, yaml, names) in bad {
        let err = h
            .mesh
            .reload_from([ConfigSource::yaml(name, yaml)])
            .await
            .expect_err(name);
        let Error::Config(errors) = &err else {
            panic!("{name}: want Error::Config, got {err:?}");
        };
        assert!(!errors.is_empty(), "{name}");
        let text = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        for needle in names {
            assert!(
                text.contains(needle),
                "{name}: the errors do not name {needle:?}:\n{text}"
            );
        }

        assert_eq!(h.mesh.snapshot().version(), 1, "{name}");
        assert_eq!(
            all_answered_by(&h, 5).await,
            "v1",
            "{name}: the old config still routes"
        );
        match next_event(&mut events, Duration::from_secs(5)).await {
            Some(MeshEvent::ReloadFailed {
                serving,
                message,
                errors: ev_errors,
            }) => {
                assert_eq!(serving, 1, "{name}");
                assert_eq!(ev_errors.len(), errors.len(), "{name}");
                assert!(
                    names.iter().all(|n| message.contains(n)),
                    "{name}: event message {message}"
                );
            }
            other => panic!("{name}: want ReloadFailed, got {other:?}"),
        }
    }

    // The sources stayed too: a plain reload re-reads the good config.
    let summary = h
        .mesh
        .reload()
        .await
        .expect("the old sources are still valid");
    assert_eq!(summary.version, 2);
    assert!(matches!(
        next_event(&mut events, Duration::from_secs(5)).await,
        Some(MeshEvent::Reloaded { version: 2, .. })
    ));
    assert_eq!(all_answered_by(&h, 5).await, "v1");
    // And a good reload_from takes effect.
    h.mesh
        .reload_from([config_all_to(&h.v1, &h.v2, "v2")])
        .await
        .expect("a valid config");
    assert_eq!(all_answered_by(&h, 5).await, "v2");
}

#[cfg(feature = "watch")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_when_the_config_file_changes() {
    let v1 = Backend::start("v1", &[("version", "v1")]);
    let v2 = Backend::start("v2", &[("version", "v2")]);
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("mesh.yaml");
    // Written beside it under a name the loader skips, then renamed over it: the watcher
    // never reads a half-written file.
    let scratch = dir.path().join("mesh.yaml.partial");
    let write = |subset: &str| {
        let yaml = format!("{}{}", services_yaml(v1.port(), v2.port()), all_to(subset));
        std::fs::write(&scratch, yaml).expect("write the config file");
        std::fs::rename(&scratch, &file).expect("rename the config file into place");
    };
    write("v1");

    let mesh = Mesh::builder()
        .config_path(dir.path())
        .build()
        .expect("a valid config");
    let client = mesh.client();
    let backend_of = |mesh_client: tower_mesh::MeshClient| async move {
        let reply = send(&mesh_client, request("GET", "http://my-app/", &[]))
            .await
            .expect("a response");
        (
            reply.backend().map(str::to_string),
            route_of(&reply).map(str::to_string),
        )
    };
    assert_eq!(
        backend_of(client.clone()).await,
        (Some("v1".into()), Some("all-v1".into()))
    );

    let mut events = mesh.subscribe();
    let _guard = mesh
        .watch(Duration::from_millis(50))
        .expect("watch the config dir");
    write("v2");

    // Writing the scratch file may trigger a reload of the unchanged config first: wait
    // for a reload after which the traffic follows the new file.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match next_event(&mut events, left).await {
            Some(MeshEvent::Reloaded { version, .. }) => {
                assert!(version >= 2);
                if backend_of(client.clone()).await == (Some("v2".into()), Some("all-v2".into())) {
                    break;
                }
            }
            Some(other) => eprintln!("event (ignored): {other:?}"),
            None => panic!("no reload to the new file within 10 s of changing it"),
        }
    }
    for _ in 0..20 {
        assert_eq!(
            backend_of(client.clone()).await,
            (Some("v2".into()), Some("all-v2".into()))
        );
    }
    assert!(v2.hits() >= 1);
}
