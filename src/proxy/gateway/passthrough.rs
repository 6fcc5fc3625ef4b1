//! `PASSTHROUGH` servers: the connection's TLS is not terminated. The ClientHello's SNI picks
//! a server of the port, then the first VirtualService `tls` route bound to that server's
//! Gateway whose `match` covers the SNI (`sniHosts`, wildcards allowed), the listener `port`
//! and the `gateways`; a weighted destination of the route is resolved in the mesh's
//! registry, one of its endpoints chosen at random, and the bytes are copied both ways
//! (the ClientHello first). No route, no endpoint or no SNI: the connection is closed, as
//! Envoy does when no filter chain or TCP route matches.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::mesh::Mesh;
use crate::proxy::gateway::hosts::host_matches;
use crate::proxy::gateway::plan::{Plan, PortKind};
use crate::proxy::gateway::sni::{ClientHello, MAX_CLIENT_HELLO, parse_client_hello};
use crate::route::matcher::resolve_gateway_name;
use crate::snapshot::{Snapshot, Target, expand_host};

/// Where a passthrough connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Upstream {
    /// An endpoint address.
    Addr(SocketAddr),
    /// A host name and port (a ServiceEntry with `resolution: NONE`).
    Host(Arc<str>, u16),
}

/// Accepts connections on `listener` (the Gateway port `port`) until `stop` turns true, then
/// gives open connections `grace` to finish and closes the rest.
pub(crate) async fn serve(
    mesh: Mesh,
    plan: Arc<ArcSwap<Plan>>,
    port: u16,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
    handshake_timeout: Duration,
    grace: Duration,
) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(port, error = %e, "gateway accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mesh = mesh.clone();
        let plan = plan.clone();
        conns.spawn(async move {
            if let Err(e) = connection(&mesh, &plan, port, stream, handshake_timeout).await {
                tracing::debug!(port, %peer, error = %e, "gateway passthrough connection ended");
            }
        });
    }
    drop(listener);
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            port,
            ?grace,
            "passthrough connections still open after the shutdown grace period; closing them"
        );
        conns.abort_all();
    }
}

async fn connection(
    mesh: &Mesh,
    plan: &ArcSwap<Plan>,
    port: u16,
    mut client: TcpStream,
    handshake_timeout: Duration,
) -> io::Result<()> {
    let _ = client.set_nodelay(true);
    let mut hello = Vec::with_capacity(1024);
    let sni = tokio::time::timeout(handshake_timeout, async {
        loop {
            match parse_client_hello(&hello) {
                ClientHello::Complete { sni } => return Ok(sni),
                ClientHello::NotTls => return Err(io::Error::other("not a TLS ClientHello")),
                ClientHello::Incomplete if hello.len() >= MAX_CLIENT_HELLO + 5 => {
                    return Err(io::Error::other("ClientHello too large"));
                }
                ClientHello::Incomplete => {
                    if client.read_buf(&mut hello).await? == 0 {
                        return Err(io::Error::other("closed before the ClientHello"));
                    }
                }
            }
        }
    })
    .await
    .map_err(|_| io::Error::other("no ClientHello before the handshake timeout"))??;
    let sni = sni.ok_or_else(|| io::Error::other("the ClientHello has no SNI"))?;
    let snapshot = mesh.snapshot();
    let upstream = {
        let plan = plan.load();
        let Some(port_plan) = plan
            .ports
            .get(&port)
            .filter(|p| p.kind == PortKind::Passthrough)
        else {
            return Err(io::Error::other("the port has no PASSTHROUGH server"));
        };
        let Some(server) = port_plan.best_server(&sni) else {
            return Err(io::Error::other(format!(
                "no server of the port serves {sni}"
            )));
        };
        route(mesh, &snapshot, &server.gateway, port, &sni)
            .ok_or_else(|| io::Error::other(format!("no tls route for {sni}")))?
    };
    let connect = async {
        match &upstream {
            Upstream::Addr(a) => TcpStream::connect(a).await,
            Upstream::Host(h, p) => TcpStream::connect((&**h, *p)).await,
        }
    };
    let mut backend = tokio::time::timeout(handshake_timeout, connect)
        .await
        .map_err(|_| io::Error::other("connect timed out"))??;
    let _ = backend.set_nodelay(true);
    tracing::debug!(port, %sni, ?upstream, "gateway passthrough");
    backend.write_all(&hello).await?;
    tokio::io::copy_bidirectional(&mut client, &mut backend).await?;
    Ok(())
}

/// The upstream of a connection with `sni` on `gateway`'s `port`: the first matching `tls`
/// route, a weighted destination, an endpoint.
pub(crate) fn route(
    mesh: &Mesh,
    snapshot: &Snapshot,
    gateway: &str,
    port: u16,
    sni: &str,
) -> Option<Upstream> {
    let domain = &snapshot.settings().cluster_domain;
    for vs in snapshot.gateway_tls_routes() {
        for tls in &vs.tls {
            let matched = tls.matches.iter().any(|m| {
                let gateways_ok = if m.gateways.is_empty() {
                    vs.gateways.iter().any(|g| g == gateway)
                } else {
                    m.gateways
                        .iter()
                        .any(|g| resolve_gateway_name(g, &vs.namespace) == gateway)
                };
                gateways_ok
                    && m.port.is_none_or(|p| p == u32::from(port))
                    && m.sni_hosts.iter().any(|h| host_matches(h, sni))
            });
            if !matched {
                continue;
            }
            let weights: Vec<u64> = tls
                .route
                .iter()
                .map(|d| u64::try_from(d.weight).unwrap_or(0))
                .collect();
            let total: u64 = weights.iter().sum();
            let index = if total == 0 {
                0
            } else {
                let mut roll = mesh.inner.dice.roll(total);
                weights
                    .iter()
                    .position(|w| {
                        if roll < *w {
                            true
                        } else {
                            roll -= w;
                            false
                        }
                    })
                    .unwrap_or(0)
            };
            let dest = tls.route.get(index)?.destination.as_ref()?;
            let host: Arc<str> = expand_host(&dest.host, &vs.namespace, domain)
                .to_ascii_lowercase()
                .into();
            let subset: Option<Arc<str>> =
                (!dest.subset.is_empty()).then(|| Arc::from(dest.subset.as_str()));
            let dest_port = dest
                .port
                .as_ref()
                .and_then(|p| u16::try_from(p.number).ok())
                .filter(|p| *p != 0);
            return match snapshot
                .target(&host, subset.as_ref(), dest_port, port)
                .ok()?
            {
                Target::Passthrough { host, port } => Some(Upstream::Host(host, port)),
                Target::Cluster(cluster) => {
                    let endpoints = cluster.endpoints().load();
                    let n = u64::try_from(endpoints.len()).ok()?;
                    let pick = usize::try_from(mesh.inner.dice.roll(n)).ok()?;
                    endpoints.get(pick).map(|e| Upstream::Addr(e.addr))
                }
            };
        }
    }
    None
}
