//! [`AuthzRequest`]: the borrowed view of a request (or TCP connection) that an authorization
//! decision reads.

use std::net::IpAddr;
use std::sync::LazyLock;

use http::HeaderMap;

use crate::route::matcher::JwtClaims;

/// An empty header map, for TCP connections and tests.
static NO_HEADERS: LazyLock<HeaderMap> = LazyLock::new(HeaderMap::new);

/// What an authorization decision needs to know about a request, borrowed from wherever the
/// caller keeps it. Nothing is copied; building one costs nothing.
///
/// An attribute that is absent (`None`, an empty string) never matches a value: a positive
/// list (`principals`, `values`) fails, a `not*` list (`notPrincipals`, `notValues`) holds.
/// That is Envoy's RBAC behaviour too: `notPrincipals: ["*"]` catches plaintext requests.
#[derive(Debug, Clone, Copy)]
pub struct AuthzRequest<'a> {
    /// The peer's identity from its mTLS certificate, *without* `spiffe://`
    /// (`cluster.local/ns/default/sa/sleep`); `None` for plaintext. Feeds `principals`,
    /// `namespaces`, `serviceAccounts`, `trustDomains` and the `source.principal`,
    /// `source.namespace`, `source.serviceAccount`, `source.trustDomain` conditions.
    pub peer_principal: Option<&'a str>,
    /// The verified JWT's claims (RequestAuthentication); `None` when the request carries no
    /// valid token. `requestPrincipals` and `request.auth.principal` match the claims `iss`
    /// and `sub` (split at the value's last `/`, as Istio does), `request.auth.audiences`
    /// the claim `aud`, `request.auth.presenter` the claim `azp`,
    /// `request.auth.claims[a][b]` any claim: all read here, as Envoy reads the JWT payload
    /// `jwt_authn` leaves in the request's metadata.
    pub claims: Option<&'a dyn JwtClaims>,
    /// The direct peer's address (`ipBlocks`, `source.ip`); `None` when unknown.
    pub peer_ip: Option<IpAddr>,
    /// The original client's address, from `X-Forwarded-For` or the PROXY protocol as the
    /// caller trusts them (`remoteIpBlocks`, `remote.ip`); `None` means "same as
    /// [`peer_ip`](Self::peer_ip)", as in Envoy without trusted hops.
    pub remote_ip: Option<IpAddr>,
    /// The local address the connection arrived on (`destination.ip`).
    pub destination_ip: Option<IpAddr>,
    /// The port the connection arrived on, the workload's port (`ports`,
    /// `destination.port`).
    pub destination_port: u16,
    /// The TLS SNI the client sent (`connection.sni`).
    pub sni: Option<&'a str>,
    /// `:authority` / `Host` as sent, port included (`hosts`, matched without case).
    pub host: &'a str,
    /// `:method` (`methods`, case-sensitive).
    pub method: &'a str,
    /// The path after the mesh's normalisation (`/public/../admin` is `/admin` by now), without
    /// the query (`paths`). A `?...` left in is ignored.
    pub path: &'a str,
    /// The request headers (`request.headers[...]`).
    pub headers: &'a HeaderMap,
    /// `false` for a TCP connection (no HTTP seen): HTTP-only fields (`hosts`, `methods`,
    /// `paths`, `requestPrincipals`, `request.*` conditions) drop an ALLOW rule and are
    /// ignored in DENY / AUDIT / CUSTOM rules, as Istio builds its network RBAC filter.
    pub is_http: bool,
}

impl<'a> AuthzRequest<'a> {
    /// An HTTP request with `method`, `host`, `path` and `headers`, on `destination_port`;
    /// every other attribute absent (set the public fields for them).
    pub fn http(
        method: &'a str,
        host: &'a str,
        path: &'a str,
        headers: &'a HeaderMap,
        destination_port: u16,
    ) -> Self {
        AuthzRequest {
            peer_principal: None,
            claims: None,
            peer_ip: None,
            remote_ip: None,
            destination_ip: None,
            destination_port,
            sni: None,
            host,
            method,
            path,
            headers,
            is_http: true,
        }
    }

    /// A TCP connection on `destination_port` (no HTTP attributes).
    pub fn tcp(destination_port: u16) -> AuthzRequest<'static> {
        AuthzRequest {
            peer_principal: None,
            claims: None,
            peer_ip: None,
            remote_ip: None,
            destination_ip: None,
            destination_port,
            sni: None,
            host: "",
            method: "",
            path: "",
            headers: &NO_HEADERS,
            is_http: false,
        }
    }

    /// Sets [`peer_principal`](Self::peer_principal) (a leading `spiffe://` is removed).
    pub fn with_peer(mut self, principal: &'a str) -> Self {
        self.peer_principal = Some(principal.strip_prefix("spiffe://").unwrap_or(principal));
        self
    }

    /// Sets [`claims`](Self::claims).
    pub fn with_claims(mut self, claims: &'a dyn JwtClaims) -> Self {
        self.claims = Some(claims);
        self
    }

    /// Sets [`peer_ip`](Self::peer_ip).
    pub fn with_peer_ip(mut self, ip: IpAddr) -> Self {
        self.peer_ip = Some(ip);
        self
    }

    /// Sets [`remote_ip`](Self::remote_ip).
    pub fn with_remote_ip(mut self, ip: IpAddr) -> Self {
        self.remote_ip = Some(ip);
        self
    }

    /// Sets [`destination_ip`](Self::destination_ip).
    pub fn with_destination_ip(mut self, ip: IpAddr) -> Self {
        self.destination_ip = Some(ip);
        self
    }

    /// Sets [`sni`](Self::sni).
    pub fn with_sni(mut self, sni: &'a str) -> Self {
        self.sni = Some(sni);
        self
    }

    /// The path without a query string.
    pub(crate) fn path_only(&self) -> &'a str {
        match self.path.find('?') {
            Some(at) => self.path.get(..at).unwrap_or(self.path),
            None => self.path,
        }
    }

    /// The client address for `remoteIpBlocks` / `remote.ip`.
    pub(crate) fn remote(&self) -> Option<IpAddr> {
        self.remote_ip.or(self.peer_ip)
    }
}
