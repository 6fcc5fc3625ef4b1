//! `MeshClient` against a bare hyper client, on the same loopback servers, in the same run.
//!
//! Two hyper HTTP/1.1 listeners on `127.0.0.1:0` (one server, two endpoints) answer every
//! request with a small fixed body. Both clients send `REQUESTS` GETs from `CONCURRENCY`
//! tasks (each request's body read to the end) inside one multi-thread tokio runtime:
//!
//! * **bare**: `CONCURRENCY` `hyper::client::conn::http1` connections spread over the two
//!   endpoints, one per task, each task sending its share back to back (the floor: no
//!   routing, no pool);
//! * **mesh**: the full outbound stack of `mesh.client()`: a ServiceEntry for
//!   `my-app.default.svc.cluster.local` with the two endpoints, a DestinationRule with
//!   `LEAST_REQUEST` (P2C), connection-pool limits (circuit breaking) and outlier detection,
//!   and a VirtualService route with a `timeout` and `retries` (`perTryTimeout`); requests to
//!   `http://my-app/` with `tower::ServiceExt::oneshot`. No retry fires (the server never
//!   fails).
//!
//! A third contender is the routing core alone: `RouteLayer` over `Upstream` (route, endpoint
//! pick, pool), without the resilience layers the `MeshClient` stacks between them.
//!
//! Each is warmed up once (connections opened), then `ROUNDS` alternating rounds are timed;
//! the table shows the median requests/s of each, the ratios to bare, and latency quantiles
//! (both clients keep `CONCURRENCY` requests in flight, checked with Little's law). A
//! sequential pass (one task) gives the per-request latency of each, where the mesh's own
//! overhead is not hidden by concurrency: bare alternates over two connections (one per
//! endpoint) as the mesh's balancer does; it also splits the mesh's cost: the endpoint pool
//! alone (`mesh.pools()` → `Pool::send`, absolute URI, no routing) and `RouteLayer` alone
//! (over an inner service that answers at once: no network).
//!
//! Run: `cargo bench --bench client`. `CLIENT_BENCH_REQUESTS`, `CLIENT_BENCH_ROUNDS` and
//! `CLIENT_BENCH_CONCURRENCY` override the defaults; `CLIENT_BENCH_PROFILE` runs one
//! contender alone for a profiler (see [`profile`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, ServiceExt};
use tower_mesh::body::MeshBody;
use tower_mesh::pool::{PoolKey, PoolSettings, TlsPolicy, UpstreamProtocol};
use tower_mesh::{Mesh, RouteLayer};

const BODY: &[u8] = b"hello from my-app\n";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

/// The loopback server: HTTP/1.1 keep-alive, `BODY` for every request.
async fn start_server() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn mesh_config(ports: [u16; 2]) -> String {
    let [a, b] = ports;
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
  - {{address: 127.0.0.1, ports: {{http: {a}}}, labels: {{app: my-app, version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {b}}}, labels: {{app: my-app, version: v1}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: my-app, namespace: default}}
spec:
  host: my-app
  trafficPolicy:
    loadBalancer: {{simple: LEAST_REQUEST}}
    connectionPool:
      tcp: {{maxConnections: 1000, connectTimeout: 1s}}
      http: {{http1MaxPendingRequests: 1000, http2MaxRequests: 1000, maxRetries: 100}}
    outlierDetection: {{consecutive5xxErrors: 5, consecutiveGatewayErrors: 5, interval: 10s, baseEjectionTime: 30s}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: my-app, namespace: default}}
spec:
  hosts: [my-app]
  http:
  - route:
    - destination: {{host: my-app}}
    timeout: 10s
    retries: {{attempts: 2, perTryTimeout: 5s, retryOn: "connect-failure,refused-stream,reset,503"}}
"#
    )
}

/// Splits `total` requests over `tasks`.
fn shares(total: usize, tasks: usize) -> impl Iterator<Item = usize> {
    (0..tasks).map(move |i| total / tasks + usize::from(i < total % tasks))
}

/// Opens `n` bare hyper HTTP/1.1 connections, to the `addrs` in turn.
async fn bare_connections(addrs: &[SocketAddr], n: usize) -> Vec<SendRequest<Empty<Bytes>>> {
    let mut senders = Vec::with_capacity(n);
    for addr in addrs.iter().cycle().take(n) {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        senders.push(sender);
    }
    senders
}

/// Sends `total` requests over the connections (one task each); returns the elapsed time.
async fn run_bare(senders: &mut Vec<SendRequest<Empty<Bytes>>>, total: usize) -> Duration {
    run_bare_timed(senders, total, &mut Vec::new()).await
}

/// [`run_bare`], recording each request's latency into `latencies`.
async fn run_bare_timed(
    senders: &mut Vec<SendRequest<Empty<Bytes>>>,
    total: usize,
    latencies: &mut Vec<Duration>,
) -> Duration {
    let started = Instant::now();
    let n = senders.len().max(1);
    let tasks: Vec<_> = std::mem::take(senders)
        .into_iter()
        .zip(shares(total, n))
        .map(|(mut sender, n)| {
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = Instant::now();
                    let req = Request::get("/")
                        .header(HOST, "my-app")
                        .body(Empty::<Bytes>::new())
                        .expect("request");
                    sender.ready().await.expect("ready");
                    let resp = sender.send_request(req).await.expect("response");
                    assert!(resp.status().is_success());
                    let body = resp.into_body().collect().await.expect("body");
                    assert_eq!(body.to_bytes().len(), BODY.len());
                    lat.push(t.elapsed());
                }
                (sender, lat)
            })
        })
        .collect();
    for t in tasks {
        let (sender, lat) = t.await.expect("bare task");
        senders.push(sender);
        latencies.extend(lat);
    }
    started.elapsed()
}

/// One task sending `total` requests one at a time over `senders` in turn (a bare client
/// balancing round robin over the same endpoints the mesh balances over); latencies into
/// `latencies`.
async fn run_bare_alternating(
    senders: &mut [SendRequest<Empty<Bytes>>],
    total: usize,
    latencies: &mut Vec<Duration>,
) -> Duration {
    let started = Instant::now();
    for i in 0..total {
        let n = senders.len().max(1);
        let Some(sender) = senders.get_mut(i % n) else {
            break;
        };
        let t = Instant::now();
        let req = Request::get("/")
            .header(HOST, "my-app")
            .body(Empty::<Bytes>::new())
            .expect("request");
        sender.ready().await.expect("ready");
        let resp = sender.send_request(req).await.expect("response");
        assert!(resp.status().is_success());
        let body = resp.into_body().collect().await.expect("body");
        assert_eq!(body.to_bytes().len(), BODY.len());
        latencies.push(t.elapsed());
    }
    started.elapsed()
}

/// Sends `total` requests to `http://my-app/` through the mesh from `tasks` tasks.
async fn run_mesh(mesh: &Mesh, total: usize, tasks: usize) -> Duration {
    run_mesh_timed(mesh, total, tasks, &mut Vec::new()).await
}

/// [`run_mesh`], recording each request's latency into `latencies`.
async fn run_mesh_timed(
    mesh: &Mesh,
    total: usize,
    tasks: usize,
    latencies: &mut Vec<Duration>,
) -> Duration {
    let started = Instant::now();
    let handles: Vec<_> = shares(total, tasks)
        .map(|n| {
            let client = mesh.client();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = Instant::now();
                    let req = Request::get("http://my-app/")
                        .body(Empty::<Bytes>::new())
                        .expect("request");
                    let resp = client.clone().oneshot(req).await.expect("infallible");
                    assert!(resp.status().is_success(), "{:?}", resp.status());
                    let body = resp.into_body().collect().await.expect("body");
                    assert_eq!(body.to_bytes().len(), BODY.len());
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    for h in handles {
        latencies.extend(h.await.expect("mesh task"));
    }
    started.elapsed()
}

/// Like [`run_mesh`] through the routing core alone: `RouteLayer` over `Upstream` (route,
/// endpoint pick, pool), without the resilience layers.
async fn run_routing(mesh: &Mesh, total: usize, tasks: usize) -> Duration {
    let started = Instant::now();
    let handles: Vec<_> = shares(total, tasks)
        .map(|n| {
            let svc = RouteLayer::new(mesh.clone()).layer(tower_mesh::Upstream::new(mesh));
            tokio::spawn(async move {
                for _ in 0..n {
                    let req = Request::get("http://my-app/")
                        .body(tower_mesh::body::empty())
                        .expect("request");
                    // Called directly (not `oneshot`) so the task's future is provably `Send`.
                    let mut s = svc.clone();
                    std::future::poll_fn(|cx| {
                        tower::Service::<Request<MeshBody>>::poll_ready(&mut s, cx)
                    })
                    .await
                    .expect("ready");
                    let resp = tower::Service::call(&mut s, req).await.expect("infallible");
                    assert!(resp.status().is_success(), "{:?}", resp.status());
                    let body = resp.into_body().collect().await.expect("body");
                    assert_eq!(body.to_bytes().len(), BODY.len());
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("routing task");
    }
    started.elapsed()
}

/// The `p`-quantile (0..1) of `v`.
fn quantile(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    let i = ((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1));
    v.get(i).copied().unwrap_or_default()
}

/// Sends `total` requests one at a time, from a spawned task (as the other runs do), straight
/// to the mesh's pool for `addr`.
async fn run_pool(mesh: &Mesh, addr: SocketAddr, total: usize) -> Duration {
    let key = PoolKey {
        addr,
        tls: TlsPolicy::Plaintext,
        protocol: UpstreamProtocol::Http1,
        cluster: None,
    };
    let mesh = mesh.clone();
    let started = Instant::now();
    tokio::spawn(async move {
        for _ in 0..total {
            let pool = mesh.pools().get(&key, &PoolSettings::default());
            let req = Request::get("http://my-app/")
                .body(tower_mesh::body::empty())
                .expect("request");
            let resp = pool.send(req).await.expect("pool send");
            assert!(resp.status().is_success());
            let body = resp.into_body().collect().await.expect("body");
            assert_eq!(body.to_bytes().len(), BODY.len());
        }
    })
    .await
    .expect("pool task");
    started.elapsed()
}

async fn answer(_req: Request<MeshBody>) -> Result<Response<MeshBody>, Infallible> {
    Ok(Response::new(tower_mesh::body::empty()))
}

/// `RouteLayer` alone (`routed`), or the inner service without it: `total` requests to
/// `http://my-app/` answered at once by the inner service. CPU only: nothing waits, so it
/// runs on the bench's own thread.
async fn run_route_only(mesh: &Mesh, total: usize, routed: bool) -> Duration {
    let routed = routed.then(|| RouteLayer::new(mesh.clone()).layer(tower::service_fn(answer)));
    let started = Instant::now();
    for _ in 0..total {
        let req = Request::get("http://my-app/")
            .body(tower_mesh::body::empty())
            .expect("request");
        let resp = match &routed {
            Some(svc) => svc.clone().oneshot(req).await.expect("infallible"),
            None => tower::service_fn(answer)
                .oneshot(req)
                .await
                .expect("infallible"),
        };
        assert!(resp.status().is_success());
    }
    started.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `CLIENT_BENCH_PROFILE=bare|mesh|routing|pool`: only `CLIENT_BENCH_REQUESTS` sequential
/// requests of that kind on a current-thread runtime (after 100 to warm up), for a profiler:
/// `valgrind --tool=callgrind` counts instructions, the same on a loaded machine.
fn profile(kind: &str, requests: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let addrs = [
            start_server().await.expect("server"),
            start_server().await.expect("server"),
        ];
        let addr = addrs[0];
        let mesh = Mesh::builder()
            .namespace("default")
            .config_str("my-app.yaml", mesh_config(addrs.map(|a| a.port())))
            .build()
            .expect("mesh");
        let mut one = bare_connections(&addrs, 1).await;
        let mut run = async |n: usize| match kind {
            "bare" => run_bare(&mut one, n).await,
            "mesh" => run_mesh(&mesh, n, 1).await,
            "routing" => run_routing(&mesh, n, 1).await,
            "pool" => run_pool(&mesh, addr, n).await,
            other => panic!("CLIENT_BENCH_PROFILE={other}: one of bare, mesh, routing, pool"),
        };
        run(100).await;
        let took = run(requests).await;
        println!(
            "{kind}: {requests} sequential requests, {:.2} µs each",
            took.as_secs_f64() * 1e6 / requests as f64
        );
    });
}

fn main() {
    let requests = env_or("CLIENT_BENCH_REQUESTS", 20_000);
    if let Ok(kind) = std::env::var("CLIENT_BENCH_PROFILE") {
        return profile(&kind, requests);
    }
    let rounds = env_or("CLIENT_BENCH_ROUNDS", 5);
    let concurrency = env_or("CLIENT_BENCH_CONCURRENCY", 16);
    let workers = env_or(
        "CLIENT_BENCH_WORKERS",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(workers);
    let runtime = builder.enable_all().build().expect("runtime");
    runtime.block_on(async {
        let addrs = [
            start_server().await.expect("server"),
            start_server().await.expect("server"),
        ];
        let addr = addrs[0];
        let mesh = Mesh::builder()
            .namespace("default")
            .config_str("my-app.yaml", mesh_config(addrs.map(|a| a.port())))
            .build()
            .expect("mesh");

        println!(
            "client: {requests} GETs per round, {concurrency} concurrent tasks, {rounds} \
             alternating rounds, {workers} runtime workers, {} CPUs (loopback server {addr})",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let mut bare = bare_connections(&addrs, concurrency).await;
        // Warm-up: connections open, allocator and caches warm.
        run_bare(&mut bare, requests / 10).await;
        run_mesh(&mesh, requests / 10, concurrency).await;
        run_routing(&mesh, requests / 10, concurrency).await;

        let (mut bare_rps, mut mesh_rps, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        let (mut routing_rps, mut routing_ratios) = (Vec::new(), Vec::new());
        let (mut bare_lat, mut mesh_lat) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let b = requests as f64
                / run_bare_timed(&mut bare, requests, &mut bare_lat)
                    .await
                    .as_secs_f64();
            let m = requests as f64
                / run_mesh_timed(&mesh, requests, concurrency, &mut mesh_lat)
                    .await
                    .as_secs_f64();
            let r = requests as f64
                / run_routing(&mesh, requests, concurrency)
                    .await
                    .as_secs_f64();
            println!(
                "  round {round}: bare {b:>9.0} req/s   mesh {m:>9.0} req/s   ratio {:.3}   \
                 routing core {r:>9.0} req/s   ratio {:.3}",
                m / b,
                r / b
            );
            routing_rps.push(r);
            routing_ratios.push(r / b);
            bare_rps.push(b);
            mesh_rps.push(m);
            ratios.push(m / b);
        }
        let (b, m) = (median(bare_rps), median(mesh_rps));
        println!();
        println!("  | client, {concurrency:>2} concurrent tasks     | req/s (median) |");
        println!("  |--------------------------------|----------------|");
        println!("  | bare hyper http1 connections   | {b:>14.0} |");
        println!("  | MeshClient (full stack)        | {m:>14.0} |");
        let r = median(routing_rps);
        println!("  | routing core (Route+Upstream)  | {r:>14.0} |");
        println!(
            "  | ratio routing core / bare      | {:>14.3} |  (median of per-round ratios {:.3})",
            r / b,
            median(routing_ratios)
        );
        println!(
            "  | ratio MeshClient / bare        | {:>14.3} |  (median of per-round ratios {:.3})",
            m / b,
            median(ratios)
        );
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let mean = |v: &[Duration]| v.iter().map(|d| us(*d)).sum::<f64>() / v.len().max(1) as f64;
        println!(
            "  in flight (Little: rate x mean latency): bare {:.1}, mesh {:.1}",
            b * mean(&bare_lat) / 1e6,
            m * mean(&mesh_lat) / 1e6
        );
        for (name, p) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p99.9", 0.999)] {
            let (lb, lm) = (quantile(&mut bare_lat, p), quantile(&mut mesh_lat, p));
            println!(
                "  latency {name:<5} bare / MeshClient {:>8.1} / {:>8.1} µs   (ratio {:.2})",
                us(lb),
                us(lm),
                us(lm) / us(lb).max(1e-9)
            );
        }

        // Sequential: one request at a time on one connection, per-request latency.
        let seq = (requests / 4).max(1);
        // The bare client alternates over one connection per endpoint, as the mesh's
        // balancer spreads over its two endpoints' pools.
        let mut one = bare_connections(&addrs, 2).await;
        run_bare_alternating(&mut one, seq / 10, &mut Vec::new()).await;
        run_pool(&mesh, addr, seq / 10).await;
        run_route_only(&mesh, seq / 10, true).await;
        let per_req = |d: Duration| d.as_secs_f64() * 1e6 / seq as f64;
        let (mut bare_us, mut mesh_us, mut pool_us, mut route_us, mut noop_us) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut bare_lat, mut mesh_lat) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            bare_us.push(per_req(
                run_bare_alternating(&mut one, seq, &mut bare_lat).await,
            ));
            mesh_us.push(per_req(run_mesh_timed(&mesh, seq, 1, &mut mesh_lat).await));
            pool_us.push(per_req(run_pool(&mesh, addr, seq).await));
            route_us.push(per_req(run_route_only(&mesh, seq, true).await));
            noop_us.push(per_req(run_route_only(&mesh, seq, false).await));
        }
        let (b, m) = (median(bare_us), median(mesh_us));
        let (p, r, n) = (median(pool_us), median(route_us), median(noop_us));
        println!();
        println!("  sequential (1 task, {seq} GETs/round), median µs per request:");
        println!("    bare hyper, 2 connections in turn  {b:>6.2}");
        println!("    mesh pool only (Pool::send)        {p:>6.2}   (+{:.2} over bare)", p - b);
        println!("    MeshClient                         {m:>6.2}   (+{:.2} over bare; ratio {:.3})", m - b, b / m);
        println!(
            "    RouteLayer alone (no network)      {r:>6.2}   (+{:.2} over its inner service alone)",
            r - n
        );
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        for (name, p) in [("p50", 0.50), ("p99", 0.99)] {
            let (b, m) = (quantile(&mut bare_lat, p), quantile(&mut mesh_lat, p));
            println!(
                "    latency {name} bare / MeshClient     {:>6.2} / {:.2} µs   (ratio {:.2})",
                us(b),
                us(m),
                us(m) / us(b).max(1e-9)
            );
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
}
