//! gRPC over a plain hyper HTTP/2 connection: a tonic unary call gets the OK reply and the
//! UNAVAILABLE status through. The transport is the first argument of `echo`; swapping it for
//! the mesh's client is a one-line change.

use crate::support::client::Client;
use crate::support::grpc::{
    self, EchoReply, EchoRequest, H2Transport, UNAVAILABLE_MESSAGE, decode_frame, echo,
    encode_frame,
};
use std::sync::Arc;

use crate::support::{Backend, BoxFuture, Handler, Protocols};
use tower_mesh::body;

#[tokio::test]
async fn tonic_unary_call_gets_the_reply() {
    let backend = grpc::start_echo("grpc-a");
    let transport = H2Transport::connect(backend.addr()).await.expect("connect");
    let reply = echo(transport, "hello").await;
    assert_eq!(reply.ok().as_deref(), Some("grpc-a: hello"));
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn tonic_unary_call_gets_unavailable_from_a_trailers_only_answer() {
    let backend = grpc::start_unavailable("grpc-down");
    let transport = H2Transport::connect(backend.addr()).await.expect("connect");
    let status = echo(transport, "hello").await.expect_err("UNAVAILABLE");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.message(), UNAVAILABLE_MESSAGE);
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn one_transport_carries_many_calls_on_one_connection() {
    let backend = grpc::start_echo("grpc-a");
    let transport = H2Transport::connect(backend.addr()).await.expect("connect");
    for i in 0..5 {
        let msg = format!("m{i}");
        let reply = echo(transport.clone(), &msg).await;
        assert_eq!(reply.ok(), Some(format!("grpc-a: {msg}")));
    }
    assert_eq!(backend.hits(), 5);
    assert_eq!(backend.connections(), 1);
}

#[tokio::test]
async fn echo_with_origin_sends_the_origin_authority() {
    // A backend that answers every call with its :authority as the grpc-message.
    let handler: Handler = Arc::new(|req: http::Request<_>| {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        Box::pin(async move {
            let mut resp = http::Response::new(body::empty());
            resp.headers_mut()
                .insert("content-type", "application/grpc".parse().expect("value"));
            resp.headers_mut()
                .insert("grpc-status", "5".parse().expect("value"));
            resp.headers_mut()
                .insert("grpc-message", authority.parse().expect("value"));
            resp
        }) as BoxFuture<_>
    });
    let backend = Backend::start_with("authority", Protocols::H2Only, handler);

    let transport = H2Transport::connect(backend.addr()).await.expect("connect");
    let origin: http::Uri = "http://echo.default.svc.cluster.local:50051"
        .parse()
        .expect("uri");
    let status = grpc::echo_with_origin(transport.clone(), origin, "x")
        .await
        .expect_err("NOT_FOUND");
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "echo.default.svc.cluster.local:50051");

    // Without an origin the transport fills in the connected address.
    let status = echo(transport, "x").await.expect_err("NOT_FOUND");
    assert_eq!(status.message(), backend.addr().to_string());
}

#[tokio::test]
async fn the_grpc_backend_answers_unimplemented_for_another_method() {
    let backend = grpc::start_echo("grpc-a");
    let mut client = Client::http2(backend.addr()).await.expect("connect");
    let req = http::Request::post("/other.Service/Method")
        .header("content-type", "application/grpc")
        .body(body::full(encode_frame(&EchoRequest {
            message: "x".into(),
        })))
        .expect("request");
    let reply = crate::support::client::read(client.send(req).await.expect("response"))
        .await
        .expect("body");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["grpc-status"], "12");
    assert_eq!(reply.backend(), Some("grpc-a"));
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn the_grpc_backend_frames_its_reply_and_sends_status_trailers() {
    let backend = grpc::start_echo("grpc-a");
    let mut client = Client::http2(backend.addr()).await.expect("connect");
    let req = http::Request::post(grpc::ECHO_PATH)
        .header("content-type", "application/grpc")
        .body(body::full(encode_frame(&EchoRequest {
            message: "raw".into(),
        })))
        .expect("request");
    let reply = crate::support::client::read(client.send(req).await.expect("response"))
        .await
        .expect("body");
    assert_eq!(reply.headers["content-type"], "application/grpc");
    assert_eq!(
        decode_frame::<EchoReply>(&reply.body).map(|r| r.message),
        Some("grpc-a: raw".to_owned())
    );
    let trailers = reply.trailers.expect("trailers");
    assert_eq!(trailers["grpc-status"], "0");
}

#[test]
fn frames_round_trip_and_malformed_frames_are_rejected() {
    let msg = EchoRequest {
        message: "hi".into(),
    };
    let frame = encode_frame(&msg);
    assert_eq!(frame[0], 0);
    assert_eq!(&frame[1..5], &(frame.len() as u32 - 5).to_be_bytes());
    assert_eq!(decode_frame::<EchoRequest>(&frame), Some(msg));
    // Truncated, compressed flag, trailing bytes, empty.
    assert_eq!(decode_frame::<EchoRequest>(&frame[..frame.len() - 1]), None);
    let mut compressed = frame.to_vec();
    compressed[0] = 1;
    assert_eq!(decode_frame::<EchoRequest>(&compressed), None);
    let mut longer = frame.to_vec();
    longer.push(0);
    assert_eq!(decode_frame::<EchoRequest>(&longer), None);
    assert_eq!(decode_frame::<EchoRequest>(&[]), None);
}
