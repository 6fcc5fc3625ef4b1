//! gRPC through the mesh: a tonic client whose transport is `MeshClient`, routed by a
//! VirtualService to HTTP/2-only gRPC backends declared by a ServiceEntry with a `GRPC` port.

use http::Uri;
use tower_mesh::Mesh;
use tower_mesh::mesh::ConfigSource;

use crate::support::Backend;
use crate::support::grpc::{self, UNAVAILABLE_MESSAGE, echo_with_origin};

/// The gRPC service's port.
const PORT: u16 = 50051;

/// ServiceEntry `echo.default.svc.cluster.local:50051` (GRPC) with endpoints `ok` and `down`
/// (subsets of the same names; subset `empty` has no endpoints), and a VirtualService
/// sending the echo method to `subset` (anything else: no route).
fn config(ok: &Backend, down: &Backend, subset: &str) -> String {
    let (ok, down) = (ok.port(), down.port());
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: {PORT}, name: grpc, protocol: GRPC}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{grpc: {ok}}}, labels: {{version: ok}}}}
  - {{address: 127.0.0.1, ports: {{grpc: {down}}}, labels: {{version: down}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: echo, namespace: default}}
spec:
  host: echo.default.svc.cluster.local
  subsets:
  - {{name: ok, labels: {{version: ok}}}}
  - {{name: down, labels: {{version: down}}}}
  - {{name: empty, labels: {{version: none}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo]
  http:
  - name: echo-method
    match: [{{uri: {{exact: {path}}}}}]
    route: [{{destination: {{host: echo, subset: {subset}}}}}]
"#,
        path = grpc::ECHO_PATH,
    )
}

fn origin(authority: &str) -> Uri {
    format!("http://{authority}")
        .parse()
        .unwrap_or_else(|e| panic!("origin {authority}: {e}"))
}

struct Grpc {
    ok: Backend,
    down: Backend,
    mesh: Mesh,
}

impl Grpc {
    fn start(subset: &str) -> Grpc {
        let ok = grpc::start_echo("grpc-ok");
        let down = grpc::start_unavailable("grpc-down");
        let mesh = Mesh::builder()
            .config_str("echo.yaml", config(&ok, &down, subset))
            .build()
            .unwrap_or_else(|e| panic!("the test config is valid: {e}"));
        Grpc { ok, down, mesh }
    }

    async fn call(&self, authority: &str, msg: &str) -> Result<String, tonic::Status> {
        echo_with_origin(self.mesh.client(), origin(authority), msg).await
    }

    async fn route_to(&self, subset: &str) {
        self.mesh
            .reload_from([ConfigSource::yaml(
                "echo.yaml",
                config(&self.ok, &self.down, subset),
            )])
            .await
            .unwrap_or_else(|e| panic!("reload to {subset}: {e}"));
    }
}

#[tokio::test]
async fn a_tonic_call_through_mesh_client_gets_the_reply() {
    let g = Grpc::start("ok");
    for authority in [
        "echo.default.svc.cluster.local:50051",
        "echo:50051",
        "echo.default:50051",
    ] {
        let reply = g.call(authority, "hello").await;
        assert_eq!(
            reply.as_deref().ok(),
            Some("grpc-ok: hello"),
            "{authority}: {reply:?}"
        );
    }
    assert_eq!(g.ok.hits(), 3);
    assert_eq!(g.down.hits(), 0);
    // HTTP/2 to a GRPC port: the calls share one connection.
    assert_eq!(g.ok.connections(), 1);
}

#[tokio::test]
async fn a_backends_unavailable_status_comes_through_the_mesh() {
    let g = Grpc::start("ok");
    assert!(g.call("echo:50051", "first").await.is_ok());
    g.route_to("down").await;
    let status = g
        .call("echo:50051", "hello")
        .await
        .expect_err("UNAVAILABLE");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), UNAVAILABLE_MESSAGE);
    // Istio's default retry policy (no `retries` on the route) retries `unavailable` twice:
    // three tries, and the last answer comes back as it was.
    assert_eq!((g.ok.hits(), g.down.hits()), (1, 3));
}

#[tokio::test]
async fn mesh_made_answers_reach_tonic_as_grpc_statuses() {
    // A subset no DestinationRule defines: 503 NC → UNAVAILABLE.
    let g = Grpc::start("missing");
    let status = g.call("echo:50051", "x").await.expect_err("UNAVAILABLE");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    // A subset without endpoints: 503 UH → UNAVAILABLE.
    g.route_to("empty").await;
    let status = g.call("echo:50051", "x").await.expect_err("UNAVAILABLE");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("no healthy upstream"),
        "{status:?}"
    );

    // No route (the VirtualService routes only the echo method): 404 NR → UNIMPLEMENTED.
    g.route_to("ok").await;
    let mut grpc_client = tonic::client::Grpc::with_origin(g.mesh.client(), origin("echo:50051"));
    grpc_client.ready().await.expect("ready");
    let status = grpc_client
        .unary(
            tonic::Request::new(grpc::EchoRequest {
                message: "x".into(),
            }),
            http::uri::PathAndQuery::from_static("/grpc.examples.echo.Echo/Other"),
            tonic_prost::ProstCodec::<grpc::EchoRequest, grpc::EchoReply>::default(),
        )
        .await
        .expect_err("UNIMPLEMENTED");
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");

    assert_eq!(
        g.ok.hits() + g.down.hits(),
        0,
        "every answer above is the mesh's"
    );
    assert_eq!(
        g.call("echo:50051", "y").await.ok().as_deref(),
        Some("grpc-ok: y")
    );
}
