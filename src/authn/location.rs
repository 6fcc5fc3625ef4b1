//! Where a JWT is looked for (`fromHeaders`, `fromParams`, `fromCookies`), as Envoy's
//! `jwt_authn` extractor does it, and how a forwarded token is removed.

use http::HeaderName;
use http::header::{AUTHORIZATION, COOKIE};
use http::request::Parts;
use http::uri::{PathAndQuery, Uri};

use crate::config::request_authentication::JwtRule;

/// The token locations of one rule. Order of extraction is Envoy's: headers (ordered by
/// name then prefix), then query parameters, then cookies (each ordered by name).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Locations {
    headers: Vec<(HeaderName, String)>,
    params: Vec<String>,
    cookies: Vec<String>,
}

/// Where a token was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A request header (removed whole when the token is not forwarded).
    Header(HeaderName),
    /// A query parameter (removed from the query when the token is not forwarded).
    Param(String),
    /// A cookie (Envoy never removes it, nor do we).
    Cookie(String),
}

/// A token found in the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub token: String,
    pub source: Source,
}

impl Locations {
    /// The locations of `rule`: its `fromHeaders`/`fromParams`/`fromCookies`, or, when all
    /// three are empty, Envoy's defaults `Authorization: Bearer <token>` and
    /// `?access_token=`. Returns the locations and a message per header name that is not a
    /// valid HTTP header name (that location is skipped).
    pub fn for_rule(rule: &JwtRule) -> (Locations, Vec<String>) {
        let mut warnings = Vec::new();
        let mut loc = Locations::default();
        if rule.from_headers.is_empty()
            && rule.from_params.is_empty()
            && rule.from_cookies.is_empty()
        {
            loc.headers.push((AUTHORIZATION, "Bearer ".to_owned()));
            loc.params.push("access_token".to_owned());
            return (loc, warnings);
        }
        for h in &rule.from_headers {
            match HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes()) {
                Ok(name) => loc.headers.push((name, h.prefix.clone())),
                Err(_) => warnings.push(format!(
                    "fromHeaders name {:?} is not a valid header name; location ignored",
                    h.name
                )),
            }
        }
        loc.headers
            .sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        loc.headers.dedup();
        loc.params = rule.from_params.clone();
        loc.params.sort();
        loc.params.dedup();
        loc.cookies = rule.from_cookies.clone();
        loc.cookies.sort();
        loc.cookies.dedup();
        (loc, warnings)
    }

    /// The tokens present in the request at these locations.
    pub fn extract(&self, parts: &Parts) -> Vec<Found> {
        let mut found = Vec::new();
        for (name, prefix) in &self.headers {
            for value in parts.headers.get_all(name) {
                let Ok(value) = value.to_str() else { continue };
                let token = if prefix.is_empty() {
                    value
                } else {
                    // Envoy looks for the prefix anywhere in the value, then takes the token
                    // from the first base64url character after it.
                    let Some(pos) = value.find(prefix.as_str()) else {
                        continue;
                    };
                    let after = pos + prefix.len();
                    match value
                        .get(after..)
                        .and_then(|rest| rest.find(is_jwt_char).map(|i| after + i))
                    {
                        Some(start) => value.get(start..).unwrap_or(value),
                        None => value,
                    }
                };
                found.push(Found {
                    token: token.to_owned(),
                    source: Source::Header(name.clone()),
                });
            }
        }
        if let Some(query) = parts.uri.query() {
            for param in &self.params {
                if let Some(value) = query_pairs(query).find(|(k, _)| k == param).map(|(_, v)| v) {
                    found.push(Found {
                        token: value,
                        source: Source::Param(param.clone()),
                    });
                }
            }
        }
        for cookie in &self.cookies {
            if let Some(value) = find_cookie(parts, cookie) {
                found.push(Found {
                    token: value,
                    source: Source::Cookie(cookie.clone()),
                });
            }
        }
        found
    }
}

fn is_jwt_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

/// Removes a forwarded token from the request (`forwardOriginalToken: false`): the header,
/// or every occurrence of the query parameter. Cookies stay, as in Envoy.
pub(crate) fn remove(parts: &mut Parts, source: &Source) {
    match source {
        Source::Header(name) => {
            parts.headers.remove(name);
        }
        Source::Param(param) => remove_param(parts, param),
        Source::Cookie(_) => {}
    }
}

fn remove_param(parts: &mut Parts, param: &str) {
    let Some(query) = parts.uri.query() else {
        return;
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            percent_decode(key) != param
        })
        .collect();
    let path = parts.uri.path();
    let new = if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    };
    let Ok(pq) = PathAndQuery::try_from(new) else {
        return;
    };
    let mut uri_parts = parts.uri.clone().into_parts();
    uri_parts.path_and_query = Some(pq);
    if let Ok(uri) = Uri::from_parts(uri_parts) {
        parts.uri = uri;
    }
}

/// `key=value` pairs of a query string, percent-decoded.
fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = |j: usize| b.get(j).and_then(|h| char::from(*h).to_digit(16));
            if let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2)) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first cookie named `name` in the `Cookie` headers; surrounding double quotes are
/// stripped, as Envoy's `parseCookies` does.
fn find_cookie(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| {
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
                .to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::request_authentication::JwtHeader;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("valid request").into_parts().0
    }

    fn rule(headers: &[(&str, &str)], params: &[&str], cookies: &[&str]) -> JwtRule {
        JwtRule {
            from_headers: headers
                .iter()
                .map(|(n, p)| JwtHeader {
                    name: (*n).to_owned(),
                    prefix: (*p).to_owned(),
                })
                .collect(),
            from_params: params.iter().map(|s| (*s).to_owned()).collect(),
            from_cookies: cookies.iter().map(|s| (*s).to_owned()).collect(),
            ..JwtRule::default()
        }
    }

    fn tokens(loc: &Locations, p: &Parts) -> Vec<String> {
        loc.extract(p).into_iter().map(|f| f.token).collect()
    }

    #[test]
    fn defaults_are_bearer_header_then_access_token_param() {
        let (loc, w) = Locations::for_rule(&JwtRule::default());
        assert!(w.is_empty());
        let p = parts(
            "/x?access_token=q.q.q",
            &[("authorization", "Bearer h.h.h")],
        );
        assert_eq!(tokens(&loc, &p), ["h.h.h", "q.q.q"]);
        // Without the prefix the header is not a token location.
        let p = parts("/x", &[("authorization", "Basic dXNlcjpwdw==")]);
        assert!(tokens(&loc, &p).is_empty());
    }

    #[test]
    fn header_prefix_is_found_anywhere_and_the_token_starts_at_a_base64url_char() {
        let (loc, _) = Locations::for_rule(&rule(&[("X-Jwt", "Token ")], &[], &[]));
        let p = parts("/", &[("x-jwt", "Token   a.b.c")]);
        assert_eq!(tokens(&loc, &p), ["a.b.c"]);
        let p = parts("/", &[("x-jwt", "scheme Token a.b.c")]);
        assert_eq!(tokens(&loc, &p), ["a.b.c"]);
        let p = parts("/", &[("x-jwt", "a.b.c")]);
        assert!(tokens(&loc, &p).is_empty());
        // No prefix: the whole value, and every value of a repeated header.
        let (loc, _) = Locations::for_rule(&rule(&[("x-jwt", "")], &[], &[]));
        let p = parts("/", &[("x-jwt", "a.b.c"), ("x-jwt", "d.e.f")]);
        assert_eq!(tokens(&loc, &p), ["a.b.c", "d.e.f"]);
    }

    #[test]
    fn params_are_percent_decoded_and_cookies_unquoted() {
        let (loc, _) = Locations::for_rule(&rule(&[], &["tok"], &["session"]));
        let p = parts(
            "/x?a=1&tok=a%2Eb.c&tok=second",
            &[("cookie", "theme=dark; session=\"c.o.k\"")],
        );
        assert_eq!(tokens(&loc, &p), ["a.b.c", "c.o.k"]);
        assert!(tokens(&loc, &parts("/x?token=a.b.c", &[])).is_empty());
    }

    #[test]
    fn invalid_header_names_are_reported_and_skipped() {
        let (loc, w) = Locations::for_rule(&rule(&[("bad header", "")], &["p"], &[]));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(tokens(&loc, &parts("/", &[])).is_empty());
    }

    #[test]
    fn removal_drops_the_header_or_every_occurrence_of_the_param() {
        let mut p = parts(
            "http://h/x?a=1&access_token=t&b=2&access%5Ftoken=u",
            &[("authorization", "Bearer t"), ("cookie", "s=t")],
        );
        remove(&mut p, &Source::Header(AUTHORIZATION));
        remove(&mut p, &Source::Param("access_token".to_owned()));
        remove(&mut p, &Source::Cookie("s".to_owned()));
        assert!(p.headers.get(AUTHORIZATION).is_none());
        assert_eq!(p.uri.to_string(), "http://h/x?a=1&b=2");
        assert!(p.headers.get(COOKIE).is_some());
        let mut p = parts("/x?access_token=t", &[]);
        remove(&mut p, &Source::Param("access_token".to_owned()));
        assert_eq!(p.uri.to_string(), "/x");
    }
}
