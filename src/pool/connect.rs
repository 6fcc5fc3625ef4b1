//! The connector slot: how a pool opens a transport to one endpoint.
//!
//! A [`Pool`](super::Pool) never opens sockets itself; it asks its [`Connect`] for a
//! [`Connected`] transport to a [`ConnectTarget`]. [`TcpConnector`] (the default) opens plain
//! TCP; [`TlsConnector`](crate::tls::TlsConnector) originates (m)TLS for the target's
//! [`TlsPolicy`] and reports the negotiated ALPN protocol.
//!
//! The pool, not the connector, enforces Istio's `connectionPool.tcp.connectTimeout` (default
//! 10 s) around the whole [`Connect::connect`] call, because one connector serves every
//! destination while the timeout is per destination ([`PoolSettings`](super::PoolSettings)).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::error::{BoxError, Error, ResetReason};
use crate::tls::Originate;

/// The TLS a connection to an endpoint originates: part of a [`PoolKey`](super::PoolKey), so
/// endpoints reached with different TLS settings never share connections.
///
/// Istio's DestinationRule `trafficPolicy.tls` (`mode: DISABLE | SIMPLE | MUTUAL |
/// ISTIO_MUTUAL`, default: auto mTLS, i.e. `ISTIO_MUTUAL` towards mesh workloads) decides it;
/// [`Originate::from_settings`](crate::tls::Originate::from_settings) compiles a `tls` block.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum TlsPolicy {
    /// No TLS: `tls.mode: DISABLE`, or a destination outside the mesh reached in plaintext.
    #[default]
    Plaintext,
    /// Originate TLS as described ([`Originate`]: `ISTIO_MUTUAL`, `MUTUAL`, `SIMPLE`), compared
    /// and hashed by content. A TLS-capable [`Connect`] such as
    /// [`TlsConnector`](crate::tls::TlsConnector) originates it; connectors that cannot
    /// refuse it ([`TcpConnector`] does, with a clear error).
    Tls(Arc<Originate>),
}

impl fmt::Display for TlsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsPolicy::Plaintext => f.write_str("plaintext"),
            TlsPolicy::Tls(origin) => write!(f, "tls({origin})"),
        }
    }
}

/// The HTTP protocol a pool speaks to its endpoint.
///
/// Istio picks it from the Service port's protocol (`http`, `http2`, `grpc`, ...) and the
/// DestinationRule `connectionPool.http.h2UpgradePolicy` / `useClientProtocol` (default:
/// HTTP/1.1 for `http` ports, HTTP/2 for `http2`/`grpc` ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1, one request at a time per connection.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c on plaintext): one shared multiplexed connection.
    Http2,
    /// HTTP/2 if the connector negotiates `h2` by ALPN ([`Connected::alpn_h2`]), else
    /// HTTP/1.1. Plaintext connections never negotiate, so they are HTTP/1.1. Once a pool
    /// has negotiated `h2` it stays on HTTP/2: a later reconnect goes straight to the HTTP/2
    /// handshake.
    Alpn,
}

/// Where to connect: given to [`Connect::connect`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectTarget {
    /// The endpoint's address.
    pub addr: SocketAddr,
    /// The name to present: the TLS SNI, and the authority host of the request that caused
    /// the connect (the endpoint IP when the request had none).
    pub server_name: Arc<str>,
    /// The TLS to originate.
    pub tls: TlsPolicy,
    /// The protocol the pool will speak (a TLS connector offers ALPN `h2` for
    /// [`UpstreamProtocol::Http2`] and [`UpstreamProtocol::Alpn`]).
    pub protocol: UpstreamProtocol,
}

/// A byte stream a connector returns: any tokio `AsyncRead + AsyncWrite` that is `Send`.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// An open transport to an endpoint, as returned by a [`Connect`].
pub struct Connected {
    pub(crate) io: Box<dyn Io>,
    /// Whether TLS ALPN negotiated `h2`: an [`UpstreamProtocol::Alpn`] pool then speaks
    /// HTTP/2 on it. Always `false` for plaintext.
    pub alpn_h2: bool,
}

impl Connected {
    /// Wraps an open stream; `alpn_h2` tells whether ALPN negotiated `h2`.
    pub fn new(io: impl Io, alpn_h2: bool) -> Self {
        Connected {
            io: Box::new(io),
            alpn_h2,
        }
    }
}

impl fmt::Debug for Connected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connected")
            .field("alpn_h2", &self.alpn_h2)
            .finish_non_exhaustive()
    }
}

/// The future a [`Connect`] returns.
pub type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<Connected, BoxError>> + Send + 'static>>;

/// The connector slot of a pool: opens a transport to a [`ConnectTarget`].
///
/// Errors should be a boxed [`Error::UpstreamReset`] (`ConnectionFailure`, or
/// `ConnectionTimeout` for a timeout the connector enforces itself); a boxed `io::Error` is
/// mapped as [`TcpConnector`]'s are, anything else becomes a `ConnectionFailure` carrying its
/// message as the transport failure reason.
pub trait Connect: Send + Sync + 'static {
    /// Opens a transport to `target`.
    fn connect(&self, target: &ConnectTarget) -> ConnectFuture;
}

/// The default connector: plaintext TCP with `TCP_NODELAY` (as Envoy sets on upstream
/// connections).
///
/// The connect timeout (Istio `connectionPool.tcp.connectTimeout`, default 10 s) is enforced
/// by the pool around this connector. A target asking for [`TlsPolicy::Tls`] is refused with
/// `UpstreamReset { reason: ConnectionFailure }` naming the policy: plaintext is never
/// silently substituted for TLS.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl TcpConnector {
    /// A plaintext TCP connector.
    pub fn new() -> Self {
        TcpConnector
    }
}

impl Connect for TcpConnector {
    fn connect(&self, target: &ConnectTarget) -> ConnectFuture {
        let addr = target.addr;
        let tls = target.tls.clone();
        Box::pin(async move {
            if let TlsPolicy::Tls(origin) = tls {
                return Err(Box::new(Error::UpstreamReset {
                    reason: ResetReason::ConnectionFailure,
                    transport_failure: Some(format!(
                        "TLS policy {origin} needs a TLS-capable connector; TcpConnector only \
                         connects in plaintext"
                    )),
                }) as BoxError);
            }
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| Box::new(connect_io_error(&e)) as BoxError)?;
            // Best effort: a socket that refuses NODELAY still works.
            let _ = stream.set_nodelay(true);
            Ok(Connected::new(stream, false))
        })
    }
}

/// Envoy's wording for a failed connect: `delayed connect error: 111` (the errno), or the
/// error's text when there is no errno.
pub(crate) fn connect_io_error(err: &io::Error) -> Error {
    let reason = if err.kind() == io::ErrorKind::TimedOut {
        ResetReason::ConnectionTimeout
    } else {
        ResetReason::ConnectionFailure
    };
    let detail = match err.raw_os_error() {
        Some(code) => format!("delayed connect error: {code}"),
        None => format!("delayed connect error: {err}"),
    };
    Error::UpstreamReset {
        reason,
        transport_failure: Some(detail),
    }
}

/// Maps whatever a [`Connect`] failed with to an [`Error`].
pub(crate) fn connect_error(err: BoxError) -> Error {
    match err.downcast::<Error>() {
        Ok(err) => *err,
        Err(err) => match err.downcast::<io::Error>() {
            Ok(io) => connect_io_error(&io),
            Err(other) => Error::UpstreamReset {
                reason: ResetReason::ConnectionFailure,
                transport_failure: Some(other.to_string()),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_carry_the_errno_as_envoy_prints_it() {
        let err = connect_io_error(&io::Error::from_raw_os_error(111));
        match err {
            Error::UpstreamReset {
                reason,
                transport_failure,
            } => {
                assert_eq!(reason, ResetReason::ConnectionFailure);
                assert_eq!(
                    transport_failure.as_deref(),
                    Some("delayed connect error: 111")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = connect_io_error(&io::Error::from(io::ErrorKind::TimedOut));
        assert!(matches!(
            err,
            Error::UpstreamReset {
                reason: ResetReason::ConnectionTimeout,
                ..
            }
        ));
    }

    #[test]
    fn connector_errors_map_to_upstream_resets() {
        let own: BoxError = Box::new(Error::UpstreamReset {
            reason: ResetReason::ConnectionTimeout,
            transport_failure: None,
        });
        assert!(matches!(
            connect_error(own),
            Error::UpstreamReset {
                reason: ResetReason::ConnectionTimeout,
                ..
            }
        ));
        let other: BoxError = "handshake failed: bad certificate".into();
        match connect_error(other) {
            Error::UpstreamReset {
                reason: ResetReason::ConnectionFailure,
                transport_failure: Some(detail),
            } => assert_eq!(detail, "handshake failed: bad certificate"),
            e => panic!("unexpected {e:?}"),
        }
    }

    #[tokio::test]
    async fn tcp_connector_refuses_tls_policies_clearly() {
        let target = ConnectTarget {
            addr: SocketAddr::from(([127, 0, 0, 1], 9)),
            server_name: "reviews".into(),
            tls: TlsPolicy::Tls(Arc::new(Originate::istio_mutual([]))),
            protocol: UpstreamProtocol::Http1,
        };
        let err = match TcpConnector.connect(&target).await {
            Err(e) => connect_error(e),
            Ok(_) => panic!("TcpConnector must not connect for a TLS policy"),
        };
        let text = err.to_string();
        assert!(text.contains("ISTIO_MUTUAL"), "{text}");
        assert!(text.contains("TLS-capable connector"), "{text}");
    }
}
