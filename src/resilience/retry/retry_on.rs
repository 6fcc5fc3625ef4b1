//! The `retryOn` vocabulary of a VirtualService's `retries` (ISTIO.md §2.9), parsed once into
//! a [`RetryOn`] set, and the classification of one try's outcome against it.
//!
//! Every name is Envoy's `x-envoy-retry-on` / `x-envoy-retry-grpc-on` policy of the same
//! name, and behaves as Envoy's `RetryStateImpl` does:
//!
//! | policy | retried outcome |
//! |---|---|
//! | `5xx` | an upstream response with status ≥ 500; any reset or connect failure; a per-try timeout |
//! | `gateway-error` | an upstream response 502, 503 or 504; any reset or connect failure; a per-try timeout |
//! | `reset` | any reset (connect failure, connection closed, stream reset, protocol error); a per-try timeout |
//! | `reset-before-request` | a failure before the request was sent: connect failure or connect timeout |
//! | `connect-failure` | connect failure or connect timeout |
//! | `refused-stream` | the upstream reset the stream (`REFUSED_STREAM`, reported as a remote reset) |
//! | `retriable-4xx` | an upstream response 409 |
//! | `retriable-status-codes` | an upstream response whose status is in the list (the numbers of `retryOn`) |
//! | `envoy-ratelimited` | an upstream response carrying `x-envoy-ratelimited` |
//! | `retriable-headers` | accepted; Istio configures no `retriable_headers`, so it matches nothing |
//! | `http3-post-connect-failure` | accepted; a no-op without HTTP/3 |
//! | `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable` | a response whose *headers* carry that `grpc-status` (1, 4, 13, 8, 14): a trailers-only reply; bodies are never buffered to decide |
//!
//! Status codes (and the gRPC codes) match **real upstream responses** only: a mesh-made
//! answer (one carrying [`LAYER_HEADER`]) never matches by its status, as an Envoy local reply
//! is not an upstream response; a reset that would be answered 503 matches `reset`, not `503`.
//! A circuit-breaker overflow, no healthy upstream, a fault abort and every other mesh error
//! are never retried, as in Envoy.

use std::fmt;

use http::{HeaderMap, HeaderName, Response, StatusCode};

use crate::error::{Error, GrpcStatus, LAYER_HEADER, ResetReason};

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const ENVOY_RATELIMITED: HeaderName = HeaderName::from_static("x-envoy-ratelimited");

/// One named `retryOn` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RetryCondition {
    /// `5xx`.
    FiveXx = 0,
    /// `gateway-error`.
    GatewayError = 1,
    /// `reset`.
    Reset = 2,
    /// `reset-before-request`.
    ResetBeforeRequest = 3,
    /// `connect-failure`.
    ConnectFailure = 4,
    /// `envoy-ratelimited`.
    EnvoyRateLimited = 5,
    /// `retriable-4xx`.
    Retriable4xx = 6,
    /// `refused-stream`.
    RefusedStream = 7,
    /// `retriable-status-codes`.
    RetriableStatusCodes = 8,
    /// `retriable-headers`.
    RetriableHeaders = 9,
    /// `http3-post-connect-failure`.
    Http3PostConnectFailure = 10,
    /// `cancelled` (gRPC 1).
    Cancelled = 11,
    /// `deadline-exceeded` (gRPC 4).
    DeadlineExceeded = 12,
    /// `internal` (gRPC 13).
    Internal = 13,
    /// `resource-exhausted` (gRPC 8).
    ResourceExhausted = 14,
    /// `unavailable` (gRPC 14).
    Unavailable = 15,
}

impl RetryCondition {
    /// Every policy, in the order above.
    pub const ALL: [RetryCondition; 16] = [
        Self::FiveXx,
        Self::GatewayError,
        Self::Reset,
        Self::ResetBeforeRequest,
        Self::ConnectFailure,
        Self::EnvoyRateLimited,
        Self::Retriable4xx,
        Self::RefusedStream,
        Self::RetriableStatusCodes,
        Self::RetriableHeaders,
        Self::Http3PostConnectFailure,
        Self::Cancelled,
        Self::DeadlineExceeded,
        Self::Internal,
        Self::ResourceExhausted,
        Self::Unavailable,
    ];

    /// The name in `retryOn`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FiveXx => "5xx",
            Self::GatewayError => "gateway-error",
            Self::Reset => "reset",
            Self::ResetBeforeRequest => "reset-before-request",
            Self::ConnectFailure => "connect-failure",
            Self::EnvoyRateLimited => "envoy-ratelimited",
            Self::Retriable4xx => "retriable-4xx",
            Self::RefusedStream => "refused-stream",
            Self::RetriableStatusCodes => "retriable-status-codes",
            Self::RetriableHeaders => "retriable-headers",
            Self::Http3PostConnectFailure => "http3-post-connect-failure",
            Self::Cancelled => "cancelled",
            Self::DeadlineExceeded => "deadline-exceeded",
            Self::Internal => "internal",
            Self::ResourceExhausted => "resource-exhausted",
            Self::Unavailable => "unavailable",
        }
    }

    /// The policy named `name` (exact, lower case, as Istio validates it).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The gRPC status a gRPC policy retries on.
    pub const fn grpc_status(self) -> Option<GrpcStatus> {
        match self {
            Self::Cancelled => Some(GrpcStatus::Cancelled),
            Self::DeadlineExceeded => Some(GrpcStatus::DeadlineExceeded),
            Self::Internal => Some(GrpcStatus::Internal),
            Self::ResourceExhausted => Some(GrpcStatus::ResourceExhausted),
            Self::Unavailable => Some(GrpcStatus::Unavailable),
            _ => None,
        }
    }

    const fn bit(self) -> u16 {
        1 << (self as u8)
    }
}

impl fmt::Display for RetryCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An item of `retryOn` that is neither a known policy nor an HTTP status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid retryOn policy")]
pub struct RetryOnError(pub String);

/// A parsed `retryOn`: the set of policies plus the retriable status codes.
///
/// As Istio's `parseRetryOn` does, a number is a status code for `retriable-status-codes`,
/// which is added when codes are listed without it. Plain data: `Clone + Eq + Hash`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct RetryOn {
    conditions: u16,
    codes: Vec<u16>,
}

/// Istio's default `retryOn` (mesh `defaultHttpRetryPolicy`), also used when `retries` is set
/// with an empty `retryOn`.
pub const ISTIO_DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

impl RetryOn {
    /// No policy: nothing is retried.
    pub const fn none() -> Self {
        RetryOn {
            conditions: 0,
            codes: Vec::new(),
        }
    }

    /// Istio's default: `connect-failure,refused-stream,unavailable,cancelled,
    /// retriable-status-codes` with an empty status list (so 503 is not retried).
    pub fn istio_default() -> Self {
        [
            RetryCondition::ConnectFailure,
            RetryCondition::RefusedStream,
            RetryCondition::Unavailable,
            RetryCondition::Cancelled,
            RetryCondition::RetriableStatusCodes,
        ]
        .into_iter()
        .collect()
    }

    /// Parses `retryOn` strictly: every comma-separated item must be a policy name or a
    /// status code (100..=599). Items are trimmed of spaces (Istio's validation refuses them
    /// anyway); empty items are skipped.
    pub fn parse(text: &str) -> Result<Self, RetryOnError> {
        let mut on = RetryOn::none();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if !on.add(item) {
                return Err(RetryOnError(item.to_owned()));
            }
        }
        on.finish();
        Ok(on)
    }

    /// Parses `retryOn` of a validated config, skipping any unknown item (validation has
    /// refused them already). An empty `retryOn` is Istio's default.
    pub fn parse_lenient(text: &str) -> Self {
        if text.trim().is_empty() {
            return Self::istio_default();
        }
        let mut on = RetryOn::none();
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let _known = on.add(item);
        }
        on.finish();
        on
    }

    fn add(&mut self, item: &str) -> bool {
        if let Some(cond) = RetryCondition::from_name(item) {
            self.insert(cond);
            return true;
        }
        match item.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => {
                if !self.codes.contains(&code) {
                    self.codes.push(code);
                }
                true
            }
            _ => false,
        }
    }

    fn finish(&mut self) {
        if !self.codes.is_empty() {
            self.insert(RetryCondition::RetriableStatusCodes);
        }
        self.codes.sort_unstable();
    }

    /// Adds a policy.
    pub fn insert(&mut self, cond: RetryCondition) {
        self.conditions |= cond.bit();
    }

    /// Whether the policy is set.
    pub const fn contains(&self, cond: RetryCondition) -> bool {
        self.conditions & cond.bit() != 0
    }

    /// Whether nothing at all is retried.
    pub fn is_empty(&self) -> bool {
        self.conditions == 0
    }

    /// The retriable status codes (sorted).
    pub fn status_codes(&self) -> &[u16] {
        &self.codes
    }

    /// The policies set, in [`RetryCondition::ALL`] order.
    pub fn conditions(&self) -> impl Iterator<Item = RetryCondition> + '_ {
        RetryCondition::ALL
            .into_iter()
            .filter(|c| self.contains(*c))
    }

    /// Whether `outcome` is retriable under this `retryOn` (see the [module docs](self)).
    pub fn matches(&self, outcome: Outcome<'_>) -> bool {
        match outcome {
            Outcome::Response { status, headers } => self.matches_response(status, headers),
            Outcome::Error(err) => self.matches_error(err),
        }
    }

    fn matches_response(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        // A mesh-made answer is not an upstream response (looked up last: most responses
        // match nothing, and then need no lookup of it).
        self.matches_upstream_response(status, headers) && !headers.contains_key(LAYER_HEADER)
    }

    /// [`matches_response`](Self::matches_response) for a response known to come from the
    /// upstream.
    fn matches_upstream_response(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        let code = status.as_u16();
        if self.contains(RetryCondition::FiveXx) && status.is_server_error() {
            return true;
        }
        if self.contains(RetryCondition::GatewayError) && matches!(code, 502..=504) {
            return true;
        }
        if self.contains(RetryCondition::Retriable4xx) && code == 409 {
            return true;
        }
        if self.contains(RetryCondition::RetriableStatusCodes)
            && self.codes.binary_search(&code).is_ok()
        {
            return true;
        }
        if self.contains(RetryCondition::EnvoyRateLimited)
            && headers.contains_key(ENVOY_RATELIMITED)
        {
            return true;
        }
        if self.conditions & GRPC_BITS != 0
            && let Some(grpc) = grpc_status_of(headers)
        {
            return self
                .conditions()
                .any(|c| c.grpc_status().is_some_and(|g| g == grpc));
        }
        false
    }

    fn matches_error(&self, err: &Error) -> bool {
        let any_reset = self.contains(RetryCondition::FiveXx)
            || self.contains(RetryCondition::GatewayError)
            || self.contains(RetryCondition::Reset);
        match err {
            Error::UpstreamReset { reason, .. } => {
                if any_reset {
                    return true;
                }
                match reason {
                    ResetReason::ConnectionFailure | ResetReason::ConnectionTimeout => {
                        self.contains(RetryCondition::ConnectFailure)
                            || self.contains(RetryCondition::ResetBeforeRequest)
                    }
                    ResetReason::RemoteReset => self.contains(RetryCondition::RefusedStream),
                    _ => false,
                }
            }
            // A per-try timeout: Envoy's router treats it as a local reset of the try, which
            // `5xx`, `gateway-error` and `reset` retry.
            Error::Timeout { .. } => any_reset,
            _ => false,
        }
    }
}

const GRPC_BITS: u16 = RetryCondition::Cancelled.bit()
    | RetryCondition::DeadlineExceeded.bit()
    | RetryCondition::Internal.bit()
    | RetryCondition::ResourceExhausted.bit()
    | RetryCondition::Unavailable.bit();

fn grpc_status_of(headers: &HeaderMap) -> Option<GrpcStatus> {
    let value = headers.get(GRPC_STATUS)?.to_str().ok()?;
    GrpcStatus::from_code(value.trim().parse().ok()?)
}

impl FromIterator<RetryCondition> for RetryOn {
    fn from_iter<I: IntoIterator<Item = RetryCondition>>(iter: I) -> Self {
        let mut on = RetryOn::none();
        for c in iter {
            on.insert(c);
        }
        on
    }
}

impl fmt::Display for RetryOn {
    /// The `retryOn` text: policy names then codes, comma-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            if first {
                first = false;
                Ok(())
            } else {
                f.write_str(",")
            }
        };
        for c in self.conditions() {
            sep(f)?;
            f.write_str(c.as_str())?;
        }
        for code in &self.codes {
            sep(f)?;
            write!(f, "{code}")?;
        }
        Ok(())
    }
}

/// What one try ended with, as the retry policy sees it.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// A response (its status and headers; the body is never read to decide).
    Response {
        /// The response status.
        status: StatusCode,
        /// The response headers (`grpc-status` of a trailers-only reply, [`LAYER_HEADER`] of
        /// a mesh-made answer, `x-envoy-ratelimited`).
        headers: &'a HeaderMap,
    },
    /// An error from the layers below (a reset, a per-try timeout, an overflow, ...).
    Error(&'a Error),
}

impl<'a> Outcome<'a> {
    /// The outcome of a response.
    pub fn of_response<B>(resp: &'a Response<B>) -> Self {
        Outcome::Response {
            status: resp.status(),
            headers: resp.headers(),
        }
    }

    /// The outcome of a try's result.
    pub fn of<B>(result: &'a Result<Response<B>, Error>) -> Self {
        match result {
            Ok(resp) => Self::of_response(resp),
            Err(err) => Outcome::Error(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::Duration;

    fn resp(status: u16, headers: &[(&'static str, &'static str)]) -> (StatusCode, HeaderMap) {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_static(v));
        }
        (StatusCode::from_u16(status).expect("valid status"), h)
    }

    fn reset(reason: ResetReason) -> Error {
        Error::UpstreamReset {
            reason,
            transport_failure: None,
        }
    }

    #[test]
    fn every_name_parses_and_round_trips() {
        for cond in RetryCondition::ALL {
            let on = RetryOn::parse(cond.as_str()).expect("known name");
            assert!(on.contains(cond), "{cond}");
            assert_eq!(on.conditions().count(), 1, "{cond}");
            assert_eq!(on.to_string(), cond.as_str());
        }
    }

    #[test]
    fn codes_add_retriable_status_codes_and_unknown_items_are_refused() {
        let on = RetryOn::parse("5xx,503,429,503").expect("valid");
        assert!(on.contains(RetryCondition::FiveXx));
        assert!(on.contains(RetryCondition::RetriableStatusCodes));
        assert_eq!(on.status_codes(), [429, 503]);
        assert_eq!(on.to_string(), "5xx,retriable-status-codes,429,503");
        assert_eq!(
            RetryOn::parse("5xx,flaky"),
            Err(RetryOnError("flaky".into()))
        );
        assert_eq!(RetryOn::parse("99"), Err(RetryOnError("99".into())));
        assert_eq!(RetryOn::parse("600"), Err(RetryOnError("600".into())));
        assert_eq!(RetryOn::parse("5XX"), Err(RetryOnError("5XX".into())));
        // Lenient parsing skips what validation would have refused.
        let on = RetryOn::parse_lenient("flaky,reset");
        assert_eq!(on.to_string(), "reset");
        assert_eq!(RetryOn::parse_lenient(""), RetryOn::istio_default());
    }

    #[test]
    fn istio_default_is_the_documented_list() {
        let on = RetryOn::istio_default();
        assert_eq!(on, RetryOn::parse(ISTIO_DEFAULT_RETRY_ON).expect("valid"));
        assert_eq!(
            on.to_string(),
            "connect-failure,refused-stream,retriable-status-codes,cancelled,unavailable"
        );
        // 503 is not retried by default; a connect failure and gRPC UNAVAILABLE are.
        let (s, h) = resp(503, &[]);
        assert!(!on.matches(Outcome::Response {
            status: s,
            headers: &h
        }));
        assert!(on.matches(Outcome::Error(&reset(ResetReason::ConnectionFailure))));
        let (s, h) = resp(200, &[("grpc-status", "14")]);
        assert!(on.matches(Outcome::Response {
            status: s,
            headers: &h
        }));
    }

    /// One row: (retryOn, outcome, retried?).
    #[test]
    fn classification_table() {
        enum O {
            R(u16, &'static [(&'static str, &'static str)]),
            E(Error),
        }
        use O::{E, R};
        use ResetReason::*;
        let timeout = || Error::Timeout {
            timeout: Duration::from_millis(10),
        };
        let mesh = &[("x-tower-mesh-layer", "cluster")][..];
        let rows: Vec<(&str, O, bool)> = vec![
            ("5xx", R(500, &[]), true),
            ("5xx", R(503, &[]), true),
            ("5xx", R(599, &[]), true),
            ("5xx", R(499, &[]), false),
            ("5xx", R(200, &[]), false),
            ("5xx", R(503, mesh), false),
            ("5xx", E(reset(ConnectionFailure)), true),
            ("5xx", E(reset(ConnectionTermination)), true),
            ("5xx", E(reset(RemoteReset)), true),
            ("5xx", E(reset(ProtocolError)), true),
            ("5xx", E(timeout()), true),
            ("gateway-error", R(502, &[]), true),
            ("gateway-error", R(503, &[]), true),
            ("gateway-error", R(504, &[]), true),
            ("gateway-error", R(500, &[]), false),
            ("gateway-error", R(501, &[]), false),
            ("gateway-error", E(reset(ConnectionTermination)), true),
            ("gateway-error", E(timeout()), true),
            ("reset", E(reset(ConnectionTermination)), true),
            ("reset", E(reset(ConnectionFailure)), true),
            ("reset", E(reset(ConnectionTimeout)), true),
            ("reset", E(reset(RemoteReset)), true),
            ("reset", E(timeout()), true),
            ("reset", R(503, &[]), false),
            ("connect-failure", E(reset(ConnectionFailure)), true),
            ("connect-failure", E(reset(ConnectionTimeout)), true),
            ("connect-failure", E(reset(ConnectionTermination)), false),
            ("connect-failure", E(reset(RemoteReset)), false),
            ("connect-failure", E(timeout()), false),
            ("connect-failure", R(503, &[]), false),
            ("reset-before-request", E(reset(ConnectionFailure)), true),
            (
                "reset-before-request",
                E(reset(ConnectionTermination)),
                false,
            ),
            ("refused-stream", E(reset(RemoteReset)), true),
            ("refused-stream", E(reset(ConnectionFailure)), false),
            ("retriable-4xx", R(409, &[]), true),
            ("retriable-4xx", R(429, &[]), false),
            ("retriable-status-codes", R(503, &[]), false),
            ("503", R(503, &[]), true),
            ("503", R(503, mesh), false),
            ("503", R(502, &[]), false),
            ("503", E(reset(ConnectionFailure)), false),
            ("429,retriable-status-codes", R(429, &[]), true),
            (
                "envoy-ratelimited",
                R(429, &[("x-envoy-ratelimited", "true")]),
                true,
            ),
            ("envoy-ratelimited", R(429, &[]), false),
            ("retriable-headers", R(503, &[]), false),
            (
                "http3-post-connect-failure",
                E(reset(ConnectionFailure)),
                false,
            ),
            ("unavailable", R(200, &[("grpc-status", "14")]), true),
            ("unavailable", R(200, &[("grpc-status", "13")]), false),
            (
                "unavailable",
                R(
                    200,
                    &[("grpc-status", "14"), ("x-tower-mesh-layer", "timeout")],
                ),
                false,
            ),
            ("unavailable", R(503, &[]), false),
            ("cancelled", R(200, &[("grpc-status", "1")]), true),
            ("deadline-exceeded", R(200, &[("grpc-status", "4")]), true),
            ("internal", R(200, &[("grpc-status", "13")]), true),
            ("resource-exhausted", R(200, &[("grpc-status", "8")]), true),
            ("resource-exhausted", R(200, &[("grpc-status", "x")]), false),
            ("cancelled,internal", R(200, &[("grpc-status", "13")]), true),
            (
                "5xx",
                E(Error::Overflow {
                    host: "h".into(),
                    subset: None,
                    limit: "x",
                }),
                false,
            ),
            (
                "5xx",
                E(Error::NoHealthyUpstream {
                    host: "h".into(),
                    subset: None,
                }),
                false,
            ),
            (
                "5xx",
                E(Error::FaultAbort {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    grpc_status: None,
                }),
                false,
            ),
        ];
        for (text, outcome, want) in rows {
            let on = RetryOn::parse(text).expect("valid retryOn");
            let got = match &outcome {
                R(status, headers) => {
                    let (s, h) = resp(*status, headers);
                    on.matches(Outcome::Response {
                        status: s,
                        headers: &h,
                    })
                }
                E(err) => on.matches(Outcome::Error(err)),
            };
            let shown = match &outcome {
                R(s, h) => format!("{s} {h:?}"),
                E(e) => format!("{e:?}"),
            };
            assert_eq!(got, want, "retryOn {text:?} on {shown}");
        }
    }

    #[test]
    fn outcome_of_a_result() {
        let ok: Result<Response<()>, Error> = Ok(Response::new(()));
        assert!(matches!(
            Outcome::of(&ok),
            Outcome::Response { status, .. } if status == StatusCode::OK
        ));
        let err: Result<Response<()>, Error> = Err(reset(ResetReason::RemoteReset));
        assert!(matches!(Outcome::of(&err), Outcome::Error(_)));
    }
}
