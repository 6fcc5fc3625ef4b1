//! RequestAuthentication: JWT validation as Envoy's `jwt_authn` filter does it with the
//! configuration istiod generates.
//!
//! Every `jwtRule` of every RequestAuthentication that applies to the workload becomes one
//! *provider*; providers are ordered by issuer (istiod sorts them so). Istio then requires
//!
//! ```text
//! any-of( P1, P2, …, all-of( any-of(P1, allow_missing), any-of(P2, allow_missing), … ) )
//! ```
//!
//! (one provider: just `any-of(P1, allow_missing)`). A provider *Pi* looks for tokens at its
//! locations and needs every token it finds to be valid for its issuer. So:
//!
//! * a valid token for some rule authenticates the request, whatever else it carries;
//! * no token at all passes without a principal (`Ok(None)`), unless a rule has
//!   `presence: REQUIRED`, whose `allow_missing` branch is then dropped (our reading of the
//!   new field: a token must be present and valid for that rule or another one);
//! * otherwise the request is rejected with the most telling failure: a real verification
//!   error over `Jwt issuer is not configured` over `Jwt is missing`.
//!
//! A token is checked in `jwt_verify_lib`'s order: shape, issuer, `nbf`/`exp` (60 s clock
//! skew, `exp` absent = never expires), audiences (any-of, scheme and trailing `/`
//! ignored), keys (inline `jwks`, or `jwksUri` through the [`JwksCache`]), signature (the
//! token's `alg` among RS256/384/512, PS256/384/512, ES256/384, EdDSA, HS256/384/512, with
//! a key matching its `kid` and `alg`).
//!
//! On success, for the provider that authenticated the request: headers named by any rule's
//! `outputPayloadToHeader` / `outputClaimToHeaders` are first removed from the request (a
//! client cannot forge them, as in Envoy), then set from the verified token; the token is
//! removed from its header or query parameter unless `forwardOriginalToken: true` (Envoy
//! leaves cookies alone).

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::authn::jwks::{Jwks, JwksCache};
use crate::authn::location::{self, Found, Locations};
use crate::authn::scope::{creation_time, selects};
use crate::authn::token::{AudienceCheck, Jwt, JwtFailure, unix_now};
use crate::config::request_authentication::{JwtPresence, JwtRule, RequestAuthentication};
use crate::config::{ConfigSet, Resource, Spec};
use crate::route::SourceIdentity;
use crate::route::matcher::JwtClaims;

/// Istio's default `jwtRules[].timeout` for fetching the JWKS.
pub const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// Claims Istio always treats as space-delimited (`spaceDelimitedClaims` adds to them).
pub const ALWAYS_SPACE_DELIMITED: [&str; 2] = ["scope", "permission"];

/// The identity a verified JWT gives the request: AuthorizationPolicy's
/// `requestPrincipals` match [`JwtPrincipal::principal`], and its `request.auth.*`
/// conditions read the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtPrincipal {
    /// `<iss>/<sub>`: what `requestPrincipals` and `request.auth.principal` match.
    pub principal: String,
    /// `iss`.
    pub issuer: String,
    /// `sub` (empty when absent).
    pub subject: String,
    /// `aud` (a single string becomes one item): `request.auth.audiences`.
    pub audiences: Vec<String>,
    /// `azp`: `request.auth.presenter`.
    pub presenter: Option<String>,
    /// The payload, with `scope`, `permission` and the rule's `spaceDelimitedClaims` split on
    /// spaces into lists (Envoy's `normalize_payload_in_metadata`):
    /// `request.auth.claims[..]`.
    pub claims: Map<String, Value>,
}

impl JwtClaims for JwtPrincipal {
    fn visit_claim(&self, path: &[String], f: &mut dyn FnMut(&str) -> bool) -> Option<bool> {
        self.claims.visit_claim(path, f)
    }
}

/// A problem found while compiling RequestAuthentication for a workload; the rule still
/// compiles (failing the tokens it cannot check).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RequestAuthentication {policy} jwtRules[{rule}]: {message}")]
pub struct JwtWarning {
    /// `namespace/name` of the RequestAuthentication.
    pub policy: String,
    /// Index of the rule in its `jwtRules`.
    pub rule: usize,
    /// What is wrong and what happens because of it.
    pub message: String,
}

/// The compiled RequestAuthentication of one workload.
#[derive(Debug, Clone, Default)]
pub struct JwtAuthn {
    providers: Vec<Provider>,
    /// Output headers of every provider, removed from each request first.
    sanitize: Vec<HeaderName>,
    cache: Option<JwksCache>,
}

#[derive(Debug, Clone)]
struct Provider {
    policy: Arc<str>,
    /// `""` accepts any issuer (a rule with only `jwksUri`), as Envoy does.
    issuer: String,
    audiences: AudienceCheck,
    locations: Locations,
    keys: Keys,
    timeout: Duration,
    forward: bool,
    payload_header: Option<HeaderName>,
    claim_headers: Vec<(HeaderName, String)>,
    space_delimited: Vec<String>,
    required: bool,
}

#[derive(Debug, Clone)]
enum Keys {
    Inline(Arc<Jwks>),
    /// Inline `jwks` that did not parse: every token of the issuer fails.
    Invalid,
    Remote(String),
    /// Neither `jwks` nor `jwksUri`: OpenID discovery, which we do not do.
    Unavailable,
}

/// One provider's verdict: the tokens it verified, or why not.
type Verdict = Result<Vec<(Jwt, location::Source)>, JwtFailure>;

impl JwtAuthn {
    /// Compiles the RequestAuthentication of `set` that applies to `workload`, with
    /// `root_namespace` holding mesh-wide policies, without a JWKS fetcher: rules with a
    /// `jwksUri` fail their issuer's tokens with `Jwks remote fetch is failed` (and a warning
    /// says so). See [`JwtAuthn::compile_with`].
    pub fn compile(
        set: &ConfigSet,
        workload: &SourceIdentity,
        root_namespace: &str,
    ) -> (JwtAuthn, Vec<JwtWarning>) {
        Self::compile_with(set, workload, root_namespace, None)
    }

    /// Like [`JwtAuthn::compile`], fetching `jwksUri` keys through `jwks` (share one cache
    /// across reloads).
    ///
    /// A policy applies when it is in the workload's namespace with no selector or a
    /// `selector.matchLabels` that is a subset of the workload's labels, or in
    /// `root_namespace` (no selector: every workload; a selector: matching workloads of every
    /// namespace, as istiod's `getConfigsForWorkload` does). Policies with `targetRef(s)`
    /// attach to Gateways and Services, not to a sidecar workload, and are skipped.
    pub fn compile_with(
        set: &ConfigSet,
        workload: &SourceIdentity,
        root_namespace: &str,
        jwks: Option<&JwksCache>,
    ) -> (JwtAuthn, Vec<JwtWarning>) {
        let applies = |r: &Resource, ra: &RequestAuthentication, ns: &str| {
            r.metadata.namespace == ns
                && ra.target_ref.is_none()
                && ra.target_refs.is_empty()
                && selects(ra.selector.as_ref(), workload)
        };
        let mut policies: Vec<(&Resource, &RequestAuthentication)> = Vec::new();
        let mut lookup = vec![workload.namespace.as_str()];
        if workload.namespace != root_namespace {
            lookup.push(root_namespace);
        }
        for ns in lookup {
            let mut in_ns: Vec<_> = set
                .resources
                .iter()
                .filter_map(|r| match &r.spec {
                    Spec::RequestAuthentication(ra) if applies(r, ra, ns) => Some((r, ra)),
                    _ => None,
                })
                .collect();
            in_ns.sort_by_key(|(r, _)| creation_time(r));
            policies.extend(in_ns);
        }

        let mut warnings = Vec::new();
        let mut rules: Vec<(Arc<str>, usize, &JwtRule)> = Vec::new();
        for (r, ra) in policies {
            let key: Arc<str> = r.key().into();
            for (i, rule) in ra.jwt_rules.iter().enumerate() {
                rules.push((key.clone(), i, rule));
            }
        }
        // istiod sorts the rules by issuer (stably) before building the providers.
        rules.sort_by(|a, b| a.2.issuer.cmp(&b.2.issuer));

        let mut authn = JwtAuthn {
            cache: jwks.cloned(),
            ..JwtAuthn::default()
        };
        for (policy, index, rule) in rules {
            let mut warn = |message: String| {
                warnings.push(JwtWarning {
                    policy: policy.to_string(),
                    rule: index,
                    message,
                });
            };
            let provider = Provider::compile(policy.clone(), rule, jwks.is_some(), &mut warn);
            for h in provider.payload_header.iter() {
                authn.sanitize.push(h.clone());
            }
            for (h, _) in &provider.claim_headers {
                authn.sanitize.push(h.clone());
            }
            authn.providers.push(provider);
        }
        authn.sanitize.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        authn.sanitize.dedup();
        (authn, warnings)
    }

    /// Whether any RequestAuthentication applies (else [`JwtAuthn::authenticate`] always
    /// returns `Ok(None)` and touches nothing).
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// The issuers of the applying rules, in evaluation order.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.providers.iter().map(|p| p.issuer.as_str())
    }

    /// Authenticates the request's JWTs (see the [module docs](self) for the semantics).
    ///
    /// * `Ok(Some(principal))`: a token was verified; output headers were set and the token
    ///   removed as the rule says. The caller puts the principal in the request extensions.
    /// * `Ok(None)`: no token, and no applying rule requires one.
    /// * `Err(Error::Unauthenticated { reason })`: 401 with Envoy's reason (`Jwt is
    ///   expired`, `Jwt verification fails`, `Jwt issuer is not configured`, `Audiences in
    ///   Jwt are not allowed`, `Jwt not yet valid`, `Jwt is missing`, `Jwks remote fetch is
    ///   failed`, …).
    ///
    /// Awaits only when `jwksUri` keys must be fetched (bounded by the rule's `timeout`);
    /// the fetch itself runs on a spawned tokio task.
    pub async fn authenticate(
        &self,
        parts: &mut Parts,
    ) -> Result<Option<JwtPrincipal>, crate::Error> {
        if self.providers.is_empty() {
            return Ok(None);
        }
        for h in &self.sanitize {
            parts.headers.remove(h);
        }
        let now = unix_now();
        let mut failures = Vec::with_capacity(self.providers.len());
        for provider in &self.providers {
            match self.verify_provider(provider, parts, now).await {
                Ok(verified) => {
                    let principal = provider.apply(parts, verified);
                    if let Some(p) = &principal {
                        tracing::debug!(
                            target: "tower_mesh::authn",
                            policy = %provider.policy,
                            principal = %p.principal,
                            "JWT verified"
                        );
                    }
                    return Ok(principal);
                }
                Err(f) => failures.push(f),
            }
        }
        let outcome = combine(&self.providers, &failures);
        if let Err(f) = outcome {
            tracing::info!(
                target: "tower_mesh::authn",
                reason = f.as_str(),
                issuers = ?self.issuers().collect::<Vec<_>>(),
                "request rejected by RequestAuthentication"
            );
        }
        outcome.map(|()| None).map_err(crate::Error::from)
    }

    /// Provider `p`'s verdict: every token at its locations must be valid for it; none =
    /// `Missing`. Tokens are checked last-found first, as Envoy pops them.
    async fn verify_provider(&self, p: &Provider, parts: &Parts, now: u64) -> Verdict {
        let found = p.locations.extract(parts);
        if found.is_empty() {
            return Err(JwtFailure::Missing);
        }
        let mut verified = Vec::with_capacity(found.len());
        for Found { token, source } in found.into_iter().rev() {
            let jwt = Jwt::parse(&token)?;
            if !p.issuer.is_empty() && jwt.iss != p.issuer {
                return Err(JwtFailure::UnknownIssuer);
            }
            jwt.check_time(now)?;
            if !p.audiences.allows(&jwt.audiences) {
                return Err(JwtFailure::AudienceNotAllowed);
            }
            let keys = match &p.keys {
                Keys::Inline(keys) => keys.clone(),
                Keys::Invalid => return Err(JwtFailure::NoValidKeys),
                Keys::Unavailable => return Err(JwtFailure::JwksFetchFail),
                Keys::Remote(uri) => match &self.cache {
                    Some(cache) => cache
                        .keys(uri, jwt.kid.as_deref(), p.timeout)
                        .await
                        .ok_or(JwtFailure::JwksFetchFail)?,
                    None => return Err(JwtFailure::JwksFetchFail),
                },
            };
            keys.verify(&jwt)?;
            verified.push((jwt, source));
        }
        Ok(verified)
    }
}

/// The outcome when no provider verified the request, from the providers' failures (in
/// provider order), as Envoy's `requires_any`/`requires_all` verifiers combine them.
fn combine(providers: &[Provider], failures: &[JwtFailure]) -> Result<(), JwtFailure> {
    // any-of(Pi, allow_missing): a missing token is fine unless the rule requires one.
    let inner = |(p, f): (&Provider, &JwtFailure)| match f {
        JwtFailure::Missing if !p.required => Ok(()),
        f => Err(*f),
    };
    let mut pairs = providers.iter().zip(failures);
    if providers.len() == 1 {
        return pairs.next().map_or(Ok(()), inner);
    }
    // all-of(...): the first failing branch.
    let all = pairs.try_for_each(inner);
    let Err(all) = all else { return Ok(()) };
    // The outer any-of: prefer real errors, then an unknown issuer, then missing.
    let mut outcome = JwtFailure::Missing;
    for f in failures.iter().copied().chain([all]) {
        let vague = matches!(f, JwtFailure::Missing | JwtFailure::UnknownIssuer);
        if !vague || outcome == JwtFailure::Missing {
            outcome = f;
        }
    }
    Err(outcome)
}

impl Provider {
    fn compile(
        policy: Arc<str>,
        rule: &JwtRule,
        has_fetcher: bool,
        warn: &mut dyn FnMut(String),
    ) -> Provider {
        let (locations, location_warnings) = Locations::for_rule(rule);
        location_warnings.into_iter().for_each(&mut *warn);
        let keys = match (&rule.jwks, &rule.jwks_uri) {
            (Some(text), _) => match Jwks::parse(text.as_bytes()) {
                Ok(jwks) => Keys::Inline(Arc::new(jwks)),
                Err(e) => {
                    warn(format!("jwks: {e}; every token of this issuer will fail"));
                    Keys::Invalid
                }
            },
            (None, Some(uri)) => {
                if !has_fetcher {
                    warn(format!(
                        "jwksUri {uri} needs a JWKS fetcher; tokens of this issuer fail with \"Jwks remote fetch is failed\""
                    ));
                }
                Keys::Remote(uri.clone())
            }
            (None, None) => {
                warn(
                    "neither jwks nor jwksUri: OpenID discovery of the JWKS is not supported; tokens of this issuer fail with \"Jwks remote fetch is failed\"".to_owned(),
                );
                Keys::Unavailable
            }
        };
        let mut header = |what: &str, name: &str| match HeaderName::from_bytes(
            name.to_ascii_lowercase().as_bytes(),
        ) {
            Ok(h) => Some(h),
            Err(_) => {
                warn(format!(
                    "{what} {name:?} is not a valid header name; ignored"
                ));
                None
            }
        };
        let payload_header = (!rule.output_payload_to_header.is_empty())
            .then(|| header("outputPayloadToHeader", &rule.output_payload_to_header))
            .flatten();
        let claim_headers = rule
            .output_claim_to_headers
            .iter()
            .filter_map(|c| {
                Some((
                    header("outputClaimToHeaders header", &c.header)?,
                    c.claim.clone(),
                ))
            })
            .collect();
        let mut space_delimited: Vec<String> = ALWAYS_SPACE_DELIMITED
            .iter()
            .map(|s| (*s).to_owned())
            .chain(rule.space_delimited_claims.iter().cloned())
            .collect();
        space_delimited.sort();
        space_delimited.dedup();
        Provider {
            policy,
            issuer: rule.issuer.clone().unwrap_or_default(),
            audiences: AudienceCheck::new(&rule.audiences),
            locations,
            keys,
            timeout: rule.timeout.unwrap_or(DEFAULT_JWKS_TIMEOUT),
            forward: rule.forward_original_token,
            payload_header,
            claim_headers,
            space_delimited,
            required: rule.presence() == JwtPresence::Required,
        }
    }

    /// The side effects of a verified provider (payload and claim headers, token removal)
    /// and the principal of its first token.
    fn apply(
        &self,
        parts: &mut Parts,
        verified: Vec<(Jwt, location::Source)>,
    ) -> Option<JwtPrincipal> {
        let mut principal = None;
        for (jwt, source) in verified {
            if let Some(h) = &self.payload_header
                && let Ok(v) = HeaderValue::from_str(&jwt.payload_b64)
            {
                parts.headers.append(h.clone(), v);
            }
            for (h, claim) in &self.claim_headers {
                if let Some(v) = claim_header_value(&jwt.claims, claim) {
                    parts.headers.append(h.clone(), v);
                }
            }
            if !self.forward {
                location::remove(parts, &source);
            }
            if principal.is_none() {
                principal = Some(self.principal(jwt));
            }
        }
        principal
    }

    fn principal(&self, jwt: Jwt) -> JwtPrincipal {
        let presenter = jwt
            .claims
            .get("azp")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let mut claims = jwt.claims;
        for name in &self.space_delimited {
            if let Some(Value::String(s)) = claims.get(name) {
                let items = s
                    .split(' ')
                    .filter(|p| !p.is_empty())
                    .map(|p| Value::String(p.to_owned()))
                    .collect();
                claims.insert(name.clone(), Value::Array(items));
            }
        }
        JwtPrincipal {
            principal: format!("{}/{}", jwt.iss, jwt.sub),
            issuer: jwt.iss,
            subject: jwt.sub,
            audiences: jwt.audiences,
            presenter,
            claims,
        }
    }
}

/// `outputClaimToHeaders`: the claim at `path` (nested with `.`, as Envoy's `StructUtils`)
/// as a header value when it is a string, number or boolean; other types are skipped.
fn claim_header_value(claims: &Map<String, Value>, path: &str) -> Option<HeaderValue> {
    let mut segments = path.split('.');
    let mut value = claims.get(segments.next()?)?;
    for seg in segments {
        value = value.as_object()?.get(seg)?;
    }
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u.to_string(),
            // Envoy prints non-integral or negative numbers with `std::to_string(double)`.
            (None, Some(f)) => format!("{f:.6}"),
            (None, None) => return None,
        },
        _ => return None,
    };
    if text.is_empty() {
        return None;
    }
    HeaderValue::from_str(&text).ok()
}

#[cfg(feature = "axum")]
mod axum_impl {
    use std::convert::Infallible;

    use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
    use http::StatusCode;
    use http::request::Parts;

    use super::JwtPrincipal;

    /// Extracts the [`JwtPrincipal`] the authentication layer put in the request extensions;
    /// rejects with 401 `no request principal` when the request carried no verified JWT. Use
    /// `Option<JwtPrincipal>` where a token is optional.
    impl<S: Send + Sync> FromRequestParts<S> for JwtPrincipal {
        type Rejection = (StatusCode, &'static str);

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
            parts
                .extensions
                .get::<JwtPrincipal>()
                .cloned()
                .ok_or((StatusCode::UNAUTHORIZED, "no request principal"))
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for JwtPrincipal {
        type Rejection = Infallible;

        async fn from_request_parts(
            parts: &mut Parts,
            _: &S,
        ) -> Result<Option<Self>, Self::Rejection> {
            Ok(parts.extensions.get::<JwtPrincipal>().cloned())
        }
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
