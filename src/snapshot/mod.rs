//! The compiled, immutable view of a config for the request path.
//!
//! `Snapshot::compile` (run by [`Mesh`](crate::Mesh) on build and reload) turns a validated [`ConfigSet`] into tables indexed for the hot path,
//! for one workload (the [`MeshSettings`]: its namespace, labels and gateway):
//!
//! - **virtual hosts** ([`VirtualHost`], in a [`HostIndex`]): one per service host (from
//!   ServiceEntries and the builder's static services) and per VirtualService host, found by a
//!   request's authority the way Istio's virtual-host domains are ([`Snapshot::resolve`]);
//!   each with its ordered [`RouteTable`] when VirtualServices claim it;
//! - **clusters** ([`Cluster`]): one per (service host, subset, port), with the merged
//!   DestinationRule policy ([`ClusterPolicy`]), the endpoints of the subset (a live handle
//!   into the endpoint registry) and the [`ClusterState`] that survives reloads;
//! - the DestinationRule index, for `/config_dump`-style questions.
//!
//! What the workload sees follows Istio: resources are visible when their `exportTo` includes
//! the workload's namespace (empty = everyone, `.` = own namespace, `~` = nobody); a
//! DestinationRule with a `workloadSelector` applies only to workloads in its namespace whose
//! labels it selects; for each host, the DestinationRules of the workload's namespace win,
//! then those of the service's namespace, then the root namespace's, then the rest.
//! VirtualServices apply when their gateways include the workload's gateway (`mesh`).
//! Every entry keeps its [`Provenance`].
//!
//! The Gateways whose `selector` matches the workload's labels (an empty selector matches
//! every workload, as in Istio, where it selects every gateway proxy) are the workload's
//! [`ServedGateway`]s: for each, the VirtualServices bound to it (`gateways: [ns/name]`, short
//! names in the VirtualService's namespace) whose hosts a server of the Gateway admits (host
//! intersection, `ns/host` namespace restriction, `exportTo` seen from the Gateway's
//! namespace) get their own virtual hosts ([`Snapshot::resolve_for_gateway`]); those with
//! `tls` routes are kept for SNI passthrough ([`Snapshot::gateway_tls_routes`]).

pub mod hosts;
pub mod policy;
pub mod state;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

pub use hosts::{ClusterDomain, HostIndex, expand_host};
pub use policy::{ClusterPolicy, DestinationRuleIndex, MergedDestinationRule, Provenance};
pub use state::{ClusterKey, ClusterState, StateRegistry};

use crate::balance::Balancer;
use crate::config::destination_rule::H2UpgradePolicy;
use crate::config::{ConfigSet, Resource, Spec, VirtualService};
use crate::error::Error;
use crate::mesh::MeshSettings;
use crate::pool::UpstreamProtocol;
use crate::registry::{ClusterEndpoints, Endpoint, EndpointRegistry, Service, ServiceRegistry};
use crate::route::matcher::{MESH_GATEWAY, RegexCache, resolve_gateway_name};
use crate::route::table::{RouteTable, RouteWarning, VsRef};
use crate::validate::common::Protocol;
use crate::validate::{ResourceRef, Severity, ValidationError};

/// A service the mesh builder declared with static endpoints (no ServiceEntry).
#[derive(Debug, Clone)]
pub(crate) struct UserService {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) endpoints: Vec<Endpoint>,
}

/// A host a request can address: a service, a VirtualService host, or both.
#[derive(Debug)]
pub struct VirtualHost {
    host: Arc<str>,
    routes: Option<RouteTable>,
}

impl VirtualHost {
    /// The host pattern (an FQDN or a wildcard).
    pub fn host(&self) -> &Arc<str> {
        &self.host
    }

    /// The routes of the VirtualServices that claim the host; `None` when none does (requests
    /// go to the service itself, Istio's default route).
    pub fn routes(&self) -> Option<&RouteTable> {
        self.routes.as_ref()
    }
}

/// A Gateway resource whose `selector` matches this workload's labels.
#[derive(Debug)]
pub struct ServedGateway {
    /// `<namespace>/<name>`, as VirtualServices' `gateways` name it.
    pub name: Arc<str>,
    /// The Gateway's namespace.
    pub namespace: String,
    /// The Gateway spec (servers, ports, hosts, TLS).
    pub spec: crate::config::Gateway,
    /// Where it came from.
    pub provenance: Arc<Provenance>,
}

/// A VirtualService with `tls` routes bound to a [`ServedGateway`] (for SNI passthrough).
#[derive(Debug)]
pub struct GatewayTlsRoutes {
    /// The VirtualService's namespace (short destination hosts expand in it).
    pub namespace: String,
    /// Its top-level `gateways`, qualified (`<ns>/<name>`).
    pub gateways: Vec<String>,
    /// Its `hosts`.
    pub hosts: Vec<String>,
    /// Its `tls` routes, in order.
    pub tls: Vec<crate::config::virtual_service::TlsRoute>,
    /// Where it came from.
    pub provenance: Arc<Provenance>,
}

/// How a service's traffic reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Through the endpoints of a cluster (STATIC, DNS, static map, Discover).
    Endpoints,
    /// Straight to the requested host (ServiceEntry `resolution: NONE`, or a wildcard host):
    /// Envoy's original-destination / passthrough.
    Passthrough,
}

/// One service port's facts the router needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceInfo {
    host: Arc<str>,
    ports: Vec<(u16, UpstreamProtocol)>,
    reach: Reach,
}

impl ServiceInfo {
    /// The port traffic for `requested` (the destination's or the request's port) goes to:
    /// that port if the service has it; with no port asked for, the only port, else the
    /// request's, else the first.
    fn port(&self, dest_port: Option<u16>, request_port: u16) -> Option<u16> {
        match dest_port {
            Some(p) => self.ports.iter().any(|(n, _)| *n == p).then_some(p),
            None if self.ports.len() == 1 => self.ports.first().map(|(n, _)| *n),
            None => self
                .ports
                .iter()
                .find(|(n, _)| *n == request_port)
                .or(self.ports.first())
                .map(|(n, _)| *n),
        }
    }
}

/// A destination (host, subset, port) ready to send to.
pub struct Cluster {
    key: ClusterKey,
    policy: ClusterPolicy,
    balancer: Balancer,
    endpoints: ClusterEndpoints,
    state: Arc<ClusterState>,
    protocol: UpstreamProtocol,
    use_client_protocol: bool,
    provenance: Option<Arc<Provenance>>,
    /// The TLS policy per endpoint, computed on first use (the client's `upstream_tls`).
    pub(crate) tls_cache: crate::client::TlsCache,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("key", &self.key)
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// (host, subset, port).
    pub fn key(&self) -> &ClusterKey {
        &self.key
    }

    /// The merged DestinationRule policy for this (host, subset, port).
    pub fn policy(&self) -> &ClusterPolicy {
        &self.policy
    }

    /// The load balancer of `policy.load_balancer` (Istio's default: `LEAST_REQUEST`).
    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    /// The endpoints of the subset (live: DNS and Discover updates show).
    pub fn endpoints(&self) -> &ClusterEndpoints {
        &self.endpoints
    }

    /// The state that survives reloads.
    pub fn state(&self) -> &Arc<ClusterState> {
        &self.state
    }

    /// The protocol to speak upstream for a request of `version`: HTTP/2 for ports declared
    /// `HTTP2` / `GRPC` / `GRPC-WEB` or with `h2UpgradePolicy: UPGRADE`; the caller's own with
    /// `useClientProtocol`; HTTP/1.1 otherwise.
    pub fn protocol_for(&self, version: http::Version) -> UpstreamProtocol {
        if self.use_client_protocol {
            return if version == http::Version::HTTP_2 {
                UpstreamProtocol::Http2
            } else {
                UpstreamProtocol::Http1
            };
        }
        self.protocol
    }

    /// The ServiceEntry the service came from (`None` for a static service of the builder).
    pub fn provenance(&self) -> Option<&Arc<Provenance>> {
        self.provenance.as_ref()
    }
}

/// Where a route's destination goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// A cluster with endpoints.
    Cluster(Arc<Cluster>),
    /// Straight to `host:port` (passthrough).
    Passthrough {
        /// The host to resolve and connect to.
        host: Arc<str>,
        /// The port.
        port: u16,
    },
}

/// A route destination's [`Target`], remembered by [`Snapshot::target_cached`] when it does
/// not depend on the request's port. It belongs to one snapshot's compiled routes (each
/// snapshot compiles its own), so the remembered target is that snapshot's.
#[derive(Default)]
pub(crate) struct TargetCache(std::sync::OnceLock<Target>);

/// The result of `Snapshot::compile`.
#[derive(Debug)]
pub(crate) struct Compiled {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Problems found while compiling: warnings that do not stop the config (a delegate
    /// that does not exist, a route dropped as unreachable, an endpoint address that cannot
    /// be used ...), and errors that do (DNS resolution that cannot start without a tokio
    /// runtime).
    pub warnings: Vec<ValidationError>,
}

/// The compiled config: immutable, shared by every request that started while it was current.
pub struct Snapshot {
    version: u64,
    settings: Arc<MeshSettings>,
    vhosts: HostIndex<VirtualHost>,
    services: HostIndex<ServiceInfo>,
    clusters: foldhash::HashMap<ClusterKey, Arc<Cluster>>,
    destination_rules: DestinationRuleIndex,
    resources: usize,
    regexes: usize,
    security: Arc<crate::inbound::Security>,
    /// Every resource compiled, in config order (for config dumps).
    sources: Arc<[Arc<Provenance>]>,
    /// The Gateways serving on this workload.
    gateways: Arc<[ServedGateway]>,
    /// Per served gateway name, the virtual hosts of the VirtualServices bound to it.
    gateway_vhosts: foldhash::HashMap<Arc<str>, HostIndex<VirtualHost>>,
    /// VirtualServices with `tls` routes bound to a served gateway.
    gateway_tls: Arc<[GatewayTlsRoutes]>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("hosts", &self.vhosts.len())
            .field("clusters", &self.clusters.len())
            .field("resources", &self.resources)
            .finish_non_exhaustive()
    }
}

/// Whether `export_to` (of a resource in `res_ns`) makes it visible in `caller_ns`.
pub fn exported_to(export_to: &[String], res_ns: &str, caller_ns: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == caller_ns || (e == "." && res_ns == caller_ns))
}

/// The namespace of a Kubernetes-style service host `name.ns.svc.<domain>`.
fn service_namespace<'a>(host: &'a str, domain: &ClusterDomain) -> Option<&'a str> {
    let rest = host.strip_suffix(domain.as_str())?.strip_suffix(".svc.")?;
    let (_, ns) = rest.rsplit_once('.')?;
    Some(ns)
}

impl Snapshot {
    /// Compiles the (validated) `set` for the workload described by `settings`.
    ///
    /// `endpoints` is the mesh's endpoint registry: config endpoints are published into it
    /// and each cluster takes a live handle from it; `state` gives each cluster the state
    /// its key had before.
    pub(crate) fn compile(
        set: &ConfigSet,
        settings: &Arc<MeshSettings>,
        user_services: &[UserService],
        endpoints: &EndpointRegistry,
        state: &StateRegistry,
        version: u64,
    ) -> Compiled {
        let caller_ns = settings.source.namespace.as_str();
        let domain = &settings.cluster_domain;
        let mut warnings = Vec::new();

        // ---- services ---------------------------------------------------------------
        let visible_ses: Vec<&Resource> = set
            .resources
            .iter()
            .filter(|r| match &r.spec {
                Spec::ServiceEntry(se) => {
                    exported_to(&se.export_to, &r.metadata.namespace, caller_ns)
                }
                Spec::WorkloadEntry(_) => true,
                _ => false,
            })
            .collect();
        let (registry, service_warnings) = ServiceRegistry::from_config(visible_ses);
        warnings.extend(service_warnings);
        if let Err(e) = endpoints.apply_config(&registry) {
            // Only DNS resolution can fail here (no runtime to run resolvers on): refuse the
            // config rather than serve DNS services without endpoints.
            warnings.push(ValidationError {
                severity: Severity::Error,
                resource: None,
                path: String::new(),
                message: e.to_string(),
                rule: None,
                source: Default::default(),
            });
        }

        let mut services: HostIndex<ServiceInfo> = HostIndex::new();
        let mut service_list: Vec<(&Service, ServiceInfo)> = Vec::new();
        for (_, svc) in registry.iter() {
            let info = ServiceInfo {
                host: svc.host.clone(),
                ports: svc
                    .ports
                    .iter()
                    .map(|p| (p.number, upstream_protocol(p.protocol)))
                    .collect(),
                reach: if svc.passthrough() || svc.host.starts_with('*') {
                    Reach::Passthrough
                } else {
                    Reach::Endpoints
                },
            };
            service_list.push((svc, info.clone()));
            services.get_or_insert_with(&svc.host, || info);
        }
        for us in user_services {
            let host: Arc<str> = us.host.to_ascii_lowercase().into();
            let entry = services.get_or_insert_with(&host, || ServiceInfo {
                host: host.clone(),
                ports: Vec::new(),
                reach: Reach::Endpoints,
            });
            if !entry.ports.iter().any(|(n, _)| *n == us.port) {
                entry.ports.push((us.port, UpstreamProtocol::Http1));
            }
        }

        // ---- DestinationRules -------------------------------------------------------
        let destination_rules = DestinationRuleIndex::build(
            preferred_destination_rules(&set.resources, settings),
            domain,
        );

        // ---- clusters -----------------------------------------------------------------
        let mut clusters = foldhash::HashMap::default();
        for (host, info) in services.iter() {
            if info.reach == Reach::Passthrough {
                continue;
            }
            let provenance = service_list
                .iter()
                .find(|(s, _)| &*s.host == host)
                .map(|(s, _)| s.provenance.clone());
            let dr = destination_rules.lookup(host);
            let mut subsets: Vec<Option<&crate::config::destination_rule::Subset>> = vec![None];
            if let Some(dr) = dr {
                subsets.extend(dr.rule().subsets.iter().map(Some));
            }
            for &(port, protocol) in &info.ports {
                for subset in &subsets {
                    let subset_name: Option<Arc<str>> = subset.map(|s| Arc::from(s.name.as_str()));
                    let key = ClusterKey::new(info.host.clone(), subset_name.clone(), port);
                    if clusters.contains_key(&key) {
                        continue;
                    }
                    let policy = dr
                        .map(|d| d.policy(subset_name.as_deref(), Some(u32::from(port))))
                        .unwrap_or_default();
                    let http = policy
                        .connection_pool
                        .as_ref()
                        .and_then(|c| c.http.as_ref());
                    let upgrade =
                        http.and_then(|h| h.h2_upgrade_policy) == Some(H2UpgradePolicy::Upgrade);
                    let use_client_protocol = http.is_some_and(|h| h.use_client_protocol);
                    let labels = subset.map(|s| &s.labels);
                    let cluster = Cluster {
                        endpoints: endpoints.cluster(host, port, labels),
                        state: state.cluster(&key),
                        protocol: if upgrade {
                            UpstreamProtocol::Http2
                        } else {
                            protocol
                        },
                        use_client_protocol,
                        provenance: provenance.clone(),
                        balancer: Balancer::for_policy(&policy, settings.locality.as_deref()),
                        policy,
                        key: key.clone(),
                        tls_cache: Default::default(),
                    };
                    clusters.insert(key, Arc::new(cluster));
                }
            }
        }

        // ---- virtual hosts and routes ---------------------------------------------------
        let mut vhosts: HostIndex<VirtualHost> = HostIndex::new();
        for (host, _) in services.iter() {
            vhosts.get_or_insert_with(host, || VirtualHost {
                host: Arc::from(host),
                routes: None,
            });
        }
        let mut delegates: HashMap<(&str, &str), VsRef<'_>> = HashMap::new();
        for res in &set.resources {
            if let Spec::VirtualService(vs) = &res.spec
                && vs.hosts.is_empty()
            {
                delegates.insert(
                    (res.metadata.namespace.as_str(), res.metadata.name.as_str()),
                    VsRef {
                        resource: res,
                        spec: vs,
                    },
                );
            }
        }
        let mut cache = RegexCache::new();
        let delegate = |ns: &str, name: &str| delegates.get(&(ns, name)).copied();
        let mesh_vss = set.resources.iter().filter(|res| match &res.spec {
            Spec::VirtualService(vs) => {
                exported_to(&vs.export_to, &res.metadata.namespace, caller_ns)
                    && applies_to_gateway(vs, &res.metadata.namespace, &settings.gateway)
            }
            _ => false,
        });
        compile_vhosts(
            mesh_vss.map(|res| (res, None)),
            &mut vhosts,
            &delegate,
            &mut cache,
            domain,
            &mut warnings,
        );

        // ---- gateways served by this workload ---------------------------------------------
        let mut gateways = Vec::new();
        let mut gateway_vhosts = foldhash::HashMap::default();
        let mut gateway_tls = Vec::new();
        for res in &set.resources {
            let Spec::Gateway(gw) = &res.spec else {
                continue;
            };
            let selected = gw
                .selector
                .iter()
                .all(|(k, v)| settings.source.labels.get(k) == Some(v));
            if !selected {
                continue;
            }
            let gw_ns = res.metadata.namespace.as_str();
            let name: Arc<str> = format!("{gw_ns}/{}", res.metadata.name).into();
            // The hosts of the servers carrying HTTP (plaintext or terminated TLS) and of
            // those passing TLS through: `http` routes bind to the first, `tls` routes to
            // the second.
            let (mut http_hosts, mut tls_hosts) = (Vec::new(), Vec::new());
            for server in &gw.servers {
                let hosts = server
                    .hosts
                    .iter()
                    .map(|h| crate::proxy::gateway::hosts::ServerHost::parse(h));
                if crate::proxy::gateway::plan::passes_tls_through(server) {
                    tls_hosts.extend(hosts);
                } else {
                    http_hosts.extend(hosts);
                }
            }
            // The hosts of `vs` (in `vs_ns`) a server among `servers` admits.
            let admitted = |vs: &VirtualService,
                            vs_ns: &str,
                            servers: &[crate::proxy::gateway::hosts::ServerHost]|
             -> Vec<String> {
                vs.hosts
                    .iter()
                    .map(|h| expand_host(h, vs_ns, domain).to_ascii_lowercase())
                    .filter(|h| {
                        servers.iter().any(|sh| {
                            sh.allows_namespace(vs_ns, gw_ns)
                                && crate::proxy::gateway::hosts::hosts_intersect(&sh.host, h)
                        })
                    })
                    .collect()
            };
            let mut bound = Vec::new();
            for vs_res in &set.resources {
                let Spec::VirtualService(vs) = &vs_res.spec else {
                    continue;
                };
                let vs_ns = vs_res.metadata.namespace.as_str();
                if vs.hosts.is_empty() || !exported_to(&vs.export_to, vs_ns, gw_ns) {
                    continue;
                }
                let bound_here =
                    |list: &[String]| list.iter().any(|g| resolve_gateway_name(g, vs_ns) == *name);
                let tls_bound = bound_here(&vs.gateways)
                    || vs
                        .tls
                        .iter()
                        .any(|r| r.matches.iter().any(|m| bound_here(&m.gateways)));
                let tls_admitted = admitted(vs, vs_ns, &tls_hosts);
                if !vs.tls.is_empty() && tls_bound && !tls_admitted.is_empty() {
                    gateway_tls.push(GatewayTlsRoutes {
                        namespace: vs_ns.to_string(),
                        gateways: vs
                            .gateways
                            .iter()
                            .map(|g| resolve_gateway_name(g, vs_ns))
                            .collect(),
                        hosts: tls_admitted,
                        tls: vs.tls.clone(),
                        provenance: Arc::new(Provenance::of(vs_res)),
                    });
                }
                let http_admitted = admitted(vs, vs_ns, &http_hosts);
                if !http_admitted.is_empty() && applies_to_gateway(vs, vs_ns, &name) {
                    bound.push((vs_res, Some(http_admitted)));
                }
            }
            let mut index = HostIndex::new();
            compile_vhosts(
                bound.into_iter(),
                &mut index,
                &delegate,
                &mut cache,
                domain,
                &mut warnings,
            );
            gateway_vhosts.insert(name.clone(), index);
            gateways.push(ServedGateway {
                name,
                namespace: gw_ns.to_string(),
                spec: gw.clone(),
                provenance: Arc::new(Provenance::of(res)),
            });
        }

        let resources = set.resources.len();
        Compiled {
            snapshot: Snapshot {
                version,
                settings: settings.clone(),
                vhosts,
                services,
                clusters,
                destination_rules,
                resources,
                regexes: cache.len(),
                security: Arc::default(),
                sources: set
                    .resources
                    .iter()
                    .map(|r| Arc::new(Provenance::of(r)))
                    .collect(),
                gateways: gateways.into(),
                gateway_vhosts,
                gateway_tls: gateway_tls.into(),
            },
            warnings,
        }
    }

    /// The inbound policies compiled for this workload: PeerAuthentication,
    /// RequestAuthentication, AuthorizationPolicy.
    pub fn security(&self) -> &Arc<crate::inbound::Security> {
        &self.security
    }

    pub(crate) fn set_security(&mut self, security: crate::inbound::Security) {
        self.security = Arc::new(security);
    }

    /// The version: 1 for the mesh's first config, +1 per successful reload.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The settings it was compiled with.
    pub fn settings(&self) -> &MeshSettings {
        &self.settings
    }

    /// The number of resources compiled.
    pub fn resources(&self) -> usize {
        self.resources
    }

    /// Every resource this snapshot was compiled from (kind, `namespace/name`, file and
    /// line), in config order: what an admin `/config_dump` lists as the sources.
    pub fn sources(&self) -> &[Arc<Provenance>] {
        &self.sources
    }

    /// The number of distinct regexes compiled (identical patterns are shared).
    pub fn regexes(&self) -> usize {
        self.regexes
    }

    /// The virtual host a request authority addresses, for the workload's namespace (see
    /// [`HostIndex::resolve_authority`]).
    pub fn resolve(&self, authority: &str) -> Option<hosts::Resolved<'_, VirtualHost>> {
        self.vhosts.resolve_authority(
            authority,
            &self.settings.source.namespace,
            &self.settings.cluster_domain,
        )
    }

    /// The Gateways whose `selector` matches this workload (an empty selector matches every
    /// workload), in the config's order.
    pub fn served_gateways(&self) -> &[ServedGateway] {
        &self.gateways
    }

    /// The virtual host a request authority addresses on the served gateway `gateway`
    /// (`<ns>/<name>`): only the hosts of VirtualServices bound to it, matched exactly or by
    /// wildcard (no short-name aliases: gateway hosts are external names). `None` when the
    /// gateway is not served here or no bound VirtualService claims the host (Envoy: 404).
    pub fn resolve_for_gateway(
        &self,
        gateway: &str,
        authority: &str,
    ) -> Option<hosts::Resolved<'_, VirtualHost>> {
        self.gateway_vhosts.get(gateway)?.resolve_authority(
            authority,
            &self.settings.source.namespace,
            &self.settings.cluster_domain,
        )
    }

    /// The VirtualServices with `tls` routes bound to a served gateway.
    pub fn gateway_tls_routes(&self) -> &[GatewayTlsRoutes] {
        &self.gateway_tls
    }

    /// The virtual host inserted under exactly `pattern` (a host or wildcard, as
    /// [`VirtualHost::host`] gives it).
    pub fn virtual_host(&self, pattern: &str) -> Option<&VirtualHost> {
        self.vhosts.get_pattern(pattern)
    }

    /// Every virtual host, in no particular order.
    pub fn virtual_hosts(&self) -> impl Iterator<Item = &VirtualHost> {
        self.vhosts.iter().map(|(_, v)| v)
    }

    /// The cluster of `key`.
    pub fn cluster(&self, key: &ClusterKey) -> Option<&Arc<Cluster>> {
        self.clusters.get(key)
    }

    /// Every cluster.
    pub fn clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters.values()
    }

    /// The keys of every cluster (for [`StateRegistry::retain`]).
    pub fn cluster_keys(&self) -> HashSet<ClusterKey> {
        self.clusters.keys().cloned().collect()
    }

    /// The DestinationRules that apply to this workload, merged per host.
    pub fn destination_rules(&self) -> &DestinationRuleIndex {
        &self.destination_rules
    }

    /// Where traffic for destination `host` (an FQDN, as a route names it), `subset` and
    /// `port` goes, for a request addressed to `request_port`.
    ///
    /// Errors: [`Error::ClusterNotFound`] when the host is not a known service, the port is
    /// not one of its ports, or the subset is one no DestinationRule defines (Istio: 503 NC).
    pub fn target(
        &self,
        host: &Arc<str>,
        subset: Option<&Arc<str>>,
        port: Option<u16>,
        request_port: u16,
    ) -> Result<Target, Error> {
        self.target_and_fixed(host, subset, port, request_port)
            .map(|(target, _)| target)
    }

    /// [`target`](Self::target) through `cache`, a destination's of this snapshot's routes:
    /// the first target that holds for every request port (the destination names its port,
    /// the service has one, or a passthrough has its port) is remembered there, and later
    /// calls answer with it without a lookup. Errors are not remembered.
    pub(crate) fn target_cached(
        &self,
        cache: Option<&TargetCache>,
        host: &Arc<str>,
        subset: Option<&Arc<str>>,
        port: Option<u16>,
        request_port: u16,
    ) -> Result<Target, Error> {
        if let Some(target) = cache.and_then(|c| c.0.get()) {
            return Ok(target.clone());
        }
        let (target, fixed) = self.target_and_fixed(host, subset, port, request_port)?;
        if fixed && let Some(cache) = cache {
            // Another request may have set it meanwhile: the same target.
            let _ = cache.0.set(target.clone());
        }
        Ok(target)
    }

    /// [`target`](Self::target), and whether it is the same for every `request_port`.
    fn target_and_fixed(
        &self,
        host: &Arc<str>,
        subset: Option<&Arc<str>>,
        port: Option<u16>,
        request_port: u16,
    ) -> Result<(Target, bool), Error> {
        let not_found = || Error::ClusterNotFound {
            host: host.clone(),
            subset: subset.cloned(),
        };
        let Some(info) = self.services.lookup(host) else {
            return Err(not_found());
        };
        if info.reach == Reach::Passthrough {
            let target = Target::Passthrough {
                host: host.clone(),
                port: port.unwrap_or(request_port),
            };
            return Ok((target, port.is_some()));
        }
        let fixed = port.is_some() || info.ports.len() == 1;
        let port = info.port(port, request_port).ok_or_else(not_found)?;
        let key = ClusterKey {
            host: info.host.clone(),
            subset: subset.cloned(),
            port,
        };
        self.clusters
            .get(&key)
            .map(|c| (Target::Cluster(c.clone()), fixed))
            .ok_or_else(not_found)
    }
}

/// Compiles the route tables of `vss` (each with the hosts to index it under; `None` = all
/// of its hosts, expanded) into `vhosts`, the VirtualServices of a host in config order.
fn compile_vhosts<'a>(
    vss: impl Iterator<Item = (&'a Resource, Option<Vec<String>>)>,
    vhosts: &mut HostIndex<VirtualHost>,
    delegate: &dyn Fn(&str, &str) -> Option<VsRef<'a>>,
    cache: &mut RegexCache,
    domain: &ClusterDomain,
    warnings: &mut Vec<ValidationError>,
) {
    let mut by_host: HostIndex<Vec<VsRef<'_>>> = HostIndex::new();
    let mut host_order: Vec<String> = Vec::new();
    for (res, hosts) in vss {
        let Spec::VirtualService(vs) = &res.spec else {
            continue;
        };
        let vs_ref = VsRef {
            resource: res,
            spec: vs,
        };
        let hosts = hosts.unwrap_or_else(|| {
            vs.hosts
                .iter()
                .map(|h| expand_host(h, &res.metadata.namespace, domain).to_ascii_lowercase())
                .collect()
        });
        for host in hosts {
            let list = by_host.get_or_insert_with(&host, Vec::new);
            if list.is_empty() {
                host_order.push(host.clone());
            }
            list.push(vs_ref);
        }
    }
    for host in &host_order {
        let Some(vss) = by_host.get_pattern(host) else {
            continue;
        };
        let (table, route_warnings) = RouteTable::compile(vss, delegate, cache, domain);
        for w in route_warnings {
            warnings.push(route_warning(&w));
        }
        let vh = vhosts.get_or_insert_with(host, || VirtualHost {
            host: Arc::from(host.as_str()),
            routes: None,
        });
        vh.routes = Some(table);
    }
}

/// Whether the VirtualService has routes for `gateway`: its gateways (empty = `mesh`), or the
/// gateways of one of its match blocks, include it.
fn applies_to_gateway(vs: &VirtualService, namespace: &str, gateway: &str) -> bool {
    let named = |list: &[String]| {
        if list.is_empty() {
            return gateway == MESH_GATEWAY;
        }
        list.iter()
            .any(|g| resolve_gateway_name(g, namespace) == gateway)
    };
    named(&vs.gateways)
        || vs.http.iter().any(|r| {
            r.matches
                .iter()
                .any(|m| !m.gateways.is_empty() && named(&m.gateways))
        })
}

/// The DestinationRules that apply to the workload, with Istio's namespace preference applied
/// per host: for each host, only the visible rules of the best-ranked namespace (the
/// workload's, then the service's, then the root namespace, then any other) are kept, in the
/// loader's order.
fn preferred_destination_rules<'a>(
    resources: &'a [Resource],
    settings: &MeshSettings,
) -> Vec<&'a Resource> {
    let caller_ns = settings.source.namespace.as_str();
    let domain = &settings.cluster_domain;
    let mut visible: Vec<(&Resource, String, u8)> = Vec::new();
    for res in resources {
        let Spec::DestinationRule(dr) = &res.spec else {
            continue;
        };
        let ns = res.metadata.namespace.as_str();
        if !exported_to(&dr.export_to, ns, caller_ns) {
            continue;
        }
        if let Some(sel) = &dr.workload_selector {
            let selects = ns == caller_ns
                && sel
                    .match_labels
                    .iter()
                    .all(|(k, v)| settings.source.labels.get(k) == Some(v));
            if !selects {
                continue;
            }
        }
        let host = expand_host(&dr.host, ns, domain).to_ascii_lowercase();
        let rank = if ns == caller_ns {
            0
        } else if service_namespace(&host, domain) == Some(ns) {
            1
        } else if ns == settings.root_namespace {
            2
        } else {
            3
        };
        visible.push((res, host, rank));
    }
    let mut best: HashMap<&str, u8> = HashMap::new();
    for (_, host, rank) in &visible {
        let slot = best.entry(host.as_str()).or_insert(*rank);
        *slot = (*slot).min(*rank);
    }
    visible
        .iter()
        .filter(|(_, host, rank)| best.get(host.as_str()) == Some(rank))
        .map(|(res, _, _)| *res)
        .collect()
}

/// A route-table problem as a validation warning on its VirtualService.
fn route_warning(w: &RouteWarning) -> ValidationError {
    let path = match w.route.split_once(' ') {
        Some((first, _)) => format!("spec.{first}"),
        None => format!("spec.{}", w.route),
    };
    ValidationError {
        severity: Severity::Warning,
        resource: Some(ResourceRef {
            kind: w.source.kind,
            namespace: w.source.namespace.clone(),
            name: w.source.name.clone(),
        }),
        path,
        message: if w.route.contains(' ') {
            format!("{}: {}", w.route, w.kind)
        } else {
            w.kind.to_string()
        },
        rule: None,
        source: w.source.source.clone(),
    }
}

/// The protocol to speak to a port declared with `protocol`: HTTP/2 (prior knowledge) for
/// `HTTP2` and `GRPC`, HTTP/1.1 otherwise (`GRPC-WEB` works over HTTP/1.1).
fn upstream_protocol(protocol: Option<Protocol>) -> UpstreamProtocol {
    match protocol {
        Some(Protocol::Http2 | Protocol::Grpc) => UpstreamProtocol::Http2,
        _ => UpstreamProtocol::Http1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Loader;

    const SERVICE: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}, {number: 9090, name: grpc, protocol: GRPC}]
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external, namespace: default}
spec:
  hosts: ["*.example.com"]
  resolution: NONE
  ports: [{number: 80, name: http, protocol: HTTP}]
"#;

    fn settings(ns: &str, labels: &[(&str, &str)]) -> Arc<MeshSettings> {
        let mut s = MeshSettings::default();
        s.source.namespace = ns.to_string();
        s.source.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Arc::new(s)
    }

    fn compile_with(yaml: &str, settings: &Arc<MeshSettings>, state: &StateRegistry) -> Snapshot {
        let set = Loader::new().load_str(yaml);
        assert!(!set.has_errors(), "{:?}", set.problems);
        let compiled = Snapshot::compile(&set, settings, &[], &EndpointRegistry::new(), state, 1);
        assert!(
            compiled.warnings.iter().all(|w| !w.is_error()),
            "{:?}",
            compiled.warnings
        );
        compiled.snapshot
    }

    fn compile(yaml: &str, ns: &str) -> Snapshot {
        compile_with(yaml, &settings(ns, &[]), &StateRegistry::new())
    }

    fn host(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    const REVIEWS: &str = "reviews.bookinfo.svc.cluster.local";

    fn subsets_of(snap: &Snapshot) -> Vec<String> {
        let mut names: Vec<String> = snap
            .destination_rules()
            .lookup(REVIEWS)
            .map(|dr| dr.rule().subsets.iter().map(|s| s.name.clone()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn export_to_semantics() {
        assert!(exported_to(&[], "a", "b"));
        assert!(exported_to(&["*".into()], "a", "b"));
        assert!(exported_to(&[".".into()], "a", "a"));
        assert!(!exported_to(&[".".into()], "a", "b"));
        assert!(exported_to(&["b".into()], "a", "b"));
        assert!(!exported_to(&["~".into()], "a", "a"));
    }

    #[test]
    fn targets_resolve_ports_subsets_and_passthrough() {
        let yaml = format!(
            "{SERVICE}---\n{}",
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
"#
        );
        let snap = compile(&yaml, "bookinfo");
        let reviews = host(REVIEWS);
        // Port given by the destination; else the request's when the service has it.
        let Ok(Target::Cluster(c)) = snap.target(&reviews, None, Some(9090), 80) else {
            panic!("no cluster for 9090");
        };
        assert_eq!(c.key().port, 9090);
        assert_eq!(
            c.protocol_for(http::Version::HTTP_11),
            UpstreamProtocol::Http2
        );
        let Ok(Target::Cluster(c)) = snap.target(&reviews, None, None, 9080) else {
            panic!("no cluster for the request port");
        };
        assert_eq!((c.key().port, c.endpoints().load().len()), (9080, 2));
        // The subset's endpoints only.
        let v1 = host("v1");
        let Ok(Target::Cluster(c)) = snap.target(&reviews, Some(&v1), Some(9080), 80) else {
            panic!("no cluster for subset v1");
        };
        let eps = c.endpoints().load();
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].addr.to_string(), "10.0.0.1:9080");
        // A subset no DestinationRule defines, an unknown port, an unknown host: NC.
        let v9 = host("v9");
        for result in [
            snap.target(&reviews, Some(&v9), None, 9080),
            snap.target(&reviews, None, Some(1234), 9080),
            snap.target(&host("nope.bookinfo.svc.cluster.local"), None, None, 80),
        ] {
            assert!(
                matches!(result, Err(Error::ClusterNotFound { .. })),
                "{result:?}"
            );
        }
        // resolution NONE / wildcard hosts pass through to the requested host.
        let Ok(Target::Passthrough { host: h, port }) =
            snap.target(&host("api.example.com"), None, None, 8080)
        else {
            panic!("no passthrough");
        };
        assert_eq!((&*h, port), ("api.example.com", 8080));
    }

    #[test]
    fn cached_targets_are_remembered_only_when_the_request_port_cannot_change_them() {
        let snap = compile(SERVICE, "bookinfo");
        let reviews = host(REVIEWS);
        let port_of = |t: Result<Target, Error>| match t {
            Ok(Target::Cluster(c)) => c.key().port,
            Ok(Target::Passthrough { port, .. }) => port,
            Err(e) => panic!("{e:?}"),
        };
        // Two ports and none named: each request's port decides, nothing is remembered.
        let cache = TargetCache::default();
        for request_port in [9080, 9090, 9080] {
            let t = snap.target_cached(Some(&cache), &reviews, None, None, request_port);
            assert_eq!(port_of(t), request_port);
        }
        assert!(cache.0.get().is_none());
        // A named port: remembered, the same cluster as `target`'s.
        let cache = TargetCache::default();
        for request_port in [80, 9080] {
            let t = snap.target_cached(Some(&cache), &reviews, None, Some(9090), request_port);
            assert_eq!(port_of(t), 9090);
        }
        let (Some(Target::Cluster(cached)), Ok(Target::Cluster(fresh))) =
            (cache.0.get(), snap.target(&reviews, None, Some(9090), 80))
        else {
            panic!("not remembered");
        };
        assert!(Arc::ptr_eq(cached, &fresh));
        // Errors are not remembered.
        let cache = TargetCache::default();
        let v9 = host("v9");
        let t = snap.target_cached(Some(&cache), &reviews, Some(&v9), Some(9080), 80);
        assert!(matches!(t, Err(Error::ClusterNotFound { .. })), "{t:?}");
        assert!(cache.0.get().is_none());
        // A passthrough without a port follows the request's port.
        let cache = TargetCache::default();
        let api = host("api.example.com");
        for request_port in [8080, 80] {
            let t = snap.target_cached(Some(&cache), &api, None, None, request_port);
            assert_eq!(port_of(t), request_port);
        }
        assert!(cache.0.get().is_none());
    }

    #[test]
    fn virtual_services_follow_export_to_and_gateways() {
        let vs = |name: &str, ns: &str, extra: &str| {
            format!(
                "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [reviews.bookinfo.svc.cluster.local]\n{extra}  http:\n  - route:\n    - destination: {{host: reviews.bookinfo.svc.cluster.local}}\n"
            )
        };
        let routes = |yaml: &str, caller: &str| {
            compile(yaml, caller)
                .resolve(REVIEWS)
                .and_then(|r| r.value.routes().map(RouteTable::len))
        };
        let private = format!("{SERVICE}{}", vs("r", "bookinfo", "  exportTo: [\".\"]\n"));
        assert_eq!(routes(&private, "bookinfo"), Some(1));
        assert_eq!(routes(&private, "default"), None);
        let gateway_only = format!("{SERVICE}{}", vs("r", "bookinfo", "  gateways: [edge]\n"));
        assert_eq!(routes(&gateway_only, "bookinfo"), None);
        let both = format!(
            "{SERVICE}{}",
            vs("r", "bookinfo", "  gateways: [edge, mesh]\n")
        );
        assert_eq!(routes(&both, "bookinfo"), Some(1));
    }

    #[test]
    fn destination_rules_prefer_the_callers_namespace_then_the_services() {
        let dr = |ns: &str, subset: &str, extra: &str| {
            format!(
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: r-{subset}, namespace: {ns}}}\nspec:\n  host: reviews.bookinfo.svc.cluster.local\n{extra}  subsets: [{{name: {subset}, labels: {{version: v1}}}}]\n"
            )
        };
        let yaml = format!(
            "{SERVICE}{}{}{}",
            dr("istio-system", "root", ""),
            dr("bookinfo", "service", ""),
            dr("frontend", "caller", "")
        );
        assert_eq!(subsets_of(&compile(&yaml, "frontend")), ["caller"]);
        assert_eq!(subsets_of(&compile(&yaml, "other")), ["service"]);
        let root_only = format!("{SERVICE}{}", dr("istio-system", "root", ""));
        assert_eq!(subsets_of(&compile(&root_only, "other")), ["root"]);

        // A workloadSelector applies only to selected workloads of its own namespace.
        let selected = format!(
            "{SERVICE}{}{}",
            dr("bookinfo", "service", ""),
            dr(
                "frontend",
                "mine",
                "  workloadSelector: {matchLabels: {app: web}}\n  exportTo: [\".\"]\n"
            )
        );
        let web = settings("frontend", &[("app", "web")]);
        let snap = compile_with(&selected, &web, &StateRegistry::new());
        assert_eq!(subsets_of(&snap), ["mine"]);
        assert_eq!(subsets_of(&compile(&selected, "frontend")), ["service"]);
    }

    #[test]
    fn gateways_are_served_by_selector_with_their_bound_virtual_services() {
        let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["bookinfo/*.example.com"]
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*.example.com"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: bookinfo}
spec:
  hosts: [shop.example.com]
  gateways: [istio-system/edge]
  http:
  - route:
    - destination: {host: reviews}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: outsider, namespace: default}
spec:
  hosts: [other.example.com]
  gateways: [istio-system/edge]
  http:
  - route:
    - destination: {host: reviews.bookinfo.svc.cluster.local}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: bookinfo}
spec:
  hosts: [secure.example.com]
  gateways: [istio-system/edge]
  tls:
  - match: [{sniHosts: [secure.example.com]}]
    route:
    - destination: {host: reviews}
"#;
        let full = format!("{SERVICE}---\n{yaml}");
        let ingress = settings("istio-system", &[("istio", "ingressgateway")]);
        let snap = compile_with(&full, &ingress, &StateRegistry::new());
        let names: Vec<&str> = snap.served_gateways().iter().map(|g| &*g.name).collect();
        assert_eq!(names, ["istio-system/edge"]);
        let routes = |host: &str| {
            snap.resolve_for_gateway("istio-system/edge", host)
                .and_then(|r| r.value.routes().map(RouteTable::len))
        };
        assert_eq!(routes("shop.example.com"), Some(1));
        // `bookinfo/*.example.com` admits only bookinfo's VirtualServices.
        assert_eq!(routes("other.example.com"), None);
        // Gateway hosts are not mesh hosts, nor the other way round.
        // (`*.example.com` is a mesh service here, without routes.)
        assert!(
            snap.resolve("shop.example.com")
                .and_then(|r| r.value.routes())
                .is_none()
        );
        assert!(
            snap.resolve_for_gateway("istio-system/edge", REVIEWS)
                .is_none()
        );
        assert!(
            snap.resolve_for_gateway("istio-system/other", "shop.example.com")
                .is_none()
        );
        let tls: Vec<&str> = snap
            .gateway_tls_routes()
            .iter()
            .map(|t| t.provenance.name.as_str())
            .collect();
        assert_eq!(tls, ["secure"]);
        // A sidecar without the labels serves no gateway.
        let sidecar = compile(&full, "bookinfo");
        assert!(sidecar.served_gateways().is_empty());
        assert!(sidecar.gateway_tls_routes().is_empty());
    }

    #[test]
    fn cluster_state_survives_a_recompile_of_the_same_key() {
        let state = StateRegistry::new();
        let s = settings("bookinfo", &[]);
        let key = ClusterKey::new(REVIEWS, None, 9080);
        let first = compile_with(SERVICE, &s, &state);
        let a = first.cluster(&key).map(|c| c.state().clone());
        let second = compile_with(SERVICE, &s, &state);
        let b = second.cluster(&key).map(|c| c.state().clone());
        assert!(matches!((a, b), (Some(a), Some(b)) if Arc::ptr_eq(&a, &b)));
        assert!(first.cluster_keys().contains(&key));
    }
}
