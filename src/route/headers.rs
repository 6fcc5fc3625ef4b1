//! Compiled header operations: Istio's `headers.request` / `headers.response` (route level and
//! per destination, `http[].headers` and `http[].route[].headers`).
//!
//! Each `HeaderOperations` is compiled once into [`HeaderName`] / [`HeaderValue`] pairs; an
//! invalid name or value is reported as a [`RouteWarningKind`] and that one operation dropped.
//! Applying them is then a few `HeaderMap` calls.
//!
//! Semantics (Envoy's `HeaderParser`, as Istio generates it):
//!
//! * within one level, `remove` runs first, then `set` (overwrite), then `add` (append);
//! * the caller applies the route level first, then the chosen destination's, so a
//!   destination `set` overrides a route `add` (ISTIO.md §2.13);
//! * a request `set` / `add` of `host` or `:authority` is not a header: it is an authority
//!   rewrite ([`HeaderOps::authority`]); other pseudo-headers and `host` cannot be removed or
//!   modified (dropped with a warning);
//! * values may hold Envoy `%VAR%` substitutions. Only `%%` (a literal `%`) is substituted
//!   here; every other `%VAR%` is left exactly as written (the request path has no Envoy
//!   stream info to fill them from).

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::virtual_service::{HeaderOperations, Headers};
use crate::route::table::RouteWarningKind;

/// The operations of one direction (request or response).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Ops {
    remove: Box<[HeaderName]>,
    set: Box<[(HeaderName, HeaderValue)]>,
    add: Box<[(HeaderName, HeaderValue)]>,
}

impl Ops {
    fn apply(&self, headers: &mut HeaderMap) {
        for name in &*self.remove {
            headers.remove(name);
        }
        for (name, value) in &*self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &*self.add {
            headers.append(name.clone(), value.clone());
        }
    }

    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// Compiled Istio `Headers` (`headers.request` and `headers.response`, each with `set`,
/// `add` and `remove`). The default (no `headers` in the config) changes nothing.
///
/// `add` appends another value to the header (`HeaderMap::append`), which HTTP treats as
/// the comma-joined value Envoy writes.
///
/// The default (and any `headers` that compiles to no operation) holds no allocation: a
/// snapshot has one per route and one per destination, and most are empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderOps {
    ops: Option<Box<HeaderOpsInner>>,
}

/// The operations of a non-empty [`HeaderOps`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct HeaderOpsInner {
    request: Ops,
    response: Ops,
    authority: Option<HeaderValue>,
}

impl HeaderOps {
    /// Compiles `headers` (absent = no operation). Invalid names or values, and operations
    /// on `host` / pseudo-headers other than the authority rewrite, are pushed to `warnings`
    /// and dropped.
    pub fn compile(headers: Option<&Headers>, warnings: &mut Vec<RouteWarningKind>) -> Self {
        let Some(headers) = headers else {
            return HeaderOps::default();
        };
        let mut authority = None;
        let request = compile_ops(headers.request.as_ref(), true, &mut authority, warnings);
        let response = compile_ops(headers.response.as_ref(), false, &mut authority, warnings);
        let empty = request.is_empty() && response.is_empty() && authority.is_none();
        HeaderOps {
            ops: (!empty).then(|| {
                Box::new(HeaderOpsInner {
                    request,
                    response,
                    authority,
                })
            }),
        }
    }

    /// Applies `headers.request` (`remove`, then `set`, then `add`) to request headers. The
    /// authority rewrite is not applied here: see [`authority`](Self::authority).
    pub fn apply_request(&self, headers: &mut HeaderMap) {
        if let Some(ops) = &self.ops {
            ops.request.apply(headers);
        }
    }

    /// Applies `headers.response` (`remove`, then `set`, then `add`) to response headers.
    pub fn apply_response(&self, headers: &mut HeaderMap) {
        if let Some(ops) = &self.ops {
            ops.response.apply(headers);
        }
    }

    /// The authority a request `set` / `add` of `host` or `:authority` asks for (Istio
    /// treats it as an authority rewrite; `set` wins over `add`). A route-level
    /// `rewrite.authority` takes precedence over a destination's.
    pub fn authority(&self) -> Option<&HeaderValue> {
        self.ops.as_ref().and_then(|ops| ops.authority.as_ref())
    }

    /// Whether there is no operation at all.
    pub fn is_empty(&self) -> bool {
        self.ops.is_none()
    }
}

fn compile_ops(
    ops: Option<&HeaderOperations>,
    request: bool,
    authority: &mut Option<HeaderValue>,
    warnings: &mut Vec<RouteWarningKind>,
) -> Ops {
    let Some(ops) = ops else {
        return Ops::default();
    };
    let (mut remove, mut set, mut add) = (Vec::new(), Vec::new(), Vec::new());
    for name in &ops.remove {
        match header_name(name, warnings) {
            Some(Target::Header(n)) => remove.push(n),
            Some(Target::Authority) => warnings.push(RouteWarningKind::InvalidHeader {
                name: name.clone(),
                reason: "the authority cannot be removed".into(),
            }),
            None => {}
        }
    }
    // `add` first so that a `set` of the authority wins over an `add` of it.
    for (list, is_set) in [(&ops.add, false), (&ops.set, true)] {
        for (name, value) in list {
            let Some(target) = header_name(name, warnings) else {
                continue;
            };
            let Some(value) = header_value(name, value, warnings) else {
                continue;
            };
            match target {
                Target::Authority if request => *authority = Some(value),
                Target::Authority => warnings.push(RouteWarningKind::InvalidHeader {
                    name: name.clone(),
                    reason: "host / :authority can only be set on requests".into(),
                }),
                Target::Header(n) if is_set => set.push((n, value)),
                Target::Header(n) => add.push((n, value)),
            }
        }
    }
    Ops {
        remove: remove.into(),
        set: set.into(),
        add: add.into(),
    }
}

enum Target {
    Header(HeaderName),
    Authority,
}

fn header_name(name: &str, warnings: &mut Vec<RouteWarningKind>) -> Option<Target> {
    let lower = name.to_ascii_lowercase();
    if lower == "host" || lower == ":authority" {
        return Some(Target::Authority);
    }
    if lower.starts_with(':') {
        warnings.push(RouteWarningKind::InvalidHeader {
            name: name.to_string(),
            reason: "pseudo-headers cannot be modified".into(),
        });
        return None;
    }
    match HeaderName::from_bytes(lower.as_bytes()) {
        Ok(n) => Some(Target::Header(n)),
        Err(_) => {
            warnings.push(RouteWarningKind::InvalidHeader {
                name: name.to_string(),
                reason: "not a valid header name".into(),
            });
            None
        }
    }
}

fn header_value(
    name: &str,
    value: &str,
    warnings: &mut Vec<RouteWarningKind>,
) -> Option<HeaderValue> {
    match HeaderValue::from_str(&substitute(value)) {
        Ok(v) => Some(v),
        Err(_) => {
            warnings.push(RouteWarningKind::InvalidHeader {
                name: name.to_string(),
                reason: format!("{value:?} is not a valid header value"),
            });
            None
        }
    }
}

/// Envoy's header-value format: `%%` is a literal `%`; other `%VAR%` are kept as written.
fn substitute(value: &str) -> String {
    value.replace("%%", "%")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ops(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderOperations {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        HeaderOperations {
            set: map(set),
            add: map(add),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn compile(request: HeaderOperations, response: HeaderOperations) -> (HeaderOps, usize) {
        let mut w = Vec::new();
        let h = HeaderOps::compile(
            Some(&Headers {
                request: Some(request),
                response: Some(response),
            }),
            &mut w,
        );
        (h, w.len())
    }

    fn values(h: &HeaderMap, name: &str) -> Vec<String> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_string())
            .collect()
    }

    #[test]
    fn remove_then_set_then_add_within_one_level() {
        let (h, w) = compile(
            ops(
                &[("x-set", "new")],
                &[("x-add", "two")],
                &["x-gone", "x-add"],
            ),
            HeaderOperations::default(),
        );
        assert_eq!(w, 0);
        let mut m = HeaderMap::new();
        m.insert("x-set", HeaderValue::from_static("old"));
        m.insert("x-add", HeaderValue::from_static("one"));
        m.insert("x-gone", HeaderValue::from_static("bye"));
        h.apply_request(&mut m);
        assert_eq!(values(&m, "x-set"), ["new"]);
        // Removed first, then added: only the added value remains.
        assert_eq!(values(&m, "x-add"), ["two"]);
        assert!(m.get("x-gone").is_none());
    }

    #[test]
    fn destination_set_overrides_route_add_when_applied_route_first() {
        let (route, _) = compile(ops(&[], &[("x-v", "route")], &[]), Default::default());
        let (dest, _) = compile(ops(&[("x-v", "dest")], &[], &[]), Default::default());
        let mut m = HeaderMap::new();
        m.insert("x-v", HeaderValue::from_static("client"));
        route.apply_request(&mut m);
        assert_eq!(values(&m, "x-v"), ["client", "route"]);
        dest.apply_request(&mut m);
        assert_eq!(values(&m, "x-v"), ["dest"]);
    }

    #[test]
    fn host_and_authority_are_an_authority_rewrite_not_a_header() {
        let (h, w) = compile(
            ops(
                &[("Host", "set.example")],
                &[(":authority", "add.example")],
                &[],
            ),
            Default::default(),
        );
        assert_eq!(w, 0);
        assert_eq!(
            h.authority().map(|v| v.as_bytes()),
            Some(&b"set.example"[..])
        );
        let mut m = HeaderMap::new();
        h.apply_request(&mut m);
        assert!(m.is_empty());

        let (h, _) = compile(ops(&[], &[("host", "a.example")], &[]), Default::default());
        assert_eq!(h.authority().map(|v| v.as_bytes()), Some(&b"a.example"[..]));
    }

    #[test]
    fn invalid_and_forbidden_operations_are_dropped_with_warnings() {
        let (h, w) = compile(
            ops(
                &[("bad name", "v"), ("x-ok", "bad\nvalue"), (":path", "/x")],
                &[],
                &["host"],
            ),
            ops(&[("host", "x")], &[], &[]),
        );
        assert_eq!(w, 5);
        assert!(h.is_empty());
    }

    #[test]
    fn response_ops_apply_to_responses_only() {
        let (h, _) = compile(Default::default(), ops(&[("x-r", "1")], &[], &["server"]));
        let mut req = HeaderMap::new();
        h.apply_request(&mut req);
        assert!(req.is_empty());
        let mut resp = HeaderMap::new();
        resp.insert("server", HeaderValue::from_static("upstream"));
        h.apply_response(&mut resp);
        assert_eq!(values(&resp, "x-r"), ["1"]);
        assert!(resp.get("server").is_none());
    }

    #[test]
    fn double_percent_is_a_literal_percent_and_variables_stay() {
        let (h, _) = compile(
            ops(&[("x-p", "100%% of %DOWNSTREAM_REMOTE_ADDRESS%")], &[], &[]),
            Default::default(),
        );
        let mut m = HeaderMap::new();
        h.apply_request(&mut m);
        assert_eq!(values(&m, "x-p"), ["100% of %DOWNSTREAM_REMOTE_ADDRESS%"]);
    }
}
