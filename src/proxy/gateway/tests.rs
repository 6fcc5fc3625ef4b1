use super::hosts::ServerHost;
use super::plan::PlannedServer;
use super::*;

fn server(gateway: &str, hosts: &[&str], redirect: bool) -> PlannedServer {
    PlannedServer {
        gateway: Arc::from(gateway),
        hosts: hosts.iter().map(|h| ServerHost::parse(h)).collect(),
        https_redirect: redirect,
    }
}

fn plan(port: u16, kind: PortKind, servers: Vec<PlannedServer>) -> Plan {
    let mut plan = Plan::default();
    plan.ports.insert(
        port,
        PortPlan {
            kind,
            servers,
            tls: None,
        },
    );
    plan
}

fn fwd(g: &str) -> Admit {
    Admit::Forward(Arc::from(g))
}

#[test]
fn the_most_specific_server_host_wins_and_unknown_hosts_are_404() {
    let p = plan(
        80,
        PortKind::Http,
        vec![
            server("edge/wild", &["*.example.com"], false),
            server("edge/exact", &["prod/api.example.com"], false),
            server("edge/deeper", &["*.eu.example.com"], false),
        ],
    );
    assert_eq!(
        admit(&p, 80, Some("api.example.com"), "/", None),
        fwd("edge/exact")
    );
    assert_eq!(
        admit(&p, 80, Some("API.example.com:80"), "/", None),
        fwd("edge/exact")
    );
    assert_eq!(
        admit(&p, 80, Some("x.example.com"), "/", None),
        fwd("edge/wild")
    );
    assert_eq!(
        admit(&p, 80, Some("x.eu.example.com"), "/", None),
        fwd("edge/deeper")
    );
    assert_eq!(
        admit(&p, 80, Some("example.com"), "/", None),
        Admit::NotFound("example.com".into())
    );
    assert_eq!(
        admit(&p, 80, None, "/", None),
        Admit::NotFound(String::new())
    );
    // Another port of the plan, or none.
    assert!(matches!(
        admit(&p, 81, Some("api.example.com"), "/", None),
        Admit::NotFound(_)
    ));
}

#[test]
fn https_redirect_applies_to_plaintext_only() {
    let p = plan(80, PortKind::Http, vec![server("edge/gw", &["*"], true)]);
    assert_eq!(
        admit(&p, 80, Some("a.example.com:80"), "/x?y=1", None),
        Admit::Redirect("https://a.example.com/x?y=1".into())
    );
    assert_eq!(
        admit(&p, 80, Some("a.example.com"), "/", Some(None)),
        fwd("edge/gw")
    );
}

#[test]
fn over_tls_the_host_must_belong_to_the_server_the_sni_chose() {
    let p = plan(
        443,
        PortKind::Https,
        vec![
            server("edge/a", &["a.example.com"], false),
            server("edge/b", &["b.example.com"], false),
        ],
    );
    assert_eq!(
        admit(
            &p,
            443,
            Some("a.example.com"),
            "/",
            Some(Some("a.example.com"))
        ),
        fwd("edge/a")
    );
    assert!(matches!(
        admit(
            &p,
            443,
            Some("b.example.com"),
            "/",
            Some(Some("a.example.com"))
        ),
        Admit::NotFound(_)
    ));
    // Without SNI, the Host chooses.
    assert_eq!(
        admit(&p, 443, Some("b.example.com"), "/", Some(None)),
        fwd("edge/b")
    );
}
