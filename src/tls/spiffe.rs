//! SPIFFE IDs: `spiffe://<trust-domain>/<path>`, parsed as strictly as the SPIFFE ID
//! specification (and go-spiffe) do, with Istio's `ns/<namespace>/sa/<service-account>` form.
//!
//! Istio names every workload `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`
//! (the trust domain is MeshConfig `trustDomain`, `cluster.local` by default) and puts that
//! URI, and only that, in the workload certificate's subject alternative names. An
//! AuthorizationPolicy `principals` entry is the same id without the `spiffe://` scheme
//! ([`SpiffeId::principal`]).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

const SCHEME: &str = "spiffe://";

/// The longest SPIFFE ID accepted, in bytes: the SPIFFE spec requires implementations to
/// support URI SANs of up to 2048 bytes and lets them refuse longer ones.
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

/// The longest trust domain name accepted, in bytes (the SPIFFE spec: 255).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// A SPIFFE ID, `spiffe://<trust-domain>[/<path>]`, validated by the SPIFFE ID spec:
///
/// - the scheme is exactly `spiffe://` (lowercase);
/// - the trust domain is non-empty, at most 255 bytes, of `[a-z0-9.-_]` only: no uppercase,
///   no port (`:`), no userinfo (`@`);
/// - the path is empty or `/`-separated segments that are non-empty, not `.` or `..`, of
///   `[a-zA-Z0-9.-_]` only (no percent-encoding, no trailing `/`);
/// - no query (`?`) or fragment (`#`); at most [`MAX_SPIFFE_ID_LEN`] bytes in all.
///
/// An id with an empty path names the trust domain itself; workload certificates
/// (X.509-SVIDs) always carry a path, which the verifiers check.
///
/// Cloning is cheap (an `Arc<str>` inside). Equality, ordering and hashing are those of the
/// text.
///
/// ```
/// use tower_mesh::tls::SpiffeId;
///
/// let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/sleep".parse()?;
/// assert_eq!(id.trust_domain(), "cluster.local");
/// assert_eq!(id.namespace(), Some("default"));
/// assert_eq!(id.service_account(), Some("sleep"));
/// assert_eq!(id.principal(), "cluster.local/ns/default/sa/sleep");
/// assert!("spiffe://Cluster.local/ns/default/sa/sleep".parse::<SpiffeId>().is_err());
/// # Ok::<(), tower_mesh::tls::SpiffeIdError>(())
/// ```
#[derive(Clone)]
pub struct SpiffeId {
    text: Arc<str>,
    /// Byte offset where the trust domain ends (and the path, possibly empty, starts).
    /// Offsets fit `u16`: an id is at most [`MAX_SPIFFE_ID_LEN`] bytes.
    td_end: u16,
    /// Byte ranges of the namespace and service account in Istio's form.
    istio: Option<IstioParts>,
}

#[derive(Clone, Copy)]
struct IstioParts {
    ns: (u16, u16),
    sa: (u16, u16),
}

fn range(text: &str, (from, to): (u16, u16)) -> Option<&str> {
    text.get(usize::from(from)..usize::from(to))
}

fn offset(at: usize) -> u16 {
    // Callers have checked the length against MAX_SPIFFE_ID_LEN.
    u16::try_from(at).unwrap_or(u16::MAX)
}

/// Why a string is not a SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The string is empty.
    #[error("empty SPIFFE ID")]
    Empty,
    /// Longer than [`MAX_SPIFFE_ID_LEN`].
    #[error("SPIFFE ID is {len} bytes long; the maximum is {MAX_SPIFFE_ID_LEN}")]
    TooLong {
        /// The length in bytes.
        len: usize,
    },
    /// Does not start with `spiffe://`.
    #[error("SPIFFE ID must start with `spiffe://` (lowercase)")]
    WrongScheme,
    /// Nothing between `spiffe://` and the path.
    #[error("SPIFFE ID has no trust domain")]
    MissingTrustDomain,
    /// The trust domain has a port.
    #[error("SPIFFE ID trust domain must not have a port (`:`)")]
    Port,
    /// The trust domain has userinfo.
    #[error("SPIFFE ID trust domain must not have userinfo (`@`)")]
    Userinfo,
    /// The trust domain has a character outside `[a-z0-9.-_]`.
    #[error(
        "SPIFFE ID trust domain has {ch:?}: only lowercase letters, digits, `.`, `-` and `_` \
         are allowed"
    )]
    TrustDomainChar {
        /// The offending character.
        ch: char,
    },
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`].
    #[error("SPIFFE ID trust domain is {len} bytes long; the maximum is {MAX_TRUST_DOMAIN_LEN}")]
    TrustDomainTooLong {
        /// The length in bytes.
        len: usize,
    },
    /// A query or fragment.
    #[error("SPIFFE ID must not have a query (`?`) or fragment (`#`)")]
    QueryOrFragment,
    /// A path segment is empty (`//`), or the path ends with `/`.
    #[error("SPIFFE ID path has an empty segment (`//` or a trailing `/`)")]
    EmptySegment,
    /// A path segment is `.` or `..`.
    #[error("SPIFFE ID path segments must not be `.` or `..`")]
    DotSegment,
    /// The path has a character outside `[a-zA-Z0-9.-_]`.
    #[error(
        "SPIFFE ID path has {ch:?}: only letters, digits, `.`, `-` and `_` are allowed \
         (no percent-encoding)"
    )]
    PathChar {
        /// The offending character.
        ch: char,
    },
}

fn td_char(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_')
}

fn path_char(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_')
}

fn first_char_where(s: &str, bad: impl Fn(u8) -> bool) -> Option<char> {
    s.char_indices()
        .find(|&(i, c)| !c.is_ascii() || s.as_bytes().get(i).is_some_and(|&b| bad(b)))
        .map(|(_, c)| c)
}

impl SpiffeId {
    /// Parses `s` strictly (see the type's documentation).
    pub fn parse(s: &str) -> Result<SpiffeId, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong { len: s.len() });
        }
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
        if rest.contains(['?', '#']) {
            return Err(SpiffeIdError::QueryOrFragment);
        }
        let (td, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if td.is_empty() {
            return Err(SpiffeIdError::MissingTrustDomain);
        }
        if td.contains('@') {
            return Err(SpiffeIdError::Userinfo);
        }
        if td.contains(':') {
            return Err(SpiffeIdError::Port);
        }
        if let Some(ch) = first_char_where(td, |b| !td_char(b)) {
            return Err(SpiffeIdError::TrustDomainChar { ch });
        }
        if td.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(SpiffeIdError::TrustDomainTooLong { len: td.len() });
        }
        let td_end = SCHEME.len() + td.len();
        let mut segments = Vec::new();
        if let Some(segs) = path.strip_prefix('/') {
            let mut at = td_end + 1;
            for seg in segs.split('/') {
                if seg.is_empty() {
                    return Err(SpiffeIdError::EmptySegment);
                }
                if seg == "." || seg == ".." {
                    return Err(SpiffeIdError::DotSegment);
                }
                if let Some(ch) = first_char_where(seg, |b| !path_char(b)) {
                    return Err(SpiffeIdError::PathChar { ch });
                }
                segments.push((seg, at, at + seg.len()));
                at += seg.len() + 1;
            }
        }
        let istio = match segments.as_slice() {
            [("ns", ..), (_, ns0, ns1), ("sa", ..), (_, sa0, sa1)] => Some(IstioParts {
                ns: (offset(*ns0), offset(*ns1)),
                sa: (offset(*sa0), offset(*sa1)),
            }),
            _ => None,
        };
        Ok(SpiffeId {
            text: s.into(),
            td_end: offset(td_end),
            istio,
        })
    }

    /// Istio's identity for a service account:
    /// `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
    pub fn istio(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, SpiffeIdError> {
        let text = format!("{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}");
        let id = Self::parse(&text)?;
        // A namespace or account containing `/` parses as a longer path: not Istio's form.
        if id.istio.is_none() {
            return Err(SpiffeIdError::PathChar { ch: '/' });
        }
        Ok(id)
    }

    /// The whole id, `spiffe://…`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The trust domain (`cluster.local`).
    pub fn trust_domain(&self) -> &str {
        self.text
            .get(SCHEME.len()..usize::from(self.td_end))
            .unwrap_or_default()
    }

    /// The path with its leading `/` (`/ns/default/sa/sleep`), or `""` for a trust-domain id.
    pub fn path(&self) -> &str {
        self.text
            .get(usize::from(self.td_end)..)
            .unwrap_or_default()
    }

    /// The namespace when the path is Istio's `/ns/<ns>/sa/<sa>`, else `None`.
    pub fn namespace(&self) -> Option<&str> {
        self.istio.and_then(|p| range(&self.text, p.ns))
    }

    /// The service account when the path is Istio's `/ns/<ns>/sa/<sa>`, else `None`.
    pub fn service_account(&self) -> Option<&str> {
        self.istio.and_then(|p| range(&self.text, p.sa))
    }

    /// The id without `spiffe://` (`cluster.local/ns/default/sa/sleep`): what an
    /// AuthorizationPolicy `source.principals` entry and the `source.principal` condition
    /// match, as Envoy's RBAC filter sees the peer's URI SAN.
    pub fn principal(&self) -> &str {
        self.text.get(SCHEME.len()..).unwrap_or_default()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({:?})", &*self.text)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = SpiffeIdError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = SpiffeIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl AsRef<str> for SpiffeId {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl PartialEq for SpiffeId {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for SpiffeId {}

impl Hash for SpiffeId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl PartialOrd for SpiffeId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SpiffeId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.text.cmp(&other.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SpiffeIdError as E;

    #[test]
    fn parse_table() {
        let long_path = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_LEN - 12));
        let too_long = format!("spiffe://td/{}", "a".repeat(MAX_SPIFFE_ID_LEN - 11));
        let long_td = format!("spiffe://{}", "a".repeat(MAX_TRUST_DOMAIN_LEN + 1));
        let ok_td = format!("spiffe://{}/x", "a".repeat(MAX_TRUST_DOMAIN_LEN));
        type Want<'a> = Result<(&'a str, &'a str), SpiffeIdError>;
        let cases: Vec<(&str, Want<'_>)> = vec![
            (
                "spiffe://cluster.local/ns/default/sa/sleep",
                Ok(("cluster.local", "/ns/default/sa/sleep")),
            ),
            ("spiffe://example.org", Ok(("example.org", ""))),
            ("spiffe://td/a", Ok(("td", "/a"))),
            (
                "spiffe://my_td-1.x/Path.With-Upper_Case/0",
                Ok(("my_td-1.x", "/Path.With-Upper_Case/0")),
            ),
            ("spiffe://td/...", Ok(("td", "/..."))),
            ("spiffe://td/.a/..b", Ok(("td", "/.a/..b"))),
            (
                &long_path,
                Ok(("td", long_path.get(11..).unwrap_or_default())),
            ),
            (
                &ok_td,
                Ok((
                    ok_td.get(9..9 + MAX_TRUST_DOMAIN_LEN).unwrap_or_default(),
                    "/x",
                )),
            ),
            ("", Err(E::Empty)),
            (
                &too_long,
                Err(E::TooLong {
                    len: MAX_SPIFFE_ID_LEN + 1,
                }),
            ),
            ("SPIFFE://td/a", Err(E::WrongScheme)),
            ("spiffe:/td/a", Err(E::WrongScheme)),
            ("https://td/a", Err(E::WrongScheme)),
            ("cluster.local/ns/default/sa/sleep", Err(E::WrongScheme)),
            ("spiffe://", Err(E::MissingTrustDomain)),
            ("spiffe:///ns/a", Err(E::MissingTrustDomain)),
            ("spiffe://td:8080/a", Err(E::Port)),
            ("spiffe://user@td/a", Err(E::Userinfo)),
            (
                "spiffe://Cluster.local/a",
                Err(E::TrustDomainChar { ch: 'C' }),
            ),
            ("spiffe://t d/a", Err(E::TrustDomainChar { ch: ' ' })),
            ("spiffe://tdé/a", Err(E::TrustDomainChar { ch: 'é' })),
            (
                &long_td,
                Err(E::TrustDomainTooLong {
                    len: MAX_TRUST_DOMAIN_LEN + 1,
                }),
            ),
            ("spiffe://td/a?x=1", Err(E::QueryOrFragment)),
            ("spiffe://td/a#frag", Err(E::QueryOrFragment)),
            ("spiffe://td?x", Err(E::QueryOrFragment)),
            ("spiffe://td/", Err(E::EmptySegment)),
            ("spiffe://td/a/", Err(E::EmptySegment)),
            ("spiffe://td//a", Err(E::EmptySegment)),
            ("spiffe://td/./a", Err(E::DotSegment)),
            ("spiffe://td/a/..", Err(E::DotSegment)),
            ("spiffe://td/a%20b", Err(E::PathChar { ch: '%' })),
            ("spiffe://td/a b", Err(E::PathChar { ch: ' ' })),
            ("spiffe://td/a*", Err(E::PathChar { ch: '*' })),
            ("spiffe://td/ns/ü", Err(E::PathChar { ch: 'ü' })),
        ];
        assert!(cases.len() >= 20);
        for (input, want) in cases {
            let got = SpiffeId::parse(input);
            match (&got, &want) {
                (Ok(id), Ok((td, path))) => {
                    assert_eq!(id.trust_domain(), *td, "{input}");
                    assert_eq!(id.path(), *path, "{input}");
                    assert_eq!(id.as_str(), input);
                    assert_eq!(id.to_string(), input);
                }
                (Err(e), Err(w)) => assert_eq!(e, w, "{input}"),
                _ => panic!("{input:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn istio_form_has_namespace_and_service_account() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/bookinfo/sa/reviews").expect("valid");
        assert_eq!(id.namespace(), Some("bookinfo"));
        assert_eq!(id.service_account(), Some("reviews"));
        assert_eq!(id.principal(), "cluster.local/ns/bookinfo/sa/reviews");
        assert_eq!(
            SpiffeId::istio("cluster.local", "bookinfo", "reviews").expect("valid"),
            id
        );
        for other in [
            "spiffe://td/ns/a/sa",
            "spiffe://td/ns/a/sa/b/c",
            "spiffe://td/sa/b/ns/a",
            "spiffe://td/NS/a/sa/b",
            "spiffe://td",
        ] {
            let id = SpiffeId::parse(other).expect("valid SPIFFE id");
            assert_eq!(id.namespace(), None, "{other}");
            assert_eq!(id.service_account(), None, "{other}");
        }
        assert!(SpiffeId::istio("td", "a/b", "c").is_err());
        assert!(SpiffeId::istio("TD", "a", "c").is_err());
    }

    #[test]
    fn equality_hash_and_order_follow_the_text() {
        use std::collections::HashSet;
        let a = SpiffeId::try_from("spiffe://td/ns/a/sa/x".to_string()).expect("valid");
        let b: SpiffeId = "spiffe://td/ns/a/sa/x".parse().expect("valid");
        let c: SpiffeId = "spiffe://td/ns/b/sa/x".parse().expect("valid");
        assert_eq!(a, b);
        assert!(a < c);
        let set: HashSet<_> = [a.clone(), b, c].into_iter().collect();
        assert_eq!(set.len(), 2);
        assert_eq!(format!("{a:?}"), "SpiffeId(\"spiffe://td/ns/a/sa/x\")");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = SpiffeId::parse("spiffe://Td/x").expect_err("uppercase");
        assert!(e.to_string().contains("'T'"), "{e}");
        assert!(e.to_string().contains("lowercase"), "{e}");
        let e = SpiffeId::parse("spiffe://td:1/x").expect_err("port");
        assert!(e.to_string().contains("port"), "{e}");
    }
}
