//! JwtAuthn tests: keys generated per test (ES256 and EdDSA with rcgen; RS256 from a fixed
//! test key, as ring cannot generate RSA keys), tokens signed with jsonwebtoken.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_core::future::BoxFuture;
use http::request::Parts;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::*;
use crate::authn::jwks::{JwksCacheConfig, JwksFetcher};
use crate::authn::token::b64url_decode;
use crate::config::Loader;
use crate::error::BoxError;

const ROOT: &str = "istio-system";

struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: Option<String>,
    jwk: Value,
}

impl Signer {
    fn es256(kid: &str) -> Signer {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
        Self::from_key(
            EncodingKey::from_ec_der(&kp.serialize_der()),
            Algorithm::ES256,
            kid,
        )
    }

    fn ed25519(kid: &str) -> Signer {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("keygen");
        // ring writes PKCS#8 v2 (seed and public key), which ed25519-dalek refuses; re-wrap
        // the 32-byte seed (at offset 16) as PKCS#8 v1.
        let v2 = kp.serialize_der();
        let seed = v2.get(16..48).expect("a PKCS#8 Ed25519 key");
        let mut v1 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        v1.extend_from_slice(seed);
        Self::from_key(EncodingKey::from_ed_der(&v1), Algorithm::EdDSA, kid)
    }

    fn rs256(kid: &str) -> Signer {
        let der = include_bytes!("testdata/rsa2048.pkcs1.der");
        Self::from_key(EncodingKey::from_rsa_der(der), Algorithm::RS256, kid)
    }

    fn from_key(key: EncodingKey, alg: Algorithm, kid: &str) -> Signer {
        let mut jwk = Jwk::from_encoding_key(&key, alg).expect("public JWK");
        jwk.common.key_id = Some(kid.to_owned());
        Signer {
            key,
            alg,
            kid: Some(kid.to_owned()),
            jwk: serde_json::to_value(jwk).expect("JWK serializes"),
        }
    }

    fn sign(&self, claims: Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = self.kid.clone();
        jsonwebtoken::encode(&header, &claims, &self.key).expect("signs")
    }
}

fn jwks_of(signers: &[&Signer]) -> String {
    json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()}).to_string()
}

fn now() -> i64 {
    i64::try_from(unix_now()).expect("time fits")
}

/// Claims for issuer `iss`, subject `sub`, valid for an hour.
fn claims(iss: &str) -> Value {
    json!({"iss": iss, "sub": "alice", "exp": now() + 3600, "iat": now()})
}

fn ra(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}\n---\n"
    )
}

/// A rule for `issuer` with inline keys, plus extra rule fields (YAML lines indented by 4).
fn rule(issuer: &str, jwks: &str, extra: &str) -> String {
    format!("  - issuer: {issuer}\n    jwks: '{jwks}'\n{extra}")
}

fn workload() -> SourceIdentity {
    SourceIdentity {
        namespace: "foo".to_owned(),
        labels: [("app".to_owned(), "web".to_owned())].into(),
    }
}

fn compile(docs: &[String]) -> JwtAuthn {
    let set = Loader::new().load_str(&docs.concat());
    assert!(set.problems.is_empty(), "{:?}", set.problems);
    let (authn, warnings) = JwtAuthn::compile(&set, &workload(), ROOT);
    assert!(warnings.is_empty(), "{warnings:?}");
    authn
}

/// One policy in `foo` with `rules` (a `jwtRules` list body).
fn one_policy(rules: &str) -> JwtAuthn {
    compile(&[ra("foo", "jwt", &format!("  jwtRules:\n{rules}"))])
}

fn request(uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut b = http::Request::builder().uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).expect("valid request").into_parts().0
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn reason(authn: &JwtAuthn, parts: &mut Parts) -> String {
    match authn.authenticate(parts).await {
        Err(crate::Error::Unauthenticated { reason }) => reason.into_owned(),
        other => panic!("expected a 401, got {other:?}"),
    }
}

#[tokio::test]
async fn valid_token_yields_the_principal_and_is_removed() {
    let s = Signer::es256("k1");
    let authn = one_policy(&rule("issuer-a", &jwks_of(&[&s]), "    audiences: [api]\n"));
    let mut c = claims("issuer-a");
    c["aud"] = json!(["other", "api"]);
    c["azp"] = json!("web-app");
    c["scope"] = json!("read  write");
    let token = s.sign(c);
    let mut parts = request("/", &[("authorization", &bearer(&token))]);
    let p = authn
        .authenticate(&mut parts)
        .await
        .expect("valid")
        .expect("a principal");
    assert_eq!(p.principal, "issuer-a/alice");
    assert_eq!(
        (p.issuer.as_str(), p.subject.as_str()),
        ("issuer-a", "alice")
    );
    assert_eq!(p.audiences, ["other", "api"]);
    assert_eq!(p.presenter.as_deref(), Some("web-app"));
    assert_eq!(
        p.claims["scope"],
        json!(["read", "write"]),
        "scope is split"
    );
    let mut seen = Vec::new();
    let hit = p.visit_claim(&["scope".to_owned()], &mut |v| {
        seen.push(v.to_owned());
        v == "write"
    });
    assert_eq!(hit, Some(true));
    assert!(
        parts.headers.get("authorization").is_none(),
        "forwardOriginalToken defaults to false"
    );
}

#[tokio::test]
async fn rsa_and_eddsa_tokens_verify() {
    let rsa = Signer::rs256("r");
    let ed = Signer::ed25519("e");
    let authn = one_policy(&rule("iss", &jwks_of(&[&rsa, &ed]), ""));
    for s in [&rsa, &ed] {
        let mut parts = request("/", &[("authorization", &bearer(&s.sign(claims("iss"))))]);
        let p = authn.authenticate(&mut parts).await.expect("valid");
        assert_eq!(
            p.map(|p| p.principal).as_deref(),
            Some("iss/alice"),
            "{:?}",
            s.alg
        );
    }
}

#[tokio::test]
async fn invalid_tokens_are_rejected_with_envoys_reasons() {
    let s = Signer::es256("k1");
    let other = Signer::es256("k1");
    let authn = one_policy(&rule("issuer-a", &jwks_of(&[&s]), "    audiences: [api]\n"));
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = claims("issuer-a");
        c["aud"] = json!("api");
        f(&mut c);
        c
    };
    let cases: Vec<(String, &str)> = vec![
        (
            s.sign(with(&|c| c["exp"] = json!(now() - 120))),
            "Jwt is expired",
        ),
        (
            s.sign(with(&|c| c["nbf"] = json!(now() + 600))),
            "Jwt not yet valid",
        ),
        (
            s.sign(with(&|c| c["iss"] = json!("issuer-b"))),
            "Jwt issuer is not configured",
        ),
        (
            s.sign(with(&|c| c["aud"] = json!("web"))),
            "Audiences in Jwt are not allowed",
        ),
        (other.sign(with(&|_| {})), "Jwt verification fails"),
        (
            "not-a-jwt".to_owned(),
            "Jwt is not in the form of Header.Payload.Signature",
        ),
    ];
    for (token, want) in cases {
        let mut parts = request("/", &[("authorization", &bearer(&token))]);
        assert_eq!(reason(&authn, &mut parts).await, want);
        assert!(
            parts.headers.get("authorization").is_some(),
            "kept on failure"
        );
    }
    // Within the 60 s clock skew, an expired token is still accepted.
    let mut parts = request(
        "/",
        &[(
            "authorization",
            &bearer(&s.sign(with(&|c| c["exp"] = json!(now() - 30)))),
        )],
    );
    assert!(
        authn
            .authenticate(&mut parts)
            .await
            .expect("within skew")
            .is_some()
    );
    // A tampered payload breaks the signature.
    let token = s.sign(with(&|_| {}));
    let mut segs: Vec<&str> = token.split('.').collect();
    let forged = crate::authn::token::b64url_encode(
        with(&|c| c["sub"] = json!("mallory"))
            .to_string()
            .as_bytes(),
    );
    segs[1] = &forged;
    let mut parts = request("/", &[("authorization", &bearer(&segs.join(".")))]);
    assert_eq!(reason(&authn, &mut parts).await, "Jwt verification fails");
}

#[tokio::test]
async fn unknown_kid_in_inline_keys_is_a_kid_mismatch() {
    let s = Signer::es256("k1");
    let authn = one_policy(&rule("iss", &jwks_of(&[&s]), ""));
    let stranger = Signer::es256("k2");
    let mut parts = request(
        "/",
        &[("authorization", &bearer(&stranger.sign(claims("iss"))))],
    );
    assert_eq!(
        reason(&authn, &mut parts).await,
        "Jwks doesn't have key to match kid or alg from Jwt"
    );
}

#[tokio::test]
async fn missing_token_passes_unless_presence_is_required() {
    let s = Signer::es256("k1");
    let optional = one_policy(&rule("iss", &jwks_of(&[&s]), ""));
    let mut parts = request("/", &[]);
    assert_eq!(optional.authenticate(&mut parts).await.expect("ok"), None);
    let required = one_policy(&rule("iss", &jwks_of(&[&s]), "    presence: REQUIRED\n"));
    let mut parts = request("/", &[]);
    assert_eq!(reason(&required, &mut parts).await, "Jwt is missing");
    let mut parts = request("/", &[("authorization", &bearer(&s.sign(claims("iss"))))]);
    assert!(
        required
            .authenticate(&mut parts)
            .await
            .expect("ok")
            .is_some()
    );
}

#[tokio::test]
async fn no_policy_means_nothing_is_checked() {
    let authn = compile(&[]);
    assert!(authn.is_empty());
    let mut parts = request("/", &[("authorization", "Bearer garbage")]);
    assert_eq!(authn.authenticate(&mut parts).await.expect("ok"), None);
    assert!(parts.headers.get("authorization").is_some());
}

#[tokio::test]
async fn from_headers_with_prefix_params_and_cookies() {
    let s = Signer::es256("k1");
    let token = s.sign(claims("iss"));
    let authn = one_policy(&rule(
        "iss",
        &jwks_of(&[&s]),
        "    fromHeaders: [{name: x-jwt-assertion, prefix: 'Token '}]\n    fromParams: [jwt]\n    fromCookies: [session]\n",
    ));
    // Header with its prefix.
    let mut parts = request("/", &[("x-jwt-assertion", &format!("Token {token}"))]);
    assert!(authn.authenticate(&mut parts).await.expect("ok").is_some());
    assert!(parts.headers.get("x-jwt-assertion").is_none());
    // The default location is not used once locations are configured.
    let mut parts = request("/", &[("authorization", &bearer(&token))]);
    assert_eq!(authn.authenticate(&mut parts).await.expect("ok"), None);
    // Query parameter: removed from the query.
    let mut parts = request(&format!("/p?a=1&jwt={token}"), &[]);
    assert!(authn.authenticate(&mut parts).await.expect("ok").is_some());
    assert_eq!(parts.uri.to_string(), "/p?a=1");
    // Cookie: accepted, and left in place as Envoy does.
    let cookie = format!("theme=dark; session={token}");
    let mut parts = request("/", &[("cookie", &cookie)]);
    assert!(authn.authenticate(&mut parts).await.expect("ok").is_some());
    assert_eq!(
        parts.headers.get("cookie").and_then(|v| v.to_str().ok()),
        Some(cookie.as_str())
    );
}

#[tokio::test]
async fn default_access_token_param_is_a_location() {
    let s = Signer::es256("k1");
    let authn = one_policy(&rule("iss", &jwks_of(&[&s]), ""));
    let mut parts = request(&format!("/x?access_token={}", s.sign(claims("iss"))), &[]);
    assert!(authn.authenticate(&mut parts).await.expect("ok").is_some());
    assert_eq!(parts.uri.to_string(), "/x");
}

#[tokio::test]
async fn forward_original_token_keeps_it() {
    let s = Signer::es256("k1");
    let authn = one_policy(&rule(
        "iss",
        &jwks_of(&[&s]),
        "    forwardOriginalToken: true\n",
    ));
    let value = bearer(&s.sign(claims("iss")));
    let mut parts = request("/", &[("authorization", &value)]);
    assert!(authn.authenticate(&mut parts).await.expect("ok").is_some());
    assert_eq!(
        parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some(value.as_str())
    );
}

#[tokio::test]
async fn output_payload_and_claims_to_headers() {
    let s = Signer::es256("k1");
    let authn = one_policy(&rule(
        "iss",
        &jwks_of(&[&s]),
        "    outputPayloadToHeader: x-jwt-payload\n    outputClaimToHeaders:\n    - {header: x-sub, claim: sub}\n    - {header: x-level, claim: level}\n    - {header: x-admin, claim: admin}\n    - {header: x-team, claim: org.team}\n    - {header: x-groups, claim: groups}\n",
    ));
    let mut c = claims("iss");
    c["level"] = json!(3);
    c["admin"] = json!(true);
    c["org"] = json!({"team": "payments"});
    c["groups"] = json!(["a", "b"]);
    let token = s.sign(c.clone());
    // Spoofed output headers are removed even when verification then happens.
    let mut parts = request(
        "/",
        &[
            ("authorization", &bearer(&token)),
            ("x-sub", "mallory"),
            ("x-jwt-payload", "forged"),
        ],
    );
    assert!(authn.authenticate(&mut parts).await.expect("ok").is_some());
    let get = |name: &str| {
        parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().expect("ascii").to_owned())
            .collect::<Vec<_>>()
    };
    let payload = get("x-jwt-payload");
    assert_eq!(payload.len(), 1);
    let decoded: Value =
        serde_json::from_slice(&b64url_decode(&payload[0]).expect("base64url")).expect("json");
    assert_eq!(decoded, c, "the payload as signed, base64url");
    assert_eq!(get("x-sub"), ["alice"]);
    assert_eq!(get("x-level"), ["3"]);
    assert_eq!(get("x-admin"), ["true"]);
    assert_eq!(get("x-team"), ["payments"], "nested claim with a dot");
    assert!(get("x-groups").is_empty(), "lists are not copied");
    // Without a token the spoofed headers are still removed.
    let mut parts = request("/", &[("x-sub", "mallory")]);
    assert_eq!(authn.authenticate(&mut parts).await.expect("ok"), None);
    assert!(parts.headers.get("x-sub").is_none());
}

#[tokio::test]
async fn two_issuers_sharing_the_default_location() {
    let a = Signer::es256("a");
    let b = Signer::es256("b");
    let rules = format!(
        "{}{}",
        rule("issuer-b", &jwks_of(&[&b]), ""),
        rule("issuer-a", &jwks_of(&[&a]), "")
    );
    let authn = one_policy(&rules);
    assert_eq!(
        authn.issuers().collect::<Vec<_>>(),
        ["issuer-a", "issuer-b"]
    );
    for (s, iss) in [(&a, "issuer-a"), (&b, "issuer-b")] {
        let mut parts = request("/", &[("authorization", &bearer(&s.sign(claims(iss))))]);
        let p = authn.authenticate(&mut parts).await.expect("ok");
        assert_eq!(p.map(|p| p.issuer).as_deref(), Some(iss));
    }
    // An issuer no rule has.
    let mut parts = request(
        "/",
        &[("authorization", &bearer(&a.sign(claims("issuer-c"))))],
    );
    assert_eq!(
        reason(&authn, &mut parts).await,
        "Jwt issuer is not configured"
    );
    // A real failure wins over "not configured" from the other provider.
    let mut c = claims("issuer-b");
    c["exp"] = json!(now() - 600);
    let mut parts = request("/", &[("authorization", &bearer(&b.sign(c)))]);
    assert_eq!(reason(&authn, &mut parts).await, "Jwt is expired");
    // No token: both rules optional.
    assert_eq!(
        authn
            .authenticate(&mut request("/", &[]))
            .await
            .expect("ok"),
        None
    );
}

#[tokio::test]
async fn a_valid_token_for_one_rule_satisfies_another_rules_required_presence() {
    let a = Signer::es256("a");
    let b = Signer::es256("b");
    let rules = format!(
        "{}{}",
        rule(
            "issuer-a",
            &jwks_of(&[&a]),
            "    fromHeaders: [{name: x-a}]\n"
        ),
        rule(
            "issuer-b",
            &jwks_of(&[&b]),
            "    fromHeaders: [{name: x-b}]\n    presence: REQUIRED\n"
        ),
    );
    let authn = one_policy(&rules);
    let mut parts = request("/", &[("x-a", &a.sign(claims("issuer-a")))]);
    assert!(authn.authenticate(&mut parts).await.expect("ok").is_some());
    assert_eq!(
        reason(&authn, &mut request("/", &[])).await,
        "Jwt is missing"
    );
}

#[tokio::test]
async fn every_token_a_rule_finds_must_be_valid() {
    let s = Signer::es256("k1");
    let authn = one_policy(&rule(
        "iss",
        &jwks_of(&[&s]),
        "    fromHeaders: [{name: x-one}, {name: x-two}]\n",
    ));
    let good = s.sign(claims("iss"));
    let mut bad = claims("iss");
    bad["exp"] = json!(now() - 600);
    let mut parts = request("/", &[("x-one", &good), ("x-two", &s.sign(bad))]);
    assert_eq!(reason(&authn, &mut parts).await, "Jwt is expired");
}

#[test]
fn only_policies_for_the_workload_apply() {
    let s = Signer::es256("k1");
    let keys = jwks_of(&[&s]);
    let spec =
        |issuer: &str, extra: &str| format!("{extra}  jwtRules:\n{}", rule(issuer, &keys, ""));
    let docs = [
        ra("foo", "ns-wide", &spec("ns", "")),
        ra(
            "foo",
            "web",
            &spec("web", "  selector: {matchLabels: {app: web}}\n"),
        ),
        ra(
            "foo",
            "db",
            &spec("db", "  selector: {matchLabels: {app: db}}\n"),
        ),
        ra("bar", "other-ns", &spec("other", "")),
        ra(ROOT, "mesh", &spec("mesh", "")),
        ra(
            ROOT,
            "mesh-web",
            &spec("mesh-web", "  selector: {matchLabels: {app: web}}\n"),
        ),
        ra(
            "foo",
            "gateway",
            &spec(
                "gw",
                "  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}]\n",
            ),
        ),
    ];
    let authn = compile(&docs);
    assert_eq!(
        authn.issuers().collect::<Vec<_>>(),
        ["mesh", "mesh-web", "ns", "web"]
    );
}

#[test]
fn unusable_keys_are_warnings_and_fail_that_issuer() {
    let docs = [ra(
        "foo",
        "jwt",
        "  jwtRules:\n  - issuer: broken\n    jwks: '{\"keys\": [{\"kty\": \"RSA\", \"n\": 5}]}'\n  - issuer: remote\n    jwksUri: https://idp.example/jwks\n",
    )];
    let set = Loader::new().load_str(&docs.concat());
    let (authn, warnings) = JwtAuthn::compile(&set, &workload(), ROOT);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0]
            .to_string()
            .starts_with("RequestAuthentication foo/jwt jwtRules[0]: jwks:")
    );
    assert!(
        warnings[1].message.contains("needs a JWKS fetcher"),
        "{warnings:?}"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let s = Signer::es256("k1");
    for (iss, want) in [
        ("broken", "Jwks doesn't have any valid public key"),
        ("remote", "Jwks remote fetch is failed"),
    ] {
        let mut parts = request("/", &[("authorization", &bearer(&s.sign(claims(iss))))]);
        assert_eq!(rt.block_on(reason(&authn, &mut parts)), want);
    }
}

/// A fetcher serving a JWKS that tests change, counting calls.
struct FakeFetcher {
    body: Mutex<Result<String, String>>,
    calls: AtomicUsize,
}

impl FakeFetcher {
    fn new(body: Result<String, String>) -> Arc<FakeFetcher> {
        Arc::new(FakeFetcher {
            body: Mutex::new(body),
            calls: AtomicUsize::new(0),
        })
    }

    fn set(&self, body: Result<String, String>) {
        *self.body.lock().expect("not poisoned") = body;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl JwksFetcher for FakeFetcher {
    fn fetch(&self, uri: &str) -> BoxFuture<'static, Result<Bytes, BoxError>> {
        assert_eq!(uri, "https://idp.example/jwks");
        self.calls.fetch_add(1, Ordering::SeqCst);
        let body = self.body.lock().expect("not poisoned").clone();
        Box::pin(async move { body.map(Bytes::from).map_err(BoxError::from) })
    }
}

fn remote_authn(fetcher: &Arc<FakeFetcher>) -> JwtAuthn {
    let docs = [ra(
        "foo",
        "jwt",
        "  jwtRules:\n  - issuer: iss\n    jwksUri: https://idp.example/jwks\n    timeout: 2s\n",
    )];
    let set = Loader::new().load_str(&docs.concat());
    let cache = JwksCache::with_config(
        fetcher.clone(),
        JwksCacheConfig {
            refresh_interval: Duration::from_secs(1200),
            min_refetch_interval: Duration::from_secs(30),
            retry_interval: Duration::from_secs(1),
        },
    );
    let (authn, warnings) = JwtAuthn::compile_with(&set, &workload(), ROOT, Some(&cache));
    assert!(warnings.is_empty(), "{warnings:?}");
    authn
}

async fn principal_of(authn: &JwtAuthn, token: &str) -> Result<Option<JwtPrincipal>, crate::Error> {
    authn
        .authenticate(&mut request("/", &[("authorization", &bearer(token))]))
        .await
}

#[tokio::test(start_paused = true)]
async fn remote_keys_are_fetched_once_and_cached() {
    let s = Signer::es256("k1");
    let fetcher = FakeFetcher::new(Ok(jwks_of(&[&s])));
    let authn = remote_authn(&fetcher);
    for _ in 0..3 {
        let p = principal_of(&authn, &s.sign(claims("iss")))
            .await
            .expect("ok");
        assert!(p.is_some());
    }
    assert_eq!(fetcher.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn unknown_kid_triggers_a_rate_limited_refetch() {
    let old = Signer::es256("old");
    let new = Signer::es256("new");
    let fetcher = FakeFetcher::new(Ok(jwks_of(&[&old])));
    let authn = remote_authn(&fetcher);
    assert!(
        principal_of(&authn, &old.sign(claims("iss")))
            .await
            .expect("ok")
            .is_some()
    );
    // The identity provider rotates its key; a token with the new kid refetches.
    fetcher.set(Ok(jwks_of(&[&old, &new])));
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(
        principal_of(&authn, &new.sign(claims("iss")))
            .await
            .expect("ok")
            .is_some()
    );
    assert_eq!(fetcher.calls(), 2);
    // Made-up kids do not refetch more than once per min_refetch_interval.
    let stranger = Signer::es256("made-up");
    for _ in 0..3 {
        let err = principal_of(&authn, &stranger.sign(claims("iss"))).await;
        assert!(matches!(err, Err(crate::Error::Unauthenticated { .. })));
    }
    assert_eq!(fetcher.calls(), 2, "within 30 s of the last fetch");
    tokio::time::advance(Duration::from_secs(31)).await;
    let _ = principal_of(&authn, &stranger.sign(claims("iss"))).await;
    assert_eq!(fetcher.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn failed_fetch_fails_tokens_until_a_retry_succeeds() {
    let s = Signer::es256("k1");
    let fetcher = FakeFetcher::new(Err("connection refused".to_owned()));
    let authn = remote_authn(&fetcher);
    let err = principal_of(&authn, &s.sign(claims("iss"))).await;
    assert!(
        matches!(&err, Err(crate::Error::Unauthenticated { reason }) if reason == "Jwks remote fetch is failed"),
        "{err:?}"
    );
    // Immediately again: rate-limited, no new fetch.
    let _ = principal_of(&authn, &s.sign(claims("iss"))).await;
    assert_eq!(fetcher.calls(), 1);
    fetcher.set(Ok(jwks_of(&[&s])));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(
        principal_of(&authn, &s.sign(claims("iss")))
            .await
            .expect("ok")
            .is_some()
    );
    assert_eq!(fetcher.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn stale_keys_are_served_while_a_failed_refresh_keeps_them() {
    let s = Signer::es256("k1");
    let fetcher = FakeFetcher::new(Ok(jwks_of(&[&s])));
    let authn = remote_authn(&fetcher);
    assert!(
        principal_of(&authn, &s.sign(claims("iss")))
            .await
            .expect("ok")
            .is_some()
    );
    fetcher.set(Err("idp down".to_owned()));
    tokio::time::advance(Duration::from_secs(1201)).await;
    // The refresh runs in the background; the cached keys still verify.
    assert!(
        principal_of(&authn, &s.sign(claims("iss")))
            .await
            .expect("ok")
            .is_some()
    );
    tokio::task::yield_now().await;
    assert_eq!(fetcher.calls(), 2);
    assert!(
        principal_of(&authn, &s.sign(claims("iss")))
            .await
            .expect("ok")
            .is_some()
    );
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_extractor_reads_the_principal_from_extensions() {
    use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
    let mut parts = request("/", &[]);
    let missing = <JwtPrincipal as FromRequestParts<()>>::from_request_parts(&mut parts, &()).await;
    assert_eq!(
        missing.err(),
        Some((http::StatusCode::UNAUTHORIZED, "no request principal"))
    );
    let optional =
        <JwtPrincipal as OptionalFromRequestParts<()>>::from_request_parts(&mut parts, &()).await;
    assert!(matches!(optional, Ok(None)));
    let p = JwtPrincipal {
        principal: "i/s".to_owned(),
        issuer: "i".to_owned(),
        subject: "s".to_owned(),
        audiences: Vec::new(),
        presenter: None,
        claims: serde_json::Map::new(),
    };
    parts.extensions.insert(p.clone());
    let got = <JwtPrincipal as FromRequestParts<()>>::from_request_parts(&mut parts, &()).await;
    assert_eq!(got.ok(), Some(p));
}
