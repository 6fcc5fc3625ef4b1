//! Handshakes over 127.0.0.1 between tower-mesh's own client and server configurations, with
//! certificates the tests issue from [`DevCa`]s; rotation; the connector.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::error::{Error, ResetReason};
use crate::pool::{Connect, ConnectTarget, TlsPolicy, UpstreamProtocol};

const TD: &str = "cluster.local";
const DAY: Duration = Duration::from_secs(86_400);
/// A guard against a hung test, never an assertion on timing.
const GUARD: Duration = Duration::from_secs(20);

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::istio(TD, ns, sa).expect("valid id")
}

fn ca() -> DevCa {
    DevCa::new(TD).expect("dev CA")
}

fn identity(ca: &DevCa, id: &SpiffeId) -> WorkloadIdentity {
    ca.issue(id, DAY)
        .expect("issue")
        .identity()
        .expect("identity")
}

/// A certificate from `ca` with another trust bundle.
fn identity_trusting(ca: &DevCa, id: &SpiffeId, bundle: TrustBundle) -> WorkloadIdentity {
    let issued = ca.issue(id, DAY).expect("issue");
    WorkloadIdentity::new(issued.chain.clone(), issued.key.clone_key(), bundle).expect("identity")
}

struct Outcome {
    /// The client's view: the server's identity and the ALPN protocol, or the error.
    client: Result<(Option<PeerIdentity>, Option<Vec<u8>>), String>,
    /// The server's view: the client's identity, or the error.
    server: Result<Option<PeerIdentity>, String>,
}

/// One connection: handshake, then `ping` → `pong` so that a rejection by the server after
/// the client's side of a TLS 1.3 handshake completed reaches the client too.
async fn exchange(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server_task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsAcceptor::from(server)
            .accept(tcp)
            .await
            .map_err(|e| describe_handshake_error(&e))?;
        let peer = PeerIdentity::from_tls(tls.get_ref().1);
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(peer)
    });
    let client = async move {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let name = ServerName::try_from("reviews.default.svc.cluster.local").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| describe_handshake_error(&e))?;
        let peer = PeerIdentity::from_tls(tls.get_ref().1);
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        assert_eq!(&buf, b"pong");
        Ok((peer, alpn))
    };
    let client = tokio::time::timeout(GUARD, client)
        .await
        .expect("client hung");
    let server = tokio::time::timeout(GUARD, server_task)
        .await
        .expect("server hung")
        .expect("server task");
    Outcome { client, server }
}

fn server(identity: &WorkloadIdentity) -> Arc<ServerConfig> {
    server_config(identity, ClientAuth::Required, SERVER_ALPN).expect("server config")
}

fn client(identity: &WorkloadIdentity, expected: &[ExpectedSan]) -> Arc<ClientConfig> {
    client_config(identity, expected, UpstreamProtocol::Http1).expect("client config")
}

fn err(r: &Result<impl std::fmt::Debug, String>) -> &str {
    match r {
        Err(e) => e,
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

#[tokio::test]
async fn mutual_tls_succeeds_and_each_side_sees_the_other() {
    let ca = ca();
    let (reviews, productpage) = (id("default", "reviews"), id("default", "productpage"));
    let s = identity(&ca, &reviews);
    let c = identity(&ca, &productpage);
    let out = exchange(server(&s), client(&c, &[reviews.clone().into()])).await;
    let (server_seen, alpn) = out.client.expect("client ok");
    assert_eq!(server_seen.expect("server identity").spiffe_id, reviews);
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let client_seen = out.server.expect("server ok").expect("client identity");
    assert_eq!(client_seen.spiffe_id, productpage);
    assert_eq!(
        client_seen.principal(),
        "cluster.local/ns/default/sa/productpage"
    );
    assert_eq!(&*client_seen.serial, c.serial());

    // HTTP/2: Istio's list negotiates plain `h2` with our server, as with Envoy.
    let h2 = client_config(&c, &[], UpstreamProtocol::Http2).expect("config");
    let out = exchange(server(&s), h2).await;
    let (_, alpn) = out.client.expect("client ok");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert!(alpn_is_h2(b"istio-h2"));
}

#[tokio::test]
async fn a_client_without_certificate_is_refused() {
    let ca = ca();
    let reviews = id("default", "reviews");
    let s = identity(&ca, &reviews);
    // A TLS client that trusts the server but has no certificate of its own.
    let anonymous = origination_config(
        ca.bundle().expect("bundle"),
        &[ExpectedSan::Spiffe(reviews)],
        None,
        UpstreamProtocol::Http1,
    )
    .expect("config");
    let out = exchange(server(&s), anonymous.clone()).await;
    assert!(
        err(&out.server).contains("peer sent no certificates"),
        "{:?}",
        out.server
    );
    assert!(
        err(&out.client).contains("CertificateRequired"),
        "{:?}",
        out.client
    );

    // ClientAuth::Optional lets it in, without a peer identity.
    let optional = server_config(&s, ClientAuth::Optional, SERVER_ALPN).expect("config");
    let out = exchange(optional, anonymous).await;
    assert!(out.client.is_ok(), "{:?}", out.client);
    assert_eq!(out.server.expect("server ok"), None);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_on_both_sides() {
    let (ours, theirs) = (ca(), ca());
    let reviews = id("default", "reviews");
    let s = identity(&ours, &reviews);
    // A client with a certificate from another CA (same trust domain name), which itself
    // trusts both CAs: only the server's check can fail.
    let both =
        TrustBundle::new(vec![theirs.root_der().clone(), ours.root_der().clone()]).expect("bundle");
    let stranger = identity_trusting(&theirs, &id("default", "productpage"), both);
    let out = exchange(server(&s), client(&stranger, &[])).await;
    let e = err(&out.server);
    assert!(e.contains("certificate from another CA"), "{e}");
    assert!(e.contains("tower-mesh dev CA"), "{e}");
    assert!(e.contains("same name but another key"), "{e}");
    assert!(
        err(&out.client).contains("HandshakeFailure"),
        "{:?}",
        out.client
    );

    // A server with a certificate from another CA (trusting ours: only the client's check
    // can fail).
    let c = identity(&ours, &id("default", "productpage"));
    let out = exchange(server(&stranger), client(&c, &[])).await;
    assert!(
        err(&out.client).contains("certificate from another CA"),
        "{:?}",
        out.client
    );
    assert!(
        err(&out.server).contains("HandshakeFailure"),
        "{:?}",
        out.server
    );
}

#[tokio::test]
async fn another_trust_domain_is_refused_unless_aliased() {
    let ca = ca();
    let s = identity(&ca, &id("default", "reviews"));
    // Same CA, but an id in another trust domain.
    let foreign_id = SpiffeId::istio("other.mesh", "default", "productpage").expect("id");
    // The foreign client itself accepts cluster.local: only the server's check can fail.
    let foreign = identity_trusting(
        &ca,
        &foreign_id,
        ca.bundle()
            .expect("bundle")
            .with_trust_domain_aliases(["cluster.local"]),
    );
    let out = exchange(server(&s), client(&foreign, &[])).await;
    let e = err(&out.server);
    assert!(e.contains("peer spiffe://other.mesh/ns/default/sa/productpage is from trust domain other.mesh, not one of [cluster.local]"), "{e}");
    assert!(
        err(&out.client).contains("HandshakeFailure"),
        "{:?}",
        out.client
    );

    // MeshConfig trustDomainAliases: the server accepts other.mesh too.
    let aliased = identity_trusting(
        &ca,
        &id("default", "reviews"),
        ca.bundle()
            .expect("bundle")
            .with_trust_domain_aliases(["other.mesh"]),
    );
    let out = exchange(server(&aliased), client(&foreign, &[])).await;
    assert_eq!(
        out.server.expect("accepted").expect("identity").spiffe_id,
        foreign_id
    );
}

#[tokio::test]
async fn expired_and_not_yet_valid_certificates_are_refused() {
    let ca = ca();
    let s = identity(&ca, &id("default", "reviews"));
    let now = SystemTime::now();
    let pp = id("default", "productpage");

    let expired = ca
        .issue_between(&pp, now - 2 * DAY, now - DAY)
        .expect("issue")
        .identity()
        .expect("identity");
    let out = exchange(server(&s), client(&expired, &[])).await;
    let e = err(&out.server);
    assert!(
        e.starts_with("invalid peer certificate: certificate expired at 20"),
        "{e}"
    );
    assert!(e.ends_with("Z (1d0h ago)"), "{e}");
    assert!(
        err(&out.client).contains("CertificateExpired"),
        "{:?}",
        out.client
    );

    let early = ca
        .issue_between(&pp, now + DAY, now + 2 * DAY)
        .expect("issue")
        .identity()
        .expect("identity");
    let out = exchange(server(&s), client(&early, &[])).await;
    let e = err(&out.server);
    assert!(e.contains("certificate is not valid before 20"), "{e}");
    assert!(e.contains("from now; is a clock wrong?"), "{e}");
    assert!(
        err(&out.client).contains("CertificateExpired"),
        "{:?}",
        out.client
    );

    // And an expired server, seen by the client.
    let c = identity(&ca, &pp);
    let expired_server = ca
        .issue_between(&id("default", "reviews"), now - 2 * DAY, now - DAY)
        .expect("issue")
        .identity()
        .expect("identity");
    let out = exchange(server(&expired_server), client(&c, &[])).await;
    assert!(
        err(&out.client).contains("certificate expired at"),
        "{:?}",
        out.client
    );
    assert!(
        err(&out.server).contains("CertificateExpired"),
        "{:?}",
        out.server
    );
}

#[tokio::test]
async fn a_server_that_is_not_the_expected_identity_is_refused() {
    let ca = ca();
    let s = identity(&ca, &id("default", "reviews"));
    let c = identity(&ca, &id("default", "productpage"));
    let expected = [
        ExpectedSan::Spiffe(id("default", "ratings")),
        ExpectedSan::parse("ratings.example.com"),
    ];
    let out = exchange(server(&s), client(&c, &expected)).await;
    let e = err(&out.client);
    assert!(
        e.contains(
            "peer spiffe://cluster.local/ns/default/sa/reviews is not one of \
             [spiffe://cluster.local/ns/default/sa/ratings, ratings.example.com]"
        ),
        "{e}"
    );
    assert!(
        err(&out.server).contains("HandshakeFailure"),
        "{:?}",
        out.server
    );
}

#[test]
fn verify_errors_come_back_out_of_rustls_errors() {
    let ca = ca();
    let s = identity(&ca, &id("default", "reviews"));
    let verifier = SpiffeServerVerifier::new(
        s.bundle().clone(),
        s.trust_domains().into(),
        Arc::from([ExpectedSan::Spiffe(id("default", "ratings"))]),
    );
    let leaf = s.chain().first().expect("leaf");
    let now = rustls_pki_types::UnixTime::now();
    let e = verifier.verify(leaf, &[], now).expect_err("not ratings");
    assert!(matches!(e, VerifyError::Unexpected { .. }), "{e:?}");
    let rustls_err = rustls::client::danger::ServerCertVerifier::verify_server_cert(
        &verifier,
        leaf,
        &[],
        &ServerName::try_from("x").expect("name"),
        &[],
        now,
    )
    .expect_err("refused");
    assert_eq!(VerifyError::of(&rustls_err), Some(&e));
}

// ---------------------------------------------------------------------------------------------
// Identity loading

#[test]
fn pem_files_errors_name_the_file_and_the_problem() {
    let ca = ca();
    let dir = tempfile::tempdir().expect("tempdir");
    let issued = ca.issue(&id("default", "reviews"), DAY).expect("issue");
    let files = issued.write_pem_files(dir.path()).expect("write");
    let loaded = files.load().expect("loads");
    assert_eq!(loaded.spiffe_id(), &id("default", "reviews"));

    std::fs::write(&files.cert, "").expect("write");
    let e = files.load().expect_err("empty cert").to_string();
    assert!(
        e.contains("cert-chain.pem") && e.contains("no certificate"),
        "{e}"
    );

    // A key that belongs to another certificate.
    let other = ca.issue(&id("default", "ratings"), DAY).expect("issue");
    std::fs::write(&files.cert, &issued.chain_pem).expect("write");
    std::fs::write(&files.key, &other.key_pem).expect("write");
    let e = files.load().expect_err("mismatch").to_string();
    assert!(
        e.contains("key.pem") && e.contains("does not match") && e.contains("cert-chain.pem"),
        "{e}"
    );

    std::fs::write(&files.key, "not a key").expect("write");
    let e = files.load().expect_err("no key").to_string();
    assert!(e.contains("key.pem") && e.contains("no private key"), "{e}");

    // A certificate with DNS names only is not an SVID.
    let plain = rcgen::generate_simple_self_signed(vec!["reviews.example.com".to_string()])
        .expect("self-signed");
    std::fs::write(&files.cert, plain.cert.pem()).expect("write");
    std::fs::write(&files.key, plain.signing_key.serialize_pem()).expect("write");
    let e = files.load().expect_err("no uri").to_string();
    assert!(
        e.contains("no URI SAN") && e.contains("reviews.example.com"),
        "{e}"
    );

    // A leaf from another CA than root-cert.pem.
    let stranger = DevCa::new(TD)
        .expect("ca")
        .issue(&id("default", "reviews"), DAY)
        .expect("issue");
    std::fs::write(&files.cert, &stranger.chain_pem).expect("write");
    std::fs::write(&files.key, &stranger.key_pem).expect("write");
    let e = files.load().expect_err("other ca").to_string();
    assert!(
        e.contains("root-cert.pem") && e.contains("does not chain to the trust bundle"),
        "{e}"
    );

    std::fs::remove_file(&files.bundle).expect("rm");
    let e = files.load().expect_err("missing").to_string();
    assert!(
        e.contains("root-cert.pem") && e.contains("cannot read"),
        "{e}"
    );
}

#[test]
fn the_manager_refuses_an_expired_certificate() {
    let ca = ca();
    let now = SystemTime::now();
    let expired = ca
        .issue_between(&id("default", "reviews"), now - 2 * DAY, now - DAY)
        .expect("issue")
        .identity()
        .expect("identity");
    let e = IdentityManager::from_identity(expired)
        .expect_err("expired")
        .to_string();
    assert!(e.contains("expired at"), "{e}");
}

#[tokio::test]
async fn expiry_is_warned_once_per_certificate_and_again_when_expired() {
    let ca = ca();
    let now = SystemTime::now();
    // 10 minutes of life, 9 gone: a minute left, under a fifth of the lifetime.
    let closing = ca
        .issue_between(
            &id("default", "reviews"),
            now - Duration::from_secs(540),
            now + Duration::from_secs(60),
        )
        .expect("issue")
        .identity()
        .expect("identity");
    let manager = IdentityManager::from_identity(closing).expect("manager");
    let mut events = manager.subscribe();
    let warning = manager.check_expiry(SystemTime::now()).expect("warns");
    assert!(warning.remaining <= Duration::from_secs(60), "{warning:?}");
    assert_eq!(warning.spiffe_id, id("default", "reviews"));
    assert!(
        manager.check_expiry(SystemTime::now()).is_none(),
        "said once"
    );
    match events.try_recv().expect("event") {
        IdentityEvent::Expiring(w) => assert_eq!(w, warning),
        other => panic!("unexpected {other:?}"),
    }
    let expired = manager
        .check_expiry(SystemTime::now() + Duration::from_secs(3600))
        .expect("expired warning");
    assert_eq!(expired.remaining, Duration::ZERO);

    // A fresh day-long certificate is not near expiry.
    let fresh =
        IdentityManager::from_identity(identity(&ca, &id("default", "x"))).expect("manager");
    assert!(fresh.check_expiry(SystemTime::now()).is_none());
}

// ---------------------------------------------------------------------------------------------
// Rotation

/// Accepts connections forever with the manager's current server configuration, echoing.
async fn rotating_server(manager: IdentityManager) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor =
                tokio_rustls::TlsAcceptor::from(manager.server_config(ClientAuth::Required));
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4];
                while tls.read_exact(&mut buf).await.is_ok() {
                    if tls.write_all(&buf).await.is_err() || tls.flush().await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

type ClientStream = tokio_rustls::client::TlsStream<TcpStream>;

async fn dial(
    addr: std::net::SocketAddr,
    config: Arc<ClientConfig>,
) -> (ClientStream, PeerIdentity) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("reviews").expect("name"), tcp)
        .await
        .expect("handshake");
    let peer = PeerIdentity::from_tls(tls.get_ref().1).expect("server identity");
    (tls, peer)
}

async fn echo(tls: &mut ClientStream, msg: &[u8; 4]) {
    tls.write_all(msg).await.expect("write");
    tls.flush().await.expect("flush");
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, msg);
}

#[tokio::test]
async fn rotation_new_handshakes_present_the_new_certificate_old_connections_keep_working() {
    let ca = ca();
    let reviews = id("default", "reviews");
    let dir = tempfile::tempdir().expect("tempdir");
    let first = ca.issue(&reviews, DAY).expect("issue");
    let files = first.write_pem_files(dir.path()).expect("write");
    let manager = IdentityManager::new(
        files.clone(),
        IdentitySettings {
            refresh: Duration::from_millis(20),
            ..IdentitySettings::default()
        },
    )
    .expect("manager");
    let mut events = manager.subscribe();
    let _task = manager.spawn_refresh();
    let addr = rotating_server(manager.clone()).await;
    let c = identity(&ca, &id("default", "productpage"));

    let (mut old, before) = dial(addr, client(&c, &[reviews.clone().into()])).await;
    let first_serial = manager.current().serial().to_owned();
    assert_eq!(&*before.serial, first_serial);
    echo(&mut old, b"one!").await;

    // A bad rewrite (a key that is not a key) is refused; the old identity keeps serving.
    std::fs::write(&files.key, "garbage").expect("write");
    let refused = tokio::time::timeout(GUARD, async {
        loop {
            if let Ok(IdentityEvent::ReloadFailed { error, .. }) = events.recv().await {
                return error;
            }
        }
    })
    .await
    .expect("a ReloadFailed event");
    assert!(refused.to_string().contains("key.pem"), "{refused}");
    assert_eq!(manager.current().serial(), first_serial);

    // The new certificate on disk: the refresh task publishes it.
    let second = ca.issue(&reviews, 2 * DAY).expect("issue");
    second.write_pem_files(dir.path()).expect("write");
    let generation = tokio::time::timeout(GUARD, async {
        loop {
            if let Ok(IdentityEvent::Rotated { generation, .. }) = events.recv().await {
                return generation;
            }
        }
    })
    .await
    .expect("a Rotated event");
    assert_eq!(generation, 2);
    assert_ne!(manager.current().serial(), first_serial);

    // A new client configuration (no resumed session) sees the new certificate...
    let (mut new, after) = dial(addr, client(&c, &[reviews.into()])).await;
    assert_eq!(&*after.serial, manager.current().serial());
    assert!(after.not_after > before.not_after);
    echo(&mut new, b"two!").await;
    // ... while the connection made before the rotation still works.
    echo(&mut old, b"old!").await;
}

#[tokio::test]
async fn refresh_ignores_a_touch_and_client_configs_follow_rotations() {
    let ca = ca();
    let reviews = id("default", "reviews");
    let source = Arc::new(StaticIdentity::new(identity(&ca, &reviews)));
    let manager =
        IdentityManager::new(source.clone(), IdentitySettings::default()).expect("manager");
    let expected = [ExpectedSan::Spiffe(id("default", "ratings"))];
    let a = manager
        .client_config(&expected, UpstreamProtocol::Http1)
        .expect("config");
    let b = manager
        .client_config(&expected, UpstreamProtocol::Http1)
        .expect("config");
    assert!(Arc::ptr_eq(&a, &b), "cached");
    let server_before = manager.server_config(ClientAuth::Required);

    // Same material again: not a rotation.
    source.replace((*manager.current()).clone());
    assert!(!manager.refresh().await.expect("refresh"));
    assert_eq!(manager.generation(), 1);
    assert!(Arc::ptr_eq(
        &server_before,
        &manager.server_config(ClientAuth::Required)
    ));

    source.replace(identity(&ca, &reviews));
    assert!(manager.refresh().await.expect("refresh"));
    assert_eq!(manager.generation(), 2);
    let c = manager
        .client_config(&expected, UpstreamProtocol::Http1)
        .expect("config");
    assert!(!Arc::ptr_eq(&a, &c), "rebuilt after rotation");
    assert!(!Arc::ptr_eq(
        &server_before,
        &manager.server_config(ClientAuth::Required)
    ));
}

// ---------------------------------------------------------------------------------------------
// The connector

fn target(addr: std::net::SocketAddr, tls: TlsPolicy, protocol: UpstreamProtocol) -> ConnectTarget {
    ConnectTarget {
        addr,
        server_name: "reviews.default.svc.cluster.local".into(),
        tls,
        protocol,
    }
}

fn transport_failure(e: crate::error::BoxError) -> String {
    match e.downcast::<Error>().map(|e| *e) {
        Ok(Error::UpstreamReset {
            reason: ResetReason::ConnectionFailure,
            transport_failure: Some(detail),
        }) => detail,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn the_connector_originates_istio_mutual_with_alpn() {
    let ca = ca();
    let reviews = id("default", "reviews");
    let server_manager = IdentityManager::from_identity(identity(&ca, &reviews)).expect("manager");
    let addr = rotating_server(server_manager).await;
    let ours = IdentityManager::from_identity(identity(&ca, &id("default", "productpage")))
        .expect("manager");
    let connector = TlsConnector::new(ours);

    let good = TlsPolicy::Tls(Arc::new(Originate::istio_mutual([reviews.clone().into()])));
    let h2 = connector
        .connect(&target(addr, good.clone(), UpstreamProtocol::Http2))
        .await
        .expect("connects");
    assert!(h2.alpn_h2, "istio-h2/h2 negotiated");
    let h1 = connector
        .connect(&target(addr, good, UpstreamProtocol::Http1))
        .await
        .expect("connects");
    assert!(!h1.alpn_h2);

    let wrong = TlsPolicy::Tls(Arc::new(Originate::istio_mutual([id(
        "default", "ratings",
    )
    .into()])));
    let e = match connector
        .connect(&target(addr, wrong.clone(), UpstreamProtocol::Http1))
        .await
    {
        Err(e) => transport_failure(e),
        Ok(_) => panic!("must refuse the wrong server"),
    };
    assert!(e.starts_with("TLS error: invalid peer certificate: peer spiffe://cluster.local/ns/default/sa/reviews is not one of"), "{e}");

    // Without a workload identity ISTIO_MUTUAL cannot be originated.
    let e = match TlsConnector::without_identity()
        .connect(&target(addr, wrong, UpstreamProtocol::Http1))
        .await
    {
        Err(e) => transport_failure(e),
        Ok(_) => panic!("no identity"),
    };
    assert!(e.contains("needs a workload identity"), "{e}");
}

#[tokio::test]
async fn the_connector_originates_simple_and_mutual_from_files() {
    let ca = ca();
    let reviews = id("default", "reviews");
    let addr =
        rotating_server(IdentityManager::from_identity(identity(&ca, &reviews)).expect("m")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client_files = ca
        .issue(&id("default", "productpage"), DAY)
        .expect("issue")
        .write_pem_files(dir.path())
        .expect("write");
    let connector = TlsConnector::without_identity();
    let mutual = |sans: &[&str]| {
        TlsPolicy::Tls(Arc::new(Originate::Mutual {
            client_certificate: client_files.cert.clone(),
            private_key: client_files.key.clone(),
            ca_certificates: Some(client_files.bundle.clone()),
            sni: Some("reviews.example.com".into()),
            subject_alt_names: sans.iter().map(|s| ExpectedSan::parse(s)).collect(),
        }))
    };
    // MUTUAL to a mesh server, matching its SPIFFE URI through subjectAltNames.
    let ok = connector
        .connect(&target(
            addr,
            mutual(&[reviews.as_str()]),
            UpstreamProtocol::Alpn,
        ))
        .await
        .expect("connects");
    assert!(ok.alpn_h2, "plain h2 offered first for Alpn");
    let e = match connector
        .connect(&target(
            addr,
            mutual(&["reviews.example.com"]),
            UpstreamProtocol::Http1,
        ))
        .await
    {
        Err(e) => transport_failure(e),
        Ok(_) => panic!("the name does not match"),
    };
    assert!(
        e.contains("is not valid for any of [reviews.example.com]"),
        "{e}"
    );

    // SIMPLE: the mesh server demands a client certificate, which SIMPLE does not send.
    let simple = TlsPolicy::Tls(Arc::new(Originate::Simple {
        ca_certificates: Some(client_files.bundle.clone()),
        sni: None,
        subject_alt_names: Arc::from([ExpectedSan::Spiffe(reviews)]),
    }));
    let conn = connector
        .connect(&target(addr, simple, UpstreamProtocol::Http1))
        .await
        .expect("the client side of TLS 1.3 completes");
    let mut io = conn.io;
    let _ = io.write_all(b"ping").await;
    let mut buf = [0u8; 4];
    let e = io
        .read_exact(&mut buf)
        .await
        .expect_err("refused by the server");
    assert!(e.to_string().contains("CertificateRequired"), "{e}");

    // A missing CA file is reported with its path.
    let missing = TlsPolicy::Tls(Arc::new(Originate::Simple {
        ca_certificates: Some(dir.path().join("nope.pem")),
        sni: None,
        subject_alt_names: Arc::from([]),
    }));
    let e = match connector
        .connect(&target(addr, missing, UpstreamProtocol::Http1))
        .await
    {
        Err(e) => transport_failure(e),
        Ok(_) => panic!("no CA"),
    };
    assert!(e.contains("nope.pem") && e.contains("cannot read"), "{e}");
}

#[tokio::test]
async fn the_connector_connects_plaintext_for_plaintext_targets() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accept = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
    let conn = TlsConnector::without_identity()
        .connect(&target(addr, TlsPolicy::Plaintext, UpstreamProtocol::Http1))
        .await
        .expect("connects");
    assert!(!conn.alpn_h2);
    accept.await.expect("task").expect("accepted");
}

#[test]
fn originate_from_destination_rule_tls() {
    use crate::config::destination_rule::{ClientTlsMode, ClientTlsSettings};
    let sa = id("default", "reviews");
    let tls = |mode| ClientTlsSettings {
        mode: Some(mode),
        ..ClientTlsSettings::default()
    };
    assert_eq!(
        Originate::from_settings(&ClientTlsSettings::default(), None),
        Ok(None)
    );
    assert_eq!(
        Originate::from_settings(&tls(ClientTlsMode::Disable), Some(&sa)),
        Ok(None)
    );
    assert_eq!(
        Originate::from_settings(&tls(ClientTlsMode::IstioMutual), Some(&sa)),
        Ok(Some(Originate::istio_mutual([sa.clone().into()])))
    );
    let with_sans = ClientTlsSettings {
        subject_alt_names: vec![
            "spiffe://cluster.local/ns/x/sa/y".into(),
            "y.example.com".into(),
        ],
        sni: "y.example.com".into(),
        ..tls(ClientTlsMode::IstioMutual)
    };
    assert_eq!(
        Originate::from_settings(&with_sans, Some(&sa)),
        Ok(Some(Originate::IstioMutual {
            expected: Arc::from([
                ExpectedSan::Spiffe(id("x", "y")),
                ExpectedSan::Dns("y.example.com".into())
            ]),
            sni: Some("y.example.com".into()),
        }))
    );
    // Without caCertificates: the system's root certificates, as Istio does.
    assert_eq!(
        Originate::from_settings(&tls(ClientTlsMode::Simple), None),
        Ok(Some(Originate::https()))
    );
    let simple = ClientTlsSettings {
        ca_certificates: "/etc/ca.pem".into(),
        ..tls(ClientTlsMode::Simple)
    };
    assert!(matches!(
        Originate::from_settings(&simple, None),
        Ok(Some(Originate::Simple { .. }))
    ));
    let mutual_without_key = ClientTlsSettings {
        client_certificate: "/etc/c.pem".into(),
        ..ClientTlsSettings {
            mode: Some(ClientTlsMode::Mutual),
            ..simple.clone()
        }
    };
    assert_eq!(
        Originate::from_settings(&mutual_without_key, None),
        Err(OriginateError::NoClientCertificate)
    );
    let insecure = ClientTlsSettings {
        insecure_skip_verify: Some(true),
        ..simple.clone()
    };
    assert_eq!(
        Originate::from_settings(&insecure, None),
        Err(OriginateError::InsecureSkipVerify)
    );
    let credential = ClientTlsSettings {
        credential_name: "secret".into(),
        ..simple
    };
    assert!(matches!(
        Originate::from_settings(&credential, None),
        Err(OriginateError::CredentialName(_))
    ));
    // Hash + Eq by content: equal policies share a pool key.
    let a = TlsPolicy::Tls(Arc::new(Originate::istio_mutual([sa.clone().into()])));
    let b = TlsPolicy::Tls(Arc::new(Originate::istio_mutual([sa.into()])));
    assert_eq!(a, b);
    assert_eq!(
        a.to_string(),
        "tls(ISTIO_MUTUAL [spiffe://cluster.local/ns/default/sa/reviews])"
    );
}

#[tokio::test]
async fn a_real_client_hello_is_recognised_by_its_first_bytes() {
    let ca = ca();
    let c = identity(&ca, &id("default", "productpage"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let dialer = tokio::spawn(async move {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        // The handshake fails when the listener closes; only the ClientHello matters.
        let _ = tokio_rustls::TlsConnector::from(client(&c, &[]))
            .connect(ServerName::try_from("reviews").expect("name"), tcp)
            .await;
    });
    let (tcp, _) = listener.accept().await.expect("accept");
    let mut buf = [0u8; 16];
    let mut seen = 0;
    while seen < 6 {
        seen = tcp.peek(&mut buf).await.expect("peek");
        assert_ne!(seen, 0, "closed before a ClientHello");
    }
    assert_eq!(is_tls_client_hello(&buf[..seen]), Some(true));
    drop(tcp);
    dialer.await.expect("dialer");
}

#[tokio::test]
async fn a_persistent_source_error_is_reported_once_and_the_identity_keeps_serving() {
    let ca = ca();
    let dir = tempfile::tempdir().expect("tempdir");
    let issued = ca.issue(&id("default", "reviews"), DAY).expect("issue");
    let files = issued.write_pem_files(dir.path()).expect("write");
    let manager =
        IdentityManager::new(files.clone(), IdentitySettings::default()).expect("manager");
    let mut events = manager.subscribe();
    let serial = manager.current().serial().to_owned();

    std::fs::remove_file(&files.key).expect("rm");
    let e = manager
        .refresh()
        .await
        .expect_err("missing key")
        .to_string();
    assert!(e.contains("key.pem") && e.contains("cannot read"), "{e}");
    assert!(manager.refresh().await.is_err());
    assert!(matches!(
        events.try_recv(),
        Ok(IdentityEvent::ReloadFailed { .. })
    ));
    assert!(events.try_recv().is_err(), "reported once");
    assert_eq!(manager.current().serial(), serial);

    // Back in place (the same material): no rotation, and the next failure is reported again.
    issued.write_pem_files(dir.path()).expect("write");
    assert!(!manager.refresh().await.expect("readable again"));
    assert_eq!(manager.generation(), 1);
    std::fs::remove_file(&files.key).expect("rm");
    assert!(manager.refresh().await.is_err());
    assert!(matches!(
        events.try_recv(),
        Ok(IdentityEvent::ReloadFailed { .. })
    ));
}
