//! Compiled `corsPolicy` (ISTIO.md §2.12), applied the way Envoy's CORS filter does.
//!
//! * A request is a CORS request when it has a non-empty `Origin` that one of the allowed
//!   origins matches.
//! * A preflight is an `OPTIONS` with a non-empty `Origin` and `Access-Control-Request-Method`.
//!   For an allowed origin it is answered here ([`Cors::preflight`]): `200` with
//!   `access-control-allow-origin` (the origin echoed), `-allow-methods`, `-allow-headers`,
//!   `-max-age`, `-allow-credentials: true`. For an origin that is not allowed, Istio's
//!   `unmatchedPreflights` decides: `FORWARD` (the default) sends it upstream, `IGNORE`
//!   answers `200` without CORS headers.
//! * On the response to an actual CORS request ([`Cors::apply_response`]) the origin is echoed
//!   in `access-control-allow-origin`, with `-expose-headers` and `-allow-credentials`.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::body::{self, MeshBody};
use crate::config::common::StringMatch;
use crate::config::virtual_service::{CorsPolicy, UnmatchedPreflights};
use crate::route::matcher::{RegexCache, StringMatcher};
use crate::route::table::RouteWarningKind;

/// A compiled Istio `corsPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    origins: Vec<StringMatcher>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    allow_credentials: bool,
    forward_unmatched: bool,
}

impl Cors {
    /// Compiles `policy`. Origins: `allowOrigins` (StringMatch) when set, else the deprecated
    /// `allowOrigin` strings as exact matches; an exact `*` allows every origin. Lists are
    /// joined with `,`; `maxAge` in whole seconds; `allowCredentials` absent = not sent;
    /// `unmatchedPreflights` absent / `UNSPECIFIED` = `FORWARD`. Invalid parts are pushed to
    /// `warnings` and left out.
    pub fn compile(
        policy: &CorsPolicy,
        cache: &mut RegexCache,
        warnings: &mut Vec<RouteWarningKind>,
    ) -> Self {
        let mut origins = Vec::new();
        let owned: Vec<StringMatch>;
        let source: &[StringMatch] = if policy.allow_origins.is_empty() {
            owned = policy
                .allow_origin
                .iter()
                .map(|o| StringMatch::Exact(o.clone()))
                .collect();
            &owned
        } else {
            &policy.allow_origins
        };
        for m in source {
            let m = match m {
                StringMatch::Exact(o) if o == "*" => StringMatch::Any,
                m => m.clone(),
            };
            match StringMatcher::compile(&m, false, cache) {
                Ok(c) => origins.push(c),
                Err(e) => warnings.push(RouteWarningKind::InvalidMatch(e)),
            }
        }
        let mut join = |field: &str, items: &[String]| -> Option<HeaderValue> {
            if items.is_empty() {
                return None;
            }
            match HeaderValue::from_str(&items.join(",")) {
                Ok(v) => Some(v),
                Err(_) => {
                    warnings.push(RouteWarningKind::InvalidHeader {
                        name: format!("corsPolicy.{field}"),
                        reason: "not a valid header value".into(),
                    });
                    None
                }
            }
        };
        let allow_methods = join("allowMethods", &policy.allow_methods);
        let allow_headers = join("allowHeaders", &policy.allow_headers);
        let expose_headers = join("exposeHeaders", &policy.expose_headers);
        Cors {
            origins,
            allow_methods,
            allow_headers,
            expose_headers,
            max_age: policy.max_age.map(|d| HeaderValue::from(d.as_secs())),
            allow_credentials: policy.allow_credentials == Some(true),
            forward_unmatched: policy.unmatched_preflights != Some(UnmatchedPreflights::Ignore),
        }
    }

    /// Whether `origin` is allowed (non-empty and matched by one of the allowed origins).
    pub fn is_origin_allowed(&self, origin: &HeaderValue) -> bool {
        !origin.is_empty()
            && self
                .origins
                .iter()
                .any(|m| m.matches_bytes(origin.as_bytes()))
    }

    /// The answer to a CORS preflight, or `None` when the request should go on upstream (it
    /// is not a preflight, or its origin is not allowed under `unmatchedPreflights: FORWARD`).
    pub fn preflight(&self, parts: &http::request::Parts) -> Option<Response<MeshBody>> {
        if parts.method != Method::OPTIONS {
            return None;
        }
        let origin = parts
            .headers
            .get(header::ORIGIN)
            .filter(|o| !o.is_empty())?;
        parts
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .filter(|m| !m.is_empty())?;
        let allowed = self.is_origin_allowed(origin);
        if !allowed && self.forward_unmatched {
            return None;
        }
        let mut resp = Response::new(body::empty());
        *resp.status_mut() = StatusCode::OK;
        if allowed {
            let h = resp.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if self.allow_credentials {
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            for (name, value) in [
                (header::ACCESS_CONTROL_ALLOW_METHODS, &self.allow_methods),
                (header::ACCESS_CONTROL_ALLOW_HEADERS, &self.allow_headers),
                (header::ACCESS_CONTROL_MAX_AGE, &self.max_age),
            ] {
                if let Some(v) = value {
                    h.insert(name, v.clone());
                }
            }
        }
        Some(resp)
    }

    /// Adds the CORS headers to the response of an actual (non-preflight) request whose
    /// `Origin` was `origin`: nothing when the origin is absent or not allowed.
    pub fn apply_response(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        let Some(origin) = origin.filter(|o| self.is_origin_allowed(o)) else {
            return;
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        if self.allow_credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = &self.expose_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> CorsPolicy {
        CorsPolicy {
            allow_origins: vec![
                StringMatch::Exact("https://a.example".into()),
                StringMatch::Regex(r"https://.*\.b\.example".into()),
            ],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-a".into(), "x-b".into()],
            expose_headers: vec!["x-c".into()],
            max_age: Some(Duration::from_secs(86400)),
            allow_credentials: Some(true),
            ..Default::default()
        }
    }

    fn compile(p: &CorsPolicy) -> Cors {
        let mut w = Vec::new();
        let c = Cors::compile(p, &mut RegexCache::new(), &mut w);
        assert!(w.is_empty(), "{w:?}");
        c
    }

    fn preflight_parts(origin: &str) -> http::request::Parts {
        let (parts, ()) = http::Request::builder()
            .method(Method::OPTIONS)
            .uri("/x")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .body(())
            .map(|r| r.into_parts())
            .unwrap_or_else(|_| http::Request::new(()).into_parts());
        parts
    }

    fn get(h: &HeaderMap, name: &str) -> Option<String> {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    #[test]
    fn allowed_preflight_is_answered_with_every_cors_header() {
        let c = compile(&policy());
        let resp = c.preflight(&preflight_parts("https://x.b.example"));
        let Some(resp) = resp else {
            panic!("expected an answer");
        };
        assert_eq!(resp.status(), StatusCode::OK);
        let h = resp.headers();
        assert_eq!(
            get(h, "access-control-allow-origin").as_deref(),
            Some("https://x.b.example")
        );
        assert_eq!(
            get(h, "access-control-allow-methods").as_deref(),
            Some("GET,POST")
        );
        assert_eq!(
            get(h, "access-control-allow-headers").as_deref(),
            Some("x-a,x-b")
        );
        assert_eq!(get(h, "access-control-max-age").as_deref(), Some("86400"));
        assert_eq!(
            get(h, "access-control-allow-credentials").as_deref(),
            Some("true")
        );
        assert!(h.get("access-control-expose-headers").is_none());
    }

    #[test]
    fn denied_preflight_is_forwarded_by_default() {
        let c = compile(&policy());
        assert!(
            c.preflight(&preflight_parts("https://evil.example"))
                .is_none()
        );
    }

    #[test]
    fn denied_preflight_under_ignore_is_answered_without_cors_headers() {
        let c = compile(&CorsPolicy {
            unmatched_preflights: Some(UnmatchedPreflights::Ignore),
            ..policy()
        });
        let Some(resp) = c.preflight(&preflight_parts("https://evil.example")) else {
            panic!("IGNORE answers unmatched preflights");
        };
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().is_empty());
    }

    #[test]
    fn non_preflights_are_not_answered() {
        let c = compile(&policy());
        let mut parts = preflight_parts("https://a.example");
        parts.headers.remove("access-control-request-method");
        assert!(c.preflight(&parts).is_none());
        let mut parts = preflight_parts("https://a.example");
        parts.method = Method::GET;
        assert!(c.preflight(&parts).is_none());
    }

    #[test]
    fn actual_requests_get_origin_echo_expose_and_credentials() {
        let c = compile(&policy());
        let mut h = HeaderMap::new();
        c.apply_response(Some(&HeaderValue::from_static("https://a.example")), &mut h);
        assert_eq!(
            get(&h, "access-control-allow-origin").as_deref(),
            Some("https://a.example")
        );
        assert_eq!(
            get(&h, "access-control-expose-headers").as_deref(),
            Some("x-c")
        );
        assert_eq!(
            get(&h, "access-control-allow-credentials").as_deref(),
            Some("true")
        );
        let mut h = HeaderMap::new();
        c.apply_response(
            Some(&HeaderValue::from_static("https://no.example")),
            &mut h,
        );
        c.apply_response(None, &mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn deprecated_allow_origin_and_star() {
        let c = compile(&CorsPolicy {
            allow_origin: vec!["https://old.example".into()],
            ..Default::default()
        });
        assert!(c.is_origin_allowed(&HeaderValue::from_static("https://old.example")));
        assert!(!c.is_origin_allowed(&HeaderValue::from_static("https://other.example")));
        let c = compile(&CorsPolicy {
            allow_origins: vec![StringMatch::Exact("*".into())],
            ..Default::default()
        });
        assert!(c.is_origin_allowed(&HeaderValue::from_static("https://any.example")));
    }
}
