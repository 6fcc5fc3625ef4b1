//! The test backends themselves, over real requests: every command does what it says, so a
//! failing end-to-end test points at the mesh, not at the harness.

use std::time::Duration;

use crate::support::client::{Client, read};
use crate::support::{Backend, DELAY_CMD, Echo, RESET_CMD, STATUS_CMD};
use tower_mesh::body;

async fn h1(b: &Backend) -> Client {
    Client::http1(b.addr()).await.expect("connect http1")
}

async fn h2(b: &Backend) -> Client {
    Client::http2(b.addr()).await.expect("connect http2")
}

#[tokio::test]
async fn echo_over_http1_reports_the_request_as_received() {
    let b = Backend::start("a", &[("version", "v1")]);
    let reply = h1(&b)
        .await
        .get(
            "/x/y?q=1&r",
            &[("x-test", "one"), ("x-multi", "1"), ("x-multi", "2")],
        )
        .await
        .expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), Some("a"));
    assert_eq!(reply.headers["content-type"], "application/json");
    let echo = reply.echo();
    assert_eq!(echo.backend, "a");
    assert_eq!(echo.labels.get("version").map(String::as_str), Some("v1"));
    assert_eq!(echo.method, "GET");
    assert_eq!(echo.path, "/x/y?q=1&r");
    assert_eq!(echo.version, "HTTP/1.1");
    assert_eq!(echo.authority, b.addr().to_string());
    assert_eq!(echo.header("x-test"), Some("one"));
    assert_eq!(echo.header("x-multi"), Some("1, 2"));
    assert_eq!(echo.header("host"), Some(b.addr().to_string().as_str()));
    assert_eq!(echo.body_bytes, 0);
}

#[tokio::test]
async fn echo_over_http2_prior_knowledge_reports_http2_and_the_authority() {
    let b = Backend::start("a", &[]);
    let mut c = h2(&b).await;
    let req = http::Request::get("http://reviews.default.svc.cluster.local:9080/p?x=%20")
        .body(body::empty())
        .expect("request");
    let reply = read(c.send(req).await.expect("response"))
        .await
        .expect("body");
    assert_eq!(reply.version, http::Version::HTTP_2);
    assert_eq!(reply.backend(), Some("a"));
    let echo = reply.echo();
    assert_eq!(echo.version, "HTTP/2.0");
    assert_eq!(echo.authority, "reviews.default.svc.cluster.local:9080");
    assert_eq!(echo.path, "/p?x=%20");
    assert!(echo.labels.is_empty());
}

#[tokio::test]
async fn echo_counts_the_request_body() {
    let b = Backend::start("a", &[]);
    let req = http::Request::post("/upload")
        .body(body::full("hello world"))
        .expect("request");
    let reply = read(h1(&b).await.send(req).await.expect("response"))
        .await
        .expect("body");
    let echo = reply.echo();
    assert_eq!(echo.method, "POST");
    assert_eq!(echo.body_bytes, 11);
}

#[tokio::test]
async fn status_command_sets_the_status_and_a_bad_value_is_a_400() {
    let b = Backend::start("a", &[]);
    let mut c = h1(&b).await;
    let reply = c.get("/", &[(STATUS_CMD, "503")]).await.expect("reply");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.backend(), Some("a"));
    assert_eq!(reply.echo().path, "/", "the JSON body is still sent");

    let reply = c.get("/", &[(STATUS_CMD, "204")]).await.expect("reply");
    assert_eq!(reply.status, 204);

    let reply = c.get("/", &[(STATUS_CMD, "five")]).await.expect("reply");
    assert_eq!(reply.status, 400);
    assert_eq!(reply.backend(), Some("a"));
}

#[tokio::test]
async fn body_bytes_command_sends_that_many_bytes() {
    let b = Backend::start("a", &[]);
    for (c, label) in [(h1(&b).await, "h1"), (h2(&b).await, "h2")] {
        let mut c = c;
        let reply = c
            .get("/", &[("x-backend-body-bytes", "100000")])
            .await
            .expect("reply");
        assert_eq!(reply.status, 200, "{label}");
        assert_eq!(reply.body.len(), 100_000, "{label}");
        assert!(reply.body.iter().all(|&b| b == b'x'), "{label}");

        let reply = c
            .get("/", &[("x-backend-body-bytes", "0")])
            .await
            .expect("reply");
        assert!(reply.body.is_empty(), "{label}");

        let reply = c
            .get("/", &[("x-backend-body-bytes", "-1")])
            .await
            .expect("reply");
        assert_eq!(reply.status, 400, "{label}");
    }
}

#[tokio::test]
async fn delay_command_sleeps_before_answering() {
    let b = Backend::start("a", &[]);
    let mut c = h1(&b).await;
    // No timing assertion (the next test shows the delay holds the request back).
    let reply = c
        .get("/", &[(DELAY_CMD, "50"), (STATUS_CMD, "202")])
        .await
        .expect("reply");
    assert_eq!(
        reply.status, 202,
        "other commands still apply after the delay"
    );
}

#[tokio::test]
async fn delayed_request_holds_its_stream_while_others_on_the_connection_are_answered() {
    let b = Backend::start("a", &[]);
    let mut c = h2(&b).await;
    let slow_req = http::Request::get("/slow")
        .header(DELAY_CMD, "60000")
        .body(body::empty())
        .expect("request");
    let slow = tokio::spawn({
        let mut c2 = c.h2_clone().expect("an h2 client");
        async move { c2.send(slow_req).await.map(|r| r.status()) }
    });
    // The fast request is answered while the slow one still sleeps.
    while b.hits() < 1 {
        tokio::task::yield_now().await;
    }
    let reply = c.get("/fast", &[]).await.expect("reply");
    assert_eq!(reply.echo().path, "/fast");
    assert!(!slow.is_finished());
    assert_eq!(b.hits(), 2);
    slow.abort();
}

#[tokio::test]
async fn reset_command_drops_an_http1_connection_unanswered() {
    let b = Backend::start("a", &[]);
    let mut c = h1(&b).await;
    let err = c.get("/", &[(RESET_CMD, "1")]).await.expect_err("reset");
    assert!(err.is_incomplete_message(), "{err:?}");
    assert_eq!(b.hits(), 1);
    // The backend itself keeps serving.
    let reply = h1(&b).await.get("/", &[]).await.expect("reply");
    assert_eq!(reply.status, 200);
    assert_eq!(b.connections(), 2);
}

#[tokio::test]
async fn reset_command_drops_the_whole_http2_connection() {
    let b = Backend::start("a", &[]);
    let mut c = h2(&b).await;
    let err = c.get("/", &[(RESET_CMD, "1")]).await.expect_err("reset");
    assert!(!err.is_user(), "{err:?}");
    // The connection is gone: the next request on it fails too.
    assert!(c.get("/", &[]).await.is_err());
    assert_eq!(b.hits(), 1);
    assert_eq!(h2(&b).await.get("/", &[]).await.expect("reply").status, 200);
}

#[tokio::test]
async fn reset_stream_command_fails_one_http2_request_and_keeps_the_connection() {
    let b = Backend::start("a", &[]);
    let mut c = h2(&b).await;
    let err = c
        .get("/", &[(RESET_CMD, "stream")])
        .await
        .expect_err("reset");
    assert!(!err.is_user(), "{err:?}");
    let reply = c
        .get("/after", &[])
        .await
        .expect("same connection still works");
    assert_eq!(reply.echo().path, "/after");
    assert_eq!(b.connections(), 1);
    assert_eq!(b.hits(), 2);
}

#[tokio::test]
async fn counters_count_requests_and_connections() {
    let b = Backend::start("a", &[]);
    assert_eq!((b.hits(), b.connections()), (0, 0));
    let mut c = h1(&b).await;
    for _ in 0..3 {
        c.get("/", &[]).await.expect("reply");
    }
    assert_eq!((b.hits(), b.connections()), (3, 1));
    let mut c2 = h2(&b).await;
    c2.get("/", &[]).await.expect("reply");
    c2.get("/", &[]).await.expect("reply");
    assert_eq!((b.hits(), b.connections()), (5, 2));
}

#[tokio::test]
async fn an_h2_only_backend_refuses_http1_and_serves_http2() {
    let b = Backend::start_h2_only("grpcish", &[]);
    assert!(h1(&b).await.get("/", &[]).await.is_err());
    let reply = h2(&b).await.get("/", &[]).await.expect("reply");
    assert_eq!(reply.echo().backend, "grpcish");
    assert_eq!(reply.echo().version, "HTTP/2.0");
}

#[tokio::test]
async fn dropping_a_backend_closes_its_port_and_its_connections() {
    let b = Backend::start("a", &[]);
    let addr = b.addr();
    let mut open = h1(&b).await;
    open.get("/", &[]).await.expect("reply");
    drop(b);
    // Eventually: the abort takes effect when the runtime next polls the accept task.
    let mut closed = false;
    for _ in 0..500 {
        if open.get("/", &[]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed, "open connections are closed");
    let mut refused = false;
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener is closed");
}

#[test]
fn echo_parse_reads_the_json_shape() {
    let echo = Echo::parse(
        br#"{"backend":"b","labels":{"app":"x"},"method":"PUT","path":"/p","authority":"h:1",
            "headers":{"a":"1"},"version":"HTTP/1.1","body_bytes":3}"#,
    );
    assert_eq!(echo.backend, "b");
    assert_eq!(echo.header("a"), Some("1"));
    assert_eq!(echo.header("b"), None);
    assert_eq!(echo.body_bytes, 3);
}

#[tokio::test]
async fn fail_pattern_fails_the_first_of_each_group() {
    let b = Backend::start("a", &[]);
    b.fail_pattern(2, 3, 503);
    let mut c = h1(&b).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(c.get("/", &[]).await.expect("reply").status.as_u16());
    }
    assert_eq!(statuses, [503, 503, 200, 503, 503, 200]);
    b.fail_pattern(0, 0, 0);
    assert_eq!(c.get("/", &[]).await.expect("reply").status, 200);
}

#[tokio::test]
async fn stalled_requests_wait_until_released_and_in_flight_is_tracked() {
    let b = Backend::start("a", &[]);
    b.set_stall(true);
    let mut c = h2(&b).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..3 {
        let mut c = c.h2_clone().expect("an h2 client");
        tasks.spawn(async move { c.get("/", &[]).await.map(|r| r.status) });
    }
    // Eventually all three are held by the backend.
    for _ in 0..1000 {
        if b.in_flight() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(b.in_flight(), 3);
    assert!(
        tasks.try_join_next().is_none(),
        "a stalled request was answered"
    );
    b.set_stall(false);
    while let Some(done) = tasks.join_next().await {
        assert_eq!(done.expect("task").expect("reply"), 200);
    }
    assert_eq!(b.max_in_flight(), 3);
    assert_eq!(c.get("/", &[]).await.expect("reply").status, 200);
}

#[tokio::test]
async fn a_stopped_backend_refuses_connections_until_restarted() {
    let mut b = Backend::start("a", &[]);
    b.stop();
    let mut refused = false;
    for _ in 0..200 {
        if Client::http1(b.addr()).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(refused, "the port still accepts connections after stop");
    b.restart().await;
    let reply = h1(&b).await.get("/", &[]).await.expect("reply");
    assert_eq!((reply.status.as_u16(), reply.backend()), (200, Some("a")));
}
