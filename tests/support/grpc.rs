//! gRPC for end-to-end tests without protoc: hand-written prost messages, two gRPC-style
//! [`Backend`]s (plain hyper HTTP/2 servers that decode the 5-byte gRPC frame), a tiny tonic
//! transport over one hyper HTTP/2 connection, and [`echo`], the client call.
//!
//! [`echo`] is generic over the transport so the same call runs over [`H2Transport`] today and
//! over the mesh's client later: swapping is changing the first argument.

use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use tower_mesh::body::{self, MeshBody};

use super::{Backend, BoxFuture, Handler, Protocols};

/// `grpc.examples.echo.EchoRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    /// The text to echo.
    #[prost(string, tag = "1")]
    pub message: String,
}

/// `grpc.examples.echo.EchoResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    /// The echoed text.
    #[prost(string, tag = "1")]
    pub message: String,
}

/// The method [`echo`] calls and the echo backend serves.
pub const ECHO_PATH: &str = "/grpc.examples.echo.Echo/UnaryEcho";

/// The `grpc-message` of [`start_unavailable`]'s answer.
pub const UNAVAILABLE_MESSAGE: &str = "backend is unavailable";

/// An HTTP/2-only backend answering [`ECHO_PATH`] with the request's message, prefixed by
/// `"<name>: "`, and trailers `grpc-status: 0`. Another path → trailers-only
/// `grpc-status: 12` (UNIMPLEMENTED); a malformed frame → `grpc-status: 13` (INTERNAL).
pub fn start_echo(name: &str) -> Backend {
    let prefix: std::sync::Arc<str> = std::sync::Arc::from(name);
    let handler: Handler = std::sync::Arc::new(move |req| {
        let prefix = prefix.clone();
        Box::pin(async move { echo_handler(&prefix, req).await }) as BoxFuture<_>
    });
    Backend::start_with(name, Protocols::H2Only, handler)
}

/// An HTTP/2-only backend answering every call trailers-only with `grpc-status: 14`
/// (UNAVAILABLE) and `grpc-message:` [`UNAVAILABLE_MESSAGE`].
pub fn start_unavailable(name: &str) -> Backend {
    let handler: Handler = std::sync::Arc::new(|_req| {
        Box::pin(async { trailers_only(14, UNAVAILABLE_MESSAGE) }) as BoxFuture<_>
    });
    Backend::start_with(name, Protocols::H2Only, handler)
}

async fn echo_handler(prefix: &str, req: Request<Incoming>) -> Response<MeshBody> {
    if req.uri().path() != ECHO_PATH {
        return trailers_only(12, "unknown method");
    }
    let Ok(collected) = req.into_body().collect().await else {
        return trailers_only(13, "request body failed");
    };
    let Some(request) = decode_frame::<EchoRequest>(&collected.to_bytes()) else {
        return trailers_only(13, "malformed gRPC frame");
    };
    let reply = EchoReply {
        message: format!("{prefix}: {}", request.message),
    };
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let body = http_body_util::Full::new(encode_frame(&reply))
        .map_err(|never| match never {})
        .with_trailers(async move { Some(Ok(trailers)) });
    let mut resp = Response::new(body::boxed(body));
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    resp
}

/// A trailers-only gRPC answer: HTTP 200, `grpc-status` in the headers, no body.
fn trailers_only(status: u16, message: &'static str) -> Response<MeshBody> {
    let mut resp = Response::new(body::empty());
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(status));
    headers.insert("grpc-message", HeaderValue::from_static(message));
    resp
}

/// One uncompressed gRPC length-prefixed message: flag 0, big-endian u32 length, bytes.
pub fn encode_frame<M: Message>(msg: &M) -> Bytes {
    let len = msg.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).expect("a small test message"));
    msg.encode(&mut buf).expect("BytesMut grows");
    buf.freeze()
}

/// Decodes exactly one uncompressed frame; `None` for anything else.
pub fn decode_frame<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    let (&flag, rest) = bytes.split_first()?;
    let (len, payload) = rest.split_first_chunk::<4>()?;
    if flag != 0 || usize::try_from(u32::from_be_bytes(*len)).ok()? != payload.len() {
        return None;
    }
    M::decode(payload).ok()
}

/// The simplest tonic transport: one hyper HTTP/2 (prior knowledge) connection. A request
/// without an authority is sent to the connected address as `http://<addr>`.
#[derive(Clone)]
pub struct H2Transport {
    addr: SocketAddr,
    send: http2::SendRequest<MeshBody>,
}

impl H2Transport {
    /// Connects to `addr`; the connection task runs on the current runtime until the last
    /// clone of the transport is dropped.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<H2Transport> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(H2Transport { addr, send })
    }
}

impl tower::Service<Request<tonic::body::Body>> for H2Transport {
    type Response = Response<Incoming>;
    type Error = hyper::Error;
    type Future = BoxFuture<hyper::Result<Response<Incoming>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        let mut req = req.map(body::boxed);
        if req.uri().authority().is_none() {
            let pq = req.uri().path_and_query().map_or("/", PathAndQuery::as_str);
            if let Ok(uri) = format!("http://{}{pq}", self.addr).parse::<Uri>() {
                *req.uri_mut() = uri;
            }
        }
        Box::pin(self.send.send_request(req))
    }
}

/// Calls [`ECHO_PATH`] with `msg` over `transport` and returns the reply's message. Requests
/// carry only a path (tonic's default origin): the transport supplies the authority.
pub async fn echo<T>(transport: T, msg: &str) -> Result<String, tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tower_mesh::error::BoxError>,
{
    echo_with_origin(transport, Uri::default(), msg).await
}

/// [`echo`] with tonic's `origin`: requests go to `origin`'s scheme and authority (e.g.
/// `http://echo.default.svc.cluster.local:50051`), as a tonic `Channel` would send them.
pub async fn echo_with_origin<T>(
    transport: T,
    origin: Uri,
    msg: &str,
) -> Result<String, tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tower_mesh::error::BoxError>,
{
    let mut grpc = tonic::client::Grpc::with_origin(transport, origin);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("transport not ready: {}", e.into())))?;
    let codec = tonic_prost::ProstCodec::<EchoRequest, EchoReply>::default();
    let request = tonic::Request::new(EchoRequest {
        message: msg.to_owned(),
    });
    let reply = grpc
        .unary(request, PathAndQuery::from_static(ECHO_PATH), codec)
        .await?;
    Ok(reply.into_inner().message)
}
