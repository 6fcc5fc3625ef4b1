//! Request matching and routing (Istio's HTTPRoute semantics; issue 4, in progress).
//!
//! So far: Istio's path normalisation before matching ([`normalize_path`]: `BASE`,
//! `MERGE_SLASHES`, `DECODE_AND_MERGE_SLASHES`, as Envoy applies them) and compiled
//! `HTTPMatchRequest` matchers ([`HttpMatcher`], [`first_match`]) that match a
//! [`RequestView`] without allocating. The `RouteLayer` that uses them comes next.

pub mod matcher;
pub mod normalize;

pub use matcher::{
    HttpMatcher, JwtClaims, MatchError, MatchScope, RegexCache, RequestView, SourceIdentity,
    StringMatcher, first_match,
};
pub use normalize::{PathNormalization, normalize_path, split_path_query, try_normalize_path};
