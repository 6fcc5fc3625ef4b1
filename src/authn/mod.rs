//! Authentication: who the peer is (PeerAuthentication) and who the request speaks for
//! (RequestAuthentication, JWT).
//!
//! * [`PeerAuthn`] resolves PeerAuthentication for one workload into a mutual-TLS mode per
//!   port (`STRICT`, `PERMISSIVE`, `DISABLE`), which the inbound listener enforces.
//! * [`JwtAuthn`] compiles the RequestAuthentication `jwtRules` that apply to the workload and
//!   validates the request's JWTs as Envoy's `jwt_authn` filter does when Istio configures
//!   it: an invalid token is a 401 ([`crate::Error::Unauthenticated`]) with Envoy's wording,
//!   a missing token passes without an identity unless a rule says `presence: REQUIRED`, and
//!   a valid one yields a [`JwtPrincipal`] (`<iss>/<sub>`) for AuthorizationPolicy's
//!   `requestPrincipals` and `request.auth.*` conditions.
//! * [`JwksCache`] fetches and caches `jwksUri` key sets through a [`JwksFetcher`] the
//!   embedder supplies.
//!
//! Policies with `targetRef`/`targetRefs` attach to Gateways and Services (waypoints), never
//! to a sidecar workload, and are skipped.
//!
//! ```
//! use tower_mesh::authn::{JwtAuthn, PeerAuthn};
//! use tower_mesh::config::Loader;
//! use tower_mesh::config::peer_authentication::MtlsMode;
//! use tower_mesh::route::SourceIdentity;
//!
//! let set = Loader::new().load_str(r#"
//! apiVersion: security.istio.io/v1
//! kind: PeerAuthentication
//! metadata: {name: default, namespace: istio-system}
//! spec: {mtls: {mode: STRICT}}
//! "#);
//! let workload = SourceIdentity { namespace: "shop".into(), ..Default::default() };
//! let peer = PeerAuthn::compile(&set, &workload, "istio-system");
//! assert_eq!(peer.mode_for_port(8080), MtlsMode::Strict);
//! let (jwt, warnings) = JwtAuthn::compile(&set, &workload, "istio-system");
//! assert!(jwt.is_empty() && warnings.is_empty());
//! ```

pub mod jwks;
pub mod jwt;
mod location;
pub mod peer;
mod scope;
mod token;

pub use jwks::{Jwks, JwksCache, JwksCacheConfig, JwksError, JwksFetcher};
pub use jwt::{ALWAYS_SPACE_DELIMITED, DEFAULT_JWKS_TIMEOUT, JwtAuthn, JwtPrincipal, JwtWarning};
pub use peer::{PeerAuthn, SelectedPolicies};
pub use token::JwtFailure;
