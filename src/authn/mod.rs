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
//!
//! Which policies apply to a workload follows Istio: those in the workload's namespace whose
//! `selector.matchLabels` are a subset of the workload's labels (no selector: all workloads
//! of the namespace), plus those in the root namespace. Policies with `targetRef`/`targetRefs`
//! attach to Gateways and Services (waypoints), never to a sidecar workload, and are skipped.

mod scope;

pub mod peer;

pub use peer::{PeerAuthn, SelectedPolicies};
