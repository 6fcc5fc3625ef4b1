//! The access log: one line per request in Envoy's default format, or JSON, through
//! `tracing` (target `tower_mesh::access_log`, level INFO) when the response body ends.
//!
//! Envoy's default format (what an Istio sidecar logs with `accessLogFile` and no format):
//!
//! ```text
//! [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
//! %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%
//! "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%"
//! "%UPSTREAM_HOST%"
//! ```
//!
//! (one line; `-` for anything unset). `START_TIME` is UTC with milliseconds
//! (`2026-11-24T22:23:53.123Z`), `DURATION` milliseconds from the request until the last
//! response byte, `BYTES_RECEIVED` / `BYTES_SENT` the request and response body bytes that
//! went through. `UPSTREAM_HOST` is the passthrough address when the router chose one and
//! `-` otherwise: the endpoint a cluster picked is chosen below this layer and not reported
//! back. A request whose inner service fails (rather than answering) is logged with code
//! `0`, as Envoy logs a request that got no response.
//!
//! [`AccessLogFormat::Json`] writes the same fields as one JSON object with the keys of
//! Istio's JSON access log encoding (`start_time`, `method`, `path`, `protocol`,
//! `response_code`, `response_flags`, `bytes_received`, `bytes_sent`, `duration`,
//! `upstream_service_time`, `x_forwarded_for`, `user_agent`, `request_id`, `authority`,
//! `upstream_host`), plus `route_name` and `upstream_cluster` when a [`RouteDecision`] is in
//! the request's extensions.
//!
//! ```
//! use tower::ServiceBuilder;
//! use tower_mesh::telemetry::{AccessLogLayer, AccessLogFormat, TraceLayer};
//! # fn wrap(mesh: tower_mesh::Mesh) {
//! let client = ServiceBuilder::new()
//!     .layer(TraceLayer::new())
//!     .layer(AccessLogLayer::new().format(AccessLogFormat::Json))
//!     .service(mesh.client());
//! # let _ = client;
//! # }
//! ```

use std::fmt::{self, Write as _};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::body::{self, MeshBody};
use crate::error::{BoxError, ResponseFlags};
use crate::route::RouteDecision;
use crate::snapshot::Target;

/// The target the access log is written to.
pub const TARGET: &str = "tower_mesh::access_log";

const X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");

/// How lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AccessLogFormat {
    /// Envoy's default text format (Istio's `accessLogEncoding: TEXT` without a format).
    #[default]
    Envoy,
    /// One JSON object per request (Istio's `accessLogEncoding: JSON`).
    Json,
}

/// Logs each request when its response ends ([module docs](self)).
#[derive(Clone, Copy, Debug, Default)]
pub struct AccessLogLayer {
    format: AccessLogFormat,
}

impl AccessLogLayer {
    /// A layer writing Envoy's default format.
    pub fn new() -> Self {
        AccessLogLayer::default()
    }

    /// Writes lines in `format`.
    pub fn format(mut self, format: AccessLogFormat) -> Self {
        self.format = format;
        self
    }
}

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLogService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLogService {
            format: self.format,
            inner,
        }
    }
}

/// The service of [`AccessLogLayer`]: the request body is counted on its way to the inner
/// service (as a [`MeshBody`]), the response body on its way out.
#[derive(Clone, Debug)]
pub struct AccessLogService<S> {
    format: AccessLogFormat,
    inner: S,
}

/// One request's log entry: filled at the request, completed at the response's end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// `%START_TIME%`: milliseconds since the Unix epoch.
    pub start_ms: u128,
    /// `%REQ(:METHOD)%`.
    pub method: String,
    /// `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`: path and query.
    pub path: String,
    /// `%PROTOCOL%`: `HTTP/1.1`, `HTTP/2`, …
    pub protocol: &'static str,
    /// `%RESPONSE_CODE%` (0: no response).
    pub response_code: u16,
    /// `%RESPONSE_FLAGS%`.
    pub response_flags: ResponseFlags,
    /// `%BYTES_RECEIVED%`.
    pub bytes_received: u64,
    /// `%BYTES_SENT%`.
    pub bytes_sent: u64,
    /// `%DURATION%` in milliseconds.
    pub duration_ms: u128,
    /// `%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%`.
    pub upstream_service_time: Option<String>,
    /// `%REQ(X-FORWARDED-FOR)%`.
    pub x_forwarded_for: Option<String>,
    /// `%REQ(USER-AGENT)%`.
    pub user_agent: Option<String>,
    /// `%REQ(X-REQUEST-ID)%`.
    pub request_id: Option<String>,
    /// `%REQ(:AUTHORITY)%`.
    pub authority: Option<String>,
    /// `%UPSTREAM_HOST%`.
    pub upstream_host: Option<String>,
    /// `%ROUTE_NAME%` (JSON only).
    pub route_name: Option<String>,
    /// `%UPSTREAM_CLUSTER%` (JSON only).
    pub upstream_cluster: Option<String>,
}

fn header(headers: &HeaderMap, name: impl http::header::AsHeaderName) -> Option<String> {
    headers.get(name).map(owned)
}

fn owned(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// The request headers an entry reads (each name's first value, as [`HeaderMap::get`]
/// gives it), found in one pass over the entries: cheaper than a hashed lookup per name
/// for the few headers a request carries.
#[derive(Default)]
struct LoggedHeaders<'a> {
    original_path: Option<&'a HeaderValue>,
    forwarded_for: Option<&'a HeaderValue>,
    user_agent: Option<&'a HeaderValue>,
    request_id: Option<&'a HeaderValue>,
    host: Option<&'a HeaderValue>,
}

impl<'a> LoggedHeaders<'a> {
    fn scan(headers: &'a HeaderMap) -> LoggedHeaders<'a> {
        let mut found = LoggedHeaders::default();
        for (name, value) in headers {
            let slot = if name == http::header::HOST {
                &mut found.host
            } else if name == http::header::USER_AGENT {
                &mut found.user_agent
            } else {
                match name.as_str() {
                    "x-envoy-original-path" => &mut found.original_path,
                    "x-forwarded-for" => &mut found.forwarded_for,
                    "x-request-id" => &mut found.request_id,
                    _ => continue,
                }
            };
            // The first value of the name, as `get` would give.
            slot.get_or_insert(value);
        }
        found
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "-",
    }
}

impl Entry {
    /// The request's part of the entry.
    pub fn of_request<B>(req: &Request<B>) -> Entry {
        let h = LoggedHeaders::scan(req.headers());
        let decision = req.extensions().get::<RouteDecision>();
        let path = h.original_path.map(owned).unwrap_or_else(|| {
            req.uri()
                .path_and_query()
                .map_or_else(|| req.uri().path().to_string(), |p| p.as_str().to_string())
        });
        Entry {
            start_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            method: req.method().as_str().to_string(),
            path,
            protocol: protocol(req.version()),
            x_forwarded_for: h.forwarded_for.map(owned),
            user_agent: h.user_agent.map(owned),
            request_id: h.request_id.map(owned),
            authority: req
                .uri()
                .authority()
                .map(|a| a.as_str().to_string())
                .or_else(|| h.host.map(owned)),
            upstream_host: decision.and_then(|d| match d.target() {
                Target::Passthrough { host, port } => Some(format!("{host}:{port}")),
                Target::Cluster(_) => None,
            }),
            route_name: decision
                .and_then(RouteDecision::route_name)
                .filter(|n| !n.is_empty())
                .map(str::to_string),
            upstream_cluster: decision.map(|d| match d.target() {
                Target::Cluster(c) => c.key().to_string(),
                Target::Passthrough { .. } => "PassthroughCluster".to_string(),
            }),
            ..Entry::default()
        }
    }

    /// The line in Envoy's default format (without the trailing newline).
    pub fn envoy_line(&self) -> String {
        let mut s = String::with_capacity(256);
        let _ = write!(s, "{}", EnvoyLine(self));
        s
    }

    /// The entry as one JSON object (unset fields are `null`, as in Istio's JSON log).
    pub fn json_line(&self) -> String {
        serde_json::json!({
            "start_time": rfc3339_millis(self.start_ms),
            "method": self.method,
            "path": self.path,
            "protocol": self.protocol,
            "response_code": self.response_code,
            "response_flags": self.response_flags.to_string(),
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "duration": self.duration_ms as u64,
            "upstream_service_time": self.upstream_service_time,
            "x_forwarded_for": self.x_forwarded_for,
            "user_agent": self.user_agent,
            "request_id": self.request_id,
            "authority": self.authority,
            "upstream_host": self.upstream_host,
            "route_name": self.route_name,
            "upstream_cluster": self.upstream_cluster,
        })
        .to_string()
    }
}

/// An entry in Envoy's default format, written straight to a formatter (no line built
/// first).
struct EnvoyLine<'a>(&'a Entry);

impl fmt::Display for EnvoyLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        fn dash(v: &Option<String>) -> &str {
            v.as_deref().unwrap_or("-")
        }
        write!(
            f,
            "[{}] \"{} {} {}\" {} {} {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\"",
            Rfc3339Millis(e.start_ms),
            e.method,
            e.path,
            e.protocol,
            e.response_code,
            e.response_flags,
            e.bytes_received,
            e.bytes_sent,
            e.duration_ms,
            dash(&e.upstream_service_time),
            dash(&e.x_forwarded_for),
            dash(&e.user_agent),
            dash(&e.request_id),
            dash(&e.authority),
            dash(&e.upstream_host),
        )
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the Unix epoch (UTC; Howard Hinnant's
/// days-to-civil algorithm).
pub fn rfc3339_millis(ms: u128) -> String {
    Rfc3339Millis(ms).to_string()
}

/// [`rfc3339_millis`] as a `Display`: its digits written into one buffer and out at once.
struct Rfc3339Millis(u128);

impl fmt::Display for Rfc3339Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day, h, m, s, millis) = civil(self.0);
        if !(0..=9999).contains(&year) {
            // Outside four digits: as `format!` would write it.
            return write!(
                f,
                "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z"
            );
        }
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let fields: [(usize, usize, u64); 7] = [
            (0, 4, year.unsigned_abs()),
            (5, 2, month.unsigned_abs()),
            (8, 2, day.unsigned_abs()),
            (11, 2, h.unsigned_abs()),
            (14, 2, m.unsigned_abs()),
            (17, 2, s.unsigned_abs()),
            (20, 3, u64::from(millis)),
        ];
        for (at, len, mut v) in fields {
            if let Some(digits) = out.get_mut(at..at + len) {
                for d in digits.iter_mut().rev() {
                    *d = b'0' + (v % 10) as u8;
                    v /= 10;
                }
            }
        }
        f.write_str(std::str::from_utf8(&out).unwrap_or_default())
    }
}

/// Year, month, day, hour, minute, second and millisecond of `ms` since the Unix epoch.
fn civil(ms: u128) -> (i64, i64, i64, i64, i64, i64, u32) {
    let secs = (ms / 1000) as i64;
    let millis = (ms % 1000) as u32;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, h, m, s, millis)
}

/// Writes a finished entry.
fn emit(entry: &Entry, format: AccessLogFormat) {
    match format {
        AccessLogFormat::Envoy => tracing::info!(target: TARGET, "{}", EnvoyLine(entry)),
        AccessLogFormat::Json => tracing::info!(target: TARGET, "{}", entry.json_line()),
    }
}

impl<S, B, ResB> Service<Request<B>> for AccessLogService<S>
where
    S: Service<Request<MeshBody>, Response = Response<ResB>>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<MeshBody>;
    type Error = S::Error;
    type Future = AccessLogFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let entry = Entry::of_request(&req);
        let received = Counted::default();
        let req = req.map(|b| {
            body::boxed(CountingBody {
                inner: b,
                count: received.clone(),
            })
        });
        AccessLogFuture {
            inner: self.inner.call(req),
            log: Some(Pending {
                entry,
                format: self.format,
                started: Instant::now(),
                received,
            }),
        }
    }
}

/// A shared byte count (the request body is consumed by the inner service, maybe on
/// another task).
#[derive(Clone, Debug, Default)]
struct Counted(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Counted {
    fn add(&self, n: usize) {
        self.0
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

pin_project! {
    struct CountingBody<B> {
        #[pin]
        inner: B,
        count: Counted,
    }
}

impl<B> Body for CountingBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match ready!(this.inner.poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    this.count.add(d.len());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e.into()))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

struct Pending {
    entry: Entry,
    format: AccessLogFormat,
    started: Instant,
    received: Counted,
}

impl Pending {
    fn finish(mut self, sent: u64) {
        self.entry.bytes_received = self.received.get();
        self.entry.bytes_sent = sent;
        self.entry.duration_ms = self.started.elapsed().as_millis();
        emit(&self.entry, self.format);
    }
}

pin_project! {
    /// The future of [`AccessLogService`].
    pub struct AccessLogFuture<F> {
        #[pin]
        inner: F,
        log: Option<Pending>,
    }
}

impl<F, ResB, E> Future for AccessLogFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Output = Result<Response<MeshBody>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(mut log) = this.log.take() else {
            return Poll::Ready(result.map(|r| r.map(body::boxed)));
        };
        Poll::Ready(match result {
            Ok(resp) => {
                log.entry.response_code = resp.status().as_u16();
                log.entry.response_flags = resp
                    .extensions()
                    .get::<ResponseFlags>()
                    .copied()
                    .unwrap_or_default();
                log.entry.upstream_service_time =
                    header(resp.headers(), X_ENVOY_UPSTREAM_SERVICE_TIME);
                Ok(resp.map(|b| {
                    body::boxed(LoggedBody {
                        inner: b,
                        sent: 0,
                        log: Some(log),
                    })
                }))
            }
            Err(e) => {
                log.finish(0);
                Err(e)
            }
        })
    }
}

pin_project! {
    /// Logs the entry when the response body ends (or is dropped: a client that went away).
    struct LoggedBody<B> {
        #[pin]
        inner: B,
        sent: u64,
        log: Option<Pending>,
    }

    impl<B> PinnedDrop for LoggedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(log) = this.log.take() {
                log.finish(*this.sent);
            }
        }
    }
}

impl<B> Body for LoggedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = ready!(this.inner.as_mut().poll_frame(cx));
        let end = match &polled {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    *this.sent += d.len() as u64;
                }
                this.inner.is_end_stream()
            }
            Some(Err(_)) | None => true,
        };
        if end && let Some(log) = this.log.take() {
            log.finish(*this.sent);
        }
        Poll::Ready(polled.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ResponseFlag;

    #[test]
    fn start_time_is_utc_with_milliseconds() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            rfc3339_millis(1_795_991_033_310),
            "2026-11-29T22:23:53.310Z"
        );
        assert_eq!(
            rfc3339_millis(4_102_444_799_999),
            "2099-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn start_time_digits_are_those_format_writes() {
        // Every field's width and carry, and beyond four-digit years.
        let mut ms = 0u128;
        let mut seen = 0;
        while ms < 400_000_000_000_000 {
            let (year, month, day, h, m, s, millis) = civil(ms);
            assert_eq!(
                rfc3339_millis(ms),
                format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z"),
                "{ms}"
            );
            ms = ms * 3 + 7_919;
            seen += 1;
        }
        assert!(seen > 20);
        assert_eq!(
            rfc3339_millis(253_402_300_800_000),
            "10000-01-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_millis(253_402_300_799_999),
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn logged_headers_are_the_first_value_of_each_name() {
        let mut h = HeaderMap::new();
        h.append("user-agent", HeaderValue::from_static("first"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("user-agent", HeaderValue::from_static("second"));
        h.append("x-request-id", HeaderValue::from_static("id-1"));
        h.append("x-request-id", HeaderValue::from_static("id-2"));
        let mut req = Request::new(());
        *req.headers_mut() = h;
        let e = Entry::of_request(&req);
        assert_eq!(e.user_agent.as_deref(), Some("first"));
        assert_eq!(e.request_id.as_deref(), Some("id-1"));
        assert_eq!(e.x_forwarded_for.as_deref(), Some("10.0.0.1"));
        assert_eq!(e.authority, None);
        assert_eq!(e.path, "/");
    }

    fn entry() -> Entry {
        let req = Request::post("http://my-app:8080/api?q=1")
            .header("user-agent", "curl/8")
            .header("x-request-id", "abc")
            .header("x-forwarded-for", "10.0.0.1")
            .body(())
            .expect("request");
        let mut e = Entry::of_request(&req);
        e.start_ms = 1_795_991_033_310;
        e.response_code = 503;
        e.response_flags = ResponseFlag::FaultInjected.into();
        e.bytes_received = 3;
        e.bytes_sent = 18;
        e.duration_ms = 2;
        e
    }

    #[test]
    fn the_envoy_default_line_has_every_field_in_order() {
        assert_eq!(
            entry().envoy_line(),
            "[2026-11-29T22:23:53.310Z] \"POST /api?q=1 HTTP/1.1\" 503 FI 3 18 2 - \"10.0.0.1\" \"curl/8\" \"abc\" \"my-app:8080\" \"-\""
        );
    }

    #[test]
    fn the_original_path_header_wins_and_host_is_the_authority_of_origin_form() {
        let req = Request::get("/rewritten")
            .header("x-envoy-original-path", "/original")
            .header("host", "h.example")
            .body(())
            .expect("request");
        let e = Entry::of_request(&req);
        assert_eq!(e.path, "/original");
        assert_eq!(e.authority.as_deref(), Some("h.example"));
    }

    #[test]
    fn the_json_line_names_istio_fields() {
        let v: serde_json::Value = serde_json::from_str(&entry().json_line()).expect("json");
        assert_eq!(v["response_code"], 503);
        assert_eq!(v["response_flags"], "FI");
        assert_eq!(v["path"], "/api?q=1");
        assert_eq!(v["start_time"], "2026-11-29T22:23:53.310Z");
        assert_eq!(v["upstream_host"], serde_json::Value::Null);
        assert_eq!(v["authority"], "my-app:8080");
    }
}
