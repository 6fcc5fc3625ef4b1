//! Istio's request metrics for outbound requests (`reporter="source"`).
//!
//! [`OutboundMetricsLayer`] sits right below [`RouteLayer`](crate::RouteLayer): it reads the
//! [`RouteDecision`] the router left in the request's extensions, and the response's
//! [`ResponseFlags`] (or the stack's [`Error`], converted as the router will convert it).
//!
//! The hot path does little work: a label set depends only on the destination (one per
//! cluster of a snapshot), the protocol, the response code and the flags, so the four metric
//! handles of each combination are resolved once and cached by the cluster's pointer within
//! a snapshot version. A request then costs one small-key hash lookup under a read lock and
//! four atomic updates. The cache starts afresh when a newer snapshot is seen, and is bounded
//! (passthrough destinations, whose host comes from the request, are not cached).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::{Request, Response};
use http_body::Body as _;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use super::istio::{IstioMetrics, Measured, RequestLabels, Series};
use crate::body::MeshBody;
use crate::error::{Error, ResponseFlags, is_grpc_request};
use crate::mesh::Mesh;
use crate::route::RouteDecision;
use crate::snapshot::Target;

/// How many (destination, protocol, code, flags) series a snapshot version caches at most;
/// beyond that, label sets are resolved per request (still correct, only slower).
const CACHE_LIMIT: usize = 4096;

/// Records Istio's request metrics with `reporter="source"` ([module docs](self)). Without a
/// registry ([`MeshBuilder::metrics`](crate::MeshBuilder::metrics)) it passes requests through
/// untouched.
#[derive(Clone, Debug)]
pub struct OutboundMetricsLayer {
    shared: Option<Arc<Shared>>,
}

impl OutboundMetricsLayer {
    /// A layer recording on `mesh`'s registry, labelled with `mesh`'s workload.
    pub fn new(mesh: &Mesh) -> Self {
        Self::from_parts(
            mesh.inner.metrics.as_ref(),
            mesh.settings(),
            mesh.inner.identity.as_ref(),
        )
    }

    /// The layer of a mesh being built (the [`MeshClient`](crate::MeshClient)'s, one per
    /// mesh so that every client shares its label cache).
    pub(crate) fn from_parts(
        metrics: Option<&crate::metrics::MeshMetrics>,
        settings: &crate::mesh::MeshSettings,
        identity: Option<&crate::tls::IdentityManager>,
    ) -> Self {
        let shared = metrics.map(|m| {
            Arc::new(Shared {
                metrics: m.istio.clone(),
                workload: settings
                    .source
                    .labels
                    .get("app")
                    .cloned()
                    .unwrap_or_else(|| "unknown".to_string()),
                namespace: settings.source.namespace.clone(),
                identity: identity.cloned(),
                cache: RwLock::new(Cache::default()),
            })
        });
        OutboundMetricsLayer { shared }
    }
}

impl<S> Layer<S> for OutboundMetricsLayer {
    type Service = OutboundMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OutboundMetrics {
            shared: self.shared.clone(),
            inner,
        }
    }
}

/// The service of [`OutboundMetricsLayer`].
#[derive(Clone, Debug)]
pub struct OutboundMetrics<S> {
    shared: Option<Arc<Shared>>,
    inner: S,
}

#[derive(Debug)]
struct Shared {
    metrics: IstioMetrics,
    workload: String,
    namespace: String,
    identity: Option<crate::tls::IdentityManager>,
    cache: RwLock<Cache>,
}

/// One series per key, for one snapshot version.
#[derive(Debug, Default)]
struct Cache {
    version: u64,
    series: HashMap<Key, Arc<Series>, foldhash::fast::RandomState>,
}

/// The label-relevant facts of a request. `cluster` is the address of the `Arc<Cluster>` of
/// the snapshot `version` (alive while any request of that version holds the snapshot, and
/// the cache is cleared when the version moves on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    cluster: usize,
    grpc: bool,
    code: u16,
    flags: ResponseFlags,
}

/// What the labels and the series cache need of a request's [`RouteDecision`]: two shared
/// counts to copy, not the whole decision's. Holding the target keeps its `Arc<Cluster>` (the
/// cache key's address) alive until the response.
struct Dest {
    version: u64,
    destination: Arc<str>,
    target: Target,
}

impl Dest {
    fn of(d: &RouteDecision) -> Self {
        Dest {
            version: d.snapshot().version(),
            destination: d.destination().clone(),
            target: d.target().clone(),
        }
    }
}

/// What a request needs at response time.
struct Pending {
    shared: Arc<Shared>,
    decision: Option<Dest>,
    grpc: bool,
    started: Instant,
    request_bytes: u64,
}

impl Shared {
    /// This workload's SPIFFE ID, when it has one.
    fn principal(&self) -> String {
        self.identity.as_ref().map_or_else(
            || "unknown".to_string(),
            |id| id.current().spiffe_id().to_string(),
        )
    }

    fn labels(
        &self,
        decision: Option<&Dest>,
        grpc: bool,
        code: u16,
        flags: ResponseFlags,
    ) -> RequestLabels {
        let unknown = || "unknown".to_string();
        let (service, name) = match decision {
            Some(d) => {
                let host = d.destination.to_string();
                let name = match &d.target {
                    Target::Passthrough { .. } => "PassthroughCluster".to_string(),
                    Target::Cluster(_) => host.split('.').next().unwrap_or_default().to_string(),
                };
                (host, name)
            }
            None => (unknown(), unknown()),
        };
        RequestLabels {
            reporter: "source",
            source_workload: self.workload.clone(),
            source_workload_namespace: self.namespace.clone(),
            source_principal: self.principal(),
            destination_service: service,
            destination_service_name: name,
            destination_workload: unknown(),
            destination_workload_namespace: unknown(),
            destination_principal: unknown(),
            request_protocol: if grpc { "grpc" } else { "http" },
            response_code: code,
            response_flags: flags.to_string(),
            connection_security_policy: "unknown",
        }
    }

    /// The series of a request: cached per cluster of the decision's snapshot.
    fn series(
        &self,
        decision: Option<&Dest>,
        grpc: bool,
        code: u16,
        flags: ResponseFlags,
    ) -> Arc<Series> {
        let cached = decision.and_then(|d| match &d.target {
            Target::Cluster(c) => Some((
                d.version,
                Key {
                    cluster: Arc::as_ptr(c) as usize,
                    grpc,
                    code,
                    flags,
                },
            )),
            Target::Passthrough { .. } => None,
        });
        let Some((version, key)) = cached else {
            return Arc::new(
                self.metrics
                    .series(&self.labels(decision, grpc, code, flags)),
            );
        };
        {
            let cache = self.cache.read().unwrap_or_else(PoisonError::into_inner);
            if cache.version == version
                && let Some(s) = cache.series.get(&key)
            {
                return s.clone();
            }
        }
        let series = Arc::new(
            self.metrics
                .series(&self.labels(decision, grpc, code, flags)),
        );
        let mut cache = self.cache.write().unwrap_or_else(PoisonError::into_inner);
        if version > cache.version {
            cache.version = version;
            cache.series.clear();
        }
        if cache.version == version && cache.series.len() < CACHE_LIMIT {
            cache.series.insert(key, series.clone());
        }
        series
    }
}

impl Pending {
    fn finish(
        self,
        result: Result<Response<MeshBody>, Error>,
    ) -> Result<Response<MeshBody>, Error> {
        let d = self.decision.as_ref();
        match result {
            Ok(resp) => {
                let flags = resp
                    .extensions()
                    .get::<ResponseFlags>()
                    .copied()
                    .unwrap_or_default();
                let series = self
                    .shared
                    .series(d, self.grpc, resp.status().as_u16(), flags);
                let measured = Measured::of(series, self.started, self.request_bytes);
                Ok(resp.map(|b| measured.body(b)))
            }
            Err(e) => {
                // The router answers it with `e.to_response`: record what that answer is.
                let answer = e.to_response(self.grpc);
                let bytes = answer.body().size_hint().exact().unwrap_or(0);
                let series = self
                    .shared
                    .series(d, self.grpc, answer.status().as_u16(), e.flags());
                Measured::of(series, self.started, self.request_bytes).record_now(bytes);
                Err(e)
            }
        }
    }
}

impl<S> Service<Request<MeshBody>> for OutboundMetrics<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>, Error = Error>,
{
    type Response = Response<MeshBody>;
    type Error = Error;
    type Future = OutboundFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<MeshBody>) -> Self::Future {
        let pending = self.shared.as_ref().map(|shared| Pending {
            shared: shared.clone(),
            decision: req.extensions().get::<RouteDecision>().map(Dest::of),
            grpc: is_grpc_request(req.headers()),
            started: Instant::now(),
            request_bytes: super::istio::request_bytes(req.headers()),
        });
        OutboundFuture {
            inner: self.inner.call(req),
            pending,
        }
    }
}

pin_project! {
    /// The future of [`OutboundMetrics`].
    pub struct OutboundFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }
}

impl<F> Future for OutboundFuture<F>
where
    F: Future<Output = Result<Response<MeshBody>, Error>>,
{
    type Output = Result<Response<MeshBody>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        Poll::Ready(match this.pending.take() {
            Some(p) => p.finish(result),
            None => result,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    const SE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: my-app, namespace: default}
spec:
  hosts: [my-app.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: 9}}]
"#;

    fn mesh(registry: &mut Registry) -> Mesh {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("app".to_string(), "caller".to_string());
        Mesh::builder()
            .namespace("default")
            .labels(labels)
            .config_str("se.yaml", SE)
            .metrics(registry)
            .build()
            .expect("valid config")
    }

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        encode(&mut out, registry).expect("encodes");
        out
    }

    /// A decision as the router makes it, taken from a stub inner service.
    async fn decision(mesh: &Mesh, authority: &str) -> RouteDecision {
        use tower::ServiceExt;
        let seen = Arc::new(std::sync::Mutex::new(None));
        let s = seen.clone();
        let svc = crate::RouteLayer::new(mesh.clone()).layer(tower::service_fn(
            move |req: Request<MeshBody>| {
                *s.lock().expect("lock") = req.extensions().get::<RouteDecision>().cloned();
                async { Ok::<_, Error>(Response::new(crate::body::empty())) }
            },
        ));
        let req = Request::get(format!("http://{authority}/"))
            .body(crate::body::empty())
            .expect("request");
        let _ = svc.oneshot(req).await;
        let d = seen.lock().expect("lock").take();
        d.expect("routed")
    }

    #[tokio::test]
    async fn label_sets_are_resolved_once_per_cluster_code_and_flags() {
        let mut registry = Registry::default();
        let mesh = mesh(&mut registry);
        let layer = OutboundMetricsLayer::new(&mesh);
        let shared = layer.shared.clone().expect("a registry");
        let d = decision(&mesh, "my-app").await;
        let a = shared.series(Some(&Dest::of(&d)), false, 200, ResponseFlags::empty());
        let b = shared.series(Some(&Dest::of(&d)), false, 200, ResponseFlags::empty());
        assert!(Arc::ptr_eq(&a, &b), "the second lookup is a cache hit");
        let c = shared.series(Some(&Dest::of(&d)), false, 503, ResponseFlags::empty());
        assert!(!Arc::ptr_eq(&a, &c));
        a.record(1.0, 0, 0);
        let labels = shared.labels(Some(&Dest::of(&d)), false, 200, ResponseFlags::empty());
        assert_eq!(labels.reporter, "source");
        assert_eq!(labels.source_workload, "caller");
        assert_eq!(labels.source_workload_namespace, "default");
        assert_eq!(
            labels.destination_service,
            "my-app.default.svc.cluster.local"
        );
        assert_eq!(labels.destination_service_name, "my-app");
        assert_eq!(labels.response_flags, "-");
        let t = text(&registry);
        assert!(
            t.contains("istio_requests_total{reporter=\"source\",source_workload=\"caller\""),
            "{t}"
        );
    }

    #[tokio::test]
    async fn a_newer_snapshot_starts_the_cache_afresh() {
        let mut registry = Registry::default();
        let mesh = mesh(&mut registry);
        let shared = OutboundMetricsLayer::new(&mesh).shared.expect("a registry");
        let old = decision(&mesh, "my-app").await;
        let _ = shared.series(Some(&Dest::of(&old)), false, 200, ResponseFlags::empty());
        mesh.reload().await.expect("reloads");
        let new = decision(&mesh, "my-app").await;
        let _ = shared.series(Some(&Dest::of(&new)), false, 200, ResponseFlags::empty());
        {
            let cache = shared.cache.read().expect("lock");
            assert_eq!(cache.version, 2);
            assert_eq!(cache.series.len(), 1);
        }
        // A request of the old version still records, without polluting the cache.
        let _ = shared.series(Some(&Dest::of(&old)), false, 500, ResponseFlags::empty());
        assert_eq!(shared.cache.read().expect("lock").series.len(), 1);
    }

    #[tokio::test]
    async fn passthrough_is_labelled_as_istio_does_and_not_cached() {
        let mut registry = Registry::default();
        let mesh = mesh(&mut registry);
        let shared = OutboundMetricsLayer::new(&mesh).shared.expect("a registry");
        let d = decision(&mesh, "example.org").await;
        let labels = shared.labels(Some(&Dest::of(&d)), false, 200, ResponseFlags::empty());
        assert_eq!(labels.destination_service, "example.org");
        assert_eq!(labels.destination_service_name, "PassthroughCluster");
        let _ = shared.series(Some(&Dest::of(&d)), false, 200, ResponseFlags::empty());
        assert!(shared.cache.read().expect("lock").series.is_empty());
    }
}
