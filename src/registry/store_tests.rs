use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tower::discover::Change;

use super::*;
use crate::config::Loader;
use crate::registry::{ResolveFuture, ServiceRegistry};

fn services(yaml: &str) -> ServiceRegistry {
    let set = Loader::new().load_str(yaml);
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    ServiceRegistry::from_config(&set.resources).0
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn addrs(eps: &[Endpoint]) -> Vec<String> {
    eps.iter().map(|e| e.addr.to_string()).collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Waits (up to 10 s, checking every 5 ms) until `cond` holds; panics with `what` otherwise.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for: {what}");
}

const REVIEWS: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, targetPort: 8080}
  - {number: 9090, name: grpc}
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}, ports: {grpc: 19090}}
  - {address: 10.0.0.2, labels: {version: v2}}
  - {address: 10.0.0.3, labels: {version: v1, zone: a}}
";

const HOST: &str = "reviews.shop.svc.cluster.local";

#[test]
fn static_service_entry_endpoints_per_port() {
    let reg = EndpointRegistry::new();
    reg.apply_config(&services(REVIEWS))
        .expect("no DNS, no runtime needed");
    let http = reg.cluster(HOST, 9080, None).load();
    assert_eq!(
        addrs(&http),
        ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]
    );
    let grpc = reg
        .cluster("Reviews.Shop.svc.cluster.local", 9090, None)
        .load();
    assert_eq!(
        addrs(&grpc),
        ["10.0.0.1:19090", "10.0.0.2:9090", "10.0.0.3:9090"]
    );
    assert!(reg.cluster(HOST, 1234, None).load().is_empty());
}

#[test]
fn subsets_filter_by_every_label() {
    let reg = EndpointRegistry::new();
    reg.apply_config(&services(REVIEWS)).expect("apply");
    let v1 = labels(&[("version", "v1")]);
    let v1a = labels(&[("version", "v1"), ("zone", "a")]);
    let none = labels(&[("version", "v9")]);
    let all = reg.cluster(HOST, 9080, Some(&BTreeMap::new()));
    assert_eq!(all.load().len(), 3, "empty labels select every endpoint");
    let c = reg.cluster(HOST, 9080, Some(&v1));
    assert_eq!(addrs(&c.load()), ["10.0.0.1:8080", "10.0.0.3:8080"]);
    assert_eq!(c.subset_labels(), &v1);
    assert_eq!(
        addrs(&reg.cluster(HOST, 9080, Some(&v1a)).load()),
        ["10.0.0.3:8080"]
    );
    assert!(reg.cluster(HOST, 9080, Some(&none)).load().is_empty());
}

#[test]
fn handles_see_updates_and_load_is_stable_between_changes() {
    let reg = EndpointRegistry::new();
    let v2 = labels(&[("version", "v2")]);
    let c = reg.cluster(HOST, 9080, Some(&v2));
    assert!(c.load().is_empty());
    reg.apply_config(&services(REVIEWS)).expect("apply");
    assert_eq!(addrs(&c.load()), ["10.0.0.2:8080"]);
    let a = c.load();
    let b = c.load();
    assert!(Arc::ptr_eq(&a, &b), "no recomputation without a change");

    // A reload that changes the endpoints reaches the old handle.
    let changed = REVIEWS.replace("10.0.0.2", "10.0.0.22");
    reg.apply_config(&services(&changed)).expect("apply");
    assert_eq!(addrs(&c.load()), ["10.0.0.22:8080"]);

    // A reload without the service clears its config endpoints.
    let other = REVIEWS.replace("reviews.shop.svc", "ratings.shop.svc");
    reg.apply_config(&services(&other)).expect("apply");
    assert!(c.load().is_empty());
    assert_eq!(
        reg.cluster("ratings.shop.svc.cluster.local", 9080, None)
            .load()
            .len(),
        3
    );
}

#[test]
fn static_map_takes_precedence_over_config() {
    let reg = EndpointRegistry::new();
    reg.apply_config(&services(REVIEWS)).expect("apply");
    let c = reg.cluster(HOST, 9080, None);
    reg.set_static(
        HOST,
        9080,
        vec![Endpoint::new(addr("127.0.0.1:1")).with_weight(0)],
    );
    let eps = c.load();
    assert_eq!(addrs(&eps), ["127.0.0.1:1"]);
    assert_eq!(eps[0].weight, 1);
    // Config changes do not override it.
    reg.apply_config(&services(&REVIEWS.replace("10.0.0.1", "10.9.9.9")))
        .expect("apply");
    assert_eq!(addrs(&c.load()), ["127.0.0.1:1"]);
    // Other ports of the host still come from config.
    assert_eq!(reg.cluster(HOST, 9090, None).load().len(), 3);
    reg.remove_static(HOST, 9080);
    assert_eq!(
        addrs(&c.load()),
        ["10.9.9.9:8080", "10.0.0.2:8080", "10.0.0.3:8080"]
    );
}

#[test]
fn workload_entries_become_endpoints() {
    let reg = EndpointRegistry::new();
    reg.apply_config(&services(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vms, namespace: shop}
spec:
  hosts: [vm.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, targetPort: 8080}]
  workloadSelector: {labels: {app: vm}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm1, namespace: shop}
spec: {address: 10.1.0.1, labels: {app: vm, version: v1}, weight: 5, serviceAccount: vm-sa}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm2, namespace: shop}
spec: {address: 10.1.0.2, labels: {app: web}}
",
    ))
    .expect("apply");
    let eps = reg.cluster("vm.shop.svc.cluster.local", 80, None).load();
    assert_eq!(addrs(&eps), ["10.1.0.1:8080"]);
    assert_eq!(eps[0].weight, 5);
    assert_eq!(eps[0].service_account.as_deref(), Some("vm-sa"));
}

/// A `Discover` stream backed by an mpsc channel.
struct Chan(mpsc::UnboundedReceiver<Result<Change<u32, Endpoint>, io::Error>>);

impl futures_core::Stream for Chan {
    type Item = Result<Change<u32, Endpoint>, io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[tokio::test]
async fn discover_inserts_and_removes() {
    let reg = EndpointRegistry::new();
    reg.apply_config(&services(REVIEWS)).expect("apply");
    let c = reg.cluster(HOST, 9080, Some(&labels(&[("version", "v1")])));
    assert_eq!(
        c.load().len(),
        2,
        "config endpoints until the stream speaks"
    );
    let (tx, rx) = mpsc::unbounded_channel();
    reg.discover(HOST, 9080, Chan(rx)).expect("runtime");

    let ep = |port: u16, version: &str| {
        Endpoint::new(addr(&format!("127.0.0.1:{port}"))).with_labels([("version", version)])
    };
    let send = |change| tx.send(Ok(change)).expect("task alive");
    send(Change::Insert(1, ep(1001, "v1")));
    send(Change::Insert(2, ep(1002, "v2")));
    send(Change::Insert(3, ep(1003, "v1")));
    eventually("three discovered endpoints, two in v1", || {
        addrs(&c.load()) == ["127.0.0.1:1001", "127.0.0.1:1003"]
    })
    .await;
    send(Change::Remove(1));
    send(Change::Insert(3, ep(2003, "v1"))); // same key: replaced in place
    eventually("key 1 removed, key 3 replaced", || {
        addrs(&c.load()) == ["127.0.0.1:2003"]
    })
    .await;
    let all = reg.cluster(HOST, 9080, None);
    assert_eq!(addrs(&all.load()), ["127.0.0.1:1002", "127.0.0.1:2003"]);

    // The static map still wins over the stream.
    reg.set_static(HOST, 9080, vec![ep(3000, "v1")]);
    assert_eq!(addrs(&c.load()), ["127.0.0.1:3000"]);
    reg.remove_static(HOST, 9080);
    assert_eq!(addrs(&c.load()), ["127.0.0.1:2003"]);

    // The stream ending keeps its last set.
    drop(tx);
    eventually("discover task finished", || {
        lock(&reg.inner.tasks)
            .discover
            .values()
            .all(AbortHandle::is_finished)
    })
    .await;
    assert_eq!(addrs(&c.load()), ["127.0.0.1:2003"]);
}

#[test]
fn tasks_need_a_runtime() {
    let reg = EndpointRegistry::new();
    let (_tx, rx) = mpsc::unbounded_channel();
    assert_eq!(
        reg.discover(HOST, 80, Chan(rx)),
        Err(RegistryError::NoRuntime {
            what: "a Discover stream"
        })
    );
    let dns = services(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: ns}
spec:
  hosts: [localhost]
  resolution: DNS
  ports: [{number: 80, name: http}]
",
    );
    let err = reg.apply_config(&dns).expect_err("DNS needs a runtime");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

const LOCALHOST_DNS: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: local, namespace: ns}
spec:
  hosts: [local.example.com]
  resolution: DNS
  ports: [{number: 80, name: http, targetPort: 8080}]
  endpoints:
  - {address: localhost, labels: {version: v1}}
  - {address: 10.0.0.7}
";

#[tokio::test]
async fn dns_resolves_localhost_with_the_system_resolver() {
    let reg = EndpointRegistry::new();
    reg.apply_config(&services(LOCALHOST_DNS)).expect("apply");
    let c = reg.cluster("local.example.com", 80, None);
    eventually("localhost resolved", || !c.load().is_empty()).await;
    let eps = c.load();
    let loopback: Vec<&Endpoint> = eps.iter().filter(|e| e.addr.ip().is_loopback()).collect();
    assert!(!loopback.is_empty(), "{eps:?}");
    assert!(loopback.iter().all(|e| e.addr.port() == 8080));
    assert!(
        loopback
            .iter()
            .all(|e| e.labels.get("version").map(String::as_str) == Some("v1"))
    );
    assert_eq!(
        eps.last().map(|e| e.addr),
        Some(addr("10.0.0.7:8080")),
        "an IP endpoint stands for itself"
    );
}

/// A resolver that answers from a script, counting its calls.
struct Scripted {
    calls: AtomicUsize,
    answer: Box<dyn Fn(usize) -> io::Result<Vec<IpAddr>> + Send + Sync>,
}

impl Resolve for Scripted {
    fn resolve(&self, name: &str) -> ResolveFuture {
        assert_eq!(name, "db.example.com");
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let answer = (self.answer)(n);
        Box::pin(async move { answer })
    }
}

fn scripted(
    answer: impl Fn(usize) -> io::Result<Vec<IpAddr>> + Send + Sync + 'static,
) -> Arc<Scripted> {
    Arc::new(Scripted {
        calls: AtomicUsize::new(0),
        answer: Box::new(answer),
    })
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([10, 0, 1, last])
}

const DB_DNS: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: ns}
spec:
  hosts: [db.example.com]
  resolution: DNS
  ports: [{number: 5432, name: tcp, protocol: TCP}]
";

#[tokio::test]
async fn dns_re_resolves_periodically_and_keeps_addresses_on_failure() {
    // Call 0: two addresses; calls 1-2: one new address; later calls fail.
    let resolver = scripted(|n| match n {
        0 => Ok(vec![ip(1), ip(2), ip(1)]),
        1 | 2 => Ok(vec![ip(3)]),
        _ => Err(io::Error::other("SERVFAIL")),
    });
    let reg = EndpointRegistry::new()
        .with_dns_refresh(Duration::from_millis(10))
        .with_resolver(resolver.clone());
    assert_eq!(reg.dns_refresh(), Duration::from_millis(10));
    reg.apply_config(&services(DB_DNS)).expect("apply");
    let c = reg.cluster("db.example.com", 5432, None);
    eventually("second answer published", || {
        addrs(&c.load()) == ["10.0.1.3:5432"]
    })
    .await;
    eventually("several failed re-resolutions", || {
        resolver.calls.load(Ordering::SeqCst) >= 6
    })
    .await;
    assert_eq!(
        addrs(&c.load()),
        ["10.0.1.3:5432"],
        "failures keep the last addresses"
    );

    // Re-applying the same config keeps the running resolver; dropping the registry stops it
    // (the task releases its resolver).
    reg.apply_config(&services(DB_DNS)).expect("apply");
    assert_eq!(lock(&reg.inner.tasks).dns.len(), 1);
    drop(reg);
    eventually("resolver task stopped", || {
        Arc::strong_count(&resolver) == 1
    })
    .await;
}

#[tokio::test]
async fn dns_first_answer_is_deduplicated_and_round_robin_keeps_the_first() {
    let resolver = scripted(|_| Ok(vec![ip(1), ip(2), ip(1)]));
    let reg = EndpointRegistry::new().with_resolver(resolver.clone());
    reg.apply_config(&services(DB_DNS)).expect("apply");
    let c = reg.cluster("db.example.com", 5432, None);
    eventually("resolved", || !c.load().is_empty()).await;
    assert_eq!(addrs(&c.load()), ["10.0.1.1:5432", "10.0.1.2:5432"]);

    // Switching the service to DNS_ROUND_ROBIN restarts its resolver with the new plan.
    let rr = DB_DNS.replace("resolution: DNS", "resolution: DNS_ROUND_ROBIN");
    reg.apply_config(&services(&rr)).expect("apply");
    eventually("first address only", || {
        addrs(&c.load()) == ["10.0.1.1:5432"]
    })
    .await;

    // Switching to NONE stops the resolver and clears the endpoints.
    let none = DB_DNS.replace("resolution: DNS", "resolution: NONE");
    reg.apply_config(&services(&none)).expect("apply");
    assert!(c.load().is_empty());
    assert!(lock(&reg.inner.tasks).dns.is_empty());
    eventually("resolver task stopped", || {
        Arc::strong_count(&resolver) == 2
    })
    .await;
}

#[test]
fn a_stopped_task_cannot_overwrite_what_a_reload_set() {
    let entry = Entry::new();
    let one = || vec![Endpoint::new(addr("10.0.0.1:80"))];
    let winner = |e: &Entry| addrs(lock(&e.state).winner());

    // A resolver owns the config set while it runs ...
    entry.update(|s| s.config_owner = 7);
    entry.update(|s| s.set_config_from(7, one()));
    assert_eq!(winner(&entry), ["10.0.0.1:80"]);
    // ... a reload takes it back (the service became STATIC): a late write is ignored.
    entry.update(|s| s.set_config(Some(Vec::new())));
    entry.update(|s| s.set_config_from(7, one()));
    assert!(winner(&entry).is_empty());

    // A replaced Discover stream's last batch is ignored too.
    entry.update(|s| s.discover_owner = 9);
    entry.update(|s| s.set_discovered_from(8, one()));
    assert!(winner(&entry).is_empty());
    entry.update(|s| s.set_discovered_from(9, one()));
    assert_eq!(winner(&entry), ["10.0.0.1:80"]);
}

#[tokio::test]
async fn a_second_discover_stream_replaces_the_first() {
    let reg = EndpointRegistry::new();
    let c = reg.cluster(HOST, 80, None);
    let (tx1, rx1) = mpsc::unbounded_channel();
    reg.discover(HOST, 80, Chan(rx1)).expect("runtime");
    tx1.send(Ok(Change::Insert(1, Endpoint::new(addr("127.0.0.1:1")))))
        .expect("first task alive");
    eventually("first stream's endpoint", || c.load().len() == 1).await;

    let (tx2, rx2) = mpsc::unbounded_channel();
    reg.discover(HOST, 80, Chan(rx2)).expect("runtime");
    eventually("first task stopped", || tx1.is_closed()).await;
    tx2.send(Ok(Change::Insert(5, Endpoint::new(addr("127.0.0.1:5")))))
        .expect("second task alive");
    eventually("second stream's set", || {
        addrs(&c.load()) == ["127.0.0.1:5"]
    })
    .await;
}

#[test]
fn readers_on_other_threads_see_whole_sets() {
    // Each published set is `n` endpoints on ports 1..=n; a reader must never see a mix.
    let reg = EndpointRegistry::new();
    let c = reg.cluster(HOST, 80, None);
    let set = |n: u16| {
        (1..=n)
            .map(|p| Endpoint::new(SocketAddr::from(([127, 0, 0, 1], p))))
            .collect()
    };
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let c = c.clone();
                scope.spawn(move || {
                    for _ in 0..20_000 {
                        let eps = c.load();
                        let ports: Vec<u16> = eps.iter().map(|e| e.addr.port()).collect();
                        let want: Vec<u16> =
                            (1..=u16::try_from(ports.len()).unwrap_or(0)).collect();
                        assert_eq!(ports, want, "a torn set");
                    }
                })
            })
            .collect();
        for round in 0..2_000u16 {
            reg.set_static(HOST, 80, set(round % 7 + 1));
        }
        for r in readers {
            assert!(r.join().is_ok(), "reader panicked");
        }
    });
    assert_eq!(c.load().len(), 1999 % 7 + 1);
}
