//! The floor of any proxy built on hyper: a hyper HTTP/1.1 server whose service forwards each
//! request unchanged over pooled `hyper::client::conn::http1` connections, four of every five
//! requests to the first upstream and one to the second (the 80/20 split), on a
//! current-thread runtime. No routing, no header work, no retries, no metrics: what is left is
//! hyper and tokio doing the I/O. `scripts/proxy-bench` runs it beside `tower-mesh proxy` and
//! nginx, so the gap between tower-mesh and this floor is the mesh's own cost, and the gap
//! between this floor and nginx is hyper's.
//!
//! Run by the script as `proxy_floor LISTEN UPSTREAM1 UPSTREAM2` (socket addresses); with any
//! other arguments (`cargo bench` passes `--bench`) it says so and exits.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// Idle connections per upstream, reused most recently returned first.
struct Upstreams {
    addrs: [SocketAddr; 2],
    idle: [Mutex<Vec<SendRequest<Incoming>>>; 2],
    sent: AtomicUsize,
}

impl Upstreams {
    async fn forward(&self, req: Request<Incoming>) -> Result<Response<Incoming>, String> {
        let i = usize::from(self.sent.fetch_add(1, Ordering::Relaxed) % 5 == 4);
        let mut sender = loop {
            let idle = self.idle[i].lock().map_err(|e| e.to_string())?.pop();
            match idle {
                Some(mut sender) => {
                    if sender.ready().await.is_ok() {
                        break sender;
                    }
                }
                None => break self.connect(i).await?,
            }
        };
        let resp = sender.send_request(req).await.map_err(|e| e.to_string());
        // Ready again once the response body is read; `ready()` waits for that on reuse.
        self.idle[i].lock().map_err(|e| e.to_string())?.push(sender);
        resp
    }

    async fn connect(&self, i: usize) -> Result<SendRequest<Incoming>, String> {
        let addr = self.addrs[i];
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(sender)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed: Option<Vec<SocketAddr>> = (args.len() == 3)
        .then(|| args.iter().map(|a| a.parse().ok()).collect())
        .flatten();
    let Some(&[listen, up1, up2]) = parsed.as_deref() else {
        println!("proxy_floor: run by scripts/proxy-bench as `proxy_floor LISTEN UP1 UP2`");
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await.expect("bind");
        let upstreams = Arc::new(Upstreams {
            addrs: [up1, up2],
            idle: [Mutex::new(Vec::new()), Mutex::new(Vec::new())],
            sent: AtomicUsize::new(0),
        });
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let upstreams = upstreams.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let upstreams = upstreams.clone();
                    async move { upstreams.forward(req).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}
