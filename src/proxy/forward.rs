//! The forwarding core of proxy mode: what a proxy does to a request between accepting it
//! and handing it to the next hop, as Envoy's HTTP connection manager does.
//!
//! [`Forward`] wraps a service over [`MeshBody`] requests (the mesh's [`MeshClient`] for a
//! sidecar's outbound traffic, a [`LocalApp`](super::LocalApp) for inbound) and, per request:
//!
//! 1. decides the **client address** ([`ClientAddr`]) from the direct peer
//!    ([`ConnectionInfo`]) and `x-forwarded-for`, trusting `numTrustedProxies` hops
//!    ([`trusted_client_addr`], Envoy's `xff_num_trusted_hops`);
//! 2. removes the **hop-by-hop headers** (RFC 9110 §7.6.1: `Connection` and every header it
//!    names, `Keep-Alive`, `Proxy-Connection`, `TE` except `trailers`, `Transfer-Encoding`,
//!    `Upgrade` unless the request upgrades, `Proxy-Authorization`) from the request and the
//!    response;
//! 3. appends the peer's address to **`x-forwarded-for`** and sets **`x-forwarded-proto`** to
//!    the downstream scheme, as Envoy does with `use_remote_address: true` (Istio's gateways;
//!    an existing `x-forwarded-proto` is kept only when a trusted proxy may have set it);
//! 4. for an HTTP/1.1 **upgrade** (WebSocket): forwards `Upgrade` and `Connection: upgrade`
//!    and, when the upstream answers `101 Switching Protocols`, joins the two upgraded
//!    connections byte for byte;
//! 5. streams both bodies (nothing is buffered here; the client's retry replay has its own
//!    cap), and answers an error of the inner service as Envoy would ([`Error::to_response`]).
//!
//! A sidecar's outbound listener is the mesh's server with a `Forward` over its client:
//!
//! ```no_run
//! # async fn run(mesh: tower_mesh::Mesh) -> std::io::Result<()> {
//! use tower_mesh::proxy::Forward;
//! use tower_mesh::server::Server;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:15001").await?;
//! Server::standalone()
//!     .serve_with_shutdown(listener, Forward::new(&mesh), std::future::pending())
//!     .await
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, PROXY_AUTHORIZATION, TE,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{Request, Response, StatusCode, Version};
use http_body::Body;
use hyper_util::rt::TokioIo;
use tower::{Layer, Service};

use crate::body::{self, MeshBody};
use crate::client::MeshClient;
use crate::error::{BoxError, Error, ResetReason, is_grpc_request};
use crate::mesh::Mesh;
use crate::server::ConnectionInfo;

/// `x-forwarded-for`: the addresses a request passed through, the original client first.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`: the scheme (`http` / `https`) the original client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The original client's address as this proxy trusts it (Envoy's "trusted client
/// address"): the direct peer, or an address from `x-forwarded-for` when
/// `numTrustedProxies` > 0 ([`trusted_client_addr`]). In the request extensions after
/// [`ClientAddrLayer`] or [`Forward`]; AuthorizationPolicy `remoteIpBlocks` and the
/// `remote.ip` condition match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

/// The client address Envoy trusts with `use_remote_address: true` and
/// `xff_num_trusted_hops: num_trusted` (Istio's `numTrustedProxies`): with 0 it is `peer`
/// (the direct downstream); with `n` > 0 it is the `n`th address from the right of the
/// `x-forwarded-for` the request arrived with (several headers count as one list in order).
/// When the list is shorter than `n`, or that entry is not an IP address, Envoy falls back to
/// `peer`, and so does this.
pub fn trusted_client_addr(headers: &HeaderMap, peer: IpAddr, num_trusted: u32) -> IpAddr {
    if num_trusted == 0 {
        return peer;
    }
    let Ok(n) = usize::try_from(num_trusted) else {
        return peer;
    };
    let entries: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    entries
        .len()
        .checked_sub(n)
        .and_then(|i| entries.get(i))
        .and_then(|e| e.parse::<IpAddr>().ok())
        .map_or(peer, |ip| ip.to_canonical())
}

/// Whether `headers` ask for an HTTP/1.1 upgrade: a `Connection` header naming `upgrade` and
/// an `Upgrade` header. Returns the `Upgrade` value.
fn requested_upgrade(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let upgrade = headers.get(UPGRADE)?;
    connection_tokens(headers)
        .any(|t| t.eq_ignore_ascii_case("upgrade"))
        .then(|| upgrade.clone())
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// The hop-by-hop headers [`remove_hop_by_hop`] looks for, in the order of [`HopScan::present`].
const HOP: [HeaderName; 7] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHORIZATION,
    TE,
];

/// What one pass over a header map's names (standard names compare as enum values) finds:
/// which of [`HOP`] it holds, and the headers [`Forward`] looks at next. Only what is there is looked up again: most
/// requests carry no hop-by-hop header, most responses only `Connection: keep-alive`.
#[derive(Clone, Copy, Debug, Default)]
struct HopScan {
    /// Per name of [`HOP`], in its order.
    present: [bool; 7],
    content_type: bool,
    forwarded_for: bool,
    forwarded_proto: bool,
}

impl HopScan {
    fn of(headers: &HeaderMap) -> HopScan {
        let mut scan = HopScan::default();
        // By the name's length first (a table lookup for a standard name): most names have a
        // length none of the looked-for ones has, the rest are compared with one or two.
        for name in headers.keys() {
            match name.as_str().len() {
                2 => scan.present[6] |= *name == TE,
                7 => scan.present[4] |= *name == UPGRADE,
                10 => {
                    scan.present[0] |= *name == CONNECTION;
                    scan.present[1] |= *name == KEEP_ALIVE;
                }
                12 => scan.content_type |= *name == CONTENT_TYPE,
                15 => scan.forwarded_for |= *name == X_FORWARDED_FOR,
                16 => scan.present[2] |= *name == PROXY_CONNECTION,
                17 => {
                    scan.present[3] |= *name == TRANSFER_ENCODING;
                    scan.forwarded_proto |= *name == X_FORWARDED_PROTO;
                }
                19 => scan.present[5] |= *name == PROXY_AUTHORIZATION,
                _ => {}
            }
        }
        scan
    }

    fn connection(&self) -> bool {
        self.present[0]
    }

    fn upgrade(&self) -> bool {
        self.present[4]
    }
}

/// Whether a `Connection` value has a token naming a header not in [`HOP`] (one that only
/// `Connection` makes hop-by-hop). The usual values (`keep-alive`, `close`) are answered
/// without splitting them.
fn names_other(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    // As sent (lower case) in one comparison each, else by any case.
    if bytes == b"keep-alive"
        || bytes == b"close"
        || bytes.eq_ignore_ascii_case(b"keep-alive")
        || bytes.eq_ignore_ascii_case(b"close")
    {
        return false;
    }
    // Not text: no tokens (as `connection_tokens` reads it).
    value.to_str().is_ok_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|t| !t.is_empty() && !removed_anyway(t))
    })
}

/// Removes the headers a `Connection` value's tokens name, but for those [`remove_scanned`]
/// deals with on its own account ([`removed_anyway`]). A token names a header by any case.
fn remove_named(headers: &mut HeaderMap, value: &HeaderValue) {
    let Ok(text) = value.to_str() else {
        return;
    };
    for token in text.split(',').map(str::trim) {
        if !token.is_empty() && !removed_anyway(token) {
            headers.remove(token);
        }
    }
}

/// Whether a `Connection` token names a header that [`remove_hop_by_hop`] removes on its
/// own account anyway (or, `te`, keeps on purpose): no lookup needed for it.
fn removed_anyway(token: &str) -> bool {
    HOP.iter().any(|h| h.as_str().eq_ignore_ascii_case(token))
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1, as Envoy does): `Connection` and the
/// headers it names, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`, `Upgrade`,
/// `Proxy-Authorization`, and `TE` unless it asks for `trailers` (then `TE: trailers` is
/// kept, as gRPC needs). The caller puts `Upgrade` back when it forwards an upgrade.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let scan = HopScan::of(headers);
    remove_scanned(headers, &scan);
}

/// [`remove_hop_by_hop`] with the pass over the entries done.
fn remove_scanned(headers: &mut HeaderMap, scan: &HopScan) {
    let [
        connection,
        keep_alive,
        proxy_connection,
        transfer_encoding,
        upgrade,
        proxy_auth,
        te,
    ] = scan.present;
    if connection {
        // The common tokens (`keep-alive`, `close`, `upgrade`) name a header removed below
        // (or none): only a token naming another header costs a removal.
        if headers.len() == headers.keys_len() {
            // One value per name: `Connection`'s only one, read once removed.
            if let Some(value) = headers.remove(CONNECTION)
                && names_other(&value)
            {
                remove_named(headers, &value);
            }
        } else {
            let all = headers.get_all(CONNECTION);
            // When one names another header, every token of every value counts.
            let naming: Vec<HeaderValue> = if all.iter().any(names_other) {
                all.iter().cloned().collect()
            } else {
                Vec::new()
            };
            headers.remove(CONNECTION);
            for value in &naming {
                remove_named(headers, value);
            }
        }
    }
    // One by one: a name is built only when its header is there.
    if keep_alive {
        headers.remove(KEEP_ALIVE);
    }
    if proxy_connection {
        headers.remove(PROXY_CONNECTION);
    }
    if transfer_encoding {
        headers.remove(TRANSFER_ENCODING);
    }
    if upgrade {
        headers.remove(UPGRADE);
    }
    if proxy_auth {
        headers.remove(PROXY_AUTHORIZATION);
    }
    if te {
        let trailers = headers
            .get_all(TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
        headers.remove(TE);
        if trailers {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
    }
}

/// Appends `peer` to `x-forwarded-for` (one header, entries joined by `,` as Envoy does) and
/// sets `x-forwarded-proto` to the downstream scheme unless a trusted proxy
/// (`num_trusted` > 0) already set it. `scan` says whether the map holds either header.
/// `last` keeps the value of a request without `x-forwarded-for` (the peer's address alone)
/// for the next one from the same peer.
fn set_forwarded(
    headers: &mut HeaderMap,
    scan: &HopScan,
    peer: IpAddr,
    tls: bool,
    num_trusted: u32,
    last: &mut Option<(IpAddr, HeaderValue)>,
) {
    if !scan.forwarded_for {
        let value = match last {
            Some((ip, value)) if *ip == peer => Some(value.clone()),
            _ => peer_value(peer).inspect(|value| *last = Some((peer, value.clone()))),
        };
        if let Some(value) = value {
            headers.insert(X_FORWARDED_FOR, value);
        }
    } else {
        let value = joined_forwarded_for(headers, peer);
        if let Ok(value) = HeaderValue::from_maybe_shared(value) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    if num_trusted == 0 || !scan.forwarded_proto {
        let proto = if tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
}

/// The `x-forwarded-for` value of a request without one: the peer's address. It is its own
/// storage: a copy of the value (a retry's, a replay's, the next request's) only counts
/// references, where a buffer of its own would be moved into a shared one first.
fn peer_value(peer: IpAddr) -> Option<HeaderValue> {
    let mut ip = IpText::default();
    push_ip(&mut ip, peer.to_canonical());
    HeaderValue::from_maybe_shared(Bytes::from_owner(ip)).ok()
}

/// The earlier `x-forwarded-for` entries and `peer`, joined, in one buffer of its exact size
/// that becomes the header value's storage as it is (no second copy, no growth on the way).
fn joined_forwarded_for(headers: &HeaderMap, peer: IpAddr) -> Bytes {
    let mut ip = IpText::default();
    push_ip(&mut ip, peer.to_canonical());
    let ip = ip.as_bytes();
    let all = headers.get_all(X_FORWARDED_FOR);
    let earlier = || {
        all.iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let len = earlier().map(|v| v.len() + 1).sum::<usize>() + ip.len();
    let mut value = Vec::with_capacity(len);
    for v in earlier() {
        value.extend_from_slice(v.as_bytes());
        value.push(b',');
    }
    value.extend_from_slice(ip);
    Bytes::from(value)
}

/// An IP address's text on the stack: at most 45 bytes (an IPv6 address with an embedded
/// IPv4 one), so building `x-forwarded-for` allocates only the header value.
struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl Default for IpText {
    fn default() -> Self {
        IpText {
            buf: [0; 48],
            len: 0,
        }
    }
}

impl AsRef<[u8]> for IpText {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl IpText {
    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Appends `ip` in its usual text form; IPv4 (the common case) without the formatting
/// machinery, which costs more than the rest of the header work on a proxied request.
fn push_ip(out: &mut IpText, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Puts the [`ClientAddr`] in a request's extensions (from its [`ConnectionInfo`] and
/// `x-forwarded-for`), for the layers between the server and [`Forward`]: the inbound
/// policy stack matches AuthorizationPolicy `remoteIpBlocks` against it.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddrLayer {
    num_trusted_proxies: u32,
}

impl ClientAddrLayer {
    /// Trusting `num_trusted_proxies` hops of `x-forwarded-for` ([`trusted_client_addr`]).
    pub fn new(num_trusted_proxies: u32) -> Self {
        ClientAddrLayer {
            num_trusted_proxies,
        }
    }
}

impl<S> Layer<S> for ClientAddrLayer {
    type Service = ClientAddrService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientAddrService {
            inner,
            num_trusted_proxies: self.num_trusted_proxies,
        }
    }
}

/// The service of [`ClientAddrLayer`].
#[derive(Debug, Clone)]
pub struct ClientAddrService<S> {
    inner: S,
    num_trusted_proxies: u32,
}

/// Inserts the [`ClientAddr`] unless one is there already; no [`ConnectionInfo`], no address.
fn insert_client_addr<B>(req: &mut Request<B>, num_trusted: u32) -> Option<IpAddr> {
    let peer = req
        .extensions()
        .get::<ConnectionInfo>()
        .map(|c| c.peer_addr.ip());
    insert_client_addr_of(req, peer, num_trusted)
}

/// [`insert_client_addr`] with the peer's address (of the [`ConnectionInfo`]) looked up.
fn insert_client_addr_of<B>(
    req: &mut Request<B>,
    peer: Option<IpAddr>,
    num_trusted: u32,
) -> Option<IpAddr> {
    if let Some(ClientAddr(ip)) = req.extensions().get::<ClientAddr>() {
        return Some(*ip);
    }
    let ip = trusted_client_addr(req.headers(), peer?, num_trusted);
    req.extensions_mut().insert(ClientAddr(ip));
    Some(ip)
}

impl<S, B> Service<Request<B>> for ClientAddrService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        insert_client_addr(&mut req, self.num_trusted_proxies);
        self.inner.call(req)
    }
}

/// Forwards requests as a proxy does ([module docs](self)) through `S`, a service over
/// [`MeshBody`] requests. Never fails: an error of `S` becomes Envoy's answer for it.
///
/// `Forward` itself is always ready. Each call asks `S` whether it is ready right now (with a
/// waker that does nothing): a ready `S` is called in place, else the call drives a clone of
/// `S` to readiness (as `oneshot` does). An `S` that reserves capacity for a call it is not
/// ready for yet keeps that reservation for the next call.
#[derive(Debug, Clone)]
pub struct Forward<S = MeshClient> {
    inner: S,
    num_trusted_proxies: u32,
    /// The `x-forwarded-for` value of the last request without one, and its peer: a server
    /// clones its service per connection, so this is usually the connection's.
    last_forwarded_for: Option<(IpAddr, HeaderValue)>,
}

impl Forward<MeshClient> {
    /// A sidecar's outbound forwarder: requests go through the mesh's client (routing by
    /// authority and every resilience layer), trusting the mesh's
    /// [`num_trusted_proxies`](Mesh::num_trusted_proxies).
    pub fn new(mesh: &Mesh) -> Self {
        Forward::with_service(mesh.client(), mesh.num_trusted_proxies())
    }
}

impl<S> Forward<S> {
    /// A forwarder over any service of [`MeshBody`] requests, trusting
    /// `num_trusted_proxies` hops of `x-forwarded-for`.
    pub fn with_service(inner: S, num_trusted_proxies: u32) -> Self {
        Forward {
            inner,
            num_trusted_proxies,
            last_forwarded_for: None,
        }
    }
}

/// The future of [`Forward`].
pub type ForwardFuture =
    Pin<Box<dyn Future<Output = Result<Response<MeshBody>, Infallible>> + Send + 'static>>;

impl<S, B> Service<Request<B>> for Forward<S>
where
    S: Service<Request<MeshBody>, Response = Response<MeshBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<MeshBody>;
    type Error = Infallible;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is the inner service's, looked at per call: see `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let num_trusted = self.num_trusted_proxies;
        // The connection's facts, looked up once for the client address and x-forwarded-*.
        let conn = req
            .extensions()
            .get::<ConnectionInfo>()
            .map(|c| (c.peer_addr.ip(), c.tls));
        insert_client_addr_of(&mut req, conn.map(|(peer, _)| peer), num_trusted);
        let scan = HopScan::of(req.headers());
        let grpc = scan.content_type && is_grpc_request(req.headers());
        // No `Connection` or no `Upgrade` header: no upgrade (and no second look).
        let upgrade = if scan.connection() && scan.upgrade() {
            requested_upgrade(req.version(), req.headers())
        } else {
            None
        };
        let downstream = upgrade
            .as_ref()
            .and_then(|_| req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>());
        // In place: taking the request apart and back together moves it twice.
        remove_scanned(req.headers_mut(), &scan);
        if let Some(up) = &upgrade {
            req.headers_mut().insert(UPGRADE, up.clone());
            req.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
        if let Some((peer, tls)) = conn {
            set_forwarded(
                req.headers_mut(),
                &scan,
                peer,
                tls,
                num_trusted,
                &mut self.last_forwarded_for,
            );
        }
        let req = req.map(body::boxed);
        // Called in place when ready (the mesh's client always is): no clone, no `Oneshot`.
        let sent = crate::in_place::call(&mut self.inner, req);
        // One allocation for the whole exchange: the inner call and what the answer needs.
        Box::pin(Forwarding {
            sent,
            grpc,
            upgrade: upgrade.map(|_| downstream),
        })
    }
}

pin_project_lite::pin_project! {
    /// The response side of [`Forward`]: waits for the inner service, then cleans the
    /// response of hop-by-hop headers and, for an upgrade, joins the two connections.
    struct Forwarding<F> {
        #[pin]
        sent: F,
        grpc: bool,
        // `Some` when the request asked for an upgrade; inside, the downstream connection's
        // upgrade (`None` when the server cannot upgrade it).
        upgrade: Option<Option<hyper::upgrade::OnUpgrade>>,
    }
}

impl<F, E> Future for Forwarding<F>
where
    F: Future<Output = Result<Response<MeshBody>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<MeshBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let grpc = *this.grpc;
        let resp = match std::task::ready!(this.sent.poll(cx)) {
            Ok(resp) => resp,
            Err(err) => {
                let err = Error::from(err.into());
                return Poll::Ready(Ok(err.to_response(grpc).map(body::boxed)));
            }
        };
        Poll::Ready(Ok(answer(resp, this.upgrade.take(), grpc)))
    }
}

/// The response as it goes downstream: hop-by-hop headers removed; a `101` joined to the
/// downstream connection when the request asked for that upgrade (`upgrade`), else
/// answered as a protocol error.
fn answer(
    mut resp: Response<MeshBody>,
    upgrade: Option<Option<hyper::upgrade::OnUpgrade>>,
    grpc: bool,
) -> Response<MeshBody> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upstream_upgrade = if switching {
        resp.headers().get(UPGRADE).cloned()
    } else {
        None
    };
    remove_hop_by_hop(resp.headers_mut());
    if switching {
        match (upgrade, upstream_upgrade) {
            (Some(Some(downstream)), Some(protocol)) => {
                let upstream = hyper::upgrade::on(&mut resp);
                resp.headers_mut().insert(UPGRADE, protocol);
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("upgrade"));
                tokio::spawn(join_upgraded(downstream, upstream));
            }
            _ => {
                // A 101 nobody asked for (or without `Upgrade`) cannot be relayed.
                let err = Error::UpstreamReset {
                    reason: ResetReason::ProtocolError,
                    transport_failure: Some(
                        "upstream switched protocols without an upgrade request".into(),
                    ),
                };
                return err.to_response(grpc).map(body::boxed);
            }
        }
    }
    resp
}

/// Waits for both sides of an upgrade and copies bytes both ways until either closes.
async fn join_upgraded(downstream: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (down, up) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed before the tunnel opened");
            return;
        }
    };
    let mut down = TokioIo::new(down);
    let mut up = TokioIo::new(up);
    match tokio::io::copy_bidirectional(&mut down, &mut up).await {
        Ok((sent, received)) => {
            tracing::debug!(sent, received, "upgraded connection closed");
        }
        Err(e) => tracing::debug!(error = %e, "upgraded connection ended with an error"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ip_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.100.255",
            "192.168.9.99",
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
            "1111:2222:3333:4444:5555:6666:255.255.255.255",
        ] {
            let ip: std::net::IpAddr = ip.parse().expect("an address");
            let mut out = super::IpText::default();
            super::push_ip(&mut out, ip);
            assert_eq!(out.as_bytes(), ip.to_string().as_bytes());
        }
    }

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an ip")
    }

    #[test]
    fn client_addr_is_the_peer_without_trusted_hops() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 2.2.2.2")]);
        assert_eq!(trusted_client_addr(&h, ip("9.9.9.9"), 0), ip("9.9.9.9"));
    }

    #[test]
    fn client_addr_counts_trusted_hops_from_the_right() {
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1, 2.2.2.2"),
            ("x-forwarded-for", "3.3.3.3"),
        ]);
        let peer = ip("9.9.9.9");
        assert_eq!(trusted_client_addr(&h, peer, 1), ip("3.3.3.3"));
        assert_eq!(trusted_client_addr(&h, peer, 2), ip("2.2.2.2"));
        assert_eq!(trusted_client_addr(&h, peer, 3), ip("1.1.1.1"));
        // Fewer entries than trusted hops, or junk: the peer (Envoy's fallback).
        assert_eq!(trusted_client_addr(&h, peer, 4), peer);
        let junk = headers(&[("x-forwarded-for", "not-an-ip,,")]);
        assert_eq!(trusted_client_addr(&junk, peer, 1), peer);
        assert_eq!(trusted_client_addr(&junk, peer, u32::MAX), peer);
        assert_eq!(trusted_client_addr(&HeaderMap::new(), peer, 1), peer);
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, x-secret, TE"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic abc"),
            ("te", "trailers, deflate;q=0.5"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept", "te"]);
        assert_eq!(h.get(TE).map(HeaderValue::as_bytes), Some(&b"trailers"[..]));
        let mut h = headers(&[("te", "gzip")]);
        remove_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn connection_removes_exactly_the_headers_it_names() {
        // The usual values name nothing else: only `Connection` (and `Keep-Alive`) go.
        for value in [
            "keep-alive",
            "Keep-Alive",
            "close",
            "Close",
            "keep-alive, upgrade",
        ] {
            let mut h = headers(&[
                ("connection", value),
                ("keep-alive", "timeout=5"),
                ("x-kept", "yes"),
            ]);
            remove_hop_by_hop(&mut h);
            let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
            assert_eq!(names, ["x-kept"], "{value}");
        }
        // One value per name (`Connection` read once removed) or several: the same.
        let mut h = headers(&[
            ("connection", "X-Secret, close"),
            ("x-secret", "1"),
            ("close", "1"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);
        // A token names a header by any case, `close` included; one naming nothing, or not a
        // header name at all, removes nothing else; a second `Connection` header counts too.
        let mut h = headers(&[
            ("connection", "close"),
            ("connection", "X-Secret, x-absent, not a name"),
            ("close", "1"),
            ("x-secret", "1"),
            ("x-secret", "2"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept"]);
        // A value that is not text names nothing.
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_bytes(b"x-secret\xff").expect("opaque bytes are a value"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        remove_hop_by_hop(&mut h);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-secret"]);
    }

    #[test]
    fn forwarded_for_joins_every_earlier_entry() {
        let mut h = headers(&[
            ("x-forwarded-for", " 1.1.1.1, 2.2.2.2 "),
            ("x-forwarded-for", ""),
            ("x-forwarded-for", "3.3.3.3"),
        ]);
        let scan = HopScan::of(&h);
        set_forwarded(&mut h, &scan, ip("2001:db8::1"), false, 0, &mut None);
        let all: Vec<&[u8]> = h
            .get_all(X_FORWARDED_FOR)
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        assert_eq!(all, [&b"1.1.1.1, 2.2.2.2,3.3.3.3,2001:db8::1"[..]]);
    }

    #[test]
    fn forwarded_headers_append_the_peer_and_set_the_scheme() {
        let mut h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let scan = HopScan::of(&h);
        set_forwarded(&mut h, &scan, ip("::ffff:127.0.0.1"), false, 0, &mut None);
        assert_eq!(
            h.get(X_FORWARDED_FOR).map(HeaderValue::as_bytes),
            Some(&b"1.1.1.1,127.0.0.1"[..])
        );
        // Untrusted hops cannot claim https.
        assert_eq!(
            h.get(X_FORWARDED_PROTO).map(HeaderValue::as_bytes),
            Some(&b"http"[..])
        );
        let mut h = headers(&[("x-forwarded-proto", "https")]);
        let scan = HopScan::of(&h);
        set_forwarded(&mut h, &scan, ip("10.0.0.1"), false, 1, &mut None);
        assert_eq!(
            h.get(X_FORWARDED_PROTO).map(HeaderValue::as_bytes),
            Some(&b"https"[..])
        );
        let mut h = HeaderMap::new();
        let scan = HopScan::of(&h);
        set_forwarded(&mut h, &scan, ip("10.0.0.1"), true, 1, &mut None);
        assert_eq!(
            h.get(X_FORWARDED_FOR).map(HeaderValue::as_bytes),
            Some(&b"10.0.0.1"[..])
        );
        assert_eq!(
            h.get(X_FORWARDED_PROTO).map(HeaderValue::as_bytes),
            Some(&b"https"[..])
        );
    }

    #[test]
    fn forwarded_for_of_the_last_peer_is_reused_for_it_only() {
        let xff = |h: &HeaderMap| h.get(X_FORWARDED_FOR).map(|v| v.as_bytes().to_vec());
        let mut last = None;
        for (peer, earlier, want) in [
            ("10.0.0.1", None, &b"10.0.0.1"[..]),
            ("10.0.0.1", None, b"10.0.0.1"),
            ("::ffff:10.0.0.2", None, b"10.0.0.2"),
            ("10.0.0.2", Some("1.1.1.1"), b"1.1.1.1,10.0.0.2"),
            ("::ffff:10.0.0.2", None, b"10.0.0.2"),
            ("10.0.0.1", None, b"10.0.0.1"),
        ] {
            let mut h = HeaderMap::new();
            if let Some(v) = earlier {
                h.insert(X_FORWARDED_FOR, HeaderValue::from_static(v));
            }
            let scan = HopScan::of(&h);
            set_forwarded(&mut h, &scan, ip(peer), false, 0, &mut last);
            assert_eq!(xff(&h).as_deref(), Some(want), "{peer}");
        }
    }

    #[test]
    fn the_scan_matches_names_not_just_their_lengths() {
        let h = headers(&[
            ("ab", "1"),
            ("x-upgrad", "1"),
            ("x-connect1", "1"),
            ("x-request-id", "1"),
            ("x-forwarded-fo1", "1"),
            ("x-proxy-connecti", "1"),
            ("x-forwarded-prot", "1"),
            ("x-proxy-authorizat1", "1"),
        ]);
        let scan = HopScan::of(&h);
        assert_eq!(scan.present, [false; 7]);
        assert!(!scan.content_type && !scan.forwarded_for && !scan.forwarded_proto);
        let h = headers(&[
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("connection", "x-other"),
            ("keep-alive", "1"),
            ("content-type", "application/grpc"),
            ("x-forwarded-for", "1.1.1.1"),
            ("proxy-connection", "1"),
            ("x-forwarded-proto", "https"),
            ("transfer-encoding", "chunked"),
            ("proxy-authorization", "Basic abc"),
        ]);
        let scan = HopScan::of(&h);
        assert_eq!(scan.present, [true; 7]);
        assert!(scan.content_type && scan.forwarded_for && scan.forwarded_proto);
    }

    #[test]
    fn upgrade_needs_both_headers_on_http11() {
        let h = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert!(requested_upgrade(Version::HTTP_11, &h).is_some());
        assert!(requested_upgrade(Version::HTTP_2, &h).is_none());
        let h = headers(&[("upgrade", "websocket")]);
        assert!(requested_upgrade(Version::HTTP_11, &h).is_none());
    }
}

#[cfg(test)]
mod inner_call_tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// A service ready when `ready` is set (waking the last poller then), counting its clones
    /// and calls.
    #[derive(Clone, Default)]
    struct Gated {
        ready: Arc<AtomicBool>,
        waker: Arc<Mutex<Option<std::task::Waker>>>,
        clones: Arc<AtomicUsize>,
        calls: Arc<AtomicUsize>,
    }

    /// `Gated`'s clones are counted (`Clone` derived above is for the test's own handles).
    #[derive(Default)]
    struct Counted(Gated);

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.0.clones.fetch_add(1, Ordering::SeqCst);
            Counted(self.0.clone())
        }
    }

    impl Service<Request<MeshBody>> for Counted {
        type Response = Response<MeshBody>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<MeshBody>, Infallible>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.0.ready.load(Ordering::SeqCst) {
                return Poll::Ready(Ok(()));
            }
            if let Ok(mut w) = self.0.waker.lock() {
                *w = Some(cx.waker().clone());
            }
            Poll::Pending
        }

        fn call(&mut self, _req: Request<MeshBody>) -> Self::Future {
            self.0.calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(Ok(Response::new(body::empty())))
        }
    }

    fn request() -> Request<MeshBody> {
        Request::get("http://my-app/")
            .body(body::empty())
            .expect("a request")
    }

    #[tokio::test]
    async fn a_ready_inner_service_is_called_in_place() {
        let gated = Gated::default();
        gated.ready.store(true, Ordering::SeqCst);
        let mut fwd = Forward::with_service(Counted(gated.clone()), 0);
        let resp = fwd.call(request()).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(gated.calls.load(Ordering::SeqCst), 1);
        assert_eq!(gated.clones.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_not_ready_inner_service_is_awaited_through_a_clone() {
        let gated = Gated::default();
        let mut fwd = Forward::with_service(Counted(gated.clone()), 0);
        let mut fut = fwd.call(request());
        assert!(crate::in_place::poll_once(&mut fut).await.is_none());
        assert_eq!(gated.calls.load(Ordering::SeqCst), 0);
        assert_eq!(gated.clones.load(Ordering::SeqCst), 1);
        gated.ready.store(true, Ordering::SeqCst);
        let waker = gated.waker.lock().ok().and_then(|mut w| w.take());
        waker
            .expect("the clone's readiness registered a waker")
            .wake();
        let resp = fut.await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(gated.calls.load(Ordering::SeqCst), 1);
    }
}
