//! Validation rules for RequestAuthentication (rules 4, 11–12, 127–128, 143–146).

use crate::config::Resource;
use crate::config::request_authentication::{JwtRule, RequestAuthentication};
use crate::path::FieldPath;
use crate::validate::Findings;
use crate::validate::authorization_policy::check_policy_scope;
use crate::validate::common::check_duration;

/// CRD `maxItems` of `jwtRules`.
const MAX_JWT_RULES: usize = 4096;
/// CRD `maxItems` of `spaceDelimitedClaims`.
const MAX_SPACE_DELIMITED_CLAIMS: usize = 64;
/// CRD `maxLength` of `jwksUri`.
const MAX_JWKS_URI_LEN: usize = 2048;
/// JWK members that only a private (or secret) key carries.
const PRIVATE_KEY_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];
/// Key types a JWKS may hold.
const KEY_TYPES: [&str; 4] = ["EC", "RSA", "oct", "OKP"];

/// Checks every rule for a RequestAuthentication.
pub(crate) fn check(
    _res: &Resource,
    spec: &RequestAuthentication,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    check_policy_scope(
        path,
        spec.selector.as_ref(),
        spec.target_ref.as_ref(),
        &spec.target_refs,
        out,
    );
    let rules_path = path.field("jwtRules");
    if spec.jwt_rules.len() > MAX_JWT_RULES {
        out.error(
            143,
            &rules_path,
            format!(
                "must have at most {MAX_JWT_RULES} items, found {}",
                spec.jwt_rules.len()
            ),
        );
    }
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        check_jwt_rule(&rules_path.index(i), rule, out);
    }
}

/// Rules 143–146 (and 4) for one entry of `jwtRules`.
fn check_jwt_rule(path: &FieldPath<'_>, rule: &JwtRule, out: &mut Findings<'_>) {
    // Rule 143: issuer / jwksUri / jwks / audiences.
    let issuer_path = path.field("issuer");
    let uri_path = path.field("jwksUri");
    if rule.issuer.as_deref() == Some("") {
        out.error(
            143,
            &issuer_path,
            "issuer must be a non-empty string (at least 1 character) when set",
        );
    } else if rule.issuer.is_none() && rule.jwks_uri.as_deref().is_none_or(str::is_empty) {
        out.error(143, path, "issuer or jwksUri must be non-empty string");
    }
    let aud_path = path.field("audiences");
    for (n, a) in rule.audiences.iter().enumerate() {
        if a.is_empty() {
            out.error(143, &aud_path.index(n), "audience must be non-empty string");
        }
    }
    if let Some(uri) = &rule.jwks_uri {
        if let Err(e) = check_jwks_uri(uri) {
            out.error(143, &uri_path, e);
        }
        if rule.jwks.is_some() {
            out.error(143, path, "only one of jwks or jwksUri can be set");
        }
    }
    if let Some(jwks) = rule.jwks.as_deref().filter(|j| !j.is_empty()) {
        let jwks_path = path.field("jwks");
        match check_jwks(jwks) {
            Ok(private) => {
                for (key, member) in private {
                    out.warn(
                        143,
                        &jwks_path,
                        format!(
                            "jwks key {key} carries private key material (member {member:?}): \
                             a JWKS used to verify tokens must hold public keys only"
                        ),
                    );
                }
            }
            Err(e) => out.error(143, &jwks_path, format!("jwks parse error: {e}")),
        }
    }
    let sdc_path = path.field("spaceDelimitedClaims");
    if rule.space_delimited_claims.len() > MAX_SPACE_DELIMITED_CLAIMS {
        out.error(
            143,
            &sdc_path,
            format!(
                "must have at most {MAX_SPACE_DELIMITED_CLAIMS} items, found {}",
                rule.space_delimited_claims.len()
            ),
        );
    }
    for (n, c) in rule.space_delimited_claims.iter().enumerate() {
        if c.is_empty() {
            out.error(
                143,
                &sdc_path.index(n),
                "space delimited claim name must be non-empty string",
            );
        }
    }

    // Rule 144: token locations.
    let headers_path = path.field("fromHeaders");
    for (n, h) in rule.from_headers.iter().enumerate() {
        if h.name.is_empty() {
            let hp = headers_path.index(n);
            out.error(
                144,
                &hp.field("name"),
                "location header name must be non-empty string",
            );
        }
    }
    let params_path = path.field("fromParams");
    for (n, p) in rule.from_params.iter().enumerate() {
        if p.is_empty() {
            out.error(
                144,
                &params_path.index(n),
                "location query must be non-empty string",
            );
        }
    }
    let cookies_path = path.field("fromCookies");
    for (n, c) in rule.from_cookies.iter().enumerate() {
        if c.is_empty() {
            out.error(
                144,
                &cookies_path.index(n),
                "cookie name must be non-empty string",
            );
        }
    }

    // Rule 145: outputClaimToHeaders.
    let claims_path = path.field("outputClaimToHeaders");
    for (n, c) in rule.output_claim_to_headers.iter().enumerate() {
        let cp = claims_path.index(n);
        if c.header.is_empty() || c.claim.is_empty() {
            out.error(
                145,
                &cp,
                "outputClaimToHeaders header and claim value must be non-empty string",
            );
            continue;
        }
        let valid = c
            .header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            out.error(
                145,
                &cp.field("header"),
                format!("header name {:?} is not a valid header name", c.header),
            );
        }
    }

    // Rule 146 (the Duration rule, 4): timeout.
    if let Some(t) = rule.timeout {
        check_duration(out, &path.field("timeout"), t);
    }
}

/// Rule 143: `jwksUri` is an http(s) URL with a valid port, at most 2048 characters, as Go's
/// `url.Parse` and Istio's `ParseJwksURI` read it.
fn check_jwks_uri(uri: &str) -> Result<(), String> {
    if uri.is_empty() {
        return Err("jwksUri must be a non-empty string (at least 1 character) when set".into());
    }
    if uri.len() > MAX_JWKS_URI_LEN {
        return Err(format!(
            "jwksUri must be at most {MAX_JWKS_URI_LEN} characters, found {}",
            uri.len()
        ));
    }
    if uri.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err(format!(
            "invalid jwksUri {uri:?}: invalid control character in URL"
        ));
    }
    let (scheme, rest) = split_scheme(uri);
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "URI scheme {scheme:?} is not supported: url must have scheme http:// or https://"
        ));
    }
    let Some(after) = rest.strip_prefix("//") else {
        return Ok(()); // no authority: Go accepts it (an opaque URL)
    };
    let authority = after.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let port = if let Some(v6) = host_port.strip_prefix('[') {
        match v6.split_once(']') {
            Some((_, "")) => "",
            Some((_, tail)) => match tail.strip_prefix(':') {
                Some(p) => p,
                None => {
                    return Err(format!(
                        "invalid jwksUri {uri:?}: invalid port {tail:?} after host"
                    ));
                }
            },
            None => return Err(format!("invalid jwksUri {uri:?}: missing ']' in host")),
        }
    } else {
        host_port
            .rsplit_once(':')
            .map(|(_, p)| p)
            .unwrap_or_default()
    };
    let port_ok = port.is_empty()
        || (port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok());
    if !port_ok {
        return Err(format!("invalid jwksUri {uri:?}: invalid port {port:?}"));
    }
    Ok(())
}

/// Go's `getScheme`: the scheme before the first `:` (letters, then letters, digits, `+-.`),
/// or `""` when there is none.
fn split_scheme(uri: &str) -> (&str, &str) {
    for (i, c) in uri.char_indices() {
        match c {
            'a'..='z' | 'A'..='Z' => {}
            '0'..='9' | '+' | '-' | '.' if i > 0 => {}
            ':' if i > 0 => return (&uri[..i], &uri[i + 1..]),
            _ => return ("", uri),
        }
    }
    ("", uri)
}

/// Rule 143: `jwks` is a JSON Web Key Set: a JSON object with a `keys` array of JWK objects
/// of a known `kty`. Returns the private members found, as (key index, member).
fn check_jwks(jwks: &str) -> Result<Vec<(usize, &'static str)>, String> {
    let value: serde_json::Value = serde_json::from_str(jwks).map_err(|e| e.to_string())?;
    let obj = value
        .as_object()
        .ok_or("expected a JSON object with a \"keys\" array")?;
    let keys = obj
        .get("keys")
        .and_then(serde_json::Value::as_array)
        .ok_or("expected a JSON object with a \"keys\" array")?;
    let mut private = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let key = key
            .as_object()
            .ok_or_else(|| format!("key {i} is not a JSON object"))?;
        match key.get("kty").and_then(serde_json::Value::as_str) {
            Some(kty) if KEY_TYPES.contains(&kty) => {}
            Some(kty) => return Err(format!("key {i}: unsupported key type {kty:?}")),
            None => return Err(format!("key {i}: missing \"kty\"")),
        }
        for m in PRIVATE_KEY_MEMBERS {
            if key.contains_key(m) {
                private.push((i, m));
            }
        }
    }
    Ok(private)
}

#[cfg(test)]
mod tests {
    use crate::validate::testing::*;

    fn ra(spec: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: r, namespace: foo}}\nspec:\n{spec}"
        )
    }

    /// One JWT rule with `issuer: example.com` and the given extra fields (indented 4).
    fn rule(extra: &str) -> String {
        ra(&format!("  jwtRules:\n  - issuer: example.com\n{extra}"))
    }

    const JWKS: &str = r#"{"keys":[{"kty":"RSA","e":"AQAB","n":"xAE7eB6qugXyCAG3yhh7pkDkT65pHymX-P7KfIupjf59vsdo91bSP9C8H07pSAGQO1MV_xFj9VswgsCg4R6otmg5PV2He95lZdHtOcU5DXIg_pbhLdKXbi66GlVeK6ABZOUW3WYtnNHD-91gVuoeJT_DwtGGcp4ignkgXfkiEm4sw-4sfb4qdt5oLbyVpmW6x9cfa7vs2WTfURiCrBoUqgBo_-4WTiULmmHSGZHOjzwa8WtrtOQGsAFjIbno85jp6MnGGGZPYZbDAa_b3y5u-YpW7ypZrvD8BgtKVjgtQgZhLAGezMt0ua3DRrWnKqTZ0BJ_EyxOGuHJrLsn00fnMQ"}]}"#;

    #[test]
    fn rule_004_jwt_timeout_duration() {
        passes(&rule("    timeout: 5s\n"));
        fails(
            &rule("    timeout: 0.5ms\n"),
            "spec.jwtRules[0].timeout",
            "greater than 1ms",
        );
    }

    #[test]
    fn rule_011_selector_labels() {
        passes(&ra("  selector: {matchLabels: {app: a}}\n"));
        fails(
            &ra("  selector: {matchLabels: {\"*\": a}}\n"),
            "spec.selector.matchLabels[*]",
            "wildcard is not supported",
        );
    }

    #[test]
    fn rule_012_selector_without_labels() {
        no_finding(
            &ra("  selector: {matchLabels: {app: a}}\n"),
            "spec.selector",
        );
        warns(
            &ra("  selector: {matchLabels: {}}\n"),
            "spec.selector",
            "without labels",
        );
    }

    #[test]
    fn rule_127_selector_or_target_refs() {
        passes(&ra("  targetRef: {kind: Service, name: foo}\n"));
        fails(
            &ra(
                "  selector: {matchLabels: {a: b}}\n  targetRef: {group: \"\", kind: Service, name: foo}\n",
            ),
            "spec",
            "only one of targetRefs or selector can be set",
        );
        fails(
            &ra("  selector: {matchLabels: {a: b}}\n  targetRefs: [{kind: Service, name: foo}]\n"),
            "spec",
            "only one of targetRefs or selector can be set",
        );
    }

    #[test]
    fn rule_128_target_ref_fields() {
        passes(&ra(
            "  targetRefs:\n  - {group: gateway.networking.k8s.io, kind: Gateway, name: gw}\n",
        ));
        fails(
            &ra("  targetRef: {group: \"\", kind: Service}\n"),
            "spec.targetRef.name",
            "targetRef name must be set",
        );
        fails(
            &ra("  targetRef: {group: \"\", kind: Service, name: foo, namespace: bar}\n"),
            "spec.targetRef.namespace",
            "cross namespace referencing is not supported",
        );
        fails(
            &ra("  targetRef: {group: \"__\", kind: Service, name: foo}\n"),
            "spec.targetRef",
            "targetRef must be to one of",
        );
        fails(
            &ra("  targetRef: {group: \"\", kind: Serv_ice, name: foo}\n"),
            "spec.targetRef",
            "targetRef must be to one of",
        );
    }

    #[test]
    fn rule_143_jwt_rule_issuer_audiences_jwks() {
        passes(&rule(
            "    audiences: [a]\n    jwksUri: https://example.com:8443/.well-known/jwks.json\n",
        ));
        passes(&ra("  jwtRules:\n  - jwksUri: http://example.com/jwks\n"));
        passes(&ra(
            "  jwtRules:\n  - jwks_uri: \"http://[::1]:8080/jwks\"\n",
        ));
        passes(&rule(&format!("    jwks: '{JWKS}'\n")));
        fails(
            &ra("  jwtRules:\n  - audiences: [a]\n"),
            "spec.jwtRules[0]",
            "issuer or jwksUri must be non-empty string",
        );
        fails(
            &ra("  jwtRules:\n  - issuer: \"\"\n    jwksUri: https://a/jwks\n"),
            "spec.jwtRules[0].issuer",
            "non-empty",
        );
        fails(
            &rule("    audiences: [\"\"]\n"),
            "spec.jwtRules[0].audiences[0]",
            "audience must be non-empty string",
        );
        fails(
            &rule("    jwksUri: ftp://example.com/jwks\n"),
            "spec.jwtRules[0].jwksUri",
            "URI scheme \"ftp\" is not supported",
        );
        fails(
            &rule("    jwksUri: \"hTPp\\\\\\blah\"\n"),
            "spec.jwtRules[0].jwksUri",
            "control character",
        );
        fails(
            &rule("    jwksUri: example.com/jwks\n"),
            "spec.jwtRules[0].jwksUri",
            "URI scheme \"\" is not supported",
        );
        fails(
            &rule("    jwksUri: https://example.com:port/jwks\n"),
            "spec.jwtRules[0].jwksUri",
            "invalid port",
        );
        fails(
            &rule("    jwksUri: https://example.com:70000/jwks\n"),
            "spec.jwtRules[0].jwksUri",
            "invalid port",
        );
        fails(
            &rule("    jwksUri: \"\"\n"),
            "spec.jwtRules[0].jwksUri",
            "non-empty",
        );
        fails(
            &rule(&format!("    jwksUri: https://a/{}\n", "x".repeat(2048))),
            "spec.jwtRules[0].jwksUri",
            "at most 2048",
        );
        fails(
            &rule(&format!(
                "    jwksUri: https://a/jwks\n    jwks: '{JWKS}'\n"
            )),
            "spec.jwtRules[0]",
            "only one of jwks or jwksUri can be set",
        );
        fails(
            &rule("    jwks: 'not json'\n"),
            "spec.jwtRules[0].jwks",
            "jwks parse error",
        );
        fails(
            &rule("    jwks: '{\"kty\": \"RSA\"}'\n"),
            "spec.jwtRules[0].jwks",
            "\"keys\" array",
        );
        fails(
            &rule("    jwks: '{\"keys\": [{\"n\": \"x\"}]}'\n"),
            "spec.jwtRules[0].jwks",
            "missing \"kty\"",
        );
        fails(
            &rule("    spaceDelimitedClaims: [\"\"]\n"),
            "spec.jwtRules[0].spaceDelimitedClaims[0]",
            "non-empty",
        );
        let claims: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
        fails(
            &rule(&format!(
                "    spaceDelimitedClaims: [{}]\n",
                claims.join(", ")
            )),
            "spec.jwtRules[0].spaceDelimitedClaims",
            "at most 64",
        );
        fails(
            &ra("  jwtRules:\n  -\n"),
            "spec.jwtRules[0]",
            "must be of type object",
        );
    }

    #[test]
    fn rule_143_private_keys_warn() {
        no_finding(
            &rule(&format!("    jwks: '{JWKS}'\n")),
            "spec.jwtRules[0].jwks",
        );
        warns(
            &rule(
                "    jwks: '{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"a\", \"y\": \"b\", \"d\": \"secret\"}]}'\n",
            ),
            "spec.jwtRules[0].jwks",
            "private key material",
        );
    }

    #[test]
    fn rule_144_token_locations() {
        passes(&rule(
            "    fromHeaders: [{name: x-jwt, prefix: \"Bearer \"}]\n    fromParams: [token]\n    fromCookies: [session]\n",
        ));
        fails(
            &rule("    fromHeaders: [{prefix: baz}]\n"),
            "spec.jwtRules[0].fromHeaders[0].name",
            "location header name must be non-empty string",
        );
        fails(
            &rule("    fromHeaders: [{name: \"\"}]\n"),
            "spec.jwtRules[0].fromHeaders[0].name",
            "location header name must be non-empty string",
        );
        fails(
            &rule("    fromParams: [\"\"]\n"),
            "spec.jwtRules[0].fromParams[0]",
            "location query must be non-empty string",
        );
        fails(
            &rule("    fromCookies: [\"\"]\n"),
            "spec.jwtRules[0].fromCookies[0]",
            "cookie name must be non-empty string",
        );
    }

    #[test]
    fn rule_145_output_claim_to_headers() {
        passes(&rule(
            "    outputClaimToHeaders: [{header: x-sub_1, claim: sub}]\n",
        ));
        fails(
            &rule("    outputClaimToHeaders: [{header: h, claim: \"\"}]\n"),
            "spec.jwtRules[0].outputClaimToHeaders[0]",
            "header and claim value must be non-empty string",
        );
        fails(
            &rule("    outputClaimToHeaders: [{claim: x}]\n"),
            "spec.jwtRules[0].outputClaimToHeaders[0]",
            "header and claim value must be non-empty string",
        );
        fails(
            &rule("    outputClaimToHeaders: [{header: \":authority\", claim: x}]\n"),
            "spec.jwtRules[0].outputClaimToHeaders[0].header",
            "is not a valid header name",
        );
    }

    #[test]
    fn rule_146_timeout() {
        passes(&rule("    timeout: 1.5s\n"));
        fails(
            &rule("    timeout: 0s\n"),
            "spec.jwtRules[0].timeout",
            "greater than 1ms",
        );
        fails(
            &rule("    timeout: 1500us\n"),
            "spec.jwtRules[0].timeout",
            "ms precision",
        );
        fails(
            &rule("    timeout: apple\n"),
            "spec.jwtRules[0].timeout",
            "invalid duration",
        );
    }
}
