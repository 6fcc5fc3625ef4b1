//! Trace propagation: W3C Trace Context and B3, and `x-request-id`, as Envoy's tracers do.
//!
//! Envoy (and so every Istio sidecar) continues the trace of the request it receives: the
//! upstream sees the same trace id and, as its parent, a new span id that stands for the
//! proxy's own span. [`TraceLayer`] does the same for each request:
//!
//! - an incoming W3C `traceparent` (and `tracestate`, forwarded untouched), else a B3 single
//!   `b3` header, else B3 multi (`x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`,
//!   `x-b3-sampled`, `x-b3-flags`) is continued in the **same format** with a new span id;
//! - without one (or with one that does not parse: malformed headers are ignored, as the W3C
//!   spec asks), a new trace is started with random ids and sent as W3C `traceparent`;
//! - `x-request-id` (a UUID version 4) is added when absent, as Envoy's
//!   `generate_request_id` does;
//! - a `tracing` span (`mesh.request`) is opened per request, naming the method, the route
//!   and destination (from the [`RouteDecision`], when the layer sits below
//!   [`RouteLayer`](crate::RouteLayer)), and the trace and span ids.
//!
//! The parsed [`TraceContext`] (the proxy's span) goes into the request's extensions for the
//! layers below it.
//!
//! ```
//! use tower_mesh::telemetry::trace::{TraceContext, TraceFormat};
//! let headers = http::HeaderMap::from_iter([(
//!     http::header::HeaderName::from_static("traceparent"),
//!     http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
//! )]);
//! let incoming = TraceContext::extract(&headers).expect("a valid traceparent");
//! assert_eq!(incoming.format, TraceFormat::W3c);
//! let ours = incoming.child(0x1234);
//! assert_eq!(ours.trace_id, incoming.trace_id);
//! assert_eq!(ours.parent_span_id, Some(incoming.span_id));
//! ```

use std::cell::Cell;
use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::route::RouteDecision;

/// `traceparent` (W3C Trace Context).
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate` (W3C Trace Context; forwarded untouched).
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// `b3` (B3 single header).
pub const B3: HeaderName = HeaderName::from_static("b3");
/// `x-b3-traceid` (B3 multi).
pub const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
/// `x-b3-spanid` (B3 multi).
pub const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
/// `x-b3-parentspanid` (B3 multi).
pub const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
/// `x-b3-sampled` (B3 multi).
pub const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
/// `x-b3-flags` (B3 multi; `1` is debug).
pub const X_B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
/// `x-request-id` (Envoy's request id).
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The header format a trace came in (and is forwarded) in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TraceFormat {
    /// W3C Trace Context `traceparent` (and `tracestate`).
    W3c,
    /// B3 single header `b3: {traceid}-{spanid}-{sampled}-{parentspanid}`.
    B3Single,
    /// B3 multi: `x-b3-traceid`, `x-b3-spanid`, `x-b3-parentspanid`, `x-b3-sampled`.
    B3Multi,
}

/// A position in a trace: a trace id and a span id in it, with the sampling decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace id (never zero). A 64-bit B3 trace id is kept in the low half.
    pub trace_id: u128,
    /// Whether the trace id was a 64-bit B3 id (it is forwarded with 16 hex digits again).
    pub short_trace_id: bool,
    /// The span id (never zero).
    pub span_id: u64,
    /// The parent span, when known (B3 carries it; W3C does not).
    pub parent_span_id: Option<u64>,
    /// The sampling decision: W3C's `sampled` flag, B3's `1`/`0`; `None` when B3 deferred it.
    pub sampled: Option<bool>,
    /// B3's debug flag (`d` / `x-b3-flags: 1`).
    pub debug: bool,
    /// The header format.
    pub format: TraceFormat,
}

impl TraceContext {
    /// The context the request carries, in the first format that parses: W3C, then B3 single,
    /// then B3 multi. Malformed headers are ignored (`None`).
    pub fn extract(headers: &HeaderMap) -> Option<TraceContext> {
        TraceHeaders::scan(headers).context()
    }

    /// A new trace (random ids, sampled, W3C).
    pub fn root() -> TraceContext {
        TraceContext {
            trace_id: random_nonzero_u128(),
            short_trace_id: false,
            span_id: random_nonzero_u64(),
            parent_span_id: None,
            sampled: Some(true),
            debug: false,
            format: TraceFormat::W3c,
        }
    }

    /// A child span of this one with id `span_id` (same trace, format and sampling; the
    /// parent is this span). `0` is not a valid span id: a random one is used instead.
    pub fn child(&self, span_id: u64) -> TraceContext {
        TraceContext {
            span_id: if span_id == 0 {
                random_nonzero_u64()
            } else {
                span_id
            },
            parent_span_id: Some(self.span_id),
            ..*self
        }
    }

    /// The trace id as lowercase hex (16 digits for a 64-bit B3 id, else 32).
    pub fn trace_id_hex(&self) -> String {
        let mut buf = [0u8; 32];
        let digits = self.write_trace_id(&mut buf);
        String::from_utf8_lossy(digits).into_owned()
    }

    /// Writes the trace id's hex digits into `buf`, returning them.
    fn write_trace_id<'a>(&self, buf: &'a mut [u8; 32]) -> &'a [u8] {
        if self.short_trace_id {
            let (digits, _) = buf.split_at_mut(16);
            digits.copy_from_slice(&hex64(self.trace_id as u64));
            digits
        } else {
            *buf = hex128(self.trace_id);
            buf
        }
    }

    /// The W3C `traceparent` value: `00-{32 hex}-{16 hex}-{2 hex}`.
    fn traceparent(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = *b"00-________________________________-________________-00";
        put(&mut out, 3, &hex128(self.trace_id));
        put(&mut out, 36, &hex64(self.span_id));
        if self.sampled.unwrap_or(false) {
            put(&mut out, 54, b"1");
        }
        out
    }

    /// This context, its span id made nonzero (a random one) if it is zero.
    fn with_nonzero_span(self) -> TraceContext {
        if self.span_id == 0 {
            TraceContext {
                span_id: random_nonzero_u64(),
                ..self
            }
        } else {
            self
        }
    }

    /// Writes this context into `headers` in its format, replacing that format's headers.
    /// (`tracestate` is left as it is; the other formats' headers too.)
    pub fn inject(&self, headers: &mut HeaderMap) {
        let mut values = Pending::default();
        self.inject_into(headers, &mut values);
        values.apply(headers);
    }

    /// [`inject`](Self::inject), the new values put in `values` (removals done at once).
    /// Hex is written by hand: this runs on every proxied request.
    fn inject_into(&self, headers: &mut HeaderMap, values: &mut Pending) {
        let span = hex64(self.span_id);
        match self.format {
            TraceFormat::W3c => values.set(TRACEPARENT, &[&self.traceparent()]),
            TraceFormat::B3Single => {
                let mut trace_buf = [0u8; 32];
                let trace = self.write_trace_id(&mut trace_buf);
                let parent: [u8; 16];
                // The grammar puts sampling before the parent: without a decision the parent
                // cannot be written either.
                let value: [&[u8]; 7] = match self.b3_sampling() {
                    None => [trace, b"-", &span, b"", b"", b"", b""],
                    Some(sampling) => match self.parent_span_id {
                        None => [trace, b"-", &span, b"-", sampling.as_bytes(), b"", b""],
                        Some(p) => {
                            parent = hex64(p);
                            let s = sampling.as_bytes();
                            [trace, b"-", &span, b"-", s, b"-", &parent]
                        }
                    },
                };
                values.set(B3, &value);
            }
            TraceFormat::B3Multi => {
                let mut trace_buf = [0u8; 32];
                let trace = self.write_trace_id(&mut trace_buf);
                values.set(X_B3_TRACEID, &[trace]);
                values.set(X_B3_SPANID, &[&span]);
                match self.parent_span_id {
                    Some(parent) => {
                        values.set(X_B3_PARENTSPANID, &[&hex64(parent)]);
                    }
                    None => {
                        headers.remove(X_B3_PARENTSPANID);
                    }
                }
                if !self.debug
                    && let Some(sampled) = self.sampled
                {
                    let v = if sampled { "1" } else { "0" };
                    values.set_static(X_B3_SAMPLED, v);
                }
                if self.debug {
                    values.set_static(X_B3_FLAGS, "1");
                }
            }
        }
    }

    fn b3_sampling(&self) -> Option<&'static str> {
        if self.debug {
            return Some("d");
        }
        self.sampled.map(|s| if s { "1" } else { "0" })
    }
}

impl fmt::Display for TraceContext {
    /// `{trace id}-{span id}` in hex.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{:016x}", self.trace_id_hex(), self.span_id)
    }
}

/// Lowercase hex of exactly `len` digits (no sign, no uppercase), as both specs write ids.
fn hex_u128(s: &str, len: usize) -> Option<u128> {
    if s.len() != len
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

fn hex_u64(s: &str) -> Option<u64> {
    hex_u128(s, 16).and_then(|v| u64::try_from(v).ok())
}

/// A B3 trace id: 16 or 32 hex digits, not zero. Returns (id, short).
fn b3_trace_id(s: &str) -> Option<(u128, bool)> {
    let (id, short) = match s.len() {
        16 => (hex_u128(s, 16)?, true),
        32 => (hex_u128(s, 32)?, false),
        _ => return None,
    };
    (id != 0).then_some((id, short))
}

/// W3C `traceparent`: `{version:2}-{trace-id:32}-{parent-id:16}-{flags:2}`. Version `ff` is
/// invalid; version `00` has exactly these four fields; a later version may append fields
/// after a `-` (the spec's forward compatibility). All-zero ids are invalid.
pub fn parse_traceparent(value: &str) -> Option<TraceContext> {
    let value = value.trim();
    let mut parts = value.splitn(5, '-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    let version = u8::try_from(hex_u128(version, 2)?).ok()?;
    if version == 0xff || (version == 0 && rest.is_some()) {
        return None;
    }
    let trace_id = hex_u128(trace, 32)?;
    let span_id = hex_u64(span)?;
    let flags = u8::try_from(hex_u128(flags, 2)?).ok()?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some(TraceContext {
        trace_id,
        short_trace_id: false,
        span_id,
        parent_span_id: None,
        sampled: Some(flags & 1 == 1),
        debug: false,
        format: TraceFormat::W3c,
    })
}

fn b3_sampling(s: &str) -> Option<(Option<bool>, bool)> {
    match s {
        "1" | "true" => Some((Some(true), false)),
        "0" | "false" => Some((Some(false), false)),
        "d" => Some((Some(true), true)),
        _ => None,
    }
}

/// B3 single: `{traceid}-{spanid}[-{sampling}[-{parentspanid}]]`. A sampling-only value
/// (`0`, `1`, `d`) carries no trace to continue and gives `None`.
pub fn parse_b3_single(value: &str) -> Option<TraceContext> {
    let mut parts = value.trim().split('-');
    let (trace_id, short_trace_id) = b3_trace_id(parts.next()?)?;
    let span_id = hex_u64(parts.next()?).filter(|s| *s != 0)?;
    let (sampled, debug) = match parts.next() {
        Some(s) => b3_sampling(s)?,
        None => (None, false),
    };
    let parent_span_id = match parts.next() {
        Some(p) => Some(hex_u64(p).filter(|p| *p != 0)?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(TraceContext {
        trace_id,
        short_trace_id,
        span_id,
        parent_span_id,
        sampled,
        debug,
        format: TraceFormat::B3Single,
    })
}

/// B3 multi headers; `x-b3-traceid` and `x-b3-spanid` are required, the others optional
/// (a malformed optional one makes the whole context malformed).
pub fn parse_b3_multi(headers: &HeaderMap) -> Option<TraceContext> {
    TraceHeaders::scan(headers).b3_multi()
}

/// The trace headers of a request (each name's first value, as [`HeaderMap::get`] gives
/// it), found in one pass over its entries: cheaper than a lookup per name, which hashes
/// the name each time, and most requests carry none of them.
#[derive(Default)]
struct TraceHeaders<'a> {
    traceparent: Option<&'a HeaderValue>,
    b3: Option<&'a HeaderValue>,
    b3_trace_id: Option<&'a HeaderValue>,
    b3_span_id: Option<&'a HeaderValue>,
    b3_parent_span_id: Option<&'a HeaderValue>,
    b3_sampled: Option<&'a HeaderValue>,
    b3_flags: Option<&'a HeaderValue>,
    request_id: bool,
}

impl<'a> TraceHeaders<'a> {
    fn scan(headers: &'a HeaderMap) -> TraceHeaders<'a> {
        let mut found = TraceHeaders::default();
        for (name, value) in headers {
            let slot = match name.as_str() {
                "traceparent" => &mut found.traceparent,
                "b3" => &mut found.b3,
                "x-b3-traceid" => &mut found.b3_trace_id,
                "x-b3-spanid" => &mut found.b3_span_id,
                "x-b3-parentspanid" => &mut found.b3_parent_span_id,
                "x-b3-sampled" => &mut found.b3_sampled,
                "x-b3-flags" => &mut found.b3_flags,
                "x-request-id" => {
                    found.request_id = true;
                    continue;
                }
                _ => continue,
            };
            // The first value of the name, as `get` would give.
            slot.get_or_insert(value);
        }
        found
    }

    /// The context, in the first format that parses: W3C, then B3 single, then B3 multi.
    fn context(&self) -> Option<TraceContext> {
        if let Some(tp) = self.traceparent.and_then(|v| v.to_str().ok())
            && let Some(ctx) = parse_traceparent(tp)
        {
            return Some(ctx);
        }
        if let Some(b3) = self.b3.and_then(|v| v.to_str().ok())
            && let Some(ctx) = parse_b3_single(b3)
        {
            return Some(ctx);
        }
        self.b3_multi()
    }

    fn b3_multi(&self) -> Option<TraceContext> {
        let get = |value: Option<&'a HeaderValue>| -> Option<&'a str> {
            value.and_then(|v| v.to_str().ok()).map(str::trim)
        };
        let (trace_id, short_trace_id) = b3_trace_id(get(self.b3_trace_id)?)?;
        let span_id = hex_u64(get(self.b3_span_id)?).filter(|s| *s != 0)?;
        let parent_span_id = match get(self.b3_parent_span_id) {
            Some(p) => Some(hex_u64(p).filter(|p| *p != 0)?),
            None => None,
        };
        let debug = match get(self.b3_flags) {
            Some("1") => true,
            Some("0") | None => false,
            Some(_) => return None,
        };
        let sampled = match get(self.b3_sampled) {
            Some(s) => b3_sampling(s).filter(|(_, d)| !d)?.0,
            None => None,
        };
        Some(TraceContext {
            trace_id,
            short_trace_id,
            span_id,
            parent_span_id,
            sampled: if debug { Some(true) } else { sampled },
            debug,
            format: TraceFormat::B3Multi,
        })
    }
}

/// The most bytes of header values one [`propagate`] writes: a B3 single value (68) and a
/// request id (36).
const PENDING_BYTES: usize = 112;

/// Header values written side by side into one buffer, which then becomes the storage of
/// all of them: one allocation for the lot, and a copy of them (a retry's, a replay's)
/// only counts references, where a value of its own would be copied into a shared buffer
/// the first time it is cloned.
#[derive(Default)]
struct Pending {
    buf: ValueBuf,
    values: [Option<(HeaderName, PendingValue)>; 5],
}

enum PendingValue {
    /// A range of the buffer.
    Written(usize, usize),
    /// A value of its own (a static one, or one that did not fit).
    Own(HeaderValue),
}

impl Pending {
    /// Sets `name` to the concatenation of `parts` (valid header value bytes).
    fn set(&mut self, name: HeaderName, parts: &[&[u8]]) {
        let value = match self.buf.append(parts) {
            Some((from, to)) => PendingValue::Written(from, to),
            None => match HeaderValue::from_bytes(&parts.concat()) {
                Ok(v) => PendingValue::Own(v),
                Err(_) => return,
            },
        };
        self.push(name, value);
    }

    fn set_static(&mut self, name: HeaderName, value: &'static str) {
        self.push(name, PendingValue::Own(HeaderValue::from_static(value)));
    }

    fn push(&mut self, name: HeaderName, value: PendingValue) {
        if let Some(slot) = self.values.iter_mut().find(|v| v.is_none()) {
            *slot = Some((name, value));
        }
    }

    /// Inserts the values into `headers`, in the order they were set.
    fn apply(self, headers: &mut HeaderMap) {
        let Pending { buf, values } = self;
        let shared = (buf.len > 0).then(|| Bytes::from_owner(buf));
        for (name, value) in values.into_iter().flatten() {
            let value = match value {
                PendingValue::Own(v) => v,
                PendingValue::Written(from, to) => {
                    let Some(shared) = &shared else { continue };
                    let Some(bytes) = shared.get(from..to) else {
                        continue;
                    };
                    match HeaderValue::from_maybe_shared(shared.slice_ref(bytes)) {
                        Ok(v) => v,
                        Err(_) => continue,
                    }
                }
            };
            headers.insert(name, value);
        }
    }
}

/// The storage of [`Pending`]'s values.
struct ValueBuf {
    bytes: [u8; PENDING_BYTES],
    len: usize,
}

impl Default for ValueBuf {
    fn default() -> Self {
        ValueBuf {
            bytes: [0; PENDING_BYTES],
            len: 0,
        }
    }
}

impl ValueBuf {
    /// Appends the concatenation of `parts`, returning its range; `None` when it does not
    /// fit (nothing is written then).
    fn append(&mut self, parts: &[&[u8]]) -> Option<(usize, usize)> {
        let from = self.len;
        let to = from + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut out = self.bytes.get_mut(from..to)?;
        for part in parts {
            let (head, rest) = out.split_at_mut(part.len());
            head.copy_from_slice(part);
            out = rest;
        }
        self.len = to;
        Some((from, to))
    }
}

impl AsRef<[u8]> for ValueBuf {
    fn as_ref(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

thread_local! {
    /// Ids need uniqueness, not secrecy: a fast generator per thread (wyrand: a multiply a
    /// word, a period of 2^64 words), seeded from the OS.
    static RNG: Cell<u64> = Cell::new(SmallRng::from_os_rng().random());
}

/// `N` random words in one visit to the generator.
fn random_words<const N: usize>() -> [u64; N] {
    RNG.with(|s| {
        let mut state = s.get();
        let words = std::array::from_fn(|_| {
            state = state.wrapping_add(0xa076_1d64_78bd_642f);
            let t = u128::from(state) * u128::from(state ^ 0xe703_7ed1_a0b4_28db);
            (t >> 64) as u64 ^ t as u64
        });
        s.set(state);
        words
    })
}

fn random_nonzero_u64() -> u64 {
    loop {
        let [v] = random_words();
        if v != 0 {
            return v;
        }
    }
}

fn random_nonzero_u128() -> u128 {
    loop {
        let [hi, lo] = random_words();
        let v = (u128::from(hi) << 64) | u128::from(lo);
        if v != 0 {
            return v;
        }
    }
}

/// `v`, or a random nonzero id when `v` is zero.
fn nonzero_u128(v: u128) -> u128 {
    if v == 0 { random_nonzero_u128() } else { v }
}

/// The length of a version-00 `traceparent` value.
const TRACEPARENT_LEN: usize = 55;
/// The length of a request id (a UUID's text form).
const REQUEST_ID_LEN: usize = 36;

/// Copies `src` into `dst` at `at` (nothing when it does not fit). Called with constant
/// offsets into arrays, so the bounds check folds away.
#[inline(always)]
fn put(dst: &mut [u8], at: usize, src: &[u8]) {
    if let Some(d) = dst.get_mut(at..at + src.len()) {
        d.copy_from_slice(src);
    }
}

/// The 8 nibbles of `x`, one a byte, most significant first (in big-endian byte order).
fn spread_nibbles(x: u32) -> u64 {
    let x = u64::from(x);
    let x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    let x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    (x | (x << 4)) & 0x0f0f_0f0f_0f0f_0f0f
}

/// Bytes of nibbles (0..=15) made lowercase hex digits, all 8 at once: `'0' + n`, and
/// `'a' - '0' - 10` more where `n >= 10` (`n + 6` carries into bit 4 exactly then). No byte
/// carries into its neighbour: every intermediate stays below 256.
fn nibbles_to_hex(n: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let letters = ((n + 6 * ONES) >> 4) & ONES;
    n + u64::from(b'0') * ONES + letters * u64::from(b'a' - b'0' - 10)
}

/// The 16 lowercase hex digits of `v`, most significant first.
fn hex64(v: u64) -> [u8; 16] {
    let hi = nibbles_to_hex(spread_nibbles((v >> 32) as u32));
    let lo = nibbles_to_hex(spread_nibbles(v as u32));
    ((u128::from(hi) << 64) | u128::from(lo)).to_be_bytes()
}

/// The 32 lowercase hex digits of `v`, most significant first.
fn hex128(v: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    put(&mut out, 0, &hex64((v >> 64) as u64));
    put(&mut out, 16, &hex64(v as u64));
    out
}

/// Lowercase hex digits of `v`, right-aligned in `out` (its length is the digit count).
#[cfg(test)]
fn put_hex(out: &mut [u8], v: u128) {
    let digits = hex128(v);
    let zeros = out.len().saturating_sub(digits.len());
    let (lead, rest) = out.split_at_mut(zeros);
    // More digits than a u128 has: leading zeros.
    lead.fill(b'0');
    if let Some(src) = digits.get(digits.len() - rest.len()..) {
        rest.copy_from_slice(src);
    }
}

/// A random UUID version 4 in its text form (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`), as
/// Envoy's `x-request-id`.
pub fn new_request_id() -> String {
    let [hi, lo] = random_words();
    let v = (u128::from(hi) << 64) | u128::from(lo);
    String::from_utf8_lossy(&request_id_text(v)).into_owned()
}

/// The UUID v4 text ([`new_request_id`]) of the random bits `v` (its version and variant
/// bits are set here).
fn request_id_text(mut v: u128) -> [u8; REQUEST_ID_LEN] {
    v = (v & !(0xf << 76)) | (0x4 << 76); // version 4: the 13th digit
    v = (v & !(0x3 << 62)) | (0x2 << 62); // RFC 4122 variant: 10xx in the 17th digit
    let hi = hex64((v >> 64) as u64);
    let lo = hex64(v as u64);
    let mut out = [b'-'; REQUEST_ID_LEN];
    // 8-4-4 from the high half, 4-12 from the low one.
    put(&mut out, 0, hi.get(..8).unwrap_or_default());
    put(&mut out, 9, hi.get(8..12).unwrap_or_default());
    put(&mut out, 14, hi.get(12..).unwrap_or_default());
    put(&mut out, 19, lo.get(..4).unwrap_or_default());
    put(&mut out, 24, lo.get(4..).unwrap_or_default());
    out
}

/// Adds trace headers and `x-request-id`, and a `tracing` span, to each request
/// ([module docs](self)).
#[derive(Clone, Debug, Default)]
pub struct TraceLayer {
    _private: (),
}

impl TraceLayer {
    /// The layer.
    pub fn new() -> Self {
        TraceLayer::default()
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService { inner }
    }
}

/// The service of [`TraceLayer`].
#[derive(Clone, Debug)]
pub struct TraceService<S> {
    inner: S,
}

/// Continues (or starts) the request's trace in its headers, adds `x-request-id` when
/// absent, and returns the context of this hop's span (also put in the extensions).
pub fn propagate<B>(req: &mut Request<B>) -> TraceContext {
    let found = TraceHeaders::scan(req.headers());
    // All the randomness a request needs, drawn at once: a trace id (two words) and a span
    // id when a trace starts here, a span id when one is continued, a request id (two words).
    let [a, b, c, d, e] = random_words();
    let ctx = match found.context() {
        Some(incoming) => incoming.child(c),
        None => TraceContext {
            trace_id: nonzero_u128((u128::from(a) << 64) | u128::from(b)),
            short_trace_id: false,
            span_id: c,
            parent_span_id: None,
            sampled: Some(true),
            debug: false,
            format: TraceFormat::W3c,
        }
        .with_nonzero_span(),
    };
    let request_id =
        (!found.request_id).then(|| request_id_text((u128::from(d) << 64) | u128::from(e)));
    let headers = req.headers_mut();
    if ctx.format == TraceFormat::W3c {
        // The common case, written straight into one buffer that becomes the storage of both
        // values: one allocation, and a copy of them (a retry's, a replay's) only counts
        // references.
        let mut buf = [0u8; TRACEPARENT_LEN + REQUEST_ID_LEN];
        put(&mut buf, 0, &ctx.traceparent());
        if let Some(id) = &request_id {
            put(&mut buf, TRACEPARENT_LEN, id);
        }
        let mut rest = Bytes::from_owner(buf);
        let traceparent = rest.split_to(TRACEPARENT_LEN);
        if let Ok(v) = HeaderValue::from_maybe_shared(traceparent) {
            headers.insert(TRACEPARENT, v);
        }
        if request_id.is_some()
            && let Ok(v) = HeaderValue::from_maybe_shared(rest)
        {
            // Absent (the scan found none): an append is the insert.
            headers.append(X_REQUEST_ID, v);
        }
    } else {
        let mut values = Pending::default();
        ctx.inject_into(headers, &mut values);
        if let Some(id) = &request_id {
            values.set(X_REQUEST_ID, &[id]);
        }
        values.apply(headers);
    }
    req.extensions_mut().insert(ctx);
    ctx
}

/// The route of the request's [`RouteDecision`], `-` without one.
fn span_route<B>(req: &Request<B>) -> &str {
    req.extensions()
        .get::<RouteDecision>()
        .and_then(RouteDecision::route_name)
        .unwrap_or("-")
}

/// The destination of the request's [`RouteDecision`], else its URI's host, else `-`.
fn span_destination<B>(req: &Request<B>) -> &str {
    match req.extensions().get::<RouteDecision>() {
        Some(d) => d.destination(),
        None => req.uri().host().unwrap_or("-"),
    }
}

impl<S, B> Service<Request<B>> for TraceService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let ctx = propagate(&mut req);
        // The fields are only looked up when the span is enabled: the macro evaluates them
        // in its enabled branch alone.
        let span = tracing::debug_span!(
            "mesh.request",
            method = %req.method(),
            route = span_route(&req),
            destination = span_destination(&req),
            trace_id = %format_args!("{}", ctx.trace_id_hex()),
            span_id = %format_args!("{:016x}", ctx.span_id),
        );
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        fut.instrument(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_parses() {
        let ctx = parse_traceparent(TP).expect("valid");
        assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(ctx.span_id, 0x00f067aa0ba902b7);
        assert_eq!(ctx.sampled, Some(true));
        // A later version may carry more fields.
        assert!(parse_traceparent(&format!("01{}-zz", &TP[2..])).is_some());
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "-",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0é-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn b3_single_parses_with_and_without_optional_fields() {
        let full =
            parse_b3_single("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90")
                .expect("valid");
        assert_eq!(full.trace_id, 0x80f198ee56343ba864fe8b2a57d3eff7);
        assert_eq!(full.span_id, 0xe457b5a2e4d86bd1);
        assert_eq!(full.sampled, Some(true));
        assert_eq!(full.parent_span_id, Some(0x05e3ac9a4f6e3b90));
        let short = parse_b3_single("a3ce929d0e0e4736-00f067aa0ba902b7").expect("valid");
        assert!(short.short_trace_id);
        assert_eq!(short.sampled, None);
        let debug = parse_b3_single("a3ce929d0e0e4736-00f067aa0ba902b7-d").expect("valid");
        assert!(debug.debug);
        for bad in [
            "0",
            "1",
            "d",
            "a3ce929d0e0e4736",
            "a3ce929d0e0e4736-00f067aa0ba902b7-x",
            "a3ce929d0e0e4736-00f067aa0ba902b7-1-",
            "a3ce929d0e0e4736-00f067aa0ba902b7-1-05e3ac9a4f6e3b90-1",
            "a3ce929d0e0e473-00f067aa0ba902b7",
            "0000000000000000-00f067aa0ba902b7",
        ] {
            assert_eq!(parse_b3_single(bad), None, "{bad:?}");
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn b3_multi_parses_and_rejects_malformed_optional_headers() {
        let h = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-parentspanid", "0020000000000001"),
            ("x-b3-sampled", "1"),
        ]);
        let ctx = parse_b3_multi(&h).expect("valid");
        assert_eq!(ctx.span_id, 0xa2fb4a1d1a96d312);
        assert_eq!(ctx.sampled, Some(true));
        let bad = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "maybe"),
        ]);
        assert_eq!(parse_b3_multi(&bad), None);
        assert_eq!(
            parse_b3_multi(&headers(&[("x-b3-spanid", "a2fb4a1d1a96d312")])),
            None
        );
    }

    #[test]
    fn a_continued_trace_is_forwarded_in_its_format_with_a_new_parent() {
        // W3C
        let mut req = Request::new(());
        req.headers_mut()
            .insert(TRACEPARENT, HeaderValue::from_static(TP));
        req.headers_mut()
            .insert(TRACESTATE, HeaderValue::from_static("congo=t61rcWkgMzE"));
        let ctx = propagate(&mut req);
        let out = req.headers()[TRACEPARENT].to_str().expect("ascii");
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"), "{out}");
        assert_ne!(&out[36..52], "00f067aa0ba902b7");
        assert_eq!(&out[36..52], format!("{:016x}", ctx.span_id));
        assert_eq!(req.headers()[TRACESTATE], "congo=t61rcWkgMzE");
        assert!(!req.headers().contains_key(B3));
        // B3 single: the incoming span becomes the parent.
        let mut req = Request::new(());
        req.headers_mut().insert(
            B3,
            HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
        );
        let ctx = propagate(&mut req);
        assert_eq!(
            req.headers()[B3].to_str().expect("ascii"),
            format!(
                "80f198ee56343ba864fe8b2a57d3eff7-{:016x}-1-e457b5a2e4d86bd1",
                ctx.span_id
            )
        );
        assert!(!req.headers().contains_key(TRACEPARENT));
        // B3 multi, 64-bit trace id kept at 64 bits.
        let mut req = Request::new(());
        *req.headers_mut() = headers(&[
            ("x-b3-traceid", "48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
        ]);
        let ctx = propagate(&mut req);
        let h = req.headers();
        assert_eq!(h[X_B3_TRACEID], "48485a3953bb6124");
        assert_eq!(
            h[X_B3_SPANID].to_str().ok(),
            Some(format!("{:016x}", ctx.span_id)).as_deref()
        );
        assert_eq!(h[X_B3_PARENTSPANID], "a2fb4a1d1a96d312");
        assert_eq!(h[X_B3_SAMPLED], "0");
    }

    #[test]
    fn a_trace_is_started_in_w3c_when_none_or_a_malformed_one_came_in() {
        for incoming in [None, Some("00-garbage"), Some("")] {
            let mut req = Request::new(());
            if let Some(v) = incoming {
                req.headers_mut()
                    .insert(TRACEPARENT, HeaderValue::from_static(v));
            }
            let ctx = propagate(&mut req);
            let out = req.headers()[TRACEPARENT]
                .to_str()
                .expect("ascii")
                .to_string();
            assert_eq!(parse_traceparent(&out), Some(ctx), "{out}");
            assert_eq!(req.headers().get_all(TRACEPARENT).iter().count(), 1);
            assert_eq!(ctx.parent_span_id, None);
            assert!(req.headers().contains_key(X_REQUEST_ID));
        }
    }

    #[test]
    fn every_format_round_trips_through_inject() {
        let base = TraceContext {
            trace_id: 0x463a_c35c_9f64_13ad_4848_5a39_53bb_6124,
            short_trace_id: false,
            span_id: 0xa2fb_4a1d_1a96_d312,
            parent_span_id: None,
            sampled: Some(false),
            debug: false,
            format: TraceFormat::W3c,
        };
        let w3c = {
            let mut h = HeaderMap::new();
            base.inject(&mut h);
            h
        };
        assert_eq!(
            w3c[TRACEPARENT],
            "00-463ac35c9f6413ad48485a3953bb6124-a2fb4a1d1a96d312-00"
        );
        assert_eq!(TraceContext::extract(&w3c), Some(base));
        let single = TraceContext {
            format: TraceFormat::B3Single,
            ..base
        };
        for ctx in [
            TraceContext {
                sampled: None,
                ..single
            },
            single,
            TraceContext {
                parent_span_id: Some(7),
                ..single
            },
            TraceContext {
                debug: true,
                sampled: Some(true),
                parent_span_id: Some(7),
                short_trace_id: true,
                trace_id: 0x4848_5a39_53bb_6124,
                ..single
            },
        ] {
            let mut h = HeaderMap::new();
            ctx.inject(&mut h);
            assert_eq!(h.len(), 1);
            assert_eq!(TraceContext::extract(&h), Some(ctx), "{:?}", h[B3]);
        }
        let multi = TraceContext {
            format: TraceFormat::B3Multi,
            ..base
        };
        for ctx in [
            multi,
            TraceContext {
                debug: true,
                sampled: Some(true),
                parent_span_id: Some(7),
                ..multi
            },
        ] {
            let mut h = headers(&[("x-b3-parentspanid", "0000000000000009")]);
            ctx.inject(&mut h);
            assert_eq!(TraceContext::extract(&h), Some(ctx), "{h:?}");
            assert_eq!(h.contains_key(X_B3_FLAGS), ctx.debug);
            assert_eq!(h.contains_key(X_B3_SAMPLED), !ctx.debug);
        }
    }

    #[test]
    fn the_first_value_of_a_trace_header_is_the_one_read() {
        // As `HeaderMap::get` reads it: a malformed first `traceparent` is not made up for
        // by a second one.
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, HeaderValue::from_static("00-garbage"));
        h.append(TRACEPARENT, HeaderValue::from_static(TP));
        assert_eq!(TraceContext::extract(&h), None);
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, HeaderValue::from_static(TP));
        h.append(TRACEPARENT, HeaderValue::from_static("00-garbage"));
        h.append(
            B3,
            HeaderValue::from_static("a3ce929d0e0e4736-00f067aa0ba902b7"),
        );
        let ctx = TraceContext::extract(&h).expect("the first traceparent");
        assert_eq!(ctx.format, TraceFormat::W3c);
    }

    #[test]
    fn propagated_values_outlive_the_request_they_were_written_into() {
        let mut req = Request::new(());
        propagate(&mut req);
        let copy = req.headers().clone();
        let (tp, id) = (copy[TRACEPARENT].clone(), copy[X_REQUEST_ID].clone());
        drop(req);
        drop(copy);
        assert_eq!(tp.len(), 55);
        assert!(parse_traceparent(tp.to_str().expect("ascii")).is_some());
        assert_eq!(id.len(), 36);
    }

    #[test]
    fn hex_is_written_as_format_writes_it() {
        for v in [
            0u128,
            1,
            0xabc,
            u128::from(u64::MAX),
            u128::MAX,
            0x0123_4567_89ab_cdef << 40,
        ] {
            let mut buf = [0u8; 32];
            put_hex(&mut buf, v);
            assert_eq!(
                std::str::from_utf8(&buf).ok(),
                Some(format!("{v:032x}").as_str())
            );
            let mut odd = [0u8; 3];
            put_hex(&mut odd, v);
            assert_eq!(
                std::str::from_utf8(&odd).ok(),
                Some(format!("{:03x}", v & 0xfff).as_str())
            );
            let mut short = [0u8; 16];
            put_hex(&mut short, u128::from(v as u64));
            assert_eq!(
                std::str::from_utf8(&short).ok(),
                Some(format!("{:016x}", v as u64).as_str())
            );
        }
    }

    #[test]
    fn word_hex_matches_format_for_every_digit_in_every_position() {
        let mut values = vec![
            0u64,
            1,
            u64::MAX,
            0x0123_4567_89ab_cdef,
            0xfedc_ba98_7654_3210,
        ];
        // Each digit 0..=15 in each of the 16 positions.
        for pos in 0..16 {
            for d in 0..16u64 {
                values.push(d << (4 * pos));
            }
        }
        values.extend(random_words::<64>());
        for v in values {
            assert_eq!(hex64(v), *format!("{v:016x}").as_bytes(), "{v:x}");
            let wide = (u128::from(v) << 64) | u128::from(v.rotate_left(13));
            assert_eq!(hex128(wide), *format!("{wide:032x}").as_bytes(), "{wide:x}");
        }
    }

    #[test]
    fn ids_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(new_request_id()));
            let [a, b, c] = random_words::<3>();
            assert!(seen.insert(format!("{a:x}-{b:x}-{c:x}")));
        }
        assert!((0..1000).all(|_| random_nonzero_u64() != 0 && random_nonzero_u128() != 0));
    }

    #[test]
    fn request_id_text_is_the_uuid_layout_of_its_bits() {
        let id = request_id_text(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        assert_eq!(&id, b"01234567-89ab-4def-bedc-ba9876543210");
        let id = request_id_text(0);
        assert_eq!(&id, b"00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn a_continued_unsampled_w3c_trace_stays_unsampled_and_keeps_its_request_id() {
        let mut req = Request::new(());
        req.headers_mut().insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        req.headers_mut()
            .insert(X_REQUEST_ID, HeaderValue::from_static("mine"));
        let ctx = propagate(&mut req);
        assert_eq!(ctx.sampled, Some(false));
        assert_eq!(ctx.parent_span_id, Some(0x00f0_67aa_0ba9_02b7));
        assert_eq!(req.extensions().get::<TraceContext>(), Some(&ctx));
        let h = req.headers();
        assert_eq!(h.get_all(TRACEPARENT).iter().count(), 1);
        assert_eq!(
            h[TRACEPARENT].to_str().ok(),
            Some(format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{:016x}-00",
                ctx.span_id
            ))
            .as_deref()
        );
        assert_eq!(h.get_all(X_REQUEST_ID).iter().count(), 1);
        assert_eq!(h[X_REQUEST_ID], "mine");
        // A started trace: the extension is the context the headers carry.
        let mut req = Request::new(());
        let ctx = propagate(&mut req);
        assert_eq!(req.extensions().get::<TraceContext>(), Some(&ctx));
        assert_eq!(TraceContext::extract(req.headers()), Some(ctx));
        assert_eq!(req.headers().get_all(X_REQUEST_ID).iter().count(), 1);
    }

    #[test]
    fn request_ids_are_uuid_v4_and_an_existing_one_is_kept() {
        let id = new_request_id();
        assert_eq!(id.len(), 36);
        let bytes = id.as_bytes();
        assert_eq!(bytes.get(14), Some(&b'4'));
        assert!(
            matches!(bytes.get(19), Some(b'8' | b'9' | b'a' | b'b')),
            "{id}"
        );
        assert_eq!(id.matches('-').count(), 4);
        for dash in [8, 13, 18, 23] {
            assert_eq!(bytes.get(dash), Some(&b'-'), "{id}");
        }
        assert!(
            id.bytes()
                .all(|b| b == b'-' || b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(new_request_id(), id);
        let mut req = Request::new(());
        req.headers_mut()
            .insert(X_REQUEST_ID, HeaderValue::from_static("mine"));
        propagate(&mut req);
        assert_eq!(req.headers()[X_REQUEST_ID], "mine");
    }
}
