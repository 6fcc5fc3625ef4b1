//! The CUSTOM action's contract: an external authorizer is a tower [`Service`] from a
//! [`CheckRequest`] to a [`CheckResponse`], registered under the name a policy's
//! `provider.name` uses.
//!
//! In Istio, `provider.name` refers to an `extensionProviders` entry of MeshConfig
//! (`envoyExtAuthzHttp` / `envoyExtAuthzGrpc`), and Envoy's `ext_authz` filter calls it for
//! the requests a CUSTOM policy's rules match. Here the user supplies the authorizer itself
//! (which may well call such a server) in an [`ExtAuthzProviders`] registry.
//!
//! Failures are closed, as in Istio: a provider name with no registered service denies
//! (Istio generates a deny-all RBAC filter for an unknown provider: 403 `RBAC: access
//! denied`), and a service that fails denies with 403 (Envoy's `ext_authz` default
//! `status_on_error`, with `failOpen` false).
//!
//! ```
//! use tower_mesh::authz::{CheckRequest, CheckResponse, ExtAuthzProviders};
//!
//! let providers = ExtAuthzProviders::new().with(
//!     "opa",
//!     tower::service_fn(|req: CheckRequest| async move {
//!         Ok::<_, tower_mesh::error::BoxError>(if req.path.starts_with("/admin") {
//!             CheckResponse::deny(http::StatusCode::FORBIDDEN, "admins only")
//!         } else {
//!             CheckResponse::allow()
//!         })
//!     }),
//! );
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let check = CheckRequest::new(http::Method::GET, "/admin/users", "app.local");
//! assert!(!providers.check("opa", check.clone()).await.is_allowed());
//! // An unknown provider fails closed.
//! assert!(!providers.check("nope", check).await.is_allowed());
//! # });
//! ```

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

use crate::error::BoxError;

/// What an external authorizer is asked: the request's method, path, host and headers, and
/// who sends it. Envoy's `ext_authz` sends the same (its `CheckRequest.attributes`).
#[derive(Debug, Clone)]
pub struct CheckRequest {
    /// `:method`.
    pub method: Method,
    /// The path (normalised, as the CUSTOM policy's rules saw it), query included when the
    /// caller put it there.
    pub path: String,
    /// `:authority` / `Host`.
    pub host: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The peer's SPIFFE id without `spiffe://`, when it authenticated with mTLS.
    pub source_principal: Option<String>,
    /// The direct peer's address.
    pub source_ip: Option<IpAddr>,
    /// The port the request arrived on.
    pub destination_port: u16,
    /// The CUSTOM policy (`namespace/name`) whose rule asked for the check.
    pub policy: Option<Arc<str>>,
}

impl CheckRequest {
    /// A check of `method` `path` on `host`, everything else empty.
    pub fn new(method: Method, path: impl Into<String>, host: impl Into<String>) -> Self {
        CheckRequest {
            method,
            path: path.into(),
            host: host.into(),
            headers: HeaderMap::new(),
            source_principal: None,
            source_ip: None,
            destination_port: 0,
            policy: None,
        }
    }
}

/// An external authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckResponse {
    /// Let the request through (to the DENY and ALLOW policies), with `headers` set on it
    /// first (Envoy's `OkHttpResponse.headers`, which replace same-named request headers).
    Allow {
        /// Headers to set on the request before it goes on.
        headers: HeaderMap,
    },
    /// Answer the request with `status`, `headers` and `body` (Envoy's `DeniedHttpResponse`).
    Deny {
        /// The response status (Envoy's default is 403).
        status: StatusCode,
        /// Response headers.
        headers: HeaderMap,
        /// The response body.
        body: Bytes,
    },
}

impl CheckResponse {
    /// Allow, setting no header.
    pub fn allow() -> Self {
        CheckResponse::Allow {
            headers: HeaderMap::new(),
        }
    }

    /// Deny with `status` and a text `body`.
    pub fn deny(status: StatusCode, body: impl Into<Bytes>) -> Self {
        CheckResponse::Deny {
            status,
            headers: HeaderMap::new(),
            body: body.into(),
        }
    }

    /// Whether the request may go on.
    pub fn is_allowed(&self) -> bool {
        matches!(self, CheckResponse::Allow { .. })
    }
}

/// An external authorizer, boxed: what [`ExtAuthzProviders`] holds.
pub type ExtAuthz = BoxCloneSyncService<CheckRequest, CheckResponse, BoxError>;

/// The external authorizers by provider name (AuthorizationPolicy `provider.name`).
#[derive(Clone, Default)]
pub struct ExtAuthzProviders {
    /// Name → authorizer.
    providers: HashMap<Arc<str>, ExtAuthz>,
}

impl fmt::Debug for ExtAuthzProviders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.providers.keys().map(|k| &**k).collect();
        names.sort_unstable();
        f.debug_struct("ExtAuthzProviders")
            .field("providers", &names)
            .finish()
    }
}

impl ExtAuthzProviders {
    /// No provider.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `service` as provider `name` (replacing one of the same name).
    pub fn with<S>(mut self, name: impl Into<Arc<str>>, service: S) -> Self
    where
        S: Service<CheckRequest, Response = CheckResponse, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.insert(name, service);
        self
    }

    /// Registers `service` as provider `name` (replacing one of the same name).
    pub fn insert<S>(&mut self, name: impl Into<Arc<str>>, service: S)
    where
        S: Service<CheckRequest, Response = CheckResponse, Error = BoxError>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.providers
            .insert(name.into(), BoxCloneSyncService::new(service));
    }

    /// The provider registered as `name`.
    pub fn get(&self, name: &str) -> Option<&ExtAuthz> {
        self.providers.get(name)
    }

    /// Whether a provider is registered as `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.providers.contains_key(name)
    }

    /// Asks provider `name` about `request`. Fails closed: an unknown provider denies with
    /// 403 `RBAC: access denied` (Istio's deny-all for an unknown provider), a provider
    /// error with a bare 403 (Envoy's `status_on_error`); both are logged (target
    /// `tower_mesh::authz`).
    pub async fn check(&self, name: &str, request: CheckRequest) -> CheckResponse {
        let Some(service) = self.providers.get(name) else {
            tracing::warn!(
                target: "tower_mesh::authz",
                provider = name,
                policy = request.policy.as_deref().unwrap_or("-"),
                "CUSTOM policy names an unknown ext-authz provider: request denied"
            );
            return CheckResponse::deny(StatusCode::FORBIDDEN, "RBAC: access denied");
        };
        match service.clone().oneshot(request).await {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(
                    target: "tower_mesh::authz",
                    provider = name,
                    %error,
                    "ext-authz provider failed: request denied"
                );
                CheckResponse::deny(StatusCode::FORBIDDEN, Bytes::new())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(
        allow_prefix: &'static str,
    ) -> impl Service<
        CheckRequest,
        Response = CheckResponse,
        Error = BoxError,
        Future = impl Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static {
        tower::service_fn(move |req: CheckRequest| async move {
            if req.path == "/boom" {
                return Err::<CheckResponse, BoxError>("authorizer down".into());
            }
            Ok(if req.path.starts_with(allow_prefix) {
                let mut headers = HeaderMap::new();
                headers.insert("x-checked", http::HeaderValue::from_static("yes"));
                CheckResponse::Allow { headers }
            } else {
                CheckResponse::deny(StatusCode::UNAUTHORIZED, "nope")
            })
        })
    }

    #[tokio::test]
    async fn registered_provider_decides() {
        let providers = ExtAuthzProviders::new().with("ext", provider("/public"));
        assert!(providers.contains("ext"));
        let ok = providers
            .check("ext", CheckRequest::new(Method::GET, "/public/a", "h"))
            .await;
        let CheckResponse::Allow { headers } = ok else {
            panic!("expected allow, got {ok:?}");
        };
        assert_eq!(
            headers.get("x-checked").map(|v| v.as_bytes()),
            Some(&b"yes"[..])
        );
        let denied = providers
            .check("ext", CheckRequest::new(Method::GET, "/private", "h"))
            .await;
        assert_eq!(
            denied,
            CheckResponse::deny(StatusCode::UNAUTHORIZED, "nope")
        );
    }

    #[tokio::test]
    async fn unknown_provider_and_errors_fail_closed() {
        let providers = ExtAuthzProviders::new().with("ext", provider("/"));
        let unknown = providers
            .check("other", CheckRequest::new(Method::GET, "/public", "h"))
            .await;
        assert_eq!(
            unknown,
            CheckResponse::deny(StatusCode::FORBIDDEN, "RBAC: access denied")
        );
        let failed = providers
            .check("ext", CheckRequest::new(Method::GET, "/boom", "h"))
            .await;
        assert_eq!(
            failed,
            CheckResponse::deny(StatusCode::FORBIDDEN, Bytes::new())
        );
        assert!(format!("{providers:?}").contains("ext"));
    }
}
