//! The inbound policy stack: [`Mesh::inbound`] wraps a user's service (an axum `Router`, any
//! tower service over `http::Request`) with RequestAuthentication (JWT) and
//! AuthorizationPolicy, compiled for this workload in every snapshot ([`Security`]).
//!
//! Per request, in Envoy's filter order:
//!
//! 1. **authn** ([`JwtAuthn`]): a present but invalid JWT is 401 with Envoy's reason; a valid
//!    one puts a [`JwtPrincipal`] in the request's extensions (handlers can extract it); a
//!    missing one passes unless a rule says `presence: REQUIRED`.
//! 2. **authz** ([`AuthzPolicies`]): CUSTOM providers first (the user's
//!    [`ExtAuthzProviders`]; a deny answers, an allow may set headers), then DENY, then ALLOW.
//!    A deny is 403 `RBAC: access denied`; a `tracing` event (target `tower_mesh::authz`) names
//!    the policy and rule that decided. The path is matched after the mesh's path
//!    normalisation (`/public/../admin` is `/admin`). The peer's identity comes from the
//!    mutual-TLS connection ([`PeerIdentity`](crate::tls::PeerIdentity), put there by
//!    [`crate::server`]), its address from [`ConnectionInfo`].
//! 3. the user's service.
//!
//! Every answer the stack makes itself is a normal response (the service's error type is the
//! inner service's), so an axum app keeps its `Infallible`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower::{Layer, Service, ServiceExt};

use crate::authn::{JwtAuthn, JwtPrincipal, PeerAuthn};
use crate::authz::{AuthzPolicies, AuthzRequest, CheckRequest, CheckResponse, ExtAuthzProviders};
use crate::body::{self, MeshBody};
use crate::error::{BoxError, Error, is_grpc_request};
use crate::mesh::Mesh;
use crate::route::normalize::try_normalize_path;
use crate::server::ConnectionInfo;

/// The inbound policies of one workload, compiled with each snapshot.
#[derive(Debug, Default)]
pub struct Security {
    /// PeerAuthentication: the mTLS mode per port.
    pub peer: PeerAuthn,
    /// RequestAuthentication: the JWT rules.
    pub jwt: JwtAuthn,
    /// AuthorizationPolicy.
    pub authz: AuthzPolicies,
}

/// The inbound [`Layer`]: authn → authz → the wrapped service. Made by [`Mesh::inbound`].
#[derive(Clone, Debug)]
pub struct InboundLayer {
    mesh: Mesh,
    ext_authz: Arc<ExtAuthzProviders>,
    telemetry: Option<Arc<InboundTelemetry>>,
}

impl InboundLayer {
    /// The inbound layer of `mesh`, with no CUSTOM providers.
    pub fn new(mesh: &Mesh) -> Self {
        InboundLayer {
            mesh: mesh.clone(),
            ext_authz: Arc::new(ExtAuthzProviders::new()),
            telemetry: InboundTelemetry::of(mesh).map(Arc::new),
        }
    }

    /// The external authorizers CUSTOM policies name (`provider.name`). A CUSTOM policy whose
    /// provider is not here denies (fail closed).
    pub fn ext_authz(mut self, providers: ExtAuthzProviders) -> Self {
        self.ext_authz = Arc::new(providers);
        self
    }
}

impl<S> Layer<S> for InboundLayer {
    type Service = InboundService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        InboundService {
            mesh: self.mesh.clone(),
            ext_authz: self.ext_authz.clone(),
            telemetry: self.telemetry.clone(),
            inner,
        }
    }
}

/// The service of [`InboundLayer`].
#[derive(Clone, Debug)]
pub struct InboundService<S> {
    mesh: Mesh,
    ext_authz: Arc<ExtAuthzProviders>,
    telemetry: Option<Arc<InboundTelemetry>>,
    inner: S,
}

/// The future of [`InboundService`].
pub type InboundFuture<E> = Pin<Box<dyn Future<Output = Result<Response<MeshBody>, E>> + Send>>;

impl<S, ReqB, ResB> Service<Request<ReqB>> for InboundService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<MeshBody>;
    type Error = S::Error;
    type Future = InboundFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let snapshot = self.mesh.snapshot();
        let security = snapshot.security().clone();
        let normalization = snapshot.settings().path_normalization;
        drop(snapshot);
        let ext_authz = self.ext_authz.clone();
        // The ready service goes into the future; this one is a fresh clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let telemetry = self.telemetry.clone().map(|t| {
            // This workload's SPIFFE ID now (a rotation may change the certificate).
            let id = self.mesh.inner.identity.as_ref();
            (t, id.map(|id| id.current().spiffe_id().clone()))
        });
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let grpc = is_grpc_request(&parts.headers);
            // Telemetry is outermost: what authn and authz answer is measured too.
            let measure = telemetry.map(|(t, id)| t.start(id, &parts, grpc));
            let resp = match check(&security, normalization, &ext_authz, &mut parts).await {
                Err(Answer::Error(e)) => e.to_response(grpc).map(body::boxed),
                Err(Answer::Response(resp)) => resp,
                Ok(()) => inner
                    .oneshot(Request::from_parts(parts, body))
                    .await?
                    .map(body::boxed),
            };
            Ok(match measure {
                Some(m) => m.finish(resp),
                None => resp,
            })
        })
    }
}

/// What the inbound stack needs to measure a request (feature `metrics`), built once per
/// layer: the metric handles and this workload's labels.
#[derive(Debug)]
struct InboundTelemetry {
    #[cfg(feature = "metrics")]
    metrics: crate::telemetry::IstioMetrics,
    #[cfg(feature = "metrics")]
    local: Arc<crate::telemetry::LocalWorkload>,
}

impl InboundTelemetry {
    #[cfg(feature = "metrics")]
    fn of(mesh: &Mesh) -> Option<Self> {
        let metrics = mesh.inner.metrics.as_ref()?;
        Some(InboundTelemetry {
            metrics: metrics.istio.clone(),
            local: crate::telemetry::LocalWorkload::of(&mesh.inner.settings),
        })
    }

    #[cfg(not(feature = "metrics"))]
    fn of(_mesh: &Mesh) -> Option<Self> {
        None
    }
}

/// A request being measured by the inbound stack.
struct InboundMeasure {
    #[cfg(feature = "metrics")]
    telemetry: Arc<InboundTelemetry>,
    #[cfg(feature = "metrics")]
    destination: Option<crate::tls::SpiffeId>,
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
    #[cfg(feature = "metrics")]
    host: String,
    #[cfg(feature = "metrics")]
    peer: Option<crate::tls::SpiffeId>,
    #[cfg(feature = "metrics")]
    grpc: bool,
    #[cfg(feature = "metrics")]
    request_bytes: u64,
}

impl InboundTelemetry {
    #[cfg(feature = "metrics")]
    fn start(
        self: Arc<Self>,
        destination: Option<crate::tls::SpiffeId>,
        parts: &http::request::Parts,
        grpc: bool,
    ) -> InboundMeasure {
        let host = crate::route::layer::authority_of(parts)
            .map(|a| {
                crate::snapshot::hosts::split_host_port(&a)
                    .0
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|| "unknown".to_string());
        let request_bytes = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        InboundMeasure {
            telemetry: self,
            destination,
            started: std::time::Instant::now(),
            host,
            peer: parts
                .extensions
                .get::<crate::tls::PeerIdentity>()
                .map(|p| p.spiffe_id.clone()),
            grpc,
            request_bytes,
        }
    }

    #[cfg(not(feature = "metrics"))]
    fn start(
        self: Arc<Self>,
        _destination: Option<crate::tls::SpiffeId>,
        _parts: &http::request::Parts,
        _grpc: bool,
    ) -> InboundMeasure {
        InboundMeasure {}
    }
}

impl InboundMeasure {
    #[cfg(feature = "metrics")]
    fn finish(self, resp: Response<MeshBody>) -> Response<MeshBody> {
        use crate::telemetry::{Measured, RequestLabels};
        let unknown = || "unknown".to_string();
        let flags = resp
            .extensions()
            .get::<crate::error::ResponseFlags>()
            .map(|f| f.header_value().to_str().unwrap_or("-").to_string())
            .unwrap_or_else(|| "-".to_string());
        let t = self.telemetry;
        let labels = RequestLabels {
            reporter: "destination",
            source_workload: unknown(),
            source_workload_namespace: self
                .peer
                .as_ref()
                .and_then(|p| p.namespace().map(str::to_string))
                .unwrap_or_else(unknown),
            source_principal: self.peer.as_ref().map_or_else(unknown, |p| p.to_string()),
            destination_service_name: self.host.split('.').next().unwrap_or_default().to_string(),
            destination_service: self.host,
            destination_workload: t.local.workload.clone(),
            destination_workload_namespace: t.local.namespace.clone(),
            destination_principal: self.destination.map_or_else(unknown, |id| id.to_string()),
            request_protocol: if self.grpc { "grpc" } else { "http" },
            response_code: resp.status().as_u16(),
            response_flags: flags,
            connection_security_policy: if self.peer.is_some() {
                "mutual_tls"
            } else {
                "none"
            },
        };
        let measured = Measured::new(t.metrics.clone(), labels, self.started, self.request_bytes);
        resp.map(|b| measured.body(b))
    }

    #[cfg(not(feature = "metrics"))]
    fn finish(self, resp: Response<MeshBody>) -> Response<MeshBody> {
        resp
    }
}

/// How the stack answers a request it stops.
enum Answer {
    Error(Error),
    Response(Response<MeshBody>),
}

/// authn, then authz; `Ok` lets the request through (with its principal in the extensions).
async fn check(
    security: &Security,
    normalization: crate::route::normalize::PathNormalization,
    ext_authz: &ExtAuthzProviders,
    parts: &mut http::request::Parts,
) -> Result<(), Answer> {
    let principal = security
        .jwt
        .authenticate(parts)
        .await
        .map_err(Answer::Error)?;
    if let Some(p) = &principal {
        parts.extensions.insert(p.clone());
    }
    if security.authz.is_empty() {
        return Ok(());
    }
    let path = try_normalize_path(parts.uri.path(), normalization).map_err(|e| {
        Answer::Error(Error::BadRequest {
            reason: e.to_string().into(),
        })
    })?;
    let host = crate::route::layer::authority_of(parts).unwrap_or_default();
    let conn = parts.extensions.get::<ConnectionInfo>();
    let peer = parts.extensions.get::<crate::tls::PeerIdentity>();
    let principal_text = peer.map(|p| p.principal().to_string());
    let port = conn.map_or(0, |c| c.local_addr.port());
    let decision = {
        let mut req = AuthzRequest::http(parts.method.as_str(), &host, &path, &parts.headers, port);
        if let Some(p) = &principal_text {
            req = req.with_peer(p);
        }
        if let Some(p) = &principal {
            req = req.with_claims(p as &JwtPrincipal as &dyn crate::route::matcher::JwtClaims);
        }
        if let Some(c) = conn {
            req = req
                .with_peer_ip(c.peer_addr.ip())
                .with_destination_ip(c.local_addr.ip());
            if let Some(sni) = &c.sni {
                req = req.with_sni(sni);
            }
        }
        // `remoteIpBlocks` / `remote.ip`: the client address by `numTrustedProxies`, when a
        // proxy layer decided it (else the direct peer).
        if let Some(crate::proxy::ClientAddr(ip)) =
            parts.extensions.get::<crate::proxy::ClientAddr>()
        {
            req = req.with_remote_ip(*ip);
        }
        security.authz.evaluate(&req)
    };
    let mut allow_headers = Vec::new();
    for custom in &decision.custom {
        let mut check = CheckRequest::new(parts.method.clone(), path.as_ref(), host.as_ref());
        check.headers = parts.headers.clone();
        check.source_principal = principal_text.clone();
        check.source_ip = conn.map(|c| c.peer_addr.ip());
        check.destination_port = port;
        check.policy = Some(custom.matched.policy.clone());
        match ext_authz.check(&custom.provider, check).await {
            CheckResponse::Allow { headers } => allow_headers.push(headers),
            CheckResponse::Deny {
                status,
                headers,
                body: text,
            } => {
                let mut resp = Response::new(body::full(text));
                *resp.status_mut() = status;
                *resp.headers_mut() = headers;
                return Err(Answer::Response(resp));
            }
        }
    }
    if let Some(err) = decision.error() {
        return Err(Answer::Error(err));
    }
    for headers in allow_headers {
        for (name, value) in &headers {
            parts.headers.insert(name.clone(), value.clone());
        }
    }
    Ok(())
}

impl Mesh {
    /// The inbound policy layer of this workload: wrap an axum `Router` (or any service
    /// over `http::Request`) with it, and serve it with [`crate::server::serve`] so the
    /// peer's identity is known. See [`crate::inbound`].
    pub fn inbound(&self) -> InboundLayer {
        InboundLayer::new(self)
    }

    /// How the inbound server treats a connection on the local `port`: the
    /// PeerAuthentication mode in force, with this workload's identity.
    pub fn inbound_tls(&self, port: u16) -> crate::server::InboundTls {
        use crate::config::peer_authentication::MtlsMode;
        use crate::server::InboundTls;
        use crate::tls::ClientAuth;
        let mode = self.peer_authn_mode(port);
        match (mode, &self.inner.identity) {
            (MtlsMode::Disable, _) => InboundTls::Plaintext,
            (MtlsMode::Strict, Some(id)) => InboundTls::Tls(id.server_config(ClientAuth::Required)),
            (_, Some(id)) => InboundTls::Permissive(id.server_config(ClientAuth::Required)),
            (MtlsMode::Strict, None) => InboundTls::Refuse(Arc::from(format!(
                "PeerAuthentication STRICT on port {port}, but the mesh has no workload identity (MeshBuilder::identity)"
            ))),
            (_, None) => InboundTls::Plaintext,
        }
    }

    /// The PeerAuthentication mode for the local `port` under the current snapshot.
    pub fn peer_authn_mode(&self, port: u16) -> crate::config::peer_authentication::MtlsMode {
        self.snapshot().security().peer.mode_for_port(port)
    }
}
