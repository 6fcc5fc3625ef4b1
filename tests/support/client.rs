//! A bare hyper client over one connection, for talking to a [`Backend`](super::Backend)
//! directly (no mesh in between): the harness's own tests, and a baseline to compare with.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower_mesh::body::{self, MeshBody};

use super::{BACKEND_HEADER, Echo};

/// One client connection, HTTP/1.1 or HTTP/2 prior knowledge. Its connection task is spawned
/// on the current runtime and ends when the client is dropped or the server closes.
pub enum Client {
    /// An HTTP/1.1 connection.
    H1 {
        /// The server address (for the `Host` header).
        addr: SocketAddr,
        /// hyper's sender.
        send: http1::SendRequest<MeshBody>,
    },
    /// An HTTP/2 (h2c prior knowledge) connection.
    H2 {
        /// The server address (for the `:authority`).
        addr: SocketAddr,
        /// hyper's sender (cloneable).
        send: http2::SendRequest<MeshBody>,
    },
}

/// A response read to its end.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The version hyper reported.
    pub version: Version,
    /// The response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The trailers, if any came.
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    /// The `x-backend` header, if present.
    pub fn backend(&self) -> Option<&str> {
        self.headers
            .get(BACKEND_HEADER)
            .and_then(|v| v.to_str().ok())
    }

    /// The body parsed as the echo handler's JSON; panics when it is not one.
    pub fn echo(&self) -> Echo {
        Echo::parse(&self.body)
    }
}

impl Client {
    /// Connects with HTTP/1.1.
    pub async fn http1(addr: SocketAddr) -> std::io::Result<Client> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (send, conn) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Client::H1 { addr, send })
    }

    /// Connects with HTTP/2 prior knowledge (h2c).
    pub async fn http2(addr: SocketAddr) -> std::io::Result<Client> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Client::H2 { addr, send })
    }

    /// Another handle on the same HTTP/2 connection (`None` for HTTP/1.1, one request at a time).
    pub fn h2_clone(&self) -> Option<Client> {
        match self {
            Client::H2 { addr, send } => Some(Client::H2 {
                addr: *addr,
                send: send.clone(),
            }),
            Client::H1 { .. } => None,
        }
    }

    /// Sends `req` as given, except that a missing `Host` (HTTP/1.1) or a relative URI
    /// (HTTP/2) is filled in from the server address.
    pub async fn send(&mut self, mut req: Request<MeshBody>) -> hyper::Result<Response<Incoming>> {
        match self {
            Client::H1 { addr, send } => {
                if !req.headers().contains_key(http::header::HOST)
                    && let Ok(v) = addr.to_string().parse()
                {
                    req.headers_mut().insert(http::header::HOST, v);
                }
                send.ready().await?;
                send.send_request(req).await
            }
            Client::H2 { addr, send } => {
                if req.uri().authority().is_none() {
                    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                    if let Ok(uri) = format!("http://{addr}{pq}").parse() {
                        *req.uri_mut() = uri;
                    }
                }
                *req.version_mut() = Version::HTTP_2;
                send.ready().await?;
                send.send_request(req).await
            }
        }
    }

    /// `GET path` with extra `headers`, read to the end.
    pub async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> hyper::Result<Reply> {
        let mut req = Request::get(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body::empty()).expect("a valid test request");
        read(self.send(req).await?).await
    }
}

/// Reads a response to its end (body and trailers).
pub async fn read(resp: Response<Incoming>) -> hyper::Result<Reply> {
    let (parts, incoming) = resp.into_parts();
    let collected = incoming.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok(Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}
