//! `security.istio.io` RequestAuthentication: which JWTs a workload validates.
//!
//! Semantics (see `ISTIO.md` §8): a request carrying an invalid token is rejected (401); a
//! request carrying no token is accepted without a request identity, unless the rule sets
//! `presence: REQUIRED`. Requiring a token otherwise takes an AuthorizationPolicy
//! (`requestPrincipals: ["*"]`). The request principal is `<iss>/<sub>`.

use std::time::Duration;

use crate::config::common::{MatchLabelsSelector, PolicyTargetReference};
use crate::config::decode::{Cx, Decode, Fields, key_matches};
use crate::path::FieldPath;
use crate::yaml::{Node, Value};

/// The `spec` of a RequestAuthentication.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RequestAuthentication {
    /// `selector`: the workloads it applies to; absent (with no `targetRef(s)`) = every
    /// workload of the namespace (of the mesh, in the root namespace).
    pub selector: Option<MatchLabelsSelector>,
    /// `targetRef`: a single resource the policy attaches to (exclusive with `selector` and
    /// `targetRefs`).
    pub target_ref: Option<PolicyTargetReference>,
    /// `targetRefs`: the resources (Gateway, GatewayClass, Service, ServiceEntry) the policy
    /// attaches to; at most 16.
    pub target_refs: Vec<PolicyTargetReference>,
    /// `jwtRules`: the JWTs accepted; a token is valid when it satisfies any rule.
    pub jwt_rules: Vec<JwtRule>,
}

/// An entry of `jwtRules` (Istio's `JWTRule`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct JwtRule {
    /// `issuer`: must equal the token's `iss`. `None` when absent; `Some("")` is invalid.
    /// Either `issuer` or `jwksUri` must be set.
    pub issuer: Option<String>,
    /// `audiences`: the token's `aud` must contain one of them; empty = not checked.
    pub audiences: Vec<String>,
    /// `jwksUri` (or the deprecated spelling `jwks_uri`): where to fetch the JWKS (http or
    /// https). Exclusive with `jwks`; when both are absent, the JWKS is discovered from the
    /// issuer (OpenID discovery).
    pub jwks_uri: Option<String>,
    /// `jwks`: an inline JSON Web Key Set (public keys). Exclusive with `jwksUri`.
    pub jwks: Option<String>,
    /// `fromHeaders`: header locations of the token; with `fromParams` and `fromCookies`
    /// all empty, the defaults are `Authorization: Bearer <token>` then `?access_token=`.
    pub from_headers: Vec<JwtHeader>,
    /// `fromParams`: query parameters holding the token.
    pub from_params: Vec<String>,
    /// `fromCookies`: cookies holding the token.
    pub from_cookies: Vec<String>,
    /// `outputPayloadToHeader`: header receiving the base64url payload of a verified token;
    /// `""` = none.
    pub output_payload_to_header: String,
    /// `forwardOriginalToken`: keep the token for the upstream request; default `false`
    /// (the token header is removed).
    pub forward_original_token: bool,
    /// `outputClaimToHeaders`: claims copied to request headers on success.
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// `timeout`: how long to wait for the JWKS fetch; absent = 5s.
    pub timeout: Option<Duration>,
    /// `spaceDelimitedClaims`: extra claims split on spaces (`scope` and `permission` always
    /// are); at most 64.
    pub space_delimited_claims: Vec<String>,
    /// `presence`: whether the token must be present; absent = `OPTIONAL`.
    pub presence: Option<JwtPresence>,
}

impl JwtRule {
    /// The effective `presence` (`OPTIONAL` when unset).
    pub fn presence(&self) -> JwtPresence {
        self.presence.unwrap_or(JwtPresence::Optional)
    }
}

crate::istio_enum! {
    /// `jwtRules[].presence`.
    pub enum JwtPresence {
        /// A request without a token is accepted (no request identity); the default.
        Optional => "OPTIONAL",
        /// A request without a token is rejected.
        Required => "REQUIRED",
    }
}

/// An entry of `fromHeaders` (Istio's `JWTHeader`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct JwtHeader {
    /// `name`: the header name; required.
    pub name: String,
    /// `prefix`: stripped before decoding the token (e.g. `"Bearer "`); `""` = none.
    pub prefix: String,
}

/// An entry of `outputClaimToHeaders` (Istio's `ClaimToHeader`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ClaimToHeader {
    /// `header`: the header to set; required, `[-_A-Za-z0-9]+`.
    pub header: String,
    /// `claim`: the claim copied; required.
    pub claim: String,
}

/// Records `what` as an error when `node` is `null`: a list item that must be an object.
fn reject_null(node: &Node, path: &FieldPath<'_>, cx: &mut Cx, what: &str) -> bool {
    if node.value == Value::Null {
        cx.error(
            path,
            node,
            format!("{what}: expected an object, found null"),
        );
        true
    } else {
        false
    }
}

impl Decode for RequestAuthentication {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let spec = RequestAuthentication {
            selector: f.get("selector", cx),
            target_ref: f.get("targetRef", cx),
            target_refs: f.list("targetRefs", cx),
            jwt_rules: f.list("jwtRules", cx),
        };
        f.finish(cx);
        Some(spec)
    }
}

impl Decode for JwtRule {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        if reject_null(node, path, cx, "jwtRules entry must be of type object") {
            return None;
        }
        let mut f = Fields::new(node, path, cx)?;
        // `jwksUri` and its deprecated spelling `jwks_uri` are two schema fields that the
        // CRD counts separately in its "only one of jwks or jwksUri" rule.
        if let Value::Map(entries) = &node.value {
            let spellings = entries
                .iter()
                .filter(|(k, _)| key_matches(k, "jwksUri"))
                .count();
            if spellings > 1 {
                cx.error(
                    path,
                    node,
                    "only one of jwks or jwksUri can be set (jwks_uri is the deprecated spelling of jwksUri)",
                );
            }
        }
        let r = JwtRule {
            issuer: f.get("issuer", cx),
            audiences: f.list("audiences", cx),
            jwks_uri: f.get("jwksUri", cx),
            jwks: f.get("jwks", cx),
            from_headers: f.list("fromHeaders", cx),
            from_params: f.list("fromParams", cx),
            from_cookies: f.list("fromCookies", cx),
            output_payload_to_header: f.get("outputPayloadToHeader", cx).unwrap_or_default(),
            forward_original_token: f.flag("forwardOriginalToken", cx),
            output_claim_to_headers: f.list("outputClaimToHeaders", cx),
            timeout: f.get("timeout", cx),
            space_delimited_claims: f.list("spaceDelimitedClaims", cx),
            presence: f.get("presence", cx),
        };
        f.finish(cx);
        Some(r)
    }
}

impl Decode for JwtHeader {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        if reject_null(node, path, cx, "location header must be non-null") {
            return None;
        }
        let mut f = Fields::new(node, path, cx)?;
        let h = JwtHeader {
            name: f.get("name", cx).unwrap_or_default(),
            prefix: f.get("prefix", cx).unwrap_or_default(),
        };
        f.finish(cx);
        Some(h)
    }
}

impl Decode for ClaimToHeader {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        if reject_null(node, path, cx, "outputClaimToHeaders must not be null") {
            return None;
        }
        let mut f = Fields::new(node, path, cx)?;
        let c = ClaimToHeader {
            header: f.get("header", cx).unwrap_or_default(),
            claim: f.get("claim", cx).unwrap_or_default(),
        };
        f.finish(cx);
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Loader, Spec};

    fn load(spec: &str) -> (RequestAuthentication, Vec<String>) {
        let yaml = format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: r, namespace: foo}}\nspec:\n{spec}"
        );
        let set = Loader::new().load_str(&yaml);
        let problems = set.problems.iter().map(|p| p.to_string()).collect();
        let Some(Spec::RequestAuthentication(ra)) = set.resources.first().map(|r| r.spec.clone())
        else {
            panic!("no RequestAuthentication loaded: {problems:?}");
        };
        (ra, problems)
    }

    #[test]
    fn full_resource_loads_every_field() {
        let (ra, problems) = load(
            r#"  selector: {matchLabels: {app: httpbin}}
  jwtRules:
  - issuer: example.com
    audiences: [a, b]
    jwksUri: https://example.com/jwks.json
    fromHeaders:
    - {name: x-jwt, prefix: "Bearer "}
    fromParams: [token]
    fromCookies: [session]
    outputPayloadToHeader: x-payload
    forwardOriginalToken: true
    outputClaimToHeaders:
    - {header: x-sub, claim: sub}
    timeout: 10s
    spaceDelimitedClaims: [custom_scope]
    presence: REQUIRED
  - issuer: other
    jwks: '{"keys": []}'
"#,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(ra.selector.map(|s| s.match_labels.len()), Some(1));
        let r = &ra.jwt_rules[0];
        assert_eq!(r.issuer.as_deref(), Some("example.com"));
        assert_eq!(r.audiences, ["a", "b"]);
        assert_eq!(r.jwks_uri.as_deref(), Some("https://example.com/jwks.json"));
        assert_eq!(
            r.from_headers,
            [JwtHeader {
                name: "x-jwt".into(),
                prefix: "Bearer ".into()
            }]
        );
        assert_eq!(r.from_params, ["token"]);
        assert_eq!(r.from_cookies, ["session"]);
        assert_eq!(r.output_payload_to_header, "x-payload");
        assert!(r.forward_original_token);
        assert_eq!(
            r.output_claim_to_headers,
            [ClaimToHeader {
                header: "x-sub".into(),
                claim: "sub".into()
            }]
        );
        assert_eq!(r.timeout, Some(Duration::from_secs(10)));
        assert_eq!(r.space_delimited_claims, ["custom_scope"]);
        assert_eq!(r.presence(), JwtPresence::Required);
        let r2 = &ra.jwt_rules[1];
        assert_eq!(r2.jwks.as_deref(), Some(r#"{"keys": []}"#));
        assert_eq!(r2.presence(), JwtPresence::Optional);
        assert!(!r2.forward_original_token);
    }

    #[test]
    fn target_refs_load() {
        let (ra, problems) =
            load("  targetRefs:\n  - {group: \"\", kind: Service, name: foo}\n  jwtRules: []\n");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(ra.target_refs[0].name, "foo");
        assert!(ra.target_ref.is_none());
    }

    #[test]
    fn snake_case_and_deprecated_jwks_uri() {
        let (ra, problems) = load(
            "  jwtRules:\n  - issuer: i\n    jwks_uri: https://a/jwks\n    forward_original_token: true\n    output_claim_to_headers: [{header: h, claim: c}]\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let r = &ra.jwt_rules[0];
        assert_eq!(r.jwks_uri.as_deref(), Some("https://a/jwks"));
        assert!(r.forward_original_token);
        assert_eq!(r.output_claim_to_headers.len(), 1);
        let (_, problems) = load(
            "  jwtRules:\n  - issuer: i\n    jwks_uri: https://a/jwks\n    jwksUri: https://b/jwks\n",
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("spec.jwtRules[0]") && p.contains("only one of jwks")),
            "{problems:?}"
        );
    }

    #[test]
    fn null_items_and_unknown_fields_are_errors() {
        let (ra, problems) = load("  jwtRules:\n  -\n");
        assert!(ra.jwt_rules.is_empty());
        assert!(
            problems
                .iter()
                .any(|p| p.contains("spec.jwtRules[0]") && p.contains("must be of type object")),
            "{problems:?}"
        );
        let (_, problems) = load("  jwtRules:\n  - issuer: i\n    jwksURL: https://a\n");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("spec.jwtRules[0].jwksURL") && p.contains("unknown field")),
            "{problems:?}"
        );
    }
}
