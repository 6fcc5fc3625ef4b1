//! tower-mesh in one minute: a weighted split, then a live reload to a header-matched canary.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Starts three local backends (`my-app` v1, v2, v3) on 127.0.0.1, builds a mesh from
//! embedded Istio YAML (a ServiceEntry with the three endpoints labelled by version, a
//! DestinationRule with subsets v1/v2/v3, and the canonical 80/20 VirtualService), sends a few
//! thousand requests to `http://my-app/` through the `MeshClient`, and shows where they went.
//! Then it reloads the mesh to a canary config (`end-user: jason` → v3, everyone else 50/50)
//! while nothing stops, and shows the new split. Everything it starts stops when it ends.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_mesh::{ConfigSource, Mesh};

/// Requests per phase.
const REQUESTS: usize = 4_000;
/// Requests in flight at once.
const CONCURRENCY: usize = 32;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("tower-mesh quickstart: Istio routing inside one process\n");

    // Three versions of my-app, each answering with its own name.
    let mut ports = Vec::new();
    let mut servers = Vec::new();
    for version in ["v1", "v2", "v3"] {
        let (addr, task) = start_backend(version).await?;
        println!("  backend my-app {version} listening on {addr}");
        ports.push(addr.port());
        servers.push(task);
    }

    let mesh = Mesh::builder()
        .namespace("default")
        .config_str("services.yaml", services_yaml(&ports))
        .config_str("routes.yaml", SPLIT_80_20)
        .build()?;
    println!("\nphase 1: VirtualService my-app, 80% → v1, 20% → v2");
    let stats = drive(&mesh, |_| false).await;
    stats.print();

    let t = Instant::now();
    let summary = mesh
        .reload_from([
            ConfigSource::yaml("services.yaml", services_yaml(&ports)),
            ConfigSource::yaml("routes.yaml", CANARY),
        ])
        .await?;
    println!(
        "\nreloaded to version {} in {:.1} ms: `end-user: jason` → v3, others 50/50 v1/v2",
        summary.version,
        t.elapsed().as_secs_f64() * 1e3
    );
    println!("phase 2: every 4th request is from jason");
    let stats = drive(&mesh, |i| i % 4 == 0).await;
    stats.print();

    for task in servers {
        task.abort();
    }
    Ok(())
}

/// Where requests went, and how long they took.
#[derive(Default)]
struct Stats {
    by_backend: BTreeMap<String, usize>,
    jason: BTreeMap<String, usize>,
    failures: usize,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Stats {
    fn print(&self) {
        let total: usize = self.by_backend.values().sum();
        println!("  everyone else ({total} requests):");
        chart(&self.by_backend);
        if !self.jason.is_empty() {
            println!("  jason ({} requests):", self.jason.values().sum::<usize>());
            chart(&self.jason);
        }
        let mut l = self.latencies.clone();
        l.sort();
        let pct = |p: f64| {
            l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };
        println!(
            "  {} requests in {:.2} s ({:.0}/s), {} failed; latency p50 {:.2} ms, p99 {:.2} ms",
            self.latencies.len(),
            self.elapsed.as_secs_f64(),
            self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9),
            self.failures,
            pct(0.50).as_secs_f64() * 1e3,
            pct(0.99).as_secs_f64() * 1e3,
        );
    }
}

/// One line per backend: `v1 ████████████████████████ 80.1%`.
fn chart(counts: &BTreeMap<String, usize>) {
    const WIDTH: f64 = 40.0;
    let total = counts.values().sum::<usize>().max(1) as f64;
    for (name, n) in counts {
        let share = *n as f64 / total;
        let bar = "█".repeat((share * WIDTH).round() as usize);
        println!("    {name} {bar:<40} {:>5.1}%", share * 100.0);
    }
}

/// Sends `REQUESTS` requests to `http://my-app/` through the mesh client, `CONCURRENCY` at a
/// time, with a progress bar on stderr. `jason(i)` says whether request `i` carries
/// `end-user: jason`.
async fn drive(mesh: &Mesh, jason: impl Fn(usize) -> bool) -> Stats {
    let client = mesh.client();
    let started = Instant::now();
    let mut stats = Stats::default();
    let mut next = 0;
    let mut tasks = tokio::task::JoinSet::new();
    let mut done = 0;
    while done < REQUESTS {
        while next < REQUESTS && tasks.len() < CONCURRENCY {
            let is_jason = jason(next);
            let client = client.clone();
            tasks.spawn(async move {
                let mut req = http::Request::get("http://my-app/");
                if is_jason {
                    req = req.header("end-user", "jason");
                }
                let t = Instant::now();
                let result = match req.body(Empty::<Bytes>::new()) {
                    Ok(req) => match client.oneshot(req).await {
                        Ok(resp) if resp.status().is_success() => resp
                            .into_body()
                            .collect()
                            .await
                            .ok()
                            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned()),
                        _ => None,
                    },
                    Err(_) => None,
                };
                (is_jason, result, t.elapsed())
            });
            next += 1;
        }
        let Some(Ok((is_jason, result, took))) = tasks.join_next().await else {
            break;
        };
        done += 1;
        stats.latencies.push(took);
        match result {
            Some(backend) if is_jason => *stats.jason.entry(backend).or_default() += 1,
            Some(backend) => *stats.by_backend.entry(backend).or_default() += 1,
            None => stats.failures += 1,
        }
        if done % 100 == 0 || done == REQUESTS {
            progress(done, REQUESTS);
        }
    }
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    stats.elapsed = started.elapsed();
    stats
}

/// A progress bar on stderr, when stderr is a terminal.
fn progress(done: usize, total: usize) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let width = 30;
    let filled = done * width / total.max(1);
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r  [{}{}] {done}/{total}",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    let _ = err.flush();
}

/// A hyper server on 127.0.0.1 that answers every request with `name`.
async fn start_backend(
    name: &'static str,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |_req| async move {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                        name.as_bytes(),
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok((addr, task))
}

/// The service and its versions: a ServiceEntry with one endpoint per backend, and the
/// DestinationRule naming the subsets.
fn services_yaml(ports: &[u16]) -> String {
    let mut endpoints = String::new();
    for (i, port) in ports.iter().enumerate() {
        endpoints.push_str(&format!(
            "  - address: 127.0.0.1\n    ports: {{http: {port}}}\n    labels: {{version: v{}}}\n",
            i + 1
        ));
    }
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: my-app, namespace: default}}
spec:
  hosts: [my-app.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 80, name: http, protocol: HTTP}}
  endpoints:
{endpoints}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: my-app, namespace: default}}
spec:
  host: my-app
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
  - {{name: v3, labels: {{version: v3}}}}
"#
    )
}

/// Istio's canonical traffic split.
const SPLIT_80_20: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: my-app, namespace: default}
spec:
  hosts: [my-app]
  http:
  - route:
    - destination: {host: my-app, subset: v1}
      weight: 80
    - destination: {host: my-app, subset: v2}
      weight: 20
"#;

/// A canary for one user, and a 50/50 split for everyone else.
const CANARY: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: my-app, namespace: default}
spec:
  hosts: [my-app]
  http:
  - name: jason-canary
    match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: my-app, subset: v3}
  - name: split
    route:
    - destination: {host: my-app, subset: v1}
      weight: 50
    - destination: {host: my-app, subset: v2}
      weight: 50
"#;
