//! One JWT: parsed as Envoy's `jwt_verify_lib` does, its time and audience checks, and the
//! failure statuses with Envoy's wording.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

/// Why a JWT was not accepted, with Envoy's `jwt_authn` wording ([`JwtFailure::as_str`]),
/// which becomes the 401 body of [`crate::Error::Unauthenticated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JwtFailure {
    /// No token where one is required (`presence: REQUIRED`): `Jwt is missing`.
    Missing,
    /// `nbf` is more than the clock skew (60 s) ahead: `Jwt not yet valid`.
    NotYetValid,
    /// `exp` is more than the clock skew (60 s) past: `Jwt is expired`.
    Expired,
    /// Not three dot-separated parts: `Jwt is not in the form of Header.Payload.Signature`.
    BadFormat,
    /// The header is not base64url JSON.
    HeaderParse,
    /// The header's `alg` is missing or not a string.
    HeaderBadAlg,
    /// The header's `alg` is not one we verify (`none`, `ES512`, ...).
    HeaderNotImplementedAlg,
    /// The header's `kid` is not a string.
    HeaderBadKid,
    /// The payload is not base64url JSON, or a registered claim has the wrong type.
    PayloadParse,
    /// The signature is not base64url.
    SignatureParse,
    /// No applying rule has the token's `iss` (for the location it was found in):
    /// `Jwt issuer is not configured`.
    UnknownIssuer,
    /// None of the token's `aud` is in the rule's `audiences`:
    /// `Audiences in Jwt are not allowed`.
    AudienceNotAllowed,
    /// The signature does not verify with any matching key: `Jwt verification fails`.
    VerificationFail,
    /// No key of the JWKS has the token's `kid` and `alg`.
    KidAlgMismatch,
    /// The JWKS holds no usable public key (inline `jwks` that did not parse, for one).
    NoValidKeys,
    /// The `jwksUri` could not be fetched (or no fetcher is configured) and no keys are
    /// cached: `Jwks remote fetch is failed`.
    JwksFetchFail,
}

impl JwtFailure {
    /// Envoy's text for this status (`google::jwt_verify::getStatusString`).
    pub fn as_str(self) -> &'static str {
        match self {
            JwtFailure::Missing => "Jwt is missing",
            JwtFailure::NotYetValid => "Jwt not yet valid",
            JwtFailure::Expired => "Jwt is expired",
            JwtFailure::BadFormat => "Jwt is not in the form of Header.Payload.Signature",
            JwtFailure::HeaderParse => {
                "Jwt header is an invalid Base64url input or an invalid JSON"
            }
            JwtFailure::HeaderBadAlg => "Jwt header [alg] field is not a string",
            JwtFailure::HeaderNotImplementedAlg => "Jwt header [alg] field value is invalid",
            JwtFailure::HeaderBadKid => "Jwt header [kid] field is not a string",
            JwtFailure::PayloadParse => "Jwt payload is an invalid Base64 or an invalid JSON",
            JwtFailure::SignatureParse => "Jwt signature is an invalid Base64",
            JwtFailure::UnknownIssuer => "Jwt issuer is not configured",
            JwtFailure::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            JwtFailure::VerificationFail => "Jwt verification fails",
            JwtFailure::KidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            JwtFailure::NoValidKeys => "Jwks doesn't have any valid public key",
            JwtFailure::JwksFetchFail => "Jwks remote fetch is failed",
        }
    }
}

impl std::fmt::Display for JwtFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<JwtFailure> for crate::Error {
    fn from(f: JwtFailure) -> Self {
        crate::Error::Unauthenticated {
            reason: f.as_str().into(),
        }
    }
}

/// Envoy's default `clock_skew_seconds` for `exp` and `nbf`.
pub(crate) const CLOCK_SKEW_SECS: u64 = 60;

/// A parsed (not yet verified) JWT.
#[derive(Debug, Clone)]
pub(crate) struct Jwt {
    /// `<header>.<payload>` as received: what the signature covers.
    pub signing_input: String,
    /// The payload segment as received (base64url): `outputPayloadToHeader` forwards it.
    pub payload_b64: String,
    /// The signature segment as received.
    pub signature_b64: String,
    pub alg: Algorithm,
    /// The `alg` as written, for matching a JWK's `alg`.
    pub alg_name: String,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    pub iss: String,
    pub sub: String,
    pub audiences: Vec<String>,
    pub exp: u64,
    pub nbf: u64,
}

impl Jwt {
    /// Parses a compact JWS in `jwt_verify_lib`'s order: shape, header, payload, signature.
    pub fn parse(token: &str) -> Result<Jwt, JwtFailure> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtFailure::BadFormat);
        };
        let header_json: Map<String, Value> = b64url_decode(header)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(JwtFailure::HeaderParse)?;
        let alg_name = match header_json.get("alg") {
            Some(Value::String(alg)) => alg.clone(),
            _ => return Err(JwtFailure::HeaderBadAlg),
        };
        let alg: Algorithm = alg_name
            .parse()
            .map_err(|_| JwtFailure::HeaderNotImplementedAlg)?;
        let kid = match header_json.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(JwtFailure::HeaderBadKid),
        };
        let claims: Map<String, Value> = b64url_decode(payload)
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or(JwtFailure::PayloadParse)?;
        let string_claim = |name: &str| match claims.get(name) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(JwtFailure::PayloadParse),
        };
        let iss = string_claim("iss")?;
        let sub = string_claim("sub")?;
        let audiences = match claims.get("aud") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or(JwtFailure::PayloadParse)?,
            Some(_) => return Err(JwtFailure::PayloadParse),
        };
        let time_claim = |name: &str| match claims.get(name) {
            None => Ok(0),
            Some(v) => v
                .as_u64()
                .or_else(|| {
                    // Whole numbers written as floats (`1.7e9`) are accepted, as protobuf
                    // Struct numbers are doubles in Envoy.
                    v.as_f64()
                        .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 1.8e19)
                        .map(|f| f as u64)
                })
                .ok_or(JwtFailure::PayloadParse),
        };
        let exp = time_claim("exp")?;
        let nbf = time_claim("nbf")?;
        if b64url_decode(signature).is_none() {
            return Err(JwtFailure::SignatureParse);
        }
        Ok(Jwt {
            signing_input: format!("{header}.{payload}"),
            payload_b64: payload.to_owned(),
            signature_b64: signature.to_owned(),
            alg,
            alg_name,
            kid,
            iss,
            sub,
            audiences,
            exp,
            nbf,
            claims,
        })
    }

    /// `jwt_verify_lib`'s `verifyTimeConstraint`: `nbf` and `exp` with the clock skew on
    /// both sides; `exp` absent (or 0) never expires.
    pub fn check_time(&self, now: u64) -> Result<(), JwtFailure> {
        if now.saturating_add(CLOCK_SKEW_SECS) < self.nbf {
            return Err(JwtFailure::NotYetValid);
        }
        if self.exp != 0 && now > self.exp.saturating_add(CLOCK_SKEW_SECS) {
            return Err(JwtFailure::Expired);
        }
        Ok(())
    }
}

/// Seconds since the Unix epoch now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `jwt_verify_lib`'s `CheckAudience`: audiences compared without an `http://` or
/// `https://` scheme and without a trailing `/`; no configured audience = any token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AudienceCheck {
    allowed: Vec<String>,
}

impl AudienceCheck {
    pub fn new(audiences: &[String]) -> Self {
        AudienceCheck {
            allowed: audiences
                .iter()
                .map(|a| normalize_audience(a).to_owned())
                .collect(),
        }
    }

    pub fn allows(&self, token_audiences: &[String]) -> bool {
        self.allowed.is_empty()
            || token_audiences
                .iter()
                .any(|a| self.allowed.iter().any(|x| x == normalize_audience(a)))
    }
}

fn normalize_audience(a: &str) -> &str {
    let a = a
        .strip_prefix("http://")
        .or_else(|| a.strip_prefix("https://"))
        .unwrap_or(a);
    a.strip_suffix('/').unwrap_or(a)
}

/// Decodes base64url (RFC 4648 §5), padding optional. `None` on any other character or a
/// length no encoder produces.
pub(crate) fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // 6 leftover bits cannot come from an encoder (one char short of a byte).
    (bits < 6).then_some(out)
}

/// Encodes base64url without padding.
#[cfg(test)]
pub(crate) fn b64url_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            let idx = ((n >> (18 - 6 * i)) & 63) as usize;
            out.push(char::from(ALPHABET.get(idx).copied().unwrap_or(b'A')));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips_and_rejects_other_alphabets() {
        for input in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0xfb, 0xff],
        ] {
            let enc = b64url_encode(input);
            assert_eq!(b64url_decode(&enc).as_deref(), Some(input), "{enc}");
        }
        assert_eq!(b64url_encode(&[0xfb, 0xff]), "-_8");
        assert_eq!(b64url_decode("Zm9vYg==").as_deref(), Some(&b"foob"[..]));
        assert_eq!(b64url_decode("+/8"), None);
        assert_eq!(b64url_decode("Zm9vY"), None, "a dangling character");
        assert_eq!(b64url_decode("Zm 9v"), None);
    }

    fn token(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.c2ln",
            b64url_encode(header.as_bytes()),
            b64url_encode(payload.as_bytes())
        )
    }

    #[test]
    fn parse_reads_registered_claims() {
        let jwt = Jwt::parse(&token(
            r#"{"alg":"ES256","kid":"k1"}"#,
            r#"{"iss":"i","sub":"s","aud":["a","b"],"exp":20,"nbf":10.0,"azp":"p"}"#,
        ))
        .expect("parses");
        assert_eq!((jwt.iss.as_str(), jwt.sub.as_str()), ("i", "s"));
        assert_eq!(jwt.audiences, ["a", "b"]);
        assert_eq!((jwt.exp, jwt.nbf), (20, 10));
        assert_eq!(jwt.kid.as_deref(), Some("k1"));
        assert_eq!(jwt.alg, Algorithm::ES256);
        let jwt = Jwt::parse(&token(r#"{"alg":"RS256"}"#, r#"{"aud":"one"}"#)).expect("parses");
        assert_eq!(jwt.audiences, ["one"]);
        assert_eq!(jwt.iss, "");
    }

    #[test]
    fn parse_failures_use_envoys_statuses() {
        let cases = [
            ("a.b".to_owned(), JwtFailure::BadFormat),
            ("a.b.c.d".to_owned(), JwtFailure::BadFormat),
            ("!!.e30.c2ln".to_owned(), JwtFailure::HeaderParse),
            (token("{}", "{}"), JwtFailure::HeaderBadAlg),
            (token(r#"{"alg":7}"#, "{}"), JwtFailure::HeaderBadAlg),
            (
                token(r#"{"alg":"none"}"#, "{}"),
                JwtFailure::HeaderNotImplementedAlg,
            ),
            (
                token(r#"{"alg":"RS256","kid":1}"#, "{}"),
                JwtFailure::HeaderBadKid,
            ),
            (token(r#"{"alg":"RS256"}"#, "[1]"), JwtFailure::PayloadParse),
            (
                token(r#"{"alg":"RS256"}"#, r#"{"iss":5}"#),
                JwtFailure::PayloadParse,
            ),
            (
                token(r#"{"alg":"RS256"}"#, r#"{"exp":"soon"}"#),
                JwtFailure::PayloadParse,
            ),
            (
                token(r#"{"alg":"RS256"}"#, r#"{"aud":[1]}"#),
                JwtFailure::PayloadParse,
            ),
        ];
        for (t, want) in cases {
            assert_eq!(Jwt::parse(&t).err(), Some(want), "{t}");
        }
        let bad_sig = format!("{}.e30.***", b64url_encode(br#"{"alg":"RS256"}"#));
        assert_eq!(Jwt::parse(&bad_sig).err(), Some(JwtFailure::SignatureParse));
    }

    #[test]
    fn time_checks_allow_sixty_seconds_of_skew() {
        let jwt = |exp, nbf| Jwt {
            exp,
            nbf,
            ..Jwt::parse(&token(r#"{"alg":"RS256"}"#, "{}")).expect("parses")
        };
        assert_eq!(jwt(1000, 0).check_time(1060), Ok(()));
        assert_eq!(jwt(1000, 0).check_time(1061), Err(JwtFailure::Expired));
        assert_eq!(
            jwt(0, 0).check_time(u64::MAX / 2),
            Ok(()),
            "no exp never expires"
        );
        assert_eq!(jwt(0, 1060).check_time(1000), Ok(()));
        assert_eq!(jwt(0, 1061).check_time(1000), Err(JwtFailure::NotYetValid));
    }

    #[test]
    fn audiences_ignore_scheme_and_trailing_slash() {
        let check = AudienceCheck::new(&["https://api.example.com/".to_owned()]);
        assert!(check.allows(&["api.example.com".to_owned()]));
        assert!(check.allows(&["x".to_owned(), "http://api.example.com".to_owned()]));
        assert!(!check.allows(&["other".to_owned()]));
        assert!(!check.allows(&[]));
        assert!(AudienceCheck::new(&[]).allows(&[]));
    }

    #[test]
    fn failures_become_401_with_envoys_text() {
        let err: crate::Error = JwtFailure::Expired.into();
        assert!(
            matches!(&err, crate::Error::Unauthenticated { reason } if reason == "Jwt is expired")
        );
        assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);
        assert_eq!(JwtFailure::NotYetValid.to_string(), "Jwt not yet valid");
    }
}
