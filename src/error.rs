//! The mesh's own answers: [`Error`], Envoy's [response flags](ResponseFlag), and the HTTP or
//! gRPC response each outcome becomes.
//!
//! Every layer of tower-mesh (route, fault, timeout, retry, cluster, balance, connect, authz,
//! authn) fails with this one [`Error`]. [`Error::to_response`] turns it into the response an
//! Istio sidecar (Envoy) would give for the same outcome: the same status (404 for no route,
//! 503 for no healthy upstream, 504 for a timeout, ...), the same short plain-text body where
//! Envoy has one (`no healthy upstream`, `upstream request timeout`, `RBAC: access denied`,
//! `upstream connect error or disconnect/reset before headers. reset reason: ...`), and for a
//! gRPC request a *trailers-only* response carrying the matching `grpc-status`.
//!
//! So that a caller can tell a mesh answer from an upstream's, every mesh-made response also
//! carries two headers, [`FLAG_HEADER`] (`x-tower-mesh-flag: UT`, Envoy's `%RESPONSE_FLAGS%`,
//! `-` when Envoy sets none) and [`LAYER_HEADER`] (`x-tower-mesh-layer: timeout`), and the
//! same facts in its extensions as a [`ResponseFlags`] and a [`Layer`], for telemetry.
//!
//! ```
//! use std::time::Duration;
//! use tower_mesh::error::{Error, Layer, ResponseFlag, ResponseFlags, FLAG_HEADER, LAYER_HEADER};
//!
//! let err = Error::Timeout { timeout: Duration::from_secs(2) };
//! let resp = err.to_response(false);
//! assert_eq!(resp.status(), 504);
//! assert_eq!(resp.headers()[FLAG_HEADER], "UT");
//! assert_eq!(resp.headers()[LAYER_HEADER], "timeout");
//! let flags = resp.extensions().get::<ResponseFlags>().copied().unwrap_or_default();
//! assert!(flags.contains(ResponseFlag::UpstreamRequestTimeout));
//! assert_eq!(resp.extensions().get::<Layer>(), Some(&Layer::Timeout));
//!
//! // The same outcome for a gRPC caller: HTTP 200, grpc-status 14 (UNAVAILABLE).
//! let resp = err.to_response(true);
//! assert_eq!(resp.status(), 200);
//! assert_eq!(resp.headers()["grpc-status"], "14");
//! assert_eq!(resp.headers()["grpc-message"], "upstream request timeout");
//! ```
//!
//! Where Envoy sets no response flag (an RBAC deny, a JWT rejection, Istio's `block_all` route
//! under `REGISTRY_ONLY`), [`Error::flags`] is empty and the flag header says `-`, as Envoy's
//! access log does; the layer header still names who answered.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http::{Extensions, Response, StatusCode};
use http_body_util::Full;

use crate::validate::ValidationError;

/// A boxed error, as tower services return them (the same type as `tower::BoxError`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response header naming the [`ResponseFlags`] of a mesh-made answer (`UH`, `UF,URX`, or
/// `-` when Envoy would set no flag). An upstream's own response never carries it.
pub const FLAG_HEADER: HeaderName = HeaderName::from_static("x-tower-mesh-flag");

/// The response header naming the [`Layer`] that produced a mesh-made answer (`route`,
/// `timeout`, `authz`, ...). An upstream's own response never carries it.
pub const LAYER_HEADER: HeaderName = HeaderName::from_static("x-tower-mesh-layer");

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

// ---------------------------------------------------------------------------------------------
// Response flags
// ---------------------------------------------------------------------------------------------

/// One of Envoy's response flags (`%RESPONSE_FLAGS%` in its access log, the `response_flags`
/// label of Istio's metrics): why a request ended the way it did.
///
/// The discriminant is the flag's bit in Envoy's `StreamInfo::CoreResponseFlag`, so a set of
/// flags prints in Envoy's order (`UF,URX`). Each variant's doc gives its code and meaning, as
/// Envoy's access-log documentation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ResponseFlag {
    /// `LH`: the local service failed its health check (503).
    FailedLocalHealthCheck = 0,
    /// `UH`: no healthy upstream host in the cluster (503).
    NoHealthyUpstream = 1,
    /// `UT`: the upstream request timed out (504).
    UpstreamRequestTimeout = 2,
    /// `LR`: the proxy reset the stream locally (503).
    LocalReset = 3,
    /// `UR`: the upstream reset the stream (503).
    UpstreamRemoteReset = 4,
    /// `UF`: the connection to the upstream could not be made (503).
    UpstreamConnectionFailure = 5,
    /// `UC`: the upstream connection closed before a response (503).
    UpstreamConnectionTermination = 6,
    /// `UO`: upstream overflow: a circuit breaker (connection-pool limit) refused it (503).
    UpstreamOverflow = 7,
    /// `NR`: no route matched the request (404).
    NoRouteFound = 8,
    /// `DI`: the request was delayed by fault injection.
    DelayInjected = 9,
    /// `FI`: the request was aborted by fault injection with the configured status.
    FaultInjected = 10,
    /// `RL`: rate-limited locally (429).
    RateLimited = 11,
    /// `UAEX`: denied by the external authorization service.
    UnauthorizedExternalService = 12,
    /// `RLSE`: refused because the rate-limit service failed.
    RateLimitServiceError = 13,
    /// `DC`: the downstream connection closed.
    DownstreamConnectionTermination = 14,
    /// `URX`: the retry limit (or TCP connect-attempt limit) was reached.
    UpstreamRetryLimitExceeded = 15,
    /// `SI`: the stream idle timeout fired (408 or 504).
    StreamIdleTimeout = 16,
    /// `IH`: a strictly checked `x-envoy-*` request header had an invalid value (400).
    InvalidEnvoyRequestHeaders = 17,
    /// `DPE`: the downstream request had an HTTP protocol error.
    DownstreamProtocolError = 18,
    /// `UMSDR`: the upstream request reached its max stream duration.
    UpstreamMaxStreamDurationReached = 19,
    /// `RFCF`: the response was served from the cache filter.
    ResponseFromCacheFilter = 20,
    /// `NFCF`: a filter's dynamic (ECDS) configuration was not found.
    NoFilterConfigFound = 21,
    /// `DT`: the request or connection exceeded its max duration.
    DurationTimeout = 22,
    /// `UPE`: the upstream response had an HTTP protocol error (502).
    UpstreamProtocolError = 23,
    /// `NC`: the upstream cluster was not found (503).
    NoClusterFound = 24,
    /// `OM`: the overload manager terminated the request.
    OverloadManager = 25,
    /// `DF`: DNS resolution of the upstream failed.
    DnsResolutionFailed = 26,
    /// `DO`: dropped by the control plane's drop-overload policy (503).
    DropOverload = 27,
    /// `DR`: the downstream reset the stream.
    DownstreamRemoteReset = 28,
}

impl ResponseFlag {
    /// Every flag, in Envoy's order.
    pub const ALL: [ResponseFlag; 29] = [
        Self::FailedLocalHealthCheck,
        Self::NoHealthyUpstream,
        Self::UpstreamRequestTimeout,
        Self::LocalReset,
        Self::UpstreamRemoteReset,
        Self::UpstreamConnectionFailure,
        Self::UpstreamConnectionTermination,
        Self::UpstreamOverflow,
        Self::NoRouteFound,
        Self::DelayInjected,
        Self::FaultInjected,
        Self::RateLimited,
        Self::UnauthorizedExternalService,
        Self::RateLimitServiceError,
        Self::DownstreamConnectionTermination,
        Self::UpstreamRetryLimitExceeded,
        Self::StreamIdleTimeout,
        Self::InvalidEnvoyRequestHeaders,
        Self::DownstreamProtocolError,
        Self::UpstreamMaxStreamDurationReached,
        Self::ResponseFromCacheFilter,
        Self::NoFilterConfigFound,
        Self::DurationTimeout,
        Self::UpstreamProtocolError,
        Self::NoClusterFound,
        Self::OverloadManager,
        Self::DnsResolutionFailed,
        Self::DropOverload,
        Self::DownstreamRemoteReset,
    ];

    /// Envoy's short code: `UH`, `URX`, `NR`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FailedLocalHealthCheck => "LH",
            Self::NoHealthyUpstream => "UH",
            Self::UpstreamRequestTimeout => "UT",
            Self::LocalReset => "LR",
            Self::UpstreamRemoteReset => "UR",
            Self::UpstreamConnectionFailure => "UF",
            Self::UpstreamConnectionTermination => "UC",
            Self::UpstreamOverflow => "UO",
            Self::NoRouteFound => "NR",
            Self::DelayInjected => "DI",
            Self::FaultInjected => "FI",
            Self::RateLimited => "RL",
            Self::UnauthorizedExternalService => "UAEX",
            Self::RateLimitServiceError => "RLSE",
            Self::DownstreamConnectionTermination => "DC",
            Self::UpstreamRetryLimitExceeded => "URX",
            Self::StreamIdleTimeout => "SI",
            Self::InvalidEnvoyRequestHeaders => "IH",
            Self::DownstreamProtocolError => "DPE",
            Self::UpstreamMaxStreamDurationReached => "UMSDR",
            Self::ResponseFromCacheFilter => "RFCF",
            Self::NoFilterConfigFound => "NFCF",
            Self::DurationTimeout => "DT",
            Self::UpstreamProtocolError => "UPE",
            Self::NoClusterFound => "NC",
            Self::OverloadManager => "OM",
            Self::DnsResolutionFailed => "DF",
            Self::DropOverload => "DO",
            Self::DownstreamRemoteReset => "DR",
        }
    }

    /// The flag with Envoy's short code `code` (exact, case-sensitive), if there is one.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == code)
    }

    const fn bit(self) -> u32 {
        1 << (self as u8)
    }
}

impl fmt::Display for ResponseFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of [`ResponseFlag`]s: a request can end with several (`UF,URX`: the last retry failed
/// to connect and the retry limit was reached).
///
/// Displays as Envoy's access log does: the codes in Envoy's order joined with `,`, or `-`
/// when empty. A mesh-made response carries one in its extensions; a layer that marks a
/// response it passes through (a fault delay, `DI`) adds to it with [`ResponseFlags::record`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u32);

impl ResponseFlags {
    /// No flag.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Adds `flag`.
    pub fn insert(&mut self, flag: ResponseFlag) {
        self.0 |= flag.bit();
    }

    /// Whether `flag` is set.
    pub const fn contains(self, flag: ResponseFlag) -> bool {
        self.0 & flag.bit() != 0
    }

    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// How many flags are set.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// The flags of both sets.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The flags set, in Envoy's order.
    pub fn iter(self) -> impl Iterator<Item = ResponseFlag> {
        ResponseFlag::ALL
            .into_iter()
            .filter(move |f| self.contains(*f))
    }

    /// Adds `flags` to the `ResponseFlags` in `extensions` (inserting one if there is none),
    /// so that several layers can mark the same request or response.
    pub fn record(extensions: &mut Extensions, flags: impl Into<ResponseFlags>) {
        let flags = flags.into();
        match extensions.get_mut::<ResponseFlags>() {
            Some(existing) => *existing = existing.union(flags),
            None => {
                extensions.insert(flags);
            }
        }
    }

    /// The value of [`FLAG_HEADER`]: the Display form (`UF,URX`, `-`).
    pub fn header_value(self) -> HeaderValue {
        let mut flags = self.iter();
        match (flags.next(), flags.next()) {
            (None, _) => HeaderValue::from_static("-"),
            (Some(one), None) => HeaderValue::from_static(one.as_str()),
            // The codes are ASCII letters and commas, always a valid header value.
            _ => HeaderValue::from_str(&self.to_string()).unwrap_or(HeaderValue::from_static("-")),
        }
    }
}

impl From<ResponseFlag> for ResponseFlags {
    fn from(flag: ResponseFlag) -> Self {
        Self(flag.bit())
    }
}

impl FromIterator<ResponseFlag> for ResponseFlags {
    fn from_iter<I: IntoIterator<Item = ResponseFlag>>(iter: I) -> Self {
        let mut flags = Self::empty();
        flags.extend(iter);
        flags
    }
}

impl Extend<ResponseFlag> for ResponseFlags {
    fn extend<I: IntoIterator<Item = ResponseFlag>>(&mut self, iter: I) {
        for flag in iter {
            self.insert(flag);
        }
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, flag) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(flag.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Debug for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResponseFlags({self})")
    }
}

// ---------------------------------------------------------------------------------------------
// Layer
// ---------------------------------------------------------------------------------------------

/// The tower-mesh layer that produced a mesh-made answer; the value of [`LAYER_HEADER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Layer {
    /// `route`: VirtualService matching, and the `REGISTRY_ONLY` outbound policy.
    Route,
    /// `fault`: VirtualService `fault` injection.
    Fault,
    /// `timeout`: VirtualService `timeout` (and `retries.perTryTimeout` for one try).
    Timeout,
    /// `retry`: VirtualService `retries`.
    Retry,
    /// `cluster`: the destination's (host, subset) and its DestinationRule
    /// `connectionPool` limits.
    Cluster,
    /// `balance`: choosing an endpoint (DestinationRule `loadBalancer`, outlier ejection).
    Balance,
    /// `connect`: the connection to the chosen endpoint and the request on it.
    Connect,
    /// `authz`: AuthorizationPolicy.
    Authz,
    /// `authn`: RequestAuthentication (JWT) and PeerAuthentication.
    Authn,
    /// `mesh`: outside any request layer (configuration, I/O, an unclassified error).
    Mesh,
}

impl Layer {
    /// The lowercase name used in [`LAYER_HEADER`]: `route`, `timeout`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Route => "route",
            Self::Fault => "fault",
            Self::Timeout => "timeout",
            Self::Retry => "retry",
            Self::Cluster => "cluster",
            Self::Balance => "balance",
            Self::Connect => "connect",
            Self::Authz => "authz",
            Self::Authn => "authn",
            Self::Mesh => "mesh",
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------------------------
// Reset reasons and gRPC status
// ---------------------------------------------------------------------------------------------

/// Why an upstream request ended before its response started: Envoy's `StreamResetReason`,
/// reduced to the cases a client can tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResetReason {
    /// The connection could not be made (refused, unreachable, TLS handshake failed). `UF`.
    ConnectionFailure,
    /// The connection was not made within `connectionPool.tcp.connectTimeout`. `UF`.
    ConnectionTimeout,
    /// The connection closed before the response headers. `UC`.
    ConnectionTermination,
    /// The upstream reset the stream (HTTP/2 `RST_STREAM`, including a refused stream). `UR`.
    RemoteReset,
    /// The upstream's response broke the HTTP protocol. `UPE`, and 502 rather than 503.
    ProtocolError,
}

impl ResetReason {
    /// Envoy's words for it (`Http::Utility::resetReasonToString`), as they appear in the
    /// response body: `remote connection failure`, `connection timeout`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ConnectionFailure => "remote connection failure",
            Self::ConnectionTimeout => "connection timeout",
            Self::ConnectionTermination => "connection termination",
            Self::RemoteReset => "remote reset",
            Self::ProtocolError => "protocol error",
        }
    }

    /// The response flag Envoy sets for it (`streamResetReasonToResponseFlag`).
    pub const fn flag(self) -> ResponseFlag {
        match self {
            Self::ConnectionFailure | Self::ConnectionTimeout => {
                ResponseFlag::UpstreamConnectionFailure
            }
            Self::ConnectionTermination => ResponseFlag::UpstreamConnectionTermination,
            Self::RemoteReset => ResponseFlag::UpstreamRemoteReset,
            Self::ProtocolError => ResponseFlag::UpstreamProtocolError,
        }
    }

    /// The status Envoy answers with: 502 for a protocol error, 503 otherwise.
    pub const fn status(self) -> StatusCode {
        match self {
            Self::ProtocolError => StatusCode::BAD_GATEWAY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl fmt::Display for ResetReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A gRPC status code (grpc/doc/statuscodes.md), as carried in `grpc-status` and named by a
/// VirtualService `fault.abort.grpcStatus` (`UNAVAILABLE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum GrpcStatus {
    /// 0 `OK`.
    Ok = 0,
    /// 1 `CANCELLED`.
    Cancelled = 1,
    /// 2 `UNKNOWN`.
    Unknown = 2,
    /// 3 `INVALID_ARGUMENT`.
    InvalidArgument = 3,
    /// 4 `DEADLINE_EXCEEDED`.
    DeadlineExceeded = 4,
    /// 5 `NOT_FOUND`.
    NotFound = 5,
    /// 6 `ALREADY_EXISTS`.
    AlreadyExists = 6,
    /// 7 `PERMISSION_DENIED`.
    PermissionDenied = 7,
    /// 8 `RESOURCE_EXHAUSTED`.
    ResourceExhausted = 8,
    /// 9 `FAILED_PRECONDITION`.
    FailedPrecondition = 9,
    /// 10 `ABORTED`.
    Aborted = 10,
    /// 11 `OUT_OF_RANGE`.
    OutOfRange = 11,
    /// 12 `UNIMPLEMENTED`.
    Unimplemented = 12,
    /// 13 `INTERNAL`.
    Internal = 13,
    /// 14 `UNAVAILABLE`.
    Unavailable = 14,
    /// 15 `DATA_LOSS`.
    DataLoss = 15,
    /// 16 `UNAUTHENTICATED`.
    Unauthenticated = 16,
}

impl GrpcStatus {
    /// Every code, in numeric order.
    pub const ALL: [GrpcStatus; 17] = [
        Self::Ok,
        Self::Cancelled,
        Self::Unknown,
        Self::InvalidArgument,
        Self::DeadlineExceeded,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::Unavailable,
        Self::DataLoss,
        Self::Unauthenticated,
    ];

    /// The numeric code, as sent in `grpc-status`.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The name in the gRPC spec and in Istio's `fault.abort.grpcStatus`: `UNAVAILABLE`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Cancelled => "CANCELLED",
            Self::Unknown => "UNKNOWN",
            Self::InvalidArgument => "INVALID_ARGUMENT",
            Self::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Self::NotFound => "NOT_FOUND",
            Self::AlreadyExists => "ALREADY_EXISTS",
            Self::PermissionDenied => "PERMISSION_DENIED",
            Self::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Self::FailedPrecondition => "FAILED_PRECONDITION",
            Self::Aborted => "ABORTED",
            Self::OutOfRange => "OUT_OF_RANGE",
            Self::Unimplemented => "UNIMPLEMENTED",
            Self::Internal => "INTERNAL",
            Self::Unavailable => "UNAVAILABLE",
            Self::DataLoss => "DATA_LOSS",
            Self::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// The code named `name` (exact, upper case, as Istio requires for `grpcStatus`).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The code numbered `code`.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| u32::from(s.code()) == code)
    }

    /// Envoy's `Grpc::Utility::httpToGrpcStatus` (after grpc/doc/http-grpc-status-mapping.md):
    /// 400 → `INTERNAL`, 401 → `UNAUTHENTICATED`, 403 → `PERMISSION_DENIED`, 404 →
    /// `UNIMPLEMENTED`, 429, 502, 503 and 504 → `UNAVAILABLE`, anything else → `UNKNOWN`.
    pub fn from_http_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::Internal,
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 => Self::Unimplemented,
            429 | 502 | 503 | 504 => Self::Unavailable,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for GrpcStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------------------------------------
// Error
// ---------------------------------------------------------------------------------------------

/// Every outcome the mesh itself produces, from any layer.
///
/// Each variant documents the [`Layer`] that produces it, the status, the response flag(s) and
/// the body of its [`to_response`](Error::to_response). Hosts and subsets are `Arc<str>` so a
/// layer can hand out the snapshot's names without allocating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No route of the host's VirtualService matches the request (Istio: a host with a
    /// VirtualService but no matching `http` route). Layer `route`; 404, `NR`. Envoy answers
    /// with an empty body; we say what happened.
    #[error("no route matches the request to {host}")]
    NoRoute {
        /// The host whose routes were tried.
        host: Arc<str>,
    },

    /// The request cannot be routed as sent: a path Envoy's normalisation rejects (a NUL
    /// byte), or no authority at all. Layer `route`; 400, no flag (Envoy answers such requests
    /// from its connection manager before routing).
    #[error("bad request: {reason}")]
    BadRequest {
        /// What is wrong with the request.
        reason: Cow<'static, str>,
    },

    /// The authority names no service in the registry and the mesh's
    /// `outboundTrafficPolicy.mode` is `REGISTRY_ONLY`. Istio sends such requests to its
    /// `block_all` route, a direct 502 (the `BlackHoleCluster`), so Envoy sets no response flag
    /// (its access log shows `-` and `direct_response`). Layer `route`; 502, no flag.
    #[error(
        "{host} is not a service in the mesh registry and outboundTrafficPolicy is REGISTRY_ONLY"
    )]
    RegistryOnly {
        /// The request's authority (host, without the port).
        host: Arc<str>,
    },

    /// The route's destination names no known cluster: a host absent from the registry, or a
    /// `subset` no DestinationRule defines. Layer `cluster`; 503, `NC`. Envoy's body is empty;
    /// ours names the missing host or subset.
    #[error("cluster not found: {}", missing_cluster(host, subset.as_deref()))]
    ClusterNotFound {
        /// The destination host.
        host: Arc<str>,
        /// The destination subset, when the route names one.
        subset: Option<Arc<str>>,
    },

    /// The destination has no endpoint to send to: none registered, none matching the subset's
    /// labels, or all ejected. Layer `balance`; 503, `UH`, body `no healthy upstream`.
    #[error("no healthy upstream for {}", Destination(host, subset.as_deref()))]
    NoHealthyUpstream {
        /// The destination host.
        host: Arc<str>,
        /// The destination subset, if any.
        subset: Option<Arc<str>>,
    },

    /// A circuit breaker refused the request: a DestinationRule `connectionPool` limit is
    /// reached. Layer `cluster`; 503, `UO`, body
    /// `upstream connect error or disconnect/reset before headers. reset reason: overflow`.
    #[error("upstream overflow for {}: {limit} reached", Destination(host, subset.as_deref()))]
    Overflow {
        /// The destination host.
        host: Arc<str>,
        /// The destination subset, if any.
        subset: Option<Arc<str>>,
        /// The Istio field whose limit was reached, e.g.
        /// `connectionPool.http.http1MaxPendingRequests`.
        limit: &'static str,
    },

    /// The upstream did not answer in time: VirtualService `timeout`, or
    /// `retries.perTryTimeout` for a try that is not retried. Layer `timeout`; 504, `UT`, body
    /// `upstream request timeout`.
    #[error("upstream request timeout after {timeout:?}")]
    Timeout {
        /// The timeout that fired.
        timeout: Duration,
    },

    /// The upstream request failed before its response started: the connection could not be
    /// made (`UF`), closed (`UC`), the stream was reset (`UR`) or the response was malformed
    /// (`UPE`). Layer `connect`; 503 (502 for a protocol error), body
    /// `upstream connect error or disconnect/reset before headers. reset reason: <reason>`
    /// followed by `, transport failure reason: <detail>` when there is one.
    #[error("upstream reset before response started: {}", reset_text(*reason, transport_failure.as_deref()))]
    UpstreamReset {
        /// Why.
        reason: ResetReason,
        /// What the transport reported (`delayed connect error: 111`, a TLS failure), if known.
        transport_failure: Option<String>,
    },

    /// VirtualService `retries.attempts` were all used and the last try failed too. Layer
    /// `retry`; flags `URX` plus the last try's own (`UF,URX`).
    ///
    /// The status is the last upstream response's when the last try got one (`last_status`),
    /// else the last try's error's (503 after a reset, 504 after a per-try timeout), else 503.
    /// After a reset the body is Envoy's `upstream connect error or disconnect/reset before
    /// headers. retried and the latest reset reason: <reason>`.
    #[error("retry limit exceeded after {retries} retries{}", last_outcome(*last_status, source.as_deref()))]
    RetryLimitExceeded {
        /// Retries made (not counting the first try), as Istio's `retries.attempts` counts.
        retries: u32,
        /// The status of the last upstream response, when the last try got one.
        last_status: Option<StatusCode>,
        /// The last try's error, when it got no response.
        #[source]
        source: Option<Box<Error>>,
    },

    /// VirtualService `fault.abort` fired. Layer `fault`; `FI`, body `fault filter abort`.
    ///
    /// Envoy's pairing: an `httpStatus` abort is `(status, None)`; a `grpcStatus` abort is
    /// `(200, Some(code))`, so a gRPC caller gets that `grpc-status` and (as in Envoy) a plain
    /// HTTP caller gets a 200 carrying the `fault filter abort` body.
    #[error("fault injected: abort with {}", abort_text(*status, *grpc_status))]
    FaultAbort {
        /// `fault.abort.httpStatus`, or 200 for a `grpcStatus` abort.
        status: StatusCode,
        /// `fault.abort.grpcStatus`, if that is what was configured.
        grpc_status: Option<GrpcStatus>,
    },

    /// An AuthorizationPolicy denied the request (a DENY rule matched, or no ALLOW rule did).
    /// Layer `authz`; 403, body `RBAC: access denied`. Envoy's RBAC filter sets no response
    /// flag (only response code details, `rbac_access_denied_matched_policy[...]`), so neither
    /// do we; the layer header says `authz`.
    #[error("RBAC: access denied{}", policy.as_deref().map(|p| format!(" (policy {p})")).unwrap_or_default())]
    Denied {
        /// The policy that decided, for logs (`ns/name` of a DENY policy); never in the body.
        policy: Option<Arc<str>>,
    },

    /// RequestAuthentication rejected the request's JWT (present but invalid: bad signature,
    /// expired, unknown issuer, wrong audience). Layer `authn`; 401, the reason as the body as
    /// Envoy's `jwt_authn` does (`Jwt is expired`, `Jwt verification fails`), no flag.
    /// (A *missing* token is not this error: Istio lets it through to AuthorizationPolicy.)
    #[error("unauthenticated: {reason}")]
    Unauthenticated {
        /// Envoy's wording of the JWT failure, e.g. `Jwt verification fails`.
        reason: Cow<'static, str>,
    },

    /// The configuration was refused (a reload that failed validation keeps the old snapshot
    /// and returns this). Layer `mesh`; 500 if it ever reaches a response, no flag.
    #[error("invalid mesh config: {}", config_text(.0))]
    Config(Vec<ValidationError>),

    /// An I/O error outside a request (reading config files, a watcher). Layer `mesh`; 500.
    #[error(transparent)]
    Io(#[from] std::io::Error),

    /// An error no layer classified (an inner service's own error). Layer `mesh`; 500.
    /// [`Error::from`] a [`BoxError`] unwraps a boxed `Error` or `io::Error` instead of landing
    /// here.
    #[error(transparent)]
    Other(BoxError),
}

impl From<BoxError> for Error {
    /// Recovers a boxed [`Error`] (a tower stack boxes errors between layers) or
    /// `std::io::Error`; anything else becomes [`Error::Other`].
    fn from(err: BoxError) -> Self {
        match err.downcast::<Error>() {
            Ok(err) => *err,
            Err(err) => match err.downcast::<std::io::Error>() {
                Ok(io) => Error::Io(*io),
                Err(other) => Error::Other(other),
            },
        }
    }
}

const RESET_PREFIX: &str = "upstream connect error or disconnect/reset before headers. ";

impl Error {
    /// The layer that produced it.
    pub fn layer(&self) -> Layer {
        match self {
            Error::NoRoute { .. } | Error::RegistryOnly { .. } | Error::BadRequest { .. } => {
                Layer::Route
            }
            Error::ClusterNotFound { .. } | Error::Overflow { .. } => Layer::Cluster,
            Error::NoHealthyUpstream { .. } => Layer::Balance,
            Error::Timeout { .. } => Layer::Timeout,
            Error::UpstreamReset { .. } => Layer::Connect,
            Error::RetryLimitExceeded { .. } => Layer::Retry,
            Error::FaultAbort { .. } => Layer::Fault,
            Error::Denied { .. } => Layer::Authz,
            Error::Unauthenticated { .. } => Layer::Authn,
            Error::Config(_) | Error::Io(_) | Error::Other(_) => Layer::Mesh,
        }
    }

    /// The response flags Envoy would log for it (empty where Envoy sets none).
    pub fn flags(&self) -> ResponseFlags {
        match self {
            Error::NoRoute { .. } => ResponseFlag::NoRouteFound.into(),
            Error::ClusterNotFound { .. } => ResponseFlag::NoClusterFound.into(),
            Error::NoHealthyUpstream { .. } => ResponseFlag::NoHealthyUpstream.into(),
            Error::Overflow { .. } => ResponseFlag::UpstreamOverflow.into(),
            Error::Timeout { .. } => ResponseFlag::UpstreamRequestTimeout.into(),
            Error::UpstreamReset { reason, .. } => reason.flag().into(),
            Error::RetryLimitExceeded { source, .. } => {
                let own = ResponseFlags::from(ResponseFlag::UpstreamRetryLimitExceeded);
                source.as_ref().map_or(own, |s| own.union(s.flags()))
            }
            Error::FaultAbort { .. } => ResponseFlag::FaultInjected.into(),
            Error::RegistryOnly { .. }
            | Error::BadRequest { .. }
            | Error::Denied { .. }
            | Error::Unauthenticated { .. }
            | Error::Config(_)
            | Error::Io(_)
            | Error::Other(_) => ResponseFlags::empty(),
        }
    }

    /// The HTTP status of its response to a plain HTTP caller.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::NoRoute { .. } => StatusCode::NOT_FOUND,
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::RegistryOnly { .. } => StatusCode::BAD_GATEWAY,
            Error::ClusterNotFound { .. }
            | Error::NoHealthyUpstream { .. }
            | Error::Overflow { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Error::UpstreamReset { reason, .. } => reason.status(),
            Error::RetryLimitExceeded {
                last_status,
                source,
                ..
            } => match (last_status, source) {
                (Some(status), _) => *status,
                (None, Some(source)) => source.status(),
                (None, None) => StatusCode::SERVICE_UNAVAILABLE,
            },
            Error::FaultAbort { status, .. } => *status,
            Error::Denied { .. } => StatusCode::FORBIDDEN,
            Error::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Error::Config(_) | Error::Io(_) | Error::Other(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `grpc-status` of its response to a gRPC caller: a fault's configured `grpcStatus`,
    /// otherwise [`GrpcStatus::from_http_status`] of [`Error::status`].
    pub fn grpc_status(&self) -> GrpcStatus {
        match self {
            Error::FaultAbort {
                grpc_status: Some(code),
                ..
            } => *code,
            Error::RetryLimitExceeded {
                last_status: None,
                source: Some(source),
                ..
            } => source.grpc_status(),
            _ => GrpcStatus::from_http_status(self.status()),
        }
    }

    /// The plain-text body (and, percent-encoded, the gRPC `grpc-message`).
    fn body(&self) -> Cow<'static, str> {
        match self {
            Error::NoHealthyUpstream { .. } => "no healthy upstream".into(),
            Error::Overflow { .. } => Cow::Borrowed(
                "upstream connect error or disconnect/reset before headers. reset reason: overflow",
            ),
            Error::Timeout { .. } => "upstream request timeout".into(),
            Error::UpstreamReset {
                reason,
                transport_failure,
            } => format!(
                "{RESET_PREFIX}reset reason: {}",
                reset_text(*reason, transport_failure.as_deref())
            )
            .into(),
            Error::RetryLimitExceeded {
                last_status,
                source,
                ..
            } => match (last_status, source.as_deref()) {
                (
                    None,
                    Some(Error::UpstreamReset {
                        reason,
                        transport_failure,
                    }),
                ) => format!(
                    "{RESET_PREFIX}retried and the latest reset reason: {}",
                    reset_text(*reason, transport_failure.as_deref())
                )
                .into(),
                (None, Some(source)) => source.body(),
                _ => "upstream retry limit exceeded".into(),
            },
            Error::FaultAbort { .. } => "fault filter abort".into(),
            Error::Denied { .. } => "RBAC: access denied".into(),
            Error::Unauthenticated { reason } => reason.clone(),
            Error::NoRoute { .. }
            | Error::RegistryOnly { .. }
            | Error::ClusterNotFound { .. }
            | Error::BadRequest { .. } => self.to_string().into(),
            Error::Config(_) | Error::Io(_) | Error::Other(_) => "mesh internal error".into(),
        }
    }

    /// The response Envoy would give for this outcome.
    ///
    /// For a plain HTTP caller (`grpc: false`): [`Error::status`], `content-type: text/plain`
    /// and a short body. For a gRPC caller (`grpc: true`, see [`is_grpc_request`]): a
    /// trailers-only response as Envoy's local replies are, i.e. HTTP 200, `content-type:
    /// application/grpc`, [`Error::grpc_status`] in `grpc-status`, the body text
    /// percent-encoded in `grpc-message`, and an empty body (so HTTP/2 ends the stream on the
    /// headers). Either way the response carries [`FLAG_HEADER`] and [`LAYER_HEADER`], and a
    /// [`ResponseFlags`] and the [`Layer`] in its extensions.
    pub fn to_response(&self, grpc: bool) -> Response<Full<Bytes>> {
        let flags = self.flags();
        let layer = self.layer();
        let body = self.body();
        let mut resp = if grpc {
            let mut resp = Response::new(Full::new(Bytes::new()));
            let headers = resp.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            headers.insert(
                GRPC_STATUS,
                HeaderValue::from(u16::from(self.grpc_status().code())),
            );
            if !body.is_empty() {
                // Always visible ASCII after encoding, so this cannot fail.
                if let Ok(message) = HeaderValue::from_str(&encode_grpc_message(&body)) {
                    headers.insert(GRPC_MESSAGE, message);
                }
            }
            resp
        } else {
            let bytes = match body {
                Cow::Borrowed(s) => Bytes::from_static(s.as_bytes()),
                Cow::Owned(s) => Bytes::from(s),
            };
            let mut resp = Response::new(Full::new(bytes));
            *resp.status_mut() = self.status();
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            resp
        };
        let headers = resp.headers_mut();
        headers.insert(FLAG_HEADER, flags.header_value());
        headers.insert(LAYER_HEADER, HeaderValue::from_static(layer.as_str()));
        resp.extensions_mut().insert(flags);
        resp.extensions_mut().insert(layer);
        resp
    }
}

/// Whether a request is gRPC, as Envoy decides (`Grpc::Common::hasGrpcContentType`): its
/// `content-type` is `application/grpc` or starts with `application/grpc+` (`+proto`,
/// `+json`). `application/grpc-web` is not gRPC. The comparison ignores ASCII case.
///
/// Pass `req.headers()` or `&parts.headers`.
pub fn is_grpc_request(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return false;
    };
    let value = value.as_bytes();
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && (value.len() == GRPC.len() || value[GRPC.len()] == b'+')
}

// ---------------------------------------------------------------------------------------------
// Text helpers
// ---------------------------------------------------------------------------------------------

/// Percent-encodes a `grpc-message` as the gRPC HTTP/2 spec requires: every byte of the UTF-8
/// text outside `0x20..=0x7E`, and `%` itself, becomes `%XX` (upper-case hex).
fn encode_grpc_message(text: &str) -> Cow<'_, str> {
    let unreserved = |b: u8| (0x20..=0x7e).contains(&b) && b != b'%';
    if text.bytes().all(unreserved) {
        return Cow::Borrowed(text);
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(text.len() + 8);
    for b in text.bytes() {
        if unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    Cow::Owned(out)
}

/// `host` or `host (subset v1)`.
struct Destination<'a>(&'a str, Option<&'a str>);

impl fmt::Display for Destination<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(subset) => write!(f, "{} (subset {subset})", self.0),
            None => f.write_str(self.0),
        }
    }
}

fn missing_cluster(host: &str, subset: Option<&str>) -> String {
    match subset {
        Some(subset) => {
            format!("subset {subset} of {host} is not defined by any DestinationRule")
        }
        None => format!("{host} is not a known service"),
    }
}

fn reset_text(reason: ResetReason, transport_failure: Option<&str>) -> String {
    match transport_failure {
        Some(detail) => format!("{reason}, transport failure reason: {detail}"),
        None => reason.as_str().to_owned(),
    }
}

fn last_outcome(last_status: Option<StatusCode>, source: Option<&Error>) -> String {
    match (last_status, source) {
        (Some(status), _) => format!(", last upstream status {}", status.as_u16()),
        (None, Some(err)) => format!(", last try: {err}"),
        (None, None) => String::new(),
    }
}

fn abort_text(status: StatusCode, grpc_status: Option<GrpcStatus>) -> String {
    match grpc_status {
        Some(code) => format!("gRPC status {code} ({})", code.code()),
        None => format!("HTTP status {}", status.as_u16()),
    }
}

fn config_text(problems: &[ValidationError]) -> String {
    match problems {
        [] => "no details".to_owned(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;
    use std::future::Future as _;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    /// The body of a `Full`, read synchronously (it is always ready).
    fn body_of(resp: Response<Full<Bytes>>) -> String {
        let mut body = resp.into_body();
        let mut cx = Context::from_waker(Waker::noop());
        let mut out = Vec::new();
        loop {
            let mut next = body.frame();
            match Pin::new(&mut next).poll(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        out.extend_from_slice(&data);
                    }
                }
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => break,
                Poll::Pending => panic!("Full is always ready"),
            }
        }
        String::from_utf8(out).expect("utf-8 body")
    }

    fn header<'a>(resp: &'a Response<Full<Bytes>>, name: &str) -> Option<&'a str> {
        resp.headers().get(name).and_then(|v| v.to_str().ok())
    }

    fn host(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    const REVIEWS: &str = "reviews.default.svc.cluster.local";

    /// One of each variant, with what its plain HTTP response must be:
    /// (error, status, flag header, layer header, body).
    fn cases() -> Vec<(Error, u16, &'static str, &'static str, String)> {
        vec![
            (
                Error::NoRoute {
                    host: host(REVIEWS),
                },
                404,
                "NR",
                "route",
                format!("no route matches the request to {REVIEWS}"),
            ),
            (
                Error::RegistryOnly {
                    host: host("example.com"),
                },
                502,
                "-",
                "route",
                "example.com is not a service in the mesh registry and outboundTrafficPolicy is \
                 REGISTRY_ONLY"
                    .to_owned(),
            ),
            (
                Error::ClusterNotFound {
                    host: host(REVIEWS),
                    subset: Some(host("v3")),
                },
                503,
                "NC",
                "cluster",
                format!(
                    "cluster not found: subset v3 of {REVIEWS} is not defined by any \
                     DestinationRule"
                ),
            ),
            (
                Error::NoHealthyUpstream {
                    host: host(REVIEWS),
                    subset: None,
                },
                503,
                "UH",
                "balance",
                "no healthy upstream".to_owned(),
            ),
            (
                Error::Overflow {
                    host: host(REVIEWS),
                    subset: Some(host("v1")),
                    limit: "connectionPool.http.http1MaxPendingRequests",
                },
                503,
                "UO",
                "cluster",
                "upstream connect error or disconnect/reset before headers. reset reason: \
                 overflow"
                    .to_owned(),
            ),
            (
                Error::Timeout {
                    timeout: Duration::from_millis(1500),
                },
                504,
                "UT",
                "timeout",
                "upstream request timeout".to_owned(),
            ),
            (
                Error::UpstreamReset {
                    reason: ResetReason::ConnectionFailure,
                    transport_failure: Some("delayed connect error: 111".to_owned()),
                },
                503,
                "UF",
                "connect",
                "upstream connect error or disconnect/reset before headers. reset reason: \
                 remote connection failure, transport failure reason: delayed connect error: 111"
                    .to_owned(),
            ),
            (
                Error::UpstreamReset {
                    reason: ResetReason::ConnectionTermination,
                    transport_failure: None,
                },
                503,
                "UC",
                "connect",
                "upstream connect error or disconnect/reset before headers. reset reason: \
                 connection termination"
                    .to_owned(),
            ),
            (
                Error::RetryLimitExceeded {
                    retries: 2,
                    last_status: None,
                    source: Some(Box::new(Error::UpstreamReset {
                        reason: ResetReason::ConnectionFailure,
                        transport_failure: None,
                    })),
                },
                503,
                "UF,URX",
                "retry",
                "upstream connect error or disconnect/reset before headers. retried and the \
                 latest reset reason: remote connection failure"
                    .to_owned(),
            ),
            (
                Error::FaultAbort {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    grpc_status: None,
                },
                503,
                "FI",
                "fault",
                "fault filter abort".to_owned(),
            ),
            (
                Error::Denied {
                    policy: Some(host("foo/deny-all")),
                },
                403,
                "-",
                "authz",
                "RBAC: access denied".to_owned(),
            ),
            (
                Error::Unauthenticated {
                    reason: "Jwt is expired".into(),
                },
                401,
                "-",
                "authn",
                "Jwt is expired".to_owned(),
            ),
            (
                Error::Config(Vec::new()),
                500,
                "-",
                "mesh",
                "mesh internal error".to_owned(),
            ),
            (
                Error::Io(std::io::Error::other("disk on fire")),
                500,
                "-",
                "mesh",
                "mesh internal error".to_owned(),
            ),
            (
                Error::Other("inner service broke".into()),
                500,
                "-",
                "mesh",
                "mesh internal error".to_owned(),
            ),
        ]
    }

    #[test]
    fn each_variant_answers_with_envoys_status_body_flag_and_layer() {
        for (err, status, flag, layer, body) in cases() {
            let resp = err.to_response(false);
            assert_eq!(resp.status().as_u16(), status, "{err:?}");
            assert_eq!(header(&resp, "x-tower-mesh-flag"), Some(flag), "{err:?}");
            assert_eq!(header(&resp, "x-tower-mesh-layer"), Some(layer), "{err:?}");
            assert_eq!(header(&resp, "content-type"), Some("text/plain"), "{err:?}");
            assert!(header(&resp, "grpc-status").is_none(), "{err:?}");
            assert_eq!(
                resp.extensions()
                    .get::<ResponseFlags>()
                    .map(|f| f.to_string()),
                Some(flag.to_owned()),
                "{err:?}"
            );
            assert_eq!(
                resp.extensions().get::<Layer>().map(|l| l.as_str()),
                Some(layer),
                "{err:?}"
            );
            assert_eq!(body_of(resp), body, "{err:?}");
        }
    }

    #[test]
    fn each_variant_maps_to_envoys_grpc_status_in_a_trailers_only_response() {
        let expected = [
            (404, GrpcStatus::Unimplemented),
            (502, GrpcStatus::Unavailable),
            (503, GrpcStatus::Unavailable),
            (504, GrpcStatus::Unavailable),
            (403, GrpcStatus::PermissionDenied),
            (401, GrpcStatus::Unauthenticated),
            (500, GrpcStatus::Unknown),
        ];
        for (err, status, flag, layer, body) in cases() {
            let want = expected
                .iter()
                .find(|(s, _)| *s == status)
                .map(|(_, g)| *g)
                .expect("every status has an expected gRPC code");
            assert_eq!(err.grpc_status(), want, "{err:?}");
            let resp = err.to_response(true);
            assert_eq!(resp.status(), StatusCode::OK, "{err:?}");
            assert_eq!(header(&resp, "content-type"), Some("application/grpc"));
            let code = want.code().to_string();
            assert_eq!(header(&resp, "grpc-status"), Some(code.as_str()), "{err:?}");
            assert_eq!(header(&resp, "x-tower-mesh-flag"), Some(flag), "{err:?}");
            assert_eq!(header(&resp, "x-tower-mesh-layer"), Some(layer), "{err:?}");
            let message = encode_grpc_message(&body).into_owned();
            assert_eq!(header(&resp, "grpc-message"), Some(message.as_str()));
            assert_eq!(body_of(resp), "", "trailers-only: no body ({err:?})");
        }
    }

    #[test]
    fn http_status_maps_to_grpc_status_as_envoy_does() {
        let cases = [
            (400, 13),
            (401, 16),
            (403, 7),
            (404, 12),
            (429, 14),
            (502, 14),
            (503, 14),
            (504, 14),
            (500, 2),
            (200, 2),
            (418, 2),
        ];
        for (http, grpc) in cases {
            let status = StatusCode::from_u16(http).expect("valid status");
            assert_eq!(GrpcStatus::from_http_status(status).code(), grpc, "{http}");
        }
    }

    #[test]
    fn grpc_fault_abort_uses_the_configured_grpc_status() {
        let err = Error::FaultAbort {
            status: StatusCode::OK,
            grpc_status: GrpcStatus::from_name("RESOURCE_EXHAUSTED"),
        };
        let resp = err.to_response(true);
        assert_eq!(header(&resp, "grpc-status"), Some("8"));
        assert_eq!(header(&resp, "grpc-message"), Some("fault filter abort"));
        assert_eq!(header(&resp, "x-tower-mesh-flag"), Some("FI"));
        // A plain HTTP caller gets Envoy's 200 with the abort body.
        let resp = err.to_response(false);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(body_of(resp), "fault filter abort");
    }

    #[test]
    fn http_fault_abort_on_a_grpc_request_maps_its_status() {
        let err = Error::FaultAbort {
            status: StatusCode::NOT_FOUND,
            grpc_status: None,
        };
        assert_eq!(err.grpc_status(), GrpcStatus::Unimplemented);
        assert_eq!(header(&err.to_response(true), "grpc-status"), Some("12"));
    }

    #[test]
    fn retry_limit_keeps_the_last_upstream_status() {
        let err = Error::RetryLimitExceeded {
            retries: 3,
            last_status: Some(StatusCode::BAD_GATEWAY),
            source: None,
        };
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(err.flags().to_string(), "URX");
        assert_eq!(err.grpc_status(), GrpcStatus::Unavailable);
        assert_eq!(
            err.to_string(),
            "retry limit exceeded after 3 retries, last upstream status 502"
        );
        assert_eq!(
            body_of(err.to_response(false)),
            "upstream retry limit exceeded"
        );
    }

    #[test]
    fn retry_limit_without_outcome_is_503() {
        let err = Error::RetryLimitExceeded {
            retries: 0,
            last_status: None,
            source: None,
        };
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.flags().to_string(), "URX");
    }

    #[test]
    fn retry_limit_after_a_per_try_timeout_is_504_ut_urx() {
        let err = Error::RetryLimitExceeded {
            retries: 1,
            last_status: None,
            source: Some(Box::new(Error::Timeout {
                timeout: Duration::from_millis(100),
            })),
        };
        assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(err.flags().to_string(), "UT,URX");
        assert_eq!(err.layer(), Layer::Retry);
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(body_of(err.to_response(false)), "upstream request timeout");
    }

    #[test]
    fn reset_reasons_map_to_envoys_flags_and_statuses() {
        let cases = [
            (ResetReason::ConnectionFailure, "UF", 503),
            (ResetReason::ConnectionTimeout, "UF", 503),
            (ResetReason::ConnectionTermination, "UC", 503),
            (ResetReason::RemoteReset, "UR", 503),
            (ResetReason::ProtocolError, "UPE", 502),
        ];
        for (reason, flag, status) in cases {
            let err = Error::UpstreamReset {
                reason,
                transport_failure: None,
            };
            assert_eq!(err.flags().to_string(), flag);
            assert_eq!(err.status().as_u16(), status);
            assert_eq!(err.layer(), Layer::Connect);
        }
    }

    #[test]
    fn grpc_message_percent_encodes_non_ascii_and_percent() {
        assert_eq!(encode_grpc_message("plain text ok"), "plain text ok");
        assert!(matches!(
            encode_grpc_message("no escapes"),
            Cow::Borrowed(_)
        ));
        assert_eq!(encode_grpc_message("100%"), "100%25");
        assert_eq!(encode_grpc_message("café"), "caf%C3%A9");
        assert_eq!(encode_grpc_message("a\nb\tc"), "a%0Ab%09c");
        assert_eq!(encode_grpc_message("~\u{7f}"), "~%7F");
        let err = Error::Unauthenticated {
            reason: "Jwt für 100% ungültig".into(),
        };
        let resp = err.to_response(true);
        assert_eq!(
            header(&resp, "grpc-message"),
            Some("Jwt f%C3%BCr 100%25 ung%C3%BCltig")
        );
    }

    #[test]
    fn flags_display_in_envoys_order_joined_by_commas() {
        let flags: ResponseFlags = [
            ResponseFlag::UpstreamRetryLimitExceeded,
            ResponseFlag::UpstreamConnectionFailure,
        ]
        .into_iter()
        .collect();
        assert_eq!(flags.to_string(), "UF,URX");
        assert_eq!(format!("{flags:?}"), "ResponseFlags(UF,URX)");
        assert_eq!(flags.len(), 2);
        assert_eq!(ResponseFlags::empty().to_string(), "-");
        assert!(ResponseFlags::empty().is_empty());
        assert_eq!(
            ResponseFlags::from(ResponseFlag::DelayInjected).to_string(),
            "DI"
        );
        let all: ResponseFlags = ResponseFlag::ALL.into_iter().collect();
        assert_eq!(
            all.to_string(),
            "LH,UH,UT,LR,UR,UF,UC,UO,NR,DI,FI,RL,UAEX,RLSE,DC,URX,SI,IH,DPE,UMSDR,RFCF,NFCF,DT,\
             UPE,NC,OM,DF,DO,DR"
        );
        assert!(!flags.contains(ResponseFlag::NoRouteFound));
    }

    #[test]
    fn flag_codes_round_trip_and_unknown_codes_are_refused() {
        for (i, flag) in ResponseFlag::ALL.into_iter().enumerate() {
            assert_eq!(flag as usize, i, "discriminant is Envoy's bit");
            assert_eq!(ResponseFlag::from_code(flag.as_str()), Some(flag));
            assert_eq!(flag.to_string(), flag.as_str());
        }
        assert_eq!(ResponseFlag::from_code("uh"), None);
        assert_eq!(ResponseFlag::from_code("XX"), None);
        assert_eq!(ResponseFlag::from_code(""), None);
    }

    #[test]
    fn record_merges_flags_into_extensions() {
        let mut ext = Extensions::new();
        ResponseFlags::record(&mut ext, ResponseFlag::DelayInjected);
        ResponseFlags::record(&mut ext, ResponseFlag::UpstreamRetryLimitExceeded);
        assert_eq!(
            ext.get::<ResponseFlags>().map(|f| f.to_string()),
            Some("DI,URX".to_owned())
        );
    }

    #[test]
    fn grpc_status_names_and_codes_round_trip() {
        for (i, code) in GrpcStatus::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(code.code()), i);
            assert_eq!(GrpcStatus::from_name(code.name()), Some(code));
            assert_eq!(GrpcStatus::from_code(u32::from(code.code())), Some(code));
        }
        assert_eq!(GrpcStatus::from_name("unavailable"), None);
        assert_eq!(GrpcStatus::from_name("14"), None);
        assert_eq!(GrpcStatus::from_code(17), None);
        assert_eq!(GrpcStatus::Cancelled.name(), "CANCELLED");
    }

    #[test]
    fn grpc_requests_are_recognised_by_content_type_as_envoy_does() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).expect("valid"));
            is_grpc_request(&h)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(with("application/grpc+json"));
        assert!(with("Application/GRPC"));
        assert!(!with("application/grpc-web"));
        assert!(!with("application/grpc-web+proto"));
        assert!(!with("application/json"));
        assert!(!with("application/grp"));
        assert!(!is_grpc_request(&HeaderMap::new()));
        let (parts, ()) = http::Request::builder()
            .header("content-type", "application/grpc")
            .body(())
            .expect("valid request")
            .into_parts();
        assert!(is_grpc_request(&parts.headers));
    }

    #[test]
    fn boxed_errors_convert_back_without_wrapping() {
        let boxed: BoxError = Box::new(Error::NoRoute {
            host: host(REVIEWS),
        });
        assert!(matches!(Error::from(boxed), Error::NoRoute { .. }));
        let boxed: BoxError = Box::new(std::io::Error::other("x"));
        assert!(matches!(Error::from(boxed), Error::Io(_)));
        let boxed: BoxError = "something else".into();
        assert!(matches!(Error::from(boxed), Error::Other(_)));
    }

    #[test]
    fn display_messages_name_what_went_wrong() {
        let err = Error::ClusterNotFound {
            host: host("unknown.example"),
            subset: None,
        };
        assert_eq!(
            err.to_string(),
            "cluster not found: unknown.example is not a known service"
        );
        let err = Error::Overflow {
            host: host(REVIEWS),
            subset: Some(host("v1")),
            limit: "connectionPool.tcp.maxConnections",
        };
        assert_eq!(
            err.to_string(),
            format!(
                "upstream overflow for {REVIEWS} (subset v1): connectionPool.tcp.maxConnections reached"
            )
        );
        let err = Error::Denied {
            policy: Some(host("foo/deny-all")),
        };
        assert_eq!(err.to_string(), "RBAC: access denied (policy foo/deny-all)");
        let err = Error::FaultAbort {
            status: StatusCode::OK,
            grpc_status: Some(GrpcStatus::Unavailable),
        };
        assert_eq!(
            err.to_string(),
            "fault injected: abort with gRPC status UNAVAILABLE (14)"
        );
        assert_eq!(
            Error::Timeout {
                timeout: Duration::from_millis(1500)
            }
            .to_string(),
            "upstream request timeout after 1.5s"
        );
    }

    #[test]
    fn denied_body_never_names_the_policy() {
        let err = Error::Denied {
            policy: Some(host("secret-ns/secret-policy")),
        };
        assert_eq!(body_of(err.to_response(false)), "RBAC: access denied");
        let resp = err.to_response(true);
        assert_eq!(header(&resp, "grpc-message"), Some("RBAC: access denied"));
    }

    #[test]
    fn internal_errors_do_not_leak_their_details() {
        let err = Error::Io(std::io::Error::other("/etc/secret: permission denied"));
        assert_eq!(body_of(err.to_response(false)), "mesh internal error");
    }

    #[test]
    fn error_is_send_sync_static() {
        fn assert_traits<T: Send + Sync + 'static>() {}
        assert_traits::<Error>();
        assert_traits::<ResponseFlags>();
    }
}
