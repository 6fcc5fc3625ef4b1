//! Request matching and routing: Istio's HTTPRoute semantics as a Tower layer.
//!
//! - [`normalize`]: path normalisation before matching (`BASE`, `MERGE_SLASHES`,
//!   `DECODE_AND_MERGE_SLASHES`, as Envoy applies them);
//! - [`matcher`]: compiled `HTTPMatchRequest` blocks ([`HttpMatcher`]) that match a
//!   [`RequestView`] without allocating;
//! - [`table`]: the ordered [`RouteTable`] of one host, compiled from its VirtualServices
//!   (delegates merged in), and [`action`], [`headers`], [`cors`]: what a matched route does;
//! - [`layer`]: [`RouteLayer`], which routes each request with the mesh's current snapshot and
//!   leaves a [`RouteDecision`] in its extensions.

pub mod action;
pub mod cors;
pub mod headers;
pub mod layer;
pub mod matcher;
pub mod normalize;
pub mod table;

pub use action::{
    DirectResponse, Forward, Mirror, Redirect, Rewrite, RouteAction, RouteDestination,
    WeightedDestinations,
};
pub use cors::Cors;
pub use headers::HeaderOps;
pub use layer::{RouteDecision, RouteLayer, RouteService};
pub use matcher::{
    HttpMatcher, JwtClaims, MatchError, MatchScope, RegexCache, RequestView, SourceIdentity,
    StringMatcher, first_match,
};
pub use normalize::{PathNormalization, normalize_path, split_path_query, try_normalize_path};
pub use table::{
    CompiledRoute, MatchBlock, RouteMatch, RouteTable, RouteWarning, RouteWarningKind, VsRef,
};
