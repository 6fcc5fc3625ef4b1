//! Services: what the ServiceEntries of a config declare, one [`Service`] per host.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::config::service_entry::{Location, Resolution};
use crate::config::{Resource, ServiceEntry, Spec, WorkloadEntry};
use crate::snapshot::hosts::HostIndex;
use crate::snapshot::policy::Provenance;
use crate::validate::common::Protocol;
use crate::validate::{ResourceRef, Severity, ValidationError};

use super::endpoint::Endpoint;

/// A service port: a ServiceEntry `ports[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// `number`: the port callers address.
    pub number: u16,
    /// `name`: endpoints' `ports` maps refer to it.
    pub name: Arc<str>,
    /// `protocol`, parsed case-insensitively; `None` when empty (Istio then sniffs the
    /// protocol) or not one Istio knows (validation rejects that).
    pub protocol: Option<Protocol>,
    /// `targetPort`: the port on the endpoints; `None` = `number` (Istio's default).
    pub target_port: Option<u16>,
}

/// An endpoint's address as config writes it (`endpoints[].address`, WorkloadEntry
/// `address`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EndpointAddress {
    /// An IP address.
    Ip(IpAddr),
    /// A DNS name, resolved for `resolution: DNS` / `DNS_ROUND_ROBIN` services.
    Dns(Arc<str>),
}

/// An endpoint config gives a service, before its address is resolved and its port chosen:
/// a ServiceEntry `endpoints[]` entry, or a WorkloadEntry its `workloadSelector` selects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConfigEndpoint {
    /// `address` (never a `unix://` socket: those are skipped with a warning).
    pub address: EndpointAddress,
    /// `ports`: service port name → port on this endpoint (overrides `targetPort`).
    pub ports: BTreeMap<String, u16>,
    /// `labels`.
    pub labels: Arc<BTreeMap<String, String>>,
    /// `weight`, with Istio's default 1 for an absent (0) weight.
    pub weight: u32,
    /// `locality`; `None` when empty.
    pub locality: Option<Arc<str>>,
    /// `serviceAccount`; `None` when empty.
    pub service_account: Option<Arc<str>>,
    /// `network`; `None` when empty.
    pub network: Option<Arc<str>>,
}

impl ConfigEndpoint {
    /// The port this endpoint serves `port` on: `ports[<port name>]`, else the port's
    /// `targetPort`, else its `number` (Istio's order).
    pub fn port_for(&self, port: &ServicePort) -> u16 {
        self.ports
            .get(&*port.name)
            .copied()
            .or(port.target_port)
            .unwrap_or(port.number)
    }

    /// The [`Endpoint`] at `ip` for service port `port`.
    pub fn endpoint(&self, ip: IpAddr, port: &ServicePort) -> Endpoint {
        Endpoint {
            addr: (ip, self.port_for(port)).into(),
            labels: self.labels.clone(),
            weight: self.weight,
            locality: self.locality.clone(),
            service_account: self.service_account.clone(),
            network: self.network.clone(),
        }
    }
}

/// One host of a ServiceEntry: what the mesh knows about a destination service.
///
/// Kubernetes-style services are ServiceEntries with `resolution: STATIC` (and usually
/// `location: MESH_INTERNAL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The host, one of the ServiceEntry's `hosts`, taken literally (never expanded as a
    /// short name) and lower-cased. May be a wildcard (`*.example.com`).
    pub host: Arc<str>,
    /// The ServiceEntry's `metadata.namespace`.
    pub namespace: Arc<str>,
    /// `ports`, in config order (ports whose number is not 1..65535 are dropped with a
    /// warning).
    pub ports: Vec<ServicePort>,
    /// `resolution`; Istio's default when absent is `NONE`.
    pub resolution: Resolution,
    /// `location`; Istio's default when absent is `MESH_EXTERNAL`.
    pub location: Location,
    /// The ServiceEntry that declared the host.
    pub provenance: Arc<Provenance>,
    endpoints: Vec<ConfigEndpoint>,
}

impl Service {
    /// The port a request for `requested` uses: that port when the service has it (else
    /// `None`); with no port requested, the service's only port, or its first when it has
    /// several; `None` when it has none.
    pub fn port(&self, requested: Option<u16>) -> Option<&ServicePort> {
        match requested {
            Some(n) => self.ports.iter().find(|p| p.number == n),
            None => self.ports.first(),
        }
    }

    /// The endpoints config gives the service (`endpoints[]`, then the WorkloadEntries its
    /// `workloadSelector` selects, in config order), unresolved. Empty for `resolution: NONE`
    /// and `DYNAMIC_DNS`.
    pub fn config_endpoints(&self) -> &[ConfigEndpoint] {
        &self.endpoints
    }

    /// Whether traffic to the service goes to the address the caller asked for rather than
    /// to registry endpoints: `resolution: NONE` (Istio's default, "original destination")
    /// and `DYNAMIC_DNS` (the requested name is resolved per request).
    pub fn passthrough(&self) -> bool {
        matches!(self.resolution, Resolution::None | Resolution::DynamicDns)
    }

    /// Whether the registry resolves the endpoints by DNS: `resolution: DNS` or
    /// `DNS_ROUND_ROBIN`.
    pub fn resolves_dns(&self) -> bool {
        matches!(self.resolution, Resolution::Dns | Resolution::DnsRoundRobin)
    }
}

/// The services of a config: one [`Service`] per ServiceEntry host, found by host name the way
/// Istio matches hosts (exact, else the most specific wildcard).
#[derive(Debug, Clone, Default)]
pub struct ServiceRegistry {
    services: HostIndex<Service>,
}

impl ServiceRegistry {
    /// Builds the registry from the ServiceEntries and WorkloadEntries among `resources`,
    /// given in Istio's order (oldest first): when two ServiceEntries declare the same host,
    /// the first one keeps it, as Istio keeps the oldest. `exportTo` and namespace visibility
    /// are not applied here: pass only the resources the caller sees.
    ///
    /// Warnings (severity [`Severity::Warning`]): a host declared again, a `unix://` address
    /// (not supported: skipped), a `STATIC` endpoint whose address is not an IP, a DNS service
    /// with a wildcard host and no endpoints, port numbers outside 1..65535.
    pub fn from_config<'a>(
        resources: impl IntoIterator<Item = &'a Resource>,
    ) -> (ServiceRegistry, Vec<ValidationError>) {
        let resources: Vec<&Resource> = resources.into_iter().collect();
        let mut warnings = Vec::new();
        let mut services = HostIndex::new();
        let mut owners: HostIndex<Arc<Provenance>> = HostIndex::new();
        for res in &resources {
            let Spec::ServiceEntry(se) = &res.spec else {
                continue;
            };
            let provenance = Arc::new(Provenance::of(res));
            let ports = service_ports(res, se, &mut warnings);
            let endpoints = config_endpoints(res, se, &resources, &mut warnings);
            for (i, host) in se.hosts.iter().enumerate() {
                if let Some(first) = owners.get_pattern(host) {
                    warnings.push(warning(
                        res,
                        format!("spec.hosts[{i}]"),
                        format!("host {host:?} is already declared by {first}; this entry is ignored for it"),
                    ));
                    continue;
                }
                owners.insert(host, provenance.clone());
                let host: Arc<str> = host.to_ascii_lowercase().into();
                let mut endpoints = endpoints.clone();
                if matches!(se.resolution(), Resolution::Dns | Resolution::DnsRoundRobin)
                    && endpoints.is_empty()
                {
                    // `resolution: DNS` without endpoints resolves the host itself.
                    if host.starts_with('*') {
                        warnings.push(warning(
                            res,
                            format!("spec.hosts[{i}]"),
                            format!("host {host:?} is a wildcard and cannot be resolved by DNS; it has no endpoints"),
                        ));
                    } else {
                        endpoints.push(host_endpoint(&host));
                    }
                }
                let service = Service {
                    host: host.clone(),
                    namespace: res.metadata.namespace.as_str().into(),
                    ports: ports.clone(),
                    resolution: se.resolution(),
                    location: se.location(),
                    provenance: provenance.clone(),
                    endpoints,
                };
                services.insert(&host, service);
            }
        }
        (ServiceRegistry { services }, warnings)
    }

    /// The service declared for exactly `host` (a host or wildcard pattern as written in a
    /// ServiceEntry; case-insensitive).
    pub fn get(&self, host: &str) -> Option<&Service> {
        self.services.get_pattern(host)
    }

    /// The service whose host covers the concrete host `host`: the exact one, else the most
    /// specific wildcard.
    pub fn lookup(&self, host: &str) -> Option<&Service> {
        self.services.lookup(host)
    }

    /// Every (host, service), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Service)> {
        self.services.iter()
    }

    /// The index itself, for authority resolution
    /// ([`HostIndex::resolve_authority`]).
    pub fn index(&self) -> &HostIndex<Service> {
        &self.services
    }

    /// The number of services (hosts).
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there is no service.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

fn warning(res: &Resource, path: String, message: String) -> ValidationError {
    ValidationError {
        severity: Severity::Warning,
        resource: Some(ResourceRef {
            kind: res.kind(),
            namespace: res.metadata.namespace.clone(),
            name: res.metadata.name.clone(),
        }),
        path,
        message,
        rule: None,
        source: res.source.clone(),
    }
}

fn port_u16(n: u32) -> Option<u16> {
    u16::try_from(n).ok().filter(|&p| p != 0)
}

fn service_ports(
    res: &Resource,
    se: &ServiceEntry,
    warnings: &mut Vec<ValidationError>,
) -> Vec<ServicePort> {
    let mut ports = Vec::with_capacity(se.ports.len());
    for (i, p) in se.ports.iter().enumerate() {
        let Some(number) = port_u16(p.number) else {
            warnings.push(warning(
                res,
                format!("spec.ports[{i}].number"),
                format!("port {} is not in 1..65535; the port is ignored", p.number),
            ));
            continue;
        };
        let target_port = match p.target_port {
            None => None,
            Some(t) => match port_u16(t) {
                Some(t) => Some(t),
                None => {
                    warnings.push(warning(
                        res,
                        format!("spec.ports[{i}].targetPort"),
                        format!("targetPort {t} is not in 1..65535; the port number is used"),
                    ));
                    None
                }
            },
        };
        ports.push(ServicePort {
            number,
            name: p.name.as_str().into(),
            protocol: Protocol::parse(&p.protocol),
            target_port,
        });
    }
    ports
}

/// The endpoint a `resolution: DNS` ServiceEntry without endpoints gets: its host.
fn host_endpoint(host: &Arc<str>) -> ConfigEndpoint {
    ConfigEndpoint {
        address: EndpointAddress::Dns(host.clone()),
        ports: BTreeMap::new(),
        labels: Arc::default(),
        weight: 1,
        locality: None,
        service_account: None,
        network: None,
    }
}

/// `endpoints[]` then the selected WorkloadEntries, as [`ConfigEndpoint`]s.
fn config_endpoints(
    res: &Resource,
    se: &ServiceEntry,
    resources: &[&Resource],
    warnings: &mut Vec<ValidationError>,
) -> Vec<ConfigEndpoint> {
    let resolution = se.resolution();
    if matches!(resolution, Resolution::None | Resolution::DynamicDns) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, we) in se.endpoints.iter().enumerate() {
        let at = format!("spec.endpoints[{i}]");
        if let Some(ep) = config_endpoint(res, &at, we, resolution, warnings) {
            out.push(ep);
        }
    }
    if let Some(selector) = &se.workload_selector {
        for other in resources {
            let Spec::WorkloadEntry(we) = &other.spec else {
                continue;
            };
            // `workloadSelector` selects WorkloadEntries of the ServiceEntry's namespace whose
            // labels include every selector label.
            let selected = other.metadata.namespace == res.metadata.namespace
                && selector
                    .labels
                    .iter()
                    .all(|(k, v)| we.labels.get(k) == Some(v));
            if selected && let Some(ep) = config_endpoint(other, "spec", we, resolution, warnings) {
                out.push(ep);
            }
        }
    }
    if resolution == Resolution::DnsRoundRobin && out.len() > 1 {
        // Istio allows at most one endpoint with DNS_ROUND_ROBIN (validation rejects more).
        out.truncate(1);
    }
    out
}

fn config_endpoint(
    res: &Resource,
    at: &str,
    we: &WorkloadEntry,
    resolution: Resolution,
    warnings: &mut Vec<ValidationError>,
) -> Option<ConfigEndpoint> {
    if we.is_unix() {
        warnings.push(warning(
            res,
            format!("{at}.address"),
            format!(
                "Unix domain socket endpoint {:?} is not supported; it is skipped",
                we.address
            ),
        ));
        return None;
    }
    let address = match we.address.parse::<IpAddr>() {
        Ok(ip) => EndpointAddress::Ip(ip),
        Err(_) if resolution == Resolution::Static || we.address.is_empty() => {
            warnings.push(warning(
                res,
                format!("{at}.address"),
                format!(
                    "endpoint address {:?} is not an IP address (resolution {}); it is skipped",
                    we.address,
                    resolution.as_str()
                ),
            ));
            return None;
        }
        Err(_) => EndpointAddress::Dns(we.address.to_ascii_lowercase().into()),
    };
    let mut ports = BTreeMap::new();
    for (name, &n) in &we.ports {
        match port_u16(n) {
            Some(p) => {
                ports.insert(name.clone(), p);
            }
            None => warnings.push(warning(
                res,
                format!("{at}.ports.{name}"),
                format!("port {n} is not in 1..65535; the service port is used"),
            )),
        }
    }
    let opt = |s: &str| (!s.is_empty()).then(|| Arc::<str>::from(s));
    Some(ConfigEndpoint {
        address,
        ports,
        labels: Arc::new(we.labels.clone()),
        weight: we.weight.max(1),
        locality: opt(&we.locality),
        service_account: opt(&we.service_account),
        network: opt(&we.network),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Loader;

    fn registry(yaml: &str) -> (ServiceRegistry, Vec<ValidationError>) {
        let set = Loader::new().load_str(yaml);
        assert!(set.problems.is_empty(), "{:?}", set.problems);
        ServiceRegistry::from_config(&set.resources)
    }

    const STATIC: &str = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [Reviews.shop.svc.cluster.local, reviews.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: http, targetPort: 8080}
  - {number: 9443, name: tls, protocol: TLS}
  - {number: 7000, name: raw}
  endpoints:
  - {address: 10.0.0.1, ports: {http: 18080}, labels: {version: v1}, weight: 0}
  - {address: 10.0.0.2, labels: {version: v2}, weight: 3, locality: r/z, serviceAccount: sa, network: n1}
";

    #[test]
    fn static_service_entry_gives_one_service_per_host() {
        let (reg, warnings) = registry(STATIC);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(reg.len(), 2);
        let svc = reg.get("reviews.shop.svc.cluster.local").expect("service");
        assert_eq!(&*svc.host, "reviews.shop.svc.cluster.local");
        assert_eq!(&*svc.namespace, "shop");
        assert_eq!(svc.resolution, Resolution::Static);
        assert_eq!(svc.location, Location::MeshInternal);
        assert_eq!(svc.provenance.name, "reviews");
        assert!(!svc.passthrough());
        let http = &svc.ports[0];
        assert_eq!(
            (http.number, &*http.name, http.protocol, http.target_port),
            (9080, "http", Some(Protocol::Http), Some(8080))
        );
        assert_eq!(svc.ports[2].protocol, None);
        assert!(reg.get("reviews.example.com").is_some());
    }

    #[test]
    fn endpoint_port_is_override_then_target_port_then_number() {
        let (reg, _) = registry(STATIC);
        let svc = reg.get("reviews.example.com").expect("service");
        let [a, b] = svc.config_endpoints() else {
            panic!("two endpoints: {:?}", svc.config_endpoints());
        };
        let http = &svc.ports[0];
        let tls = &svc.ports[1];
        assert_eq!(
            a.port_for(http),
            18080,
            "endpoint ports override targetPort"
        );
        assert_eq!(b.port_for(http), 8080, "targetPort overrides number");
        assert_eq!(b.port_for(tls), 9443, "number when neither is set");
        let e = b.endpoint("10.0.0.2".parse().expect("ip"), http);
        assert_eq!(e.addr, "10.0.0.2:8080".parse().expect("addr"));
        assert_eq!(e.weight, 3);
        assert_eq!(e.locality.as_deref(), Some("r/z"));
        assert_eq!(e.service_account.as_deref(), Some("sa"));
        assert_eq!(e.network.as_deref(), Some("n1"));
        assert_eq!(e.labels.get("version").map(String::as_str), Some("v2"));
        assert_eq!(a.weight, 1, "weight 0 means 1");
        assert_eq!(a.locality, None);
    }

    #[test]
    fn port_picks_requested_only_or_first() {
        let (reg, _) = registry(STATIC);
        let svc = reg.get("reviews.example.com").expect("service");
        assert_eq!(svc.port(None).map(|p| p.number), Some(9080));
        assert_eq!(svc.port(Some(9443)).map(|p| p.number), Some(9443));
        assert_eq!(svc.port(Some(1)), None);
    }

    #[test]
    fn first_service_entry_keeps_a_host() {
        let (reg, warnings) = registry(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: first, namespace: a}
spec:
  hosts: [api.example.com]
  ports: [{number: 80, name: http}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: second, namespace: b}
spec:
  hosts: [API.example.com, other.example.com]
  ports: [{number: 81, name: http}]
",
        );
        assert_eq!(reg.len(), 2);
        let svc = reg.lookup("api.example.com").expect("service");
        assert_eq!(svc.provenance.name, "first");
        assert_eq!(svc.ports[0].number, 80);
        assert!(svc.passthrough(), "resolution NONE by default");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].path, "spec.hosts[0]");
        assert!(warnings[0].message.contains("already declared"));
    }

    #[test]
    fn workload_selector_selects_entries_of_the_namespace_with_the_labels() {
        let (reg, warnings) = registry(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: vms, namespace: shop}
spec:
  hosts: [vm.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, targetPort: 8080}]
  workloadSelector: {labels: {app: vm}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm1, namespace: shop}
spec: {address: 10.1.0.1, labels: {app: vm, version: v1}, ports: {http: 9000}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm2, namespace: shop}
spec: {address: 10.1.0.2, labels: {app: other}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm3, namespace: elsewhere}
spec: {address: 10.1.0.3, labels: {app: vm}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm4, namespace: shop}
spec: {address: 10.1.0.4, labels: {app: vm}}
",
        );
        assert!(warnings.is_empty(), "{warnings:?}");
        let svc = reg.get("vm.shop.svc.cluster.local").expect("service");
        let port = &svc.ports[0];
        let addrs: Vec<String> = svc
            .config_endpoints()
            .iter()
            .map(|e| match &e.address {
                EndpointAddress::Ip(ip) => format!("{ip}:{}", e.port_for(port)),
                EndpointAddress::Dns(n) => n.to_string(),
            })
            .collect();
        assert_eq!(addrs, ["10.1.0.1:9000", "10.1.0.4:8080"]);
    }

    #[test]
    fn unix_and_non_ip_static_addresses_warn_and_are_skipped() {
        let (reg, warnings) = registry(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: socks, namespace: ns}
spec:
  hosts: [socks.example.com]
  resolution: STATIC
  ports: [{number: 80, name: http}]
  endpoints:
  - {address: \"unix:///var/run/app.sock\"}
  - {address: db.example.com}
  - {address: 10.0.0.9}
",
        );
        let svc = reg.get("socks.example.com").expect("service");
        assert_eq!(svc.config_endpoints().len(), 1);
        let paths: Vec<&str> = warnings.iter().map(|w| w.path.as_str()).collect();
        assert_eq!(
            paths,
            ["spec.endpoints[0].address", "spec.endpoints[1].address"]
        );
        assert!(warnings[0].message.contains("Unix domain socket"));
        assert!(warnings.iter().all(|w| w.severity == Severity::Warning));
    }

    #[test]
    fn dns_without_endpoints_resolves_its_hosts_and_none_has_no_endpoints() {
        let (reg, warnings) = registry(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: ns}
spec:
  hosts: [api.example.com, \"*.wild.example.com\"]
  resolution: DNS
  ports: [{number: 443, name: tls, protocol: TLS}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: passthrough, namespace: ns}
spec:
  hosts: [none.example.com]
  ports: [{number: 80, name: http}]
",
        );
        let api = reg.get("api.example.com").expect("service");
        assert!(api.resolves_dns());
        assert_eq!(
            api.config_endpoints()[0].address,
            EndpointAddress::Dns("api.example.com".into())
        );
        let wild = reg.get("*.wild.example.com").expect("service");
        assert!(wild.config_endpoints().is_empty());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].message.contains("wildcard"));
        let none = reg.lookup("none.example.com").expect("service");
        assert!(none.passthrough());
        assert!(none.config_endpoints().is_empty());
    }
}
