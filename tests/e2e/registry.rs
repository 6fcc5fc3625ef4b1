//! Endpoint sources beyond the config, through the mesh client: the builder's static map and
//! a `tower::discover::Discover` stream whose changes apply while traffic flows.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use tower::discover::Change;
use tower_mesh::Mesh;
use tower_mesh::registry::Endpoint;

use crate::routing::{flag_of, request, send};
use crate::support::Backend;
use crate::support::client::Reply;

/// A `Discover` stream fed through a channel.
struct Chan(mpsc::UnboundedReceiver<Result<Change<&'static str, Endpoint>, std::io::Error>>);

impl futures_core::Stream for Chan {
    type Item = Result<Change<&'static str, Endpoint>, std::io::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

async fn get(mesh: &Mesh, uri: &str) -> Reply {
    send(&mesh.client(), request("GET", uri, &[]))
        .await
        .unwrap_or_else(|e| panic!("GET {uri}: {e}"))
}

/// Sends requests until `done(reply)` holds (at most 10 s of 10 ms steps).
async fn eventually(mesh: &Mesh, uri: &str, done: impl Fn(&Reply) -> bool) -> Reply {
    let mut last = get(mesh, uri).await;
    for _ in 0..1000 {
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        last = get(mesh, uri).await;
    }
    last
}

#[tokio::test]
async fn static_endpoints_declare_a_service_without_config() {
    let a = Backend::start("a", &[]);
    let mesh = Mesh::builder()
        .endpoints("static.example.internal", 80, [Endpoint::new(a.addr())])
        .build()
        .expect("mesh");
    let reply = get(&mesh, "http://static.example.internal/x").await;
    assert_eq!((reply.status.as_u16(), reply.backend()), (200, Some("a")));
    assert_eq!(reply.echo().path, "/x");
}

#[tokio::test]
async fn discover_stream_changes_apply_while_traffic_flows() {
    let a = Backend::start("a", &[]);
    let b = Backend::start("b", &[]);
    let (tx, rx) = mpsc::unbounded_channel();
    let mesh = Mesh::builder()
        .discover("disc.example.internal", 80, Chan(rx))
        .build()
        .expect("mesh");
    let uri = "http://disc.example.internal/";

    // Declared, but no endpoint yet: 503 UH.
    let reply = get(&mesh, uri).await;
    assert_eq!((reply.status.as_u16(), flag_of(&reply)), (503, Some("UH")));

    tx.send(Ok(Change::Insert("a", Endpoint::new(a.addr()))))
        .expect("send");
    let reply = eventually(&mesh, uri, |r| r.status == 200).await;
    assert_eq!(reply.backend(), Some("a"));

    tx.send(Ok(Change::Insert("b", Endpoint::new(b.addr()))))
        .expect("send");
    eventually(&mesh, uri, |r| r.backend() == Some("b")).await;

    tx.send(Ok(Change::Remove("a"))).expect("send");
    // While both are present round-robin alternates, so ten b's in a row mean a is gone.
    let mut in_a_row = 0;
    for _ in 0..1000 {
        if get(&mesh, uri).await.backend() == Some("b") {
            in_a_row += 1;
            if in_a_row == 10 {
                break;
            }
        } else {
            in_a_row = 0;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(in_a_row, 10, "a was never removed");
    let before = a.hits();
    for _ in 0..20 {
        assert_eq!(get(&mesh, uri).await.backend(), Some("b"));
    }
    assert_eq!(a.hits(), before, "a removed endpoint still got traffic");
}

#[test]
fn discover_needs_a_runtime_and_says_so() {
    let (_tx, rx) = mpsc::unbounded_channel();
    let err = Mesh::builder()
        .discover("disc.example.internal", 80, Chan(rx))
        .build()
        .expect_err("no runtime");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}
