//! The admin endpoint over a real socket: `tower_mesh::admin::router` served by axum on
//! `127.0.0.1:0`, a mesh over two loopback backends, and a config directory the test rewrites.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use http::{Request, StatusCode};
use prometheus_client::registry::Registry;
use serde_json::Value;
use tower_mesh::Mesh;

use crate::routing::{request, send};
use crate::support::Backend;
use crate::support::client::{Client, Reply, read};

const HOST: &str = "my-app.default.svc.cluster.local";

/// Services, subsets with outlier detection (one 5xx ejects for 30 s), and a VirtualService:
/// `/v2…` to subset v2, the rest to v1, no retries (so one request is one try).
fn config(v1: u16, v2: u16) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: my-app, namespace: default}}
spec:
  hosts: [{HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{http: {v1}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{http: {v2}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: my-app, namespace: default}}
spec:
  host: my-app
  trafficPolicy:
    tls: {{mode: DISABLE}}
    outlierDetection: {{consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: my-app, namespace: default}}
spec:
  hosts: [my-app]
  http:
  - name: to-v2
    match: [{{uri: {{prefix: /v2}}}}]
    retries: {{attempts: 0}}
    route: [{{destination: {{host: my-app, subset: v2}}}}]
  - name: split
    retries: {{attempts: 0}}
    route:
    - {{destination: {{host: my-app, subset: v1}}, weight: 100}}
    - {{destination: {{host: my-app, subset: v2}}, weight: 0}}
"#
    )
}

/// Two backends, a mesh from a config directory, and the admin router on a socket.
struct Admin {
    v1: Backend,
    v2: Backend,
    dir: tempfile::TempDir,
    mesh: Mesh,
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Admin {
    async fn start() -> Admin {
        let v1 = Backend::start("v1", &[("version", "v1")]);
        let v2 = Backend::start("v2", &[("version", "v2")]);
        let dir = tempfile::tempdir().expect("a temporary directory");
        write(dir.path(), &config(v1.port(), v2.port()));
        let mut registry = Registry::default();
        let mesh = Mesh::builder()
            .config_path(dir.path())
            .metrics(&mut registry)
            .build()
            .unwrap_or_else(|e| panic!("the test config is valid: {e}"));
        let router = tower_mesh::admin::router(mesh.clone(), Arc::new(Mutex::new(registry)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the admin port");
        let addr = listener.local_addr().expect("admin address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Admin {
            v1,
            v2,
            dir,
            mesh,
            addr,
            server,
        }
    }

    async fn call(&self, method: &str, path: &str) -> Reply {
        let mut client = Client::http1(self.addr)
            .await
            .expect("connect to the admin port");
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(tower_mesh::body::empty())
            .expect("a valid request");
        let resp = client.send(req).await.expect("an admin response");
        read(resp).await.expect("an admin body")
    }

    async fn json(&self, method: &str, path: &str, status: StatusCode) -> Value {
        let reply = self.call(method, path).await;
        assert_eq!(reply.status, status, "{method} {path}: {:?}", reply.body);
        assert_eq!(
            reply
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {:?}", reply.body))
    }

    async fn text(&self, path: &str) -> String {
        let reply = self.call("GET", path).await;
        assert_eq!(reply.status, StatusCode::OK, "GET {path}");
        String::from_utf8(reply.body.to_vec()).expect("UTF-8 text")
    }

    /// `GET http://my-app<path>` through the mesh; the status.
    async fn through_mesh(&self, path: &str) -> StatusCode {
        let reply = send(
            &self.mesh.client(),
            request("GET", &format!("http://my-app{path}"), &[]),
        )
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        reply.status
    }
}

fn write(dir: &Path, yaml: &str) {
    std::fs::write(dir.join("mesh.yaml"), yaml).expect("write the config");
}

/// The cluster named `name` in a `/clusters` or `/config_dump` document.
fn cluster<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["clusters"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no cluster {name} in {doc:#}"))
}

#[tokio::test]
async fn health_ready_and_metrics_answer() {
    let admin = Admin::start().await;
    assert_eq!(admin.text("/healthz").await, "ok\n");
    assert!(admin.text("/ready").await.contains("serving version 1"));

    assert_eq!(admin.through_mesh("/").await, StatusCode::OK);
    let reply = admin.call("GET", "/metrics").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes()),
        Some(&b"application/openmetrics-text; version=1.0.0; charset=utf-8"[..])
    );
    let text = String::from_utf8_lossy(&reply.body);
    assert!(text.contains("tower_mesh_config_version 1\n"), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");

    // Read-only routes refuse other methods; POST /reload refuses GET.
    assert_eq!(
        admin.call("GET", "/reload").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        admin.call("POST", "/config_dump").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        admin.call("GET", "/nope").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn config_dump_shows_routes_clusters_and_their_sources() {
    let admin = Admin::start().await;
    let dump = admin.json("GET", "/config_dump", StatusCode::OK).await;
    assert_eq!(dump["version"], 1);
    assert_eq!(dump["status"], "serving version 1");
    let vhost = dump["virtual_hosts"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["host"] == HOST))
        .unwrap_or_else(|| panic!("no virtual host {HOST} in {dump:#}"));
    let split = &vhost["routes"][1];
    assert_eq!(split["name"], "split");
    assert_eq!(split["source"]["kind"], "VirtualService");
    let file = admin.dir.path().join("mesh.yaml");
    assert_eq!(split["source"]["file"], file.display().to_string());
    assert_eq!(split["action"]["route"][0]["subset"], "v1");
    assert_eq!(split["action"]["route"][0]["weight"], 100);
    assert_eq!(
        vhost["routes"][0]["match"][0]["matchers"][0]["uri"]["prefix"],
        "/v2"
    );
    let v2 = cluster(&dump, &format!("outbound|80|v2|{HOST}"));
    assert_eq!(v2["source"]["kind"], "ServiceEntry");
    assert_eq!(v2["outlier_detection"]["consecutive_5xx_errors"], 1);
    assert_eq!(v2["tls"]["mode"], "DISABLE");
    assert_eq!(v2["load_balancer"]["simple"], "LEAST_REQUEST");
}

#[tokio::test]
async fn clusters_show_endpoints_in_flight_latency_and_ejections() {
    let admin = Admin::start().await;
    for _ in 0..3 {
        assert_eq!(admin.through_mesh("/").await, StatusCode::OK);
    }
    // One 503 from v2 ejects it (consecutive5xxErrors: 1).
    admin.v2.fail_pattern(1, 1, 503);
    assert_eq!(
        admin.through_mesh("/v2").await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let doc = admin.json("GET", "/clusters", StatusCode::OK).await;
    assert_eq!(doc["version"], 1);
    let v1 = &cluster(&doc, &format!("outbound|80|v1|{HOST}"))["endpoints"][0];
    assert_eq!(v1["address"], admin.v1.addr().to_string());
    assert_eq!(v1["labels"]["version"], "v1");
    assert_eq!(v1["health"], "HEALTHY");
    assert_eq!(v1["in_flight"], 0);
    assert!(
        v1["latency_ewma_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{v1:#}"
    );
    let v2c = cluster(&doc, &format!("outbound|80|v2|{HOST}"));
    assert_eq!(v2c["requests_total"], 1);
    let v2 = &v2c["endpoints"][0];
    assert_eq!(v2["address"], admin.v2.addr().to_string());
    assert_eq!(v2["health"], "EJECTED", "{v2c:#}");
    assert!(v2["ejected_until"].is_string(), "{v2:#}");
    // baseEjectionTime 30 s, returned at the first 1 s sweep after that.
    assert!(
        v2["ejected_for_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 20_000.0 && ms <= 31_000.0),
        "{v2:#}"
    );
}

#[tokio::test]
async fn a_bad_reload_is_refused_and_config_dump_still_shows_version_1() {
    let admin = Admin::start().await;
    write(
        admin.dir.path(),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken}\nspec: {hosts: [x], http: [{route: [{destination: {host: x}, weight: -1}]}]}\n",
    );
    let refused = admin.json("POST", "/reload", StatusCode::BAD_REQUEST).await;
    assert_eq!(refused["status"], "failed");
    assert_eq!(refused["serving"], 1);
    let errors = refused["errors"].as_array().cloned().unwrap_or_default();
    assert!(
        errors
            .iter()
            .any(|e| e["path"].as_str().is_some_and(|p| p.contains("weight"))),
        "{refused:#}"
    );

    let dump = admin.json("GET", "/config_dump", StatusCode::OK).await;
    assert_eq!(dump["version"], 1);
    let status = dump["status"].as_str().unwrap_or_default();
    assert!(
        status.starts_with("serving version 1, last reload failed at ")
            && status.contains("weight"),
        "{status}"
    );
    assert_eq!(dump["reload"]["serving"], 1);
    assert_eq!(dump["reload"]["last"]["ok"], false);
    assert_eq!(
        dump["reload"]["last"]["errors"][0]["resource"]["name"],
        "broken"
    );
    // The old config keeps serving.
    assert_eq!(admin.through_mesh("/").await, StatusCode::OK);
    let metrics = admin.text("/metrics").await;
    assert!(
        metrics.contains("tower_mesh_config_reloads_total{outcome=\"failed\"} 1"),
        "{metrics}"
    );

    // Fixed: the reload goes through and the dump follows.
    write(admin.dir.path(), &config(admin.v1.port(), admin.v2.port()));
    let ok = admin.json("POST", "/reload", StatusCode::OK).await;
    assert_eq!(ok["status"], "ok");
    assert_eq!(ok["version"], 2);
    assert_eq!(ok["resources"], 3);
    let dump = admin.json("GET", "/config_dump", StatusCode::OK).await;
    assert_eq!(dump["version"], 2);
    assert_eq!(dump["reload"]["last"]["ok"], true);
    assert!(
        dump["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("serving version 2, last reload ok at ")),
        "{dump:#}"
    );
}
