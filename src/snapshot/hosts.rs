//! Host names: short-name expansion, the most-specific host index, and authority resolution.
//!
//! Three questions the snapshot answers about host names, each the way Istio does:
//!
//! 1. **Which host does a resource name?** VirtualService `hosts`, DestinationRule `host` (and
//!    the `destination.host` of a route) may be short names, which Istio expands with the
//!    namespace *of the resource* ([`expand_host`]: `reviews` in `default` →
//!    `reviews.default.svc.cluster.local`). ServiceEntry `hosts` are always taken literally:
//!    they name hosts outside the cluster's naming scheme. [`resource_host`] applies the right
//!    rule per kind.
//! 2. **Which entry covers a concrete host?** [`HostIndex`] holds FQDNs and wildcard patterns
//!    (`*.example.com`, `*`) and returns the most specific: an exact name first, then the
//!    longest wildcard suffix, as Envoy's virtual-host domain matching and Istio's
//!    `MostSpecificHostMatch` do. A lookup costs one hash lookup per label of the host, whatever
//!    the number of entries, and allocates nothing.
//! 3. **Which host does a request's authority mean?** Istio gives every Kubernetes-style
//!    service `name.x.svc.<domain>` a virtual host whose domains include the short forms a
//!    caller in namespace `ns` can use: `name` (only when `x == ns`), `name.x`, `name.x.svc`,
//!    each also with `:port`. [`HostIndex::resolve_authority`] answers the same way.
//!
//! ```
//! use tower_mesh::snapshot::hosts::{expand_host, ClusterDomain, HostIndex, Via};
//!
//! let domain = ClusterDomain::default();
//! let mut index = HostIndex::new();
//! index.insert(&expand_host("reviews", "default", &domain), "reviews VS");
//! index.insert("*.example.com", "external");
//!
//! let hit = index.resolve_authority("Reviews:9080", "default", &domain).unwrap();
//! assert_eq!((hit.pattern, *hit.value, hit.via, hit.port),
//!            ("reviews.default.svc.cluster.local", "reviews VS", Via::Alias, Some(9080)));
//! assert_eq!(index.lookup("api.example.com"), Some(&"external"));
//! assert_eq!(index.lookup("example.com"), None);
//! ```

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::OnceLock;

use crate::config::Kind;

/// The Kubernetes cluster domain Istio assumes when none is configured.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// The longest host name that can match: a DNS name has at most 253 characters (RFC 1035),
/// 255 on the wire. Longer names are never found (and need no buffer beyond this).
const MAX_HOST_LEN: usize = 255;

/// The cluster's DNS domain (`cluster.local` by default), the suffix of every Kubernetes
/// service name `<name>.<namespace>.svc.<domain>`.
///
/// Stored lower-case, without leading or trailing dots.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterDomain(Box<str>);

impl ClusterDomain {
    /// A cluster domain such as `cluster.local` or `corp.example`; surrounding dots are
    /// dropped and the name is lower-cased.
    pub fn new(domain: &str) -> Self {
        ClusterDomain(domain.trim_matches('.').to_ascii_lowercase().into())
    }

    /// The domain, e.g. `cluster.local`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ClusterDomain {
    /// `cluster.local`.
    fn default() -> Self {
        ClusterDomain(DEFAULT_CLUSTER_DOMAIN.into())
    }
}

impl fmt::Display for ClusterDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Expands a VirtualService / DestinationRule host as Istio's `ResolveShortnameToFQDN` does:
/// a short name (no dot) becomes `<host>.<namespace>.svc.<domain>`, where `namespace` is the
/// namespace of the resource that names the host (not of the service). Names with a dot,
/// wildcards (`*`, `*.example.com`) and IP addresses are returned unchanged.
///
/// Use it for VirtualService `hosts`, `http[].route[].destination.host` and DestinationRule
/// `host`; not for ServiceEntry `hosts`, which are literal (see [`resource_host`]).
pub fn expand_host(host: &str, namespace: &str, domain: &ClusterDomain) -> String {
    // `*` alone and IPv6 addresses have no dot but are complete; IPv4 addresses have dots.
    if host.is_empty() || host.contains(['.', ':', '*']) {
        return host.to_owned();
    }
    let mut out = String::with_capacity(host.len() + namespace.len() + domain.0.len() + 6);
    out.push_str(host);
    if !namespace.is_empty() {
        out.push('.');
        out.push_str(namespace);
    }
    out.push_str(".svc.");
    out.push_str(&domain.0);
    out
}

/// The host a resource of `kind` means by `host`: expanded with [`expand_host`] for the kinds
/// whose hosts Istio resolves as short names (VirtualService, DestinationRule), literal for
/// every other kind — in particular ServiceEntry, whose `hosts` name services outside the
/// cluster's naming scheme and are never expanded.
pub fn resource_host<'a>(
    kind: Kind,
    host: &'a str,
    namespace: &str,
    domain: &ClusterDomain,
) -> Cow<'a, str> {
    match kind {
        Kind::VirtualService | Kind::DestinationRule => {
            Cow::Owned(expand_host(host, namespace, domain))
        }
        _ => Cow::Borrowed(host),
    }
}

/// Splits an HTTP authority into its host and port: `reviews:9080` → (`reviews`, 9080),
/// `[::1]:80` → (`[::1]`, 80), `[::1]` → (`[::1]`, none). The host keeps its case and an IPv6
/// host keeps its brackets (Envoy matches the bracketed form). A trailing `:` with no digits
/// is dropped; an unbracketed IPv6 address (`::1`) or a non-numeric or out-of-range port
/// leaves the authority whole, with no port.
pub fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    // The port is the run of digits at the end, when a `:` comes right before it (so that
    // `:` is the last one); scanning from the end finds it without searching the host.
    let bytes = authority.as_bytes();
    let digits = bytes
        .iter()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    let colon = bytes.len() - digits;
    if colon == 0 || bytes[colon - 1] != b':' {
        return (authority, None);
    }
    let (host, port) = (&authority[..colon - 1], &authority[colon..]);
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        return (authority, None);
    }
    if port.is_empty() {
        return (host, None);
    }
    match port.parse::<u16>() {
        Ok(p) => (host, Some(p)),
        Err(_) => (authority, None),
    }
}

/// How [`HostIndex::resolve_authority`] found its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Via {
    /// The authority's host is the entry's name.
    Exact,
    /// The authority's host is a short form (`name`, `name.x`, `name.x.svc`) of the entry's
    /// `name.x.svc.<domain>`.
    Alias,
    /// The authority's host matched a wildcard pattern.
    Wildcard,
}

/// The entry a request authority resolved to (see [`HostIndex::resolve_authority`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Resolved<'a, T> {
    /// The pattern the entry was inserted under, lower-cased: the service's FQDN for
    /// [`Via::Exact`] and [`Via::Alias`], the wildcard pattern for [`Via::Wildcard`].
    pub pattern: &'a str,
    /// The entry.
    pub value: &'a T,
    /// How it was found.
    pub via: Via,
    /// The authority's port, if it had one. It is not checked against the service's ports.
    pub port: Option<u16>,
}

impl<T> Clone for Resolved<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Resolved<'_, T> {}

/// The wildcard patterns `*<label suffix><key>` that share one key: `*.example.com` and
/// `*-api.example.com` both have key `.example.com` (label suffixes `""` and `-api`); a
/// pattern without a dot (`*`, `*foo`) has key `""`. Longest label suffix first, so the first
/// match is the most specific (the plain `*.<key>`, with an empty label suffix, is last).
#[derive(Debug, Clone)]
struct Wildcards<T>(Vec<Wildcard<T>>);

impl<T> Default for Wildcards<T> {
    fn default() -> Self {
        Wildcards(Vec::new())
    }
}

#[derive(Debug, Clone)]
struct Wildcard<T> {
    pattern: Box<str>,
    /// The part of the first label after `*` (`-api` in `*-api.example.com`).
    label_suffix: Box<str>,
    value: T,
}

/// An index from host patterns to entries, answering "which entry is the most specific for
/// this concrete host?" in time flat in the number of entries, without allocating.
///
/// Patterns are FQDNs (`reviews.default.svc.cluster.local`) or wildcards: `*` followed by a
/// suffix (`*.example.com`, `*-api.example.com`, `*` alone). As in Istio's `host.Name.Matches`
/// and Envoy's domain matching, a wildcard matches a host that ends with its suffix and has at
/// least one more character: `*.foo.com` matches `a.foo.com` and `a.b.foo.com`, never
/// `foo.com`. A lookup returns the exact entry if there is one, else the wildcard with the
/// longest suffix (`*.b.example.com` before `*.example.com` before `*`).
///
/// Names are case-insensitive (patterns are lower-cased when inserted, hosts when looked up);
/// names longer than 255 bytes never match. A `*` anywhere but at the start makes a pattern
/// an ordinary name (Istio rejects such hosts).
///
/// Lookup: one hash lookup for the exact name, then one per dot of the host (the suffix after
/// each dot is a key of the wildcard table), from the longest suffix to the shortest.
#[derive(Debug, Clone)]
pub struct HostIndex<T> {
    exact: foldhash::HashMap<Box<str>, T>,
    /// Wildcards by the part of the pattern from its first dot (`.example.com`), `""` when it
    /// has none.
    wildcards: foldhash::HashMap<Box<str>, Wildcards<T>>,
    /// The longest wildcard key, to skip suffixes that cannot match.
    max_key_len: usize,
    len: usize,
    /// The short names of the exact names, made on the first
    /// [`resolve_authority`](Self::resolve_authority) (emptied by a change).
    aliases: OnceLock<Aliases>,
}

/// The short names ([`alias_fqdn`]) of an index's exact names for one caller namespace and
/// cluster domain: short name → FQDN. Made once, so that resolving an authority looks a short
/// name up instead of building its FQDN.
#[derive(Debug, Clone)]
struct Aliases {
    namespace: Box<str>,
    domain: ClusterDomain,
    names: foldhash::HashMap<Box<str>, Box<str>>,
}

impl<T> Default for HostIndex<T> {
    fn default() -> Self {
        HostIndex {
            exact: foldhash::HashMap::default(),
            wildcards: foldhash::HashMap::default(),
            max_key_len: 0,
            len: 0,
            aliases: OnceLock::new(),
        }
    }
}

impl<T> HostIndex<T> {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of patterns.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index has no pattern.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `value` under `pattern` (an FQDN or a wildcard). Like `HashMap::insert`, a value
    /// already under the same pattern (compared case-insensitively) is replaced and returned;
    /// use [`get_or_insert_with`](Self::get_or_insert_with) to keep the first one, as Istio
    /// keeps the oldest resource.
    pub fn insert(&mut self, pattern: &str, value: T) -> Option<T> {
        let (slot, unused) = self.slot(pattern, move || value);
        unused.map(|make| std::mem::replace(slot, make()))
    }

    /// The entry under `pattern`, created with `make` if there is none (for grouping several
    /// resources under one host, first one first).
    pub fn get_or_insert_with(&mut self, pattern: &str, make: impl FnOnce() -> T) -> &mut T {
        self.slot(pattern, make).0
    }

    /// The entry inserted under exactly this pattern (case-insensitive), without matching:
    /// `get_pattern("*.example.com")` is the wildcard's entry, `get_pattern("a.example.com")`
    /// only an entry inserted under that name.
    pub fn get_pattern(&self, pattern: &str) -> Option<&T> {
        let mut buf = [0u8; MAX_HOST_LEN];
        let pattern = lowercase(pattern, &mut buf)?;
        match classify(pattern) {
            Pattern::Exact => self.exact.get(pattern),
            Pattern::Wildcard { label_suffix, key } => {
                let w = self.wildcards.get(key)?;
                w.0.iter()
                    .find(|e| &*e.label_suffix == label_suffix)
                    .map(|e| &e.value)
            }
        }
    }

    /// The most specific entry for the concrete host `host` (no port): the exact entry, else
    /// the wildcard with the longest matching suffix.
    pub fn lookup(&self, host: &str) -> Option<&T> {
        self.lookup_entry(host).map(|(_, v)| v)
    }

    /// Like [`lookup`](Self::lookup), with the pattern that matched (lower-case).
    pub fn lookup_entry(&self, host: &str) -> Option<(&str, &T)> {
        let mut buf = [0u8; MAX_HOST_LEN];
        let host = lowercase(host, &mut buf)?;
        self.exact_entry(host).or_else(|| self.wildcard_entry(host))
    }

    /// Resolves a request authority (`Host` / `:authority`) for a caller in namespace
    /// `caller_namespace`, the way Istio's outbound virtual-host domains do:
    ///
    /// 1. the port is stripped (`reviews:9080`, `[::1]:80`) and the host lower-cased;
    /// 2. an entry named exactly that host wins ([`Via::Exact`]);
    /// 3. else a short form of a Kubernetes-style service name is expanded to its FQDN and
    ///    looked up exactly ([`Via::Alias`]): `name` → `name.<caller_namespace>.svc.<domain>`,
    ///    `name.x` → `name.x.svc.<domain>`, `name.x.svc` → `name.x.svc.<domain>`. So a service
    ///    in the caller's namespace answers to `name`, `name.ns`, `name.ns.svc` and its full
    ///    name; a service in another namespace `x` to `name.x`, `name.x.svc` and its full name.
    ///    Istio generates these aliases only for hosts of that `*.svc.<domain>` shape.
    /// 4. else the most specific wildcard matching the literal host ([`Via::Wildcard`]).
    ///
    /// Aliases are exact names, as in Envoy: `reviews` is not matched by a wildcard
    /// `*.default.svc.cluster.local`. To make a short name reach a service that only a
    /// wildcard covers, insert the service's FQDN as well (Istio builds one virtual host per
    /// service, and the aliases belong to it). The first call makes the short names of every
    /// exact name for its namespace and domain, once (a change to the index drops them);
    /// later calls look them up and do not allocate. Calls with another namespace or domain
    /// build the alias FQDN in a stack buffer instead, also without allocating.
    pub fn resolve_authority(
        &self,
        authority: &str,
        caller_namespace: &str,
        domain: &ClusterDomain,
    ) -> Option<Resolved<'_, T>> {
        let (host, port) = split_host_port(authority);
        let mut buf = [0u8; MAX_HOST_LEN];
        let host = lowercase(host, &mut buf)?;
        if host.is_empty() {
            return None;
        }
        let (hit, via) = if let Some(hit) = self.exact_entry(host) {
            (hit, Via::Exact)
        } else if let Some(hit) = self.alias_entry(host, caller_namespace, domain) {
            (hit, Via::Alias)
        } else {
            (self.wildcard_entry(host)?, Via::Wildcard)
        };
        Some(Resolved {
            pattern: hit.0,
            value: hit.1,
            via,
            port,
        })
    }

    /// Every (pattern, entry), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        let exact = self.exact.iter().map(|(k, v)| (&**k, v));
        let wild = self
            .wildcards
            .values()
            .flat_map(|w| w.0.iter().map(|e| (&*e.pattern, &e.value)));
        exact.chain(wild)
    }

    /// The exact entry whose short name (for `caller_namespace` and `domain`) is the
    /// lower-cased `host`: through the index's [`Aliases`] when they were made for the same
    /// namespace and domain (they are made on the first call), else by building the FQDN.
    fn alias_entry(
        &self,
        host: &str,
        caller_namespace: &str,
        domain: &ClusterDomain,
    ) -> Option<(&str, &T)> {
        let aliases = match self.aliases.get() {
            Some(a) => Some(a),
            None => {
                // Another request may be making them too: the same aliases.
                let _ = self
                    .aliases
                    .set(self.make_aliases(caller_namespace, domain));
                self.aliases.get()
            }
        };
        if let Some(a) = aliases
            && *a.namespace == *caller_namespace
            && a.domain == *domain
        {
            return a.names.get(host).and_then(|fqdn| self.exact_entry(fqdn));
        }
        let mut buf = [0u8; MAX_HOST_LEN];
        alias_fqdn(host, caller_namespace, domain, &mut buf).and_then(|f| self.exact_entry(f))
    }

    /// Every short name of the exact names: for `<name>.<x>.svc.<domain>`, `<name>.<x>`,
    /// `<name>.<x>.svc` and, when `x` is the caller's namespace, `<name>` — each only when
    /// [`alias_fqdn`] gives that FQDN back, so the two always agree.
    fn make_aliases(&self, caller_namespace: &str, domain: &ClusterDomain) -> Aliases {
        let mut names = foldhash::HashMap::default();
        let mut buf = [0u8; MAX_HOST_LEN];
        for fqdn in self.exact.keys() {
            let Some(rest) = fqdn
                .strip_suffix(domain.as_str())
                .and_then(|r| r.strip_suffix(".svc."))
            else {
                continue;
            };
            let name = rest.split_once('.').map(|(n, _)| n.to_owned());
            for alias in [Some(rest.to_owned()), Some(format!("{rest}.svc")), name]
                .into_iter()
                .flatten()
            {
                if alias_fqdn(&alias, caller_namespace, domain, &mut buf) == Some(&**fqdn) {
                    names.entry(alias.into()).or_insert_with(|| fqdn.clone());
                }
            }
        }
        Aliases {
            namespace: caller_namespace.into(),
            domain: domain.clone(),
            names,
        }
    }

    /// The exact entry for a lower-cased host.
    fn exact_entry(&self, host: &str) -> Option<(&str, &T)> {
        self.exact.get_key_value(host).map(|(k, v)| (&**k, v))
    }

    /// The wildcard with the longest suffix of a lower-cased host.
    ///
    /// At each dot (left to right) the rest of the host, dot included, is a key: its
    /// patterns with a label suffix must also find that suffix just before the dot, then the
    /// plain `*.<rest>`. The end of the host is the last position, with key `""` (`*foo`,
    /// `*`). Suffixes only get shorter along the walk, so the first match is the longest.
    fn wildcard_entry(&self, host: &str) -> Option<(&str, &T)> {
        if self.wildcards.is_empty() {
            return None;
        }
        let dots = host
            .bytes()
            .enumerate()
            .filter(|&(_, b)| b == b'.')
            .map(|(i, _)| i);
        for at in dots.chain(std::iter::once(host.len())) {
            let key = &host[at..];
            if key.len() > self.max_key_len {
                continue;
            }
            let Some(w) = self.wildcards.get(key) else {
                continue;
            };
            let before = &host[..at];
            // `*<suffix>` needs at least one character before the suffix.
            let hit = w.0.iter().find(|e| {
                before.len() > e.label_suffix.len() && before.ends_with(&*e.label_suffix)
            });
            if let Some(e) = hit {
                return Some((&e.pattern, &e.value));
            }
        }
        None
    }

    /// The slot for `pattern`, filled with `make()` when new; returns `make` back when the
    /// slot already existed.
    fn slot<F: FnOnce() -> T>(&mut self, pattern: &str, make: F) -> (&mut T, Option<F>) {
        self.aliases = OnceLock::new();
        let pattern = pattern.to_ascii_lowercase();
        match classify(&pattern) {
            Pattern::Exact => match self.exact.entry(pattern.into()) {
                Entry::Occupied(o) => (o.into_mut(), Some(make)),
                Entry::Vacant(v) => {
                    self.len += 1;
                    (v.insert(make()), None)
                }
            },
            Pattern::Wildcard { label_suffix, key } => {
                self.max_key_len = self.max_key_len.max(key.len());
                let w = self.wildcards.entry(key.into()).or_default();
                if let Some(i) = w.0.iter().position(|e| &*e.label_suffix == label_suffix) {
                    return (&mut w.0[i].value, Some(make));
                }
                // Keep the longest label suffix first.
                let i =
                    w.0.iter()
                        .position(|e| e.label_suffix.len() < label_suffix.len())
                        .unwrap_or(w.0.len());
                self.len += 1;
                let entry = Wildcard {
                    pattern: pattern.as_str().into(),
                    label_suffix: label_suffix.into(),
                    value: make(),
                };
                w.0.insert(i, entry);
                (&mut w.0[i].value, None)
            }
        }
    }
}

impl<S: AsRef<str>, T> FromIterator<(S, T)> for HostIndex<T> {
    /// Inserts every (pattern, entry) in order; like `HashMap`, a later duplicate pattern
    /// replaces an earlier one.
    fn from_iter<I: IntoIterator<Item = (S, T)>>(iter: I) -> Self {
        let mut index = HostIndex::new();
        for (pattern, value) in iter {
            index.insert(pattern.as_ref(), value);
        }
        index
    }
}

/// A pattern's shape.
enum Pattern<'p> {
    /// An ordinary name.
    Exact,
    /// `*<label_suffix><key>`: `key` is empty or starts with the first dot after the `*`.
    Wildcard { label_suffix: &'p str, key: &'p str },
}

fn classify(pattern: &str) -> Pattern<'_> {
    match pattern.strip_prefix('*') {
        Some(rest) if !rest.contains('*') => {
            let (label_suffix, key) = rest.split_at(rest.find('.').unwrap_or(rest.len()));
            Pattern::Wildcard { label_suffix, key }
        }
        _ => Pattern::Exact,
    }
}

/// `s` lower-cased: `s` itself when it has no upper-case letter, else a copy in `buf`; `None`
/// when a copy would not fit (no DNS name is that long).
fn lowercase<'b>(s: &'b str, buf: &'b mut [u8; MAX_HOST_LEN]) -> Option<&'b str> {
    if !s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Some(s);
    }
    let out = buf.get_mut(..s.len())?;
    out.copy_from_slice(s.as_bytes());
    out.make_ascii_lowercase();
    std::str::from_utf8(out).ok()
}

/// The FQDN that a short form of a Kubernetes service name stands for, written into `buf`:
/// `name` → `name.<ns>.svc.<domain>`, `name.x` and `name.x.svc` → `name.x.svc.<domain>`
/// (Istio's `generateAltVirtualHostsForKubernetesService`). `None` for any other shape (IP
/// literals, wildcards, longer names) or when the result would exceed a DNS name's length.
///
/// `host` is lower-case (as [`HostIndex::resolve_authority`] passes it) and so is the
/// domain ([`ClusterDomain`] keeps it so): only the namespace may need lower-casing.
fn alias_fqdn<'b>(
    host: &str,
    caller_namespace: &str,
    domain: &ClusterDomain,
    buf: &'b mut [u8; MAX_HOST_LEN],
) -> Option<&'b str> {
    let mut dots = 0usize;
    for b in host.bytes() {
        match b {
            b':' | b'[' | b'*' => return None,
            b'.' => dots += 1,
            _ => {}
        }
    }
    if host.starts_with('.') || host.ends_with('.') {
        return None;
    }
    let mut w = StackWriter { buf, len: 0 };
    match dots {
        0 if !caller_namespace.is_empty() => {
            w.push(host)?;
            w.push(".")?;
            let ns = w.len;
            w.push(caller_namespace)?;
            if let Some(ns) = w.buf.get_mut(ns..w.len) {
                ns.make_ascii_lowercase();
            }
            w.push(".svc.")?;
        }
        1 => {
            w.push(host)?;
            w.push(".svc.")?;
        }
        2 if host.ends_with(".svc") => {
            w.push(host)?;
            w.push(".")?;
        }
        _ => return None,
    }
    w.push(domain.as_str())?;
    let StackWriter { buf, len } = w;
    std::str::from_utf8(buf.get(..len)?).ok()
}

/// Appends strings to a fixed buffer; `None` when full.
struct StackWriter<'b> {
    buf: &'b mut [u8; MAX_HOST_LEN],
    len: usize,
}

impl StackWriter<'_> {
    fn push(&mut self, s: &str) -> Option<()> {
        let end = self.len.checked_add(s.len())?;
        self.buf
            .get_mut(self.len..end)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> ClusterDomain {
        ClusterDomain::default()
    }

    // --- expansion

    #[test]
    fn short_names_expand_with_the_resource_namespace() {
        assert_eq!(
            expand_host("reviews", "default", &domain()),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            expand_host("reviews", "prod", &ClusterDomain::new("Corp.Example.")),
            "reviews.prod.svc.corp.example"
        );
    }

    #[test]
    fn names_with_a_dot_wildcards_and_ips_are_literal() {
        for host in [
            "reviews.prod",
            "reviews.prod.svc.cluster.local",
            "*.example.com",
            "*",
            "10.0.0.1",
            "::1",
            "",
        ] {
            assert_eq!(expand_host(host, "default", &domain()), host, "{host}");
        }
    }

    #[test]
    fn service_entry_hosts_are_never_expanded() {
        let d = domain();
        assert_eq!(
            resource_host(Kind::ServiceEntry, "reviews", "default", &d),
            "reviews"
        );
        assert_eq!(
            resource_host(Kind::VirtualService, "reviews", "default", &d),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            resource_host(Kind::DestinationRule, "ratings", "x", &d),
            "ratings.x.svc.cluster.local"
        );
    }

    #[test]
    fn default_cluster_domain_is_cluster_local() {
        assert_eq!(ClusterDomain::default().as_str(), "cluster.local");
        assert_eq!(
            ClusterDomain::new(".cluster.local").to_string(),
            "cluster.local"
        );
    }

    // --- host index

    fn index(patterns: &[&'static str]) -> HostIndex<&'static str> {
        patterns.iter().map(|&p| (p, p)).collect()
    }

    #[test]
    fn exact_name_beats_every_wildcard() {
        let idx = index(&["*", "*.example.com", "api.example.com"]);
        assert_eq!(idx.lookup("api.example.com"), Some(&"api.example.com"));
    }

    #[test]
    fn longest_wildcard_suffix_wins() {
        let idx = index(&["*", "*.example.com", "*.b.example.com"]);
        assert_eq!(idx.lookup("a.b.example.com"), Some(&"*.b.example.com"));
        assert_eq!(idx.lookup("x.a.b.example.com"), Some(&"*.b.example.com"));
        assert_eq!(idx.lookup("a.c.example.com"), Some(&"*.example.com"));
        assert_eq!(idx.lookup("b.example.com"), Some(&"*.example.com"));
        assert_eq!(idx.lookup("other.org"), Some(&"*"));
    }

    #[test]
    fn wildcard_needs_a_label_before_its_suffix() {
        let idx = index(&["*.foo.com"]);
        assert_eq!(idx.lookup("a.foo.com"), Some(&"*.foo.com"));
        assert_eq!(idx.lookup("a.b.foo.com"), Some(&"*.foo.com"));
        assert_eq!(idx.lookup("foo.com"), None);
        assert_eq!(idx.lookup(".foo.com"), None);
        assert_eq!(idx.lookup("afoo.com"), None);
        assert_eq!(idx.lookup("foo.com.evil"), None);
    }

    #[test]
    fn partial_label_wildcards_match_a_string_suffix() {
        let idx = index(&["*-api.example.com", "*.example.com", "*api.example.com"]);
        assert_eq!(idx.lookup("v1-api.example.com"), Some(&"*-api.example.com"));
        assert_eq!(
            idx.lookup("a.v1-api.example.com"),
            Some(&"*-api.example.com")
        );
        assert_eq!(idx.lookup("myapi.example.com"), Some(&"*api.example.com"));
        assert_eq!(idx.lookup("web.example.com"), Some(&"*.example.com"));
        // The suffix needs a character before it: `-api.example.com` is not `*-api...`.
        assert_eq!(idx.lookup("-api.example.com"), Some(&"*api.example.com"));
        assert_eq!(idx.lookup("api.example.com"), Some(&"*.example.com"));
    }

    #[test]
    fn lookup_is_case_insensitive() {
        let idx = index(&["Reviews.Default.svc.cluster.local", "*.Example.com"]);
        assert_eq!(
            idx.lookup("REVIEWS.default.SVC.cluster.local"),
            Some(&"Reviews.Default.svc.cluster.local")
        );
        assert_eq!(
            idx.lookup_entry("API.EXAMPLE.COM"),
            Some(("*.example.com", &"*.Example.com"))
        );
    }

    #[test]
    fn unknown_hosts_and_empty_index_miss() {
        let idx = index(&["a.example.com", "*.b.example.com"]);
        assert_eq!(idx.lookup("c.example.com"), None);
        assert_eq!(idx.lookup(""), None);
        assert_eq!(HostIndex::<()>::new().lookup("a.example.com"), None);
        let long = "A".repeat(300);
        assert_eq!(idx.lookup(&long), None);
    }

    #[test]
    fn insert_replaces_and_get_or_insert_with_keeps_the_first() {
        let mut idx = HostIndex::new();
        assert_eq!(idx.insert("a.com", 1), None);
        assert_eq!(idx.insert("A.COM", 2), Some(1));
        assert_eq!(idx.insert("*.a.com", 3), None);
        assert_eq!(idx.insert("*.A.com", 4), Some(3));
        assert_eq!(idx.insert("*x.a.com", 5), None);
        assert_eq!(idx.insert("*X.a.com", 6), Some(5));
        *idx.get_or_insert_with("a.com", || 100) += 10;
        *idx.get_or_insert_with("*.a.com", || 100) += 10;
        *idx.get_or_insert_with("b.com", || 100) += 10;
        assert_eq!(idx.len(), 4);
        assert_eq!(idx.get_pattern("a.com"), Some(&12));
        assert_eq!(idx.get_pattern("*.a.com"), Some(&14));
        assert_eq!(idx.get_pattern("*x.a.com"), Some(&6));
        assert_eq!(idx.get_pattern("b.com"), Some(&110));
        assert_eq!(
            idx.get_pattern("z.a.com"),
            None,
            "get_pattern does not match"
        );
        let mut all: Vec<_> = idx.iter().map(|(p, v)| (p.to_owned(), *v)).collect();
        all.sort();
        assert_eq!(
            all,
            [
                ("*.a.com".to_owned(), 14),
                ("*x.a.com".to_owned(), 6),
                ("a.com".to_owned(), 12),
                ("b.com".to_owned(), 110)
            ]
        );
    }

    // --- authorities

    fn services() -> HostIndex<&'static str> {
        index(&[
            "reviews.default.svc.cluster.local",
            "ratings.prod.svc.cluster.local",
            "api.example.com",
            "*.wild.org",
        ])
    }

    fn resolve(authority: &str, ns: &str) -> Option<(&'static str, Via, Option<u16>)> {
        let idx = services();
        idx.resolve_authority(authority, ns, &domain())
            .map(|r| (*r.value, r.via, r.port))
    }

    #[test]
    fn same_namespace_service_answers_to_all_its_names() {
        let fqdn = "reviews.default.svc.cluster.local";
        assert_eq!(
            resolve("reviews", "default"),
            Some((fqdn, Via::Alias, None))
        );
        assert_eq!(
            resolve("reviews.default", "default"),
            Some((fqdn, Via::Alias, None))
        );
        assert_eq!(
            resolve("reviews.default.svc", "default"),
            Some((fqdn, Via::Alias, None))
        );
        assert_eq!(resolve(fqdn, "default"), Some((fqdn, Via::Exact, None)));
    }

    #[test]
    fn other_namespace_service_needs_its_namespace() {
        let fqdn = "ratings.prod.svc.cluster.local";
        assert_eq!(resolve("ratings", "default"), None);
        assert_eq!(
            resolve("ratings.prod", "default"),
            Some((fqdn, Via::Alias, None))
        );
        assert_eq!(
            resolve("ratings.prod.svc", "default"),
            Some((fqdn, Via::Alias, None))
        );
        assert_eq!(resolve(fqdn, "default"), Some((fqdn, Via::Exact, None)));
        // From its own namespace the bare name works.
        assert_eq!(resolve("ratings", "prod"), Some((fqdn, Via::Alias, None)));
    }

    #[test]
    fn authority_port_is_stripped_and_reported() {
        let fqdn = "reviews.default.svc.cluster.local";
        assert_eq!(
            resolve("reviews:9080", "default"),
            Some((fqdn, Via::Alias, Some(9080)))
        );
        assert_eq!(
            resolve("reviews.default.svc.cluster.local:80", "default"),
            Some((fqdn, Via::Exact, Some(80)))
        );
        assert_eq!(
            resolve("api.example.com:443", "x"),
            Some(("api.example.com", Via::Exact, Some(443)))
        );
        assert_eq!(
            resolve("a.wild.org:8080", "x"),
            Some(("*.wild.org", Via::Wildcard, Some(8080)))
        );
    }

    #[test]
    fn authority_is_case_insensitive() {
        let fqdn = "reviews.default.svc.cluster.local";
        assert_eq!(
            resolve("REVIEWS:9080", "default"),
            Some((fqdn, Via::Alias, Some(9080)))
        );
        assert_eq!(
            resolve("Reviews.Default.Svc", "default"),
            Some((fqdn, Via::Alias, None))
        );
        assert_eq!(
            resolve("reviews", "DEFAULT"),
            Some((fqdn, Via::Alias, None))
        );
        assert_eq!(
            resolve("API.Example.COM", "x"),
            Some(("api.example.com", Via::Exact, None))
        );
        assert_eq!(
            resolve("A.WILD.ORG", "x"),
            Some(("*.wild.org", Via::Wildcard, None))
        );
    }

    #[test]
    fn aliases_are_only_for_kubernetes_style_names() {
        // `api.example.com` is not a `*.svc.<domain>` host: no short forms.
        assert_eq!(resolve("api", "default"), None);
        assert_eq!(resolve("api.example", "default"), None);
        // Short forms are exact names: a wildcard does not catch them.
        assert_eq!(resolve("wild", "default"), None);
        assert_eq!(resolve("x.wild", "default"), None);
        // `foo.com` is not matched by `*.foo.com`-style entries.
        assert_eq!(resolve("wild.org", "default"), None);
        assert_eq!(resolve("", "default"), None);
        assert_eq!(resolve(":80", "default"), None);
    }

    #[test]
    fn short_names_made_once_agree_with_building_the_fqdn() {
        let mut idx = services();
        let names = |idx: &HostIndex<&'static str>, ns: &str| -> Vec<Option<&'static str>> {
            [
                "reviews",
                "reviews.default",
                "ratings",
                "ratings.prod.svc",
                "ratings.prod.svc.x",
            ]
            .iter()
            .map(|a| idx.resolve_authority(a, ns, &domain()).map(|r| *r.value))
            .collect()
        };
        let (r, p) = (
            Some("reviews.default.svc.cluster.local"),
            Some("ratings.prod.svc.cluster.local"),
        );
        // Made for `default`; another namespace or domain builds FQDNs instead.
        assert_eq!(names(&idx, "default"), [r, r, None, p, None]);
        assert_eq!(names(&idx, "prod"), [None, r, p, p, None]);
        assert_eq!(names(&idx, "Default"), [r, r, None, p, None]);
        let corp = ClusterDomain::new("corp");
        assert!(idx.resolve_authority("reviews", "default", &corp).is_none());
        // A change to the index drops them.
        idx.insert("details.default.svc.cluster.local", "details");
        let hit = idx.resolve_authority("details", "default", &domain());
        assert_eq!(
            hit.map(|r| (*r.value, r.via)),
            Some(("details", Via::Alias))
        );
    }

    #[test]
    fn literal_name_beats_an_alias() {
        let mut idx = services();
        idx.insert("ratings.prod", "literal");
        let hit = idx
            .resolve_authority("ratings.prod", "default", &domain())
            .map(|r| (*r.value, r.via));
        assert_eq!(hit, Some(("literal", Via::Exact)));
    }

    #[test]
    fn alias_uses_the_configured_cluster_domain() {
        let corp = ClusterDomain::new("corp.internal");
        let idx = index(&["reviews.default.svc.corp.internal"]);
        assert!(idx.resolve_authority("reviews", "default", &corp).is_some());
        assert!(
            idx.resolve_authority("reviews", "default", &domain())
                .is_none()
        );
    }

    #[test]
    fn ipv6_authorities_keep_their_brackets() {
        assert_eq!(split_host_port("[::1]:80"), ("[::1]", Some(80)));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
        assert_eq!(split_host_port("::1"), ("::1", None));
        assert_eq!(split_host_port("reviews:"), ("reviews", None));
        assert_eq!(split_host_port("reviews:http"), ("reviews:http", None));
        assert_eq!(split_host_port("reviews:70000"), ("reviews:70000", None));
        let idx = index(&["[::1]"]);
        let hit = idx.resolve_authority("[::1]:8080", "default", &domain());
        assert_eq!(hit.map(|r| (r.via, r.port)), Some((Via::Exact, Some(8080))));
    }
}
