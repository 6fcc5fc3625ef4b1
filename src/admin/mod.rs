//! The admin endpoint (feature `admin`): an axum [`Router`] an application mounts, and the one
//! `tower-mesh proxy --admin ADDR` serves.
//!
//! It answers the questions Envoy's admin interface answers for an Istio sidecar
//! (`localhost:15000`), in the same words:
//!
//! | Route              | What                                                                 |
//! |--------------------|----------------------------------------------------------------------|
//! | `GET /metrics`     | the prometheus-client registry as OpenMetrics text (Envoy: `/stats/prometheus`) |
//! | `GET /config_dump` | the compiled snapshot as JSON: routes per virtual host, clusters, DestinationRules, inbound policies, each with the resource it came from; and the last reload's outcome |
//! | `GET /clusters`    | per cluster: endpoints with labels, health (outlier ejection and until when), requests in flight, a latency estimate |
//! | `GET /ready`       | 200 once a snapshot serves (Envoy's `/ready`)                          |
//! | `GET /healthz`     | 200 while the process answers                                        |
//! | `POST /reload`     | reads the config again ([`Mesh::reload`]): 200 with the summary, 400 with the errors (the old config keeps serving), 500 if the reload could not run |
//!
//! Other methods on these paths get 405. The router reads the mesh; it never holds a lock
//! across an `.await` (the registry's mutex is held only while encoding).
//!
//! The prometheus-client [`Registry`] is shared as `Arc<Mutex<Registry>>`:
//! [`MeshBuilder::metrics`](crate::MeshBuilder::metrics) borrows it mutably while the mesh is
//! built (and others may register later), and `/metrics` locks it to encode.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::{Arc, Mutex};
//! use prometheus_client::registry::Registry;
//! use tower_mesh::Mesh;
//!
//! let mut registry = Registry::default();
//! let mesh = Mesh::builder().metrics(&mut registry).build()?;
//! let app: axum::Router = tower_mesh::admin::router(mesh, Arc::new(Mutex::new(registry)));
//! // axum::serve(tokio::net::TcpListener::bind("127.0.0.1:15000").await?, app).await?;
//! # drop(app);
//! # Ok(())
//! # }
//! ```

mod clusters;
mod dump;
mod time;

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;

use crate::Mesh;
use crate::error::Error;

pub use clusters::clusters_json;
pub use dump::config_dump_json;

/// The content type of `/metrics`: OpenMetrics text 1.0.0, what prometheus-client encodes.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the handlers share.
#[derive(Clone)]
struct AdminState {
    mesh: Mesh,
    registry: Arc<Mutex<Registry>>,
}

/// The admin [`Router`] over `mesh` and the metrics `registry` (see the [module docs](self)
/// for the routes). Mount it on its own listener (Istio keeps the admin port off the traffic
/// port), or nest it under a path of an application's router.
pub fn router(mesh: Mesh, registry: Arc<Mutex<Registry>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/config_dump", get(config_dump))
        .route("/clusters", get(clusters))
        .route("/ready", get(ready))
        .route("/healthz", get(healthz))
        .route("/reload", post(reload))
        .with_state(AdminState { mesh, registry })
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut text = String::new();
    let encoded = {
        let registry = state
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        prometheus_client::encoding::text::encode(&mut text, &registry)
    };
    match encoded {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(OPENMETRICS_CONTENT_TYPE),
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}\n"),
        )
            .into_response(),
    }
}

async fn config_dump(State(state): State<AdminState>) -> Response {
    off_runtime(move || config_dump_json(&state.mesh)).await
}

async fn clusters(State(state): State<AdminState>) -> Response {
    off_runtime(move || clusters_json(&state.mesh)).await
}

/// Builds and encodes a JSON document on the blocking pool: a mesh of 100,000 routes makes a
/// dump large enough to stall a runtime worker.
async fn off_runtime(f: impl FnOnce() -> serde_json::Value + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(move || json(StatusCode::OK, &f())).await {
        Ok(resp) => resp,
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("building the document failed: {e}\n"),
        )
            .into_response(),
    }
}

/// Envoy's `/ready`: a [`Mesh`] exists only once its first snapshot compiled, so this is 200
/// as soon as the router is served; the body names the version serving.
async fn ready(State(state): State<AdminState>) -> Response {
    let version = state.mesh.snapshot().version();
    (StatusCode::OK, format!("LIVE: serving version {version}\n")).into_response()
}

async fn healthz() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn reload(State(state): State<AdminState>) -> Response {
    match state.mesh.reload().await {
        Ok(summary) => json(
            StatusCode::OK,
            &serde_json::json!({
                "status": "ok",
                "version": summary.version,
                "resources": summary.resources,
                "skipped": summary.skipped,
                "warnings": summary.warnings.iter().map(dump::validation_error).collect::<Vec<_>>(),
                "took_ms": summary.took.as_secs_f64() * 1e3,
            }),
        ),
        Err(Error::Config(errors)) => json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({
                "status": "failed",
                "serving": state.mesh.snapshot().version(),
                "errors": errors.iter().map(dump::validation_error).collect::<Vec<_>>(),
            }),
        ),
        Err(e) => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &serde_json::json!({
                "status": "error",
                "serving": state.mesh.snapshot().version(),
                "error": e.to_string(),
            }),
        ),
    }
}

/// `value` as pretty JSON with `status`.
fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    match serde_json::to_string_pretty(value) {
        Ok(mut body) => {
            body.push('\n');
            (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding JSON failed: {e}\n"),
        )
            .into_response(),
    }
}
