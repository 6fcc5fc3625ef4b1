//! `networking.istio.io` DestinationRule: the policy applied to traffic for a service after
//! routing (load balancing, connection pool sizes, outlier detection, upstream TLS), per
//! destination host, subset and port.
//!
//! Merge semantics (applied by the routing layers, not here): a matching `portLevelSettings`
//! entry replaces the destination-level loadBalancer/connectionPool/outlierDetection/tls
//! entirely; a subset's `trafficPolicy` overrides the parent per top-level section.
//!
//! The schema's oneof groups are Rust enums ([`LbPolicy`], [`HashKey`], [`HashAlgorithm`]);
//! setting two members of one group is a decoding error, as in Istio's protobuf parser.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::common::{MatchLabelsSelector, PortSelector};
use crate::config::decode::{Cx, Decode, Fields};
use crate::path::FieldPath;
use crate::yaml::Node;

/// The `spec` of a DestinationRule.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DestinationRule {
    /// `host` (required): the service the rule applies to, a short name, an FQDN or a
    /// wildcard (`*.example.com`). Short names are expanded with the rule's namespace.
    pub host: String,
    /// `trafficPolicy`: the destination-level policy; absent = Istio's defaults.
    pub traffic_policy: Option<TrafficPolicy>,
    /// `subsets`: named versions of the service (endpoint label filters).
    pub subsets: Vec<Subset>,
    /// `exportTo`: namespaces the rule is visible to; empty = all namespaces.
    pub export_to: Vec<String>,
    /// `workloadSelector`: the client workloads (in the rule's namespace) it applies to;
    /// absent = every workload that sees the rule.
    pub workload_selector: Option<MatchLabelsSelector>,
}

/// `trafficPolicy` (TrafficPolicy): top level, per subset, or (without `portLevelSettings`,
/// `tunnel`, `proxyProtocol`, `retryBudget`) per port.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrafficPolicy {
    /// `loadBalancer`; absent = `LEAST_REQUEST`.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// `connectionPool`; absent = Envoy's (effectively unlimited) defaults.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// `outlierDetection`; absent = no passive health checking.
    pub outlier_detection: Option<OutlierDetection>,
    /// `tls`: upstream TLS origination; absent = auto mTLS (`ISTIO_MUTUAL` when the server
    /// has a sidecar), else plaintext.
    pub tls: Option<ClientTlsSettings>,
    /// `portLevelSettings` (at most 4096): policies for individual destination ports.
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// `tunnel`: tunnel TCP over CONNECT/POST to `targetHost:targetPort`.
    pub tunnel: Option<TunnelSettings>,
    /// `proxyProtocol`: send a PROXY protocol header upstream.
    pub proxy_protocol: Option<ProxyProtocol>,
    /// `retryBudget`: limit concurrent retries relative to active requests.
    pub retry_budget: Option<RetryBudget>,
}

/// A `portLevelSettings` entry (TrafficPolicy.PortTrafficPolicy).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PortTrafficPolicy {
    /// `port` (required): the destination port this entry applies to.
    pub port: Option<PortSelector>,
    /// `loadBalancer`.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// `connectionPool`.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// `outlierDetection`.
    pub outlier_detection: Option<OutlierDetection>,
    /// `tls`.
    pub tls: Option<ClientTlsSettings>,
}

/// A `subsets` entry (Subset).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Subset {
    /// `name` (required): a DNS label, unique within the rule; referenced by routes.
    pub name: String,
    /// `labels`: endpoints must carry all of them; empty = every endpoint.
    pub labels: BTreeMap<String, String>,
    /// `trafficPolicy`: overrides the rule's policy per top-level section.
    pub traffic_policy: Option<TrafficPolicy>,
}

// ---------------------------------------------------------------------------------------------
// loadBalancer

/// `loadBalancer` (LoadBalancerSettings).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadBalancerSettings {
    /// The `lb_policy` oneof: `simple`, `consistentHash` or `backendUtilization`; absent =
    /// `LEAST_REQUEST`.
    pub lb_policy: Option<LbPolicy>,
    /// `localityLbSetting`: locality-weighted load balancing / failover; absent = the mesh
    /// setting.
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    /// `zoneAwareLbSetting`: zone-aware routing (exclusive with `localityLbSetting`).
    pub zone_aware_lb_setting: Option<ZoneAwareLoadBalancerSetting>,
    /// `warmupDurationSecs` (deprecated, use `warmup`): slow-start window for new endpoints.
    pub warmup_duration_secs: Option<Duration>,
    /// `warmup`: slow start for new endpoints (ROUND_ROBIN and LEAST_REQUEST only).
    pub warmup: Option<WarmupConfiguration>,
}

impl LoadBalancerSettings {
    /// The `simple` algorithm, when that is the policy.
    pub fn simple(&self) -> Option<SimpleLb> {
        match &self.lb_policy {
            Some(LbPolicy::Simple(s)) => Some(*s),
            _ => None,
        }
    }

    /// The `consistentHash` settings, when that is the policy.
    pub fn consistent_hash(&self) -> Option<&ConsistentHashLb> {
        match &self.lb_policy {
            Some(LbPolicy::ConsistentHash(c)) => Some(c),
            _ => None,
        }
    }

    /// The `backendUtilization` settings, when that is the policy.
    pub fn backend_utilization(&self) -> Option<&BackendUtilization> {
        match &self.lb_policy {
            Some(LbPolicy::BackendUtilization(b)) => Some(b),
            _ => None,
        }
    }
}

/// The `lb_policy` oneof of `loadBalancer`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LbPolicy {
    /// `simple`: an algorithm that needs no tuning.
    Simple(SimpleLb),
    /// `consistentHash`: soft session affinity by hashing a request property.
    ConsistentHash(ConsistentHashLb),
    /// `backendUtilization`: weights from backend-reported ORCA utilization.
    BackendUtilization(BackendUtilization),
}

crate::istio_enum! {
    /// `loadBalancer.simple`.
    pub enum SimpleLb {
        /// No algorithm chosen: Istio picks its default (`LEAST_REQUEST`).
        Unspecified => "UNSPECIFIED",
        /// Deprecated alias of `LEAST_REQUEST`.
        LeastConn => "LEAST_CONN",
        /// A random healthy host.
        Random => "RANDOM",
        /// Forward to the original destination address (no load balancing).
        Passthrough => "PASSTHROUGH",
        /// Round robin over healthy hosts.
        RoundRobin => "ROUND_ROBIN",
        /// Power of two choices, the host with fewer active requests.
        LeastRequest => "LEAST_REQUEST",
    }
}

/// `consistentHash` (LoadBalancerSettings.ConsistentHashLB).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ConsistentHashLb {
    /// The `hash_key` oneof; a request lacking the key gets no affinity.
    pub hash_key: Option<HashKey>,
    /// The `hash_algorithm` oneof; absent = ring hash.
    pub hash_algorithm: Option<HashAlgorithm>,
    /// `minimumRingSize` (deprecated, use `ringHash.minimumRingSize`); 0 = unset.
    pub minimum_ring_size: u64,
}

/// The `hash_key` oneof of `consistentHash`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashKey {
    /// `httpHeaderName`: hash a request header.
    HttpHeaderName(String),
    /// `httpCookie`: hash a cookie (generated by the proxy when absent and a ttl is set).
    HttpCookie(HttpCookie),
    /// `useSourceIp`: hash the source IP address.
    UseSourceIp(bool),
    /// `httpQueryParameterName`: hash a query parameter.
    HttpQueryParameterName(String),
}

/// The `hash_algorithm` oneof of `consistentHash`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// `ringHash`: Ketama-style ring.
    RingHash(RingHash),
    /// `maglev`: Maglev lookup table.
    Maglev(Maglev),
}

/// `consistentHash.httpCookie` (ConsistentHashLB.HTTPCookie).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct HttpCookie {
    /// `name` (required): the cookie name.
    pub name: String,
    /// `path`: the cookie path set when the proxy generates it.
    pub path: String,
    /// `ttl`: lifetime of a generated cookie; `0s` = session cookie; absent = the proxy
    /// does not generate the cookie.
    pub ttl: Option<Duration>,
    /// `attributes`: extra attributes of a generated cookie.
    pub attributes: Vec<HttpCookieAttribute>,
}

/// An `httpCookie.attributes` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct HttpCookieAttribute {
    /// `name` (required).
    pub name: String,
    /// `value` (optional).
    pub value: String,
}

/// `consistentHash.ringHash` (ConsistentHashLB.RingHash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RingHash {
    /// `minimumRingSize`: minimum virtual nodes on the ring; 0 = default 1024.
    pub minimum_ring_size: u64,
}

/// `consistentHash.maglev` (ConsistentHashLB.MagLev).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Maglev {
    /// `tableSize`: a prime below 5000011 (Envoy's default is 65537); 0 = unset (rejected).
    pub table_size: u64,
}

/// `loadBalancer.backendUtilization`: utilization-based weights from ORCA reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct BackendUtilization {
    /// `errorUtilizationPenaltyPercent`: extra utilization charged for errors, in percent of
    /// the utilization.
    pub error_utilization_penalty_percent: Option<u32>,
    /// `metricNamesForComputingUtilization`: custom ORCA metric names.
    pub metric_names_for_computing_utilization: Vec<String>,
    /// `weightExpirationPeriod`: after this long without reports the weight is discarded.
    pub weight_expiration_period: Option<Duration>,
    /// `weightStabilizationPeriod`: reports are trusted only after this long.
    pub weight_stabilization_period: Option<Duration>,
    /// `weightUpdatePeriod`: how often weights are recomputed.
    pub weight_update_period: Option<Duration>,
}

/// `localityLbSetting` (LocalityLoadBalancerSetting).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LocalityLoadBalancerSetting {
    /// `enabled`: absent = inherit the mesh setting.
    pub enabled: Option<bool>,
    /// `distribute`: traffic split across localities per source locality (exclusive with
    /// `failover`).
    pub distribute: Vec<LocalityDistribute>,
    /// `failover`: region to fail over to when a region is unhealthy.
    pub failover: Vec<LocalityFailover>,
    /// `failoverPriority`: ordered labels to sort endpoints by for priority failover.
    pub failover_priority: Vec<String>,
}

/// A `localityLbSetting.distribute` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LocalityDistribute {
    /// `from`: the source locality `region/zone/subzone`, optionally ending in `*`.
    pub from: String,
    /// `to`: destination locality → weight (1..100, summing to 100).
    pub to: BTreeMap<String, u32>,
}

/// A `failover` entry of `localityLbSetting` / `zoneAwareLbSetting`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct LocalityFailover {
    /// `from`: the originating region.
    pub from: String,
    /// `to`: the region to fail over to.
    pub to: String,
}

/// `zoneAwareLbSetting`: Envoy zone-aware routing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ZoneAwareLoadBalancerSetting {
    /// `enabled`: absent = the default.
    pub enabled: Option<bool>,
    /// `failover`: region to fail over to.
    pub failover: Vec<LocalityFailover>,
    /// `failoverPriority`: ordered labels for priority-based failover.
    pub failover_priority: Vec<String>,
    /// `minClusterSize` (≥ 1): hosts needed in the local zone for zone-aware routing.
    pub min_cluster_size: Option<u32>,
}

/// `loadBalancer.warmup` (WarmupConfiguration).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WarmupConfiguration {
    /// `duration` (required): the slow-start window.
    pub duration: Option<Duration>,
    /// `minimumPercent`: starting traffic percentage (0..100); absent = 10.
    pub minimum_percent: Option<f64>,
    /// `aggression`: speed of the ramp-up (> 0); absent = 1.0 (linear).
    pub aggression: Option<f64>,
}

// ---------------------------------------------------------------------------------------------
// connectionPool

/// `connectionPool` (ConnectionPoolSettings), per upstream host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ConnectionPoolSettings {
    /// `tcp`: settings common to HTTP and TCP.
    pub tcp: Option<TcpSettings>,
    /// `http`: HTTP settings.
    pub http: Option<HttpSettings>,
}

/// `connectionPool.tcp` (ConnectionPoolSettings.TCPSettings).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TcpSettings {
    /// `maxConnections`: max HTTP/1 and TCP connections to a host; absent = 2^32-1.
    pub max_connections: Option<i32>,
    /// `connectTimeout`: TCP connect timeout; absent = 10s.
    pub connect_timeout: Option<Duration>,
    /// `tcpKeepalive`: enable SO_KEEPALIVE with these settings.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// `maxConnectionDuration`: max lifetime of a connection; absent = unlimited.
    pub max_connection_duration: Option<Duration>,
    /// `idleTimeout`: idle timeout of TCP connections; absent = 1h; `0s` disables it.
    pub idle_timeout: Option<Duration>,
}

/// `connectionPool.tcp.tcpKeepalive` (TCPSettings.TcpKeepalive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TcpKeepalive {
    /// `probes`: unanswered probes before the connection is dead; absent = the OS default.
    pub probes: Option<u32>,
    /// `time`: idle time before probes start; absent = the OS default.
    pub time: Option<Duration>,
    /// `interval`: time between probes; absent = the OS default.
    pub interval: Option<Duration>,
}

/// `connectionPool.http` (ConnectionPoolSettings.HTTPSettings).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct HttpSettings {
    /// `http1MaxPendingRequests`: requests queued while waiting for a connection;
    /// absent = 2^32-1.
    pub http1_max_pending_requests: Option<i32>,
    /// `http2MaxRequests`: max active requests to the destination; absent = 2^32-1.
    pub http2_max_requests: Option<i32>,
    /// `maxRequestsPerConnection`: 0 or absent = unlimited; 1 = no keep-alive.
    pub max_requests_per_connection: Option<i32>,
    /// `maxRetries`: max outstanding retries across the cluster; absent = 2^32-1.
    pub max_retries: Option<i32>,
    /// `idleTimeout`: idle timeout of upstream connections; absent = 1h.
    pub idle_timeout: Option<Duration>,
    /// `h2UpgradePolicy`: upgrade HTTP/1.1 to HTTP/2; absent = `DEFAULT` (the mesh setting).
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// `useClientProtocol`: keep the client's HTTP version upstream; default false.
    pub use_client_protocol: bool,
    /// `maxConcurrentStreams`: max concurrent streams per HTTP/2 connection; absent =
    /// 2^31-1.
    pub max_concurrent_streams: Option<i32>,
    /// `http2KeepAlive`: HTTP/2 PING keepalive.
    pub http2_keep_alive: Option<Http2KeepAlive>,
}

crate::istio_enum! {
    /// `connectionPool.http.h2UpgradePolicy`.
    pub enum H2UpgradePolicy {
        /// Use the mesh-wide setting.
        Default => "DEFAULT",
        /// Never upgrade.
        DoNotUpgrade => "DO_NOT_UPGRADE",
        /// Upgrade HTTP/1.1 connections to HTTP/2.
        Upgrade => "UPGRADE",
    }
}

/// `connectionPool.http.http2KeepAlive` (HTTPSettings.Http2KeepAlive): both required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Http2KeepAlive {
    /// `interval`: send a PING at this interval.
    pub interval: Option<Duration>,
    /// `timeout`: close the connection when a PING gets no answer within this time.
    pub timeout: Option<Duration>,
}

// ---------------------------------------------------------------------------------------------
// outlierDetection

/// `outlierDetection` (OutlierDetection): passive health checking, per host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct OutlierDetection {
    /// `consecutiveErrors` (deprecated, use `consecutive5xxErrors` /
    /// `consecutiveGatewayErrors`).
    pub consecutive_errors: Option<i32>,
    /// `consecutive5xxErrors`: 5xx (or TCP connect failures) before ejection; absent = 5;
    /// 0 disables.
    pub consecutive_5xx_errors: Option<u32>,
    /// `consecutiveGatewayErrors`: 502/503/504 before ejection; absent = disabled.
    pub consecutive_gateway_errors: Option<u32>,
    /// `splitExternalLocalOriginErrors`: count locally originated failures separately;
    /// default false.
    pub split_external_local_origin_errors: bool,
    /// `consecutiveLocalOriginFailures`: local-origin failures before ejection (only with
    /// `splitExternalLocalOriginErrors`); absent = 5.
    pub consecutive_local_origin_failures: Option<u32>,
    /// `interval`: ejection sweep period; absent = 10s.
    pub interval: Option<Duration>,
    /// `baseEjectionTime`: minimum ejection time (times the number of ejections);
    /// absent = 30s.
    pub base_ejection_time: Option<Duration>,
    /// `maxEjectionPercent`: max % of hosts ejected (0..100); absent = 10.
    pub max_ejection_percent: Option<i32>,
    /// `minHealthPercent`: outlier detection stops below this % of healthy hosts (0..100);
    /// absent = 0.
    pub min_health_percent: Option<i32>,
    /// `outlierDetectionHttpErrorCodes`: statuses (100..599) that count as errors; empty =
    /// the 5xx / gateway-error defaults.
    pub outlier_detection_http_error_codes: Vec<u32>,
}

// ---------------------------------------------------------------------------------------------
// tls

/// `tls` (ClientTLSSettings): TLS origination to the upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ClientTlsSettings {
    /// `mode`; absent = `DISABLE`.
    pub mode: Option<ClientTlsMode>,
    /// `clientCertificate`: file path of the client certificate (MUTUAL).
    pub client_certificate: String,
    /// `privateKey`: file path of the client key (MUTUAL).
    pub private_key: String,
    /// `caCertificates`: file path of the CA bundle to verify the server.
    pub ca_certificates: String,
    /// `credentialName`: secret holding the client certs and CA (exclusive with the file
    /// fields).
    pub credential_name: String,
    /// `subjectAltNames`: SANs the server certificate must carry.
    pub subject_alt_names: Vec<String>,
    /// `sni`: SNI to send; absent = derived from the host (SIMPLE/MUTUAL).
    pub sni: String,
    /// `insecureSkipVerify`: skip CA and SAN verification; absent = false.
    pub insecure_skip_verify: Option<bool>,
    /// `caCrl`: file path of a certificate revocation list.
    pub ca_crl: String,
}

crate::istio_enum! {
    /// `tls.mode` (ClientTLSSettings.TLSmode).
    pub enum ClientTlsMode {
        /// Plaintext.
        Disable => "DISABLE",
        /// TLS to the upstream.
        Simple => "SIMPLE",
        /// mTLS with user-supplied certificates.
        Mutual => "MUTUAL",
        /// mTLS with the mesh's certificates.
        IstioMutual => "ISTIO_MUTUAL",
    }
}

// ---------------------------------------------------------------------------------------------
// tunnel, proxyProtocol, retryBudget

/// `tunnel` (TrafficPolicy.TunnelSettings).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct TunnelSettings {
    /// `protocol`: `CONNECT` or `POST`; empty = `CONNECT`.
    pub protocol: String,
    /// `targetHost` (required): FQDN or IP to tunnel to.
    pub target_host: String,
    /// `targetPort` (required): port to tunnel to (0 when unset).
    pub target_port: u32,
}

/// `proxyProtocol` (TrafficPolicy.ProxyProtocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ProxyProtocol {
    /// `version`; absent = `V1`.
    pub version: Option<ProxyProtocolVersion>,
}

crate::istio_enum! {
    /// `proxyProtocol.version`.
    pub enum ProxyProtocolVersion {
        /// The human-readable header.
        V1 => "V1",
        /// The binary header.
        V2 => "V2",
    }
}

/// `retryBudget` (TrafficPolicy.RetryBudget).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RetryBudget {
    /// `percent`: max concurrent retries as % (0..100) of active plus pending requests;
    /// absent = 20.
    pub percent: Option<f64>,
    /// `minRetryConcurrency`: retries always allowed; absent = 3.
    pub min_retry_concurrency: Option<u32>,
    /// `budgetInterval`: window over which requests are counted.
    pub budget_interval: Option<Duration>,
}

// ---------------------------------------------------------------------------------------------
// Decoders

impl Decode for DestinationRule {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let spec = DestinationRule {
            host: f.get("host", cx).unwrap_or_default(),
            traffic_policy: f.get("trafficPolicy", cx),
            subsets: f.list("subsets", cx),
            export_to: f.list("exportTo", cx),
            workload_selector: f.get("workloadSelector", cx),
        };
        f.finish(cx);
        Some(spec)
    }
}

impl Decode for TrafficPolicy {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let p = TrafficPolicy {
            load_balancer: f.get("loadBalancer", cx),
            connection_pool: f.get("connectionPool", cx),
            outlier_detection: f.get("outlierDetection", cx),
            tls: f.get("tls", cx),
            port_level_settings: f.list("portLevelSettings", cx),
            tunnel: f.get("tunnel", cx),
            proxy_protocol: f.get("proxyProtocol", cx),
            retry_budget: f.get("retryBudget", cx),
        };
        f.finish(cx);
        Some(p)
    }
}

impl Decode for PortTrafficPolicy {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let p = PortTrafficPolicy {
            port: f.get("port", cx),
            load_balancer: f.get("loadBalancer", cx),
            connection_pool: f.get("connectionPool", cx),
            outlier_detection: f.get("outlierDetection", cx),
            tls: f.get("tls", cx),
        };
        f.finish(cx);
        Some(p)
    }
}

impl Decode for Subset {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let s = Subset {
            name: f.get("name", cx).unwrap_or_default(),
            labels: f.map("labels", cx),
            traffic_policy: f.get("trafficPolicy", cx),
        };
        f.finish(cx);
        Some(s)
    }
}

/// Records an error when more than one member of a oneof group is set.
fn check_oneof(node: &Node, path: &FieldPath<'_>, cx: &mut Cx, set: &[(&str, bool)]) {
    let names: Vec<&str> = set.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
    if names.len() > 1 {
        let all: Vec<&str> = set.iter().map(|(n, _)| *n).collect();
        cx.error(
            path,
            node,
            format!(
                "only one of {} may be set (they are a oneof), found {}",
                all.join(", "),
                names.join(" and ")
            ),
        );
    }
}

impl Decode for LoadBalancerSettings {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let simple: Option<SimpleLb> = f.get("simple", cx);
        let consistent_hash: Option<ConsistentHashLb> = f.get("consistentHash", cx);
        let backend: Option<BackendUtilization> = f.get("backendUtilization", cx);
        let lb = LoadBalancerSettings {
            lb_policy: None,
            locality_lb_setting: f.get("localityLbSetting", cx),
            zone_aware_lb_setting: f.get("zoneAwareLbSetting", cx),
            warmup_duration_secs: f.get("warmupDurationSecs", cx),
            warmup: f.get("warmup", cx),
        };
        let present = [
            ("simple", simple.is_some()),
            ("consistentHash", consistent_hash.is_some()),
            ("backendUtilization", backend.is_some()),
        ];
        f.finish(cx);
        check_oneof(node, path, cx, &present);
        let lb_policy = simple
            .map(LbPolicy::Simple)
            .or(consistent_hash.map(LbPolicy::ConsistentHash))
            .or(backend.map(LbPolicy::BackendUtilization));
        Some(LoadBalancerSettings { lb_policy, ..lb })
    }
}

impl Decode for ConsistentHashLb {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let header: Option<String> = f.get("httpHeaderName", cx);
        let cookie: Option<HttpCookie> = f.get("httpCookie", cx);
        let source_ip: Option<bool> = f.get("useSourceIp", cx);
        let query: Option<String> = f.get("httpQueryParameterName", cx);
        let ring: Option<RingHash> = f.get("ringHash", cx);
        let maglev: Option<Maglev> = f.get("maglev", cx);
        let minimum_ring_size = f.get("minimumRingSize", cx).unwrap_or(0);
        let keys = [
            ("httpHeaderName", header.is_some()),
            ("httpCookie", cookie.is_some()),
            ("useSourceIp", source_ip.is_some()),
            ("httpQueryParameterName", query.is_some()),
        ];
        let algorithms = [("ringHash", ring.is_some()), ("maglev", maglev.is_some())];
        f.finish(cx);
        check_oneof(node, path, cx, &keys);
        check_oneof(node, path, cx, &algorithms);
        let hash_key = header
            .map(HashKey::HttpHeaderName)
            .or(cookie.map(HashKey::HttpCookie))
            .or(source_ip.map(HashKey::UseSourceIp))
            .or(query.map(HashKey::HttpQueryParameterName));
        let hash_algorithm = ring
            .map(HashAlgorithm::RingHash)
            .or(maglev.map(HashAlgorithm::Maglev));
        Some(ConsistentHashLb {
            hash_key,
            hash_algorithm,
            minimum_ring_size,
        })
    }
}

impl Decode for HttpCookie {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let c = HttpCookie {
            name: f.get("name", cx).unwrap_or_default(),
            path: f.get("path", cx).unwrap_or_default(),
            ttl: f.get("ttl", cx),
            attributes: f.list("attributes", cx),
        };
        f.finish(cx);
        Some(c)
    }
}

impl Decode for HttpCookieAttribute {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let a = HttpCookieAttribute {
            name: f.get("name", cx).unwrap_or_default(),
            value: f.get("value", cx).unwrap_or_default(),
        };
        f.finish(cx);
        Some(a)
    }
}

impl Decode for RingHash {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let r = RingHash {
            minimum_ring_size: f.get("minimumRingSize", cx).unwrap_or(0),
        };
        f.finish(cx);
        Some(r)
    }
}

impl Decode for Maglev {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let m = Maglev {
            table_size: f.get("tableSize", cx).unwrap_or(0),
        };
        f.finish(cx);
        Some(m)
    }
}

impl Decode for BackendUtilization {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let b = BackendUtilization {
            error_utilization_penalty_percent: f.get("errorUtilizationPenaltyPercent", cx),
            metric_names_for_computing_utilization: f
                .list("metricNamesForComputingUtilization", cx),
            weight_expiration_period: f.get("weightExpirationPeriod", cx),
            weight_stabilization_period: f.get("weightStabilizationPeriod", cx),
            weight_update_period: f.get("weightUpdatePeriod", cx),
        };
        f.finish(cx);
        Some(b)
    }
}

impl Decode for LocalityLoadBalancerSetting {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let l = LocalityLoadBalancerSetting {
            enabled: f.get("enabled", cx),
            distribute: f.list("distribute", cx),
            failover: f.list("failover", cx),
            failover_priority: f.list("failoverPriority", cx),
        };
        f.finish(cx);
        Some(l)
    }
}

impl Decode for LocalityDistribute {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let d = LocalityDistribute {
            from: f.get("from", cx).unwrap_or_default(),
            to: f.map("to", cx),
        };
        f.finish(cx);
        Some(d)
    }
}

impl Decode for LocalityFailover {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let d = LocalityFailover {
            from: f.get("from", cx).unwrap_or_default(),
            to: f.get("to", cx).unwrap_or_default(),
        };
        f.finish(cx);
        Some(d)
    }
}

impl Decode for ZoneAwareLoadBalancerSetting {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let z = ZoneAwareLoadBalancerSetting {
            enabled: f.get("enabled", cx),
            failover: f.list("failover", cx),
            failover_priority: f.list("failoverPriority", cx),
            min_cluster_size: f.get("minClusterSize", cx),
        };
        f.finish(cx);
        Some(z)
    }
}

impl Decode for WarmupConfiguration {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let w = WarmupConfiguration {
            duration: f.get("duration", cx),
            minimum_percent: f.get("minimumPercent", cx),
            aggression: f.get("aggression", cx),
        };
        f.finish(cx);
        Some(w)
    }
}

impl Decode for ConnectionPoolSettings {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let c = ConnectionPoolSettings {
            tcp: f.get("tcp", cx),
            http: f.get("http", cx),
        };
        f.finish(cx);
        Some(c)
    }
}

impl Decode for TcpSettings {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let t = TcpSettings {
            max_connections: f.get("maxConnections", cx),
            connect_timeout: f.get("connectTimeout", cx),
            tcp_keepalive: f.get("tcpKeepalive", cx),
            max_connection_duration: f.get("maxConnectionDuration", cx),
            idle_timeout: f.get("idleTimeout", cx),
        };
        f.finish(cx);
        Some(t)
    }
}

impl Decode for TcpKeepalive {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let k = TcpKeepalive {
            probes: f.get("probes", cx),
            time: f.get("time", cx),
            interval: f.get("interval", cx),
        };
        f.finish(cx);
        Some(k)
    }
}

impl Decode for HttpSettings {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let h = HttpSettings {
            http1_max_pending_requests: f.get("http1MaxPendingRequests", cx),
            http2_max_requests: f.get("http2MaxRequests", cx),
            max_requests_per_connection: f.get("maxRequestsPerConnection", cx),
            max_retries: f.get("maxRetries", cx),
            idle_timeout: f.get("idleTimeout", cx),
            h2_upgrade_policy: f.get("h2UpgradePolicy", cx),
            use_client_protocol: f.flag("useClientProtocol", cx),
            max_concurrent_streams: f.get("maxConcurrentStreams", cx),
            http2_keep_alive: f.get("http2KeepAlive", cx),
        };
        f.finish(cx);
        Some(h)
    }
}

impl Decode for Http2KeepAlive {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let k = Http2KeepAlive {
            interval: f.get("interval", cx),
            timeout: f.get("timeout", cx),
        };
        f.finish(cx);
        Some(k)
    }
}

impl Decode for OutlierDetection {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let o = OutlierDetection {
            consecutive_errors: f.get("consecutiveErrors", cx),
            consecutive_5xx_errors: f.get("consecutive5xxErrors", cx),
            consecutive_gateway_errors: f.get("consecutiveGatewayErrors", cx),
            split_external_local_origin_errors: f.flag("splitExternalLocalOriginErrors", cx),
            consecutive_local_origin_failures: f.get("consecutiveLocalOriginFailures", cx),
            interval: f.get("interval", cx),
            base_ejection_time: f.get("baseEjectionTime", cx),
            max_ejection_percent: f.get("maxEjectionPercent", cx),
            min_health_percent: f.get("minHealthPercent", cx),
            outlier_detection_http_error_codes: f.list("outlierDetectionHttpErrorCodes", cx),
        };
        f.finish(cx);
        Some(o)
    }
}

impl Decode for ClientTlsSettings {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let t = ClientTlsSettings {
            mode: f.get("mode", cx),
            client_certificate: f.get("clientCertificate", cx).unwrap_or_default(),
            private_key: f.get("privateKey", cx).unwrap_or_default(),
            ca_certificates: f.get("caCertificates", cx).unwrap_or_default(),
            credential_name: f.get("credentialName", cx).unwrap_or_default(),
            subject_alt_names: f.list("subjectAltNames", cx),
            sni: f.get("sni", cx).unwrap_or_default(),
            insecure_skip_verify: f.get("insecureSkipVerify", cx),
            ca_crl: f.get("caCrl", cx).unwrap_or_default(),
        };
        f.finish(cx);
        Some(t)
    }
}

impl Decode for TunnelSettings {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let t = TunnelSettings {
            protocol: f.get("protocol", cx).unwrap_or_default(),
            target_host: f.get("targetHost", cx).unwrap_or_default(),
            target_port: f.get("targetPort", cx).unwrap_or(0),
        };
        f.finish(cx);
        Some(t)
    }
}

impl Decode for ProxyProtocol {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let p = ProxyProtocol {
            version: f.get("version", cx),
        };
        f.finish(cx);
        Some(p)
    }
}

impl Decode for RetryBudget {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        // `percent` is a DoubleValue limited to 0..100 by the CRD.
        let percent = match f.node("percent") {
            Some(n) => {
                let p = path.field("percent");
                match f64::decode(n, &p, cx) {
                    Some(v) if (0.0..=100.0).contains(&v) => Some(v),
                    Some(v) => {
                        cx.error(&p, n, format!("percentage {v} is not in range 0..100"));
                        None
                    }
                    None => None,
                }
            }
            None => None,
        };
        let r = RetryBudget {
            percent,
            min_retry_concurrency: f.get("minRetryConcurrency", cx),
            budget_interval: f.get("budgetInterval", cx),
        };
        f.finish(cx);
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Loader, Spec};

    fn load(yaml: &str) -> (DestinationRule, Vec<String>) {
        let set = Loader::new().load_str(yaml);
        let problems = set.problems.iter().map(|p| p.to_string()).collect();
        let spec = match set.resources.into_iter().next().map(|r| r.spec) {
            Some(Spec::DestinationRule(dr)) => dr,
            other => panic!("expected a DestinationRule, got {other:?}"),
        };
        (spec, problems)
    }

    const FULL: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews.bookinfo.svc.cluster.local
  exportTo: ["."]
  workloadSelector:
    matchLabels: {app: productpage}
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie:
          name: user
          path: /
          ttl: 0s
          attributes:
          - {name: SameSite, value: Strict}
          - {name: Secure}
        maglev: {tableSize: 65537}
      localityLbSetting:
        enabled: true
        distribute:
        - from: us-west/zone1/*
          to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}
        failoverPriority: [topology.kubernetes.io/region]
      warmupDurationSecs: 10s
    connectionPool:
      tcp:
        maxConnections: 100
        connectTimeout: 30ms
        tcpKeepalive: {probes: 3, time: 7200s, interval: 75s}
        maxConnectionDuration: 1h
        idleTimeout: 0s
      http:
        http1MaxPendingRequests: 10
        http2MaxRequests: 1000
        maxRequestsPerConnection: 1
        maxRetries: 3
        idleTimeout: 30s
        h2UpgradePolicy: DO_NOT_UPGRADE
        useClientProtocol: true
        maxConcurrentStreams: 100
        http2KeepAlive: {interval: 15s, timeout: 5s}
    outlierDetection:
      consecutiveErrors: 7
      consecutive5xxErrors: 0
      consecutiveGatewayErrors: 4
      splitExternalLocalOriginErrors: true
      consecutiveLocalOriginFailures: 2
      interval: 5m
      baseEjectionTime: 15m
      maxEjectionPercent: 50
      minHealthPercent: 20
      outlierDetectionHttpErrorCodes: [500, 503]
    tls:
      mode: SIMPLE
      caCertificates: /etc/certs/ca.pem
      subjectAltNames: [reviews.example.com]
      sni: reviews.example.com
      insecureSkipVerify: false
      caCrl: /etc/certs/crl.pem
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer:
        simple: ROUND_ROBIN
        zoneAwareLbSetting:
          enabled: true
          failover: [{from: us-east, to: us-west}]
          failoverPriority: [foo]
          minClusterSize: 6
        warmup: {duration: 60s, minimumPercent: 5.0, aggression: 2}
      connectionPool: {tcp: {maxConnections: 1}}
      outlierDetection: {consecutive5xxErrors: 1}
      tls:
        mode: MUTUAL
        clientCertificate: /etc/certs/cert.pem
        privateKey: /etc/certs/key.pem
    retryBudget: {percent: 25.5, minRetryConcurrency: 5, budgetInterval: 10s}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      tunnel: {protocol: POST, targetHost: egress.example.com, targetPort: 8443}
      loadBalancer:
        backendUtilization:
          errorUtilizationPenaltyPercent: 50
          metricNamesForComputingUtilization: [cpu]
          weightExpirationPeriod: 3m
          weightStabilizationPeriod: 10s
          weightUpdatePeriod: 1s
  - name: v2
    labels: {version: v2}
    trafficPolicy:
      proxyProtocol: {version: V2}
      loadBalancer:
        consistentHash:
          useSourceIp: true
          ringHash: {minimumRingSize: 2048}
          minimumRingSize: 0
"#;

    #[test]
    fn full_resource_loads_with_every_field() {
        let (dr, problems) = load(FULL);
        assert!(problems.is_empty(), "{problems:#?}");
        // It is also valid (warnings only).
        crate::validate::testing::passes(FULL);
        assert_eq!(dr.host, "reviews.bookinfo.svc.cluster.local");
        assert_eq!(dr.export_to, ["."]);
        assert_eq!(
            dr.workload_selector.as_ref().map(|s| s.match_labels.len()),
            Some(1)
        );
        let tp = dr.traffic_policy.as_ref().expect("trafficPolicy");

        let lb = tp.load_balancer.as_ref().expect("loadBalancer");
        let ch = lb.consistent_hash().expect("consistentHash");
        let Some(HashKey::HttpCookie(cookie)) = &ch.hash_key else {
            panic!("cookie hash key expected: {ch:?}")
        };
        assert_eq!(cookie.name, "user");
        assert_eq!(cookie.path, "/");
        assert_eq!(cookie.ttl, Some(Duration::ZERO));
        assert_eq!(cookie.attributes.len(), 2);
        assert_eq!(cookie.attributes[0].value, "Strict");
        assert_eq!(cookie.attributes[1].value, "");
        assert_eq!(
            ch.hash_algorithm,
            Some(HashAlgorithm::Maglev(Maglev { table_size: 65537 }))
        );
        let loc = lb.locality_lb_setting.as_ref().expect("locality");
        assert_eq!(loc.enabled, Some(true));
        assert_eq!(loc.distribute[0].from, "us-west/zone1/*");
        assert_eq!(loc.distribute[0].to.get("us-west/zone2/*"), Some(&20));
        assert_eq!(loc.failover_priority, ["topology.kubernetes.io/region"]);
        assert_eq!(lb.warmup_duration_secs, Some(Duration::from_secs(10)));

        let cp = tp.connection_pool.as_ref().expect("connectionPool");
        let tcp = cp.tcp.as_ref().expect("tcp");
        assert_eq!(tcp.max_connections, Some(100));
        assert_eq!(tcp.connect_timeout, Some(Duration::from_millis(30)));
        assert_eq!(
            tcp.tcp_keepalive,
            Some(TcpKeepalive {
                probes: Some(3),
                time: Some(Duration::from_secs(7200)),
                interval: Some(Duration::from_secs(75)),
            })
        );
        assert_eq!(tcp.max_connection_duration, Some(Duration::from_secs(3600)));
        assert_eq!(tcp.idle_timeout, Some(Duration::ZERO));
        let http = cp.http.as_ref().expect("http");
        assert_eq!(http.http1_max_pending_requests, Some(10));
        assert_eq!(http.http2_max_requests, Some(1000));
        assert_eq!(http.max_requests_per_connection, Some(1));
        assert_eq!(http.max_retries, Some(3));
        assert_eq!(http.idle_timeout, Some(Duration::from_secs(30)));
        assert_eq!(http.h2_upgrade_policy, Some(H2UpgradePolicy::DoNotUpgrade));
        assert!(http.use_client_protocol);
        assert_eq!(http.max_concurrent_streams, Some(100));
        assert_eq!(
            http.http2_keep_alive,
            Some(Http2KeepAlive {
                interval: Some(Duration::from_secs(15)),
                timeout: Some(Duration::from_secs(5)),
            })
        );

        let od = tp.outlier_detection.as_ref().expect("outlierDetection");
        assert_eq!(od.consecutive_errors, Some(7));
        assert_eq!(od.consecutive_5xx_errors, Some(0));
        assert_eq!(od.consecutive_gateway_errors, Some(4));
        assert!(od.split_external_local_origin_errors);
        assert_eq!(od.consecutive_local_origin_failures, Some(2));
        assert_eq!(od.interval, Some(Duration::from_secs(300)));
        assert_eq!(od.base_ejection_time, Some(Duration::from_secs(900)));
        assert_eq!(od.max_ejection_percent, Some(50));
        assert_eq!(od.min_health_percent, Some(20));
        assert_eq!(od.outlier_detection_http_error_codes, [500, 503]);

        let tls = tp.tls.as_ref().expect("tls");
        assert_eq!(tls.mode, Some(ClientTlsMode::Simple));
        assert_eq!(tls.ca_certificates, "/etc/certs/ca.pem");
        assert_eq!(tls.subject_alt_names, ["reviews.example.com"]);
        assert_eq!(tls.sni, "reviews.example.com");
        assert_eq!(tls.insecure_skip_verify, Some(false));
        assert_eq!(tls.ca_crl, "/etc/certs/crl.pem");

        let pl = &tp.port_level_settings[0];
        assert_eq!(pl.port, Some(PortSelector { number: 9080 }));
        let plb = pl.load_balancer.as_ref().expect("port lb");
        assert_eq!(plb.simple(), Some(SimpleLb::RoundRobin));
        let za = plb.zone_aware_lb_setting.as_ref().expect("zoneAware");
        assert_eq!(za.enabled, Some(true));
        assert_eq!(za.failover[0].to, "us-west");
        assert_eq!(za.failover_priority, ["foo"]);
        assert_eq!(za.min_cluster_size, Some(6));
        assert_eq!(
            plb.warmup,
            Some(WarmupConfiguration {
                duration: Some(Duration::from_secs(60)),
                minimum_percent: Some(5.0),
                aggression: Some(2.0),
            })
        );
        assert_eq!(
            pl.connection_pool
                .as_ref()
                .and_then(|c| c.tcp.as_ref())
                .and_then(|t| t.max_connections),
            Some(1)
        );
        assert_eq!(
            pl.outlier_detection
                .as_ref()
                .and_then(|o| o.consecutive_5xx_errors),
            Some(1)
        );
        let ptls = pl.tls.as_ref().expect("port tls");
        assert_eq!(ptls.mode, Some(ClientTlsMode::Mutual));
        assert_eq!(ptls.client_certificate, "/etc/certs/cert.pem");
        assert_eq!(ptls.private_key, "/etc/certs/key.pem");

        assert_eq!(
            tp.retry_budget,
            Some(RetryBudget {
                percent: Some(25.5),
                min_retry_concurrency: Some(5),
                budget_interval: Some(Duration::from_secs(10)),
            })
        );

        assert_eq!(dr.subsets.len(), 2);
        let v1 = &dr.subsets[0];
        assert_eq!(v1.name, "v1");
        assert_eq!(v1.labels.get("version").map(String::as_str), Some("v1"));
        let v1tp = v1.traffic_policy.as_ref().expect("v1 policy");
        assert_eq!(
            v1tp.tunnel,
            Some(TunnelSettings {
                protocol: "POST".into(),
                target_host: "egress.example.com".into(),
                target_port: 8443,
            })
        );
        let bu = v1tp
            .load_balancer
            .as_ref()
            .and_then(|l| l.backend_utilization())
            .expect("backendUtilization");
        assert_eq!(bu.error_utilization_penalty_percent, Some(50));
        assert_eq!(bu.metric_names_for_computing_utilization, ["cpu"]);
        assert_eq!(bu.weight_expiration_period, Some(Duration::from_secs(180)));
        assert_eq!(
            bu.weight_stabilization_period,
            Some(Duration::from_secs(10))
        );
        assert_eq!(bu.weight_update_period, Some(Duration::from_secs(1)));
        let v2tp = dr.subsets[1].traffic_policy.as_ref().expect("v2 policy");
        assert_eq!(
            v2tp.proxy_protocol,
            Some(ProxyProtocol {
                version: Some(ProxyProtocolVersion::V2)
            })
        );
        let ch2 = v2tp
            .load_balancer
            .as_ref()
            .and_then(|l| l.consistent_hash())
            .expect("consistentHash");
        assert_eq!(ch2.hash_key, Some(HashKey::UseSourceIp(true)));
        assert_eq!(
            ch2.hash_algorithm,
            Some(HashAlgorithm::RingHash(RingHash {
                minimum_ring_size: 2048
            }))
        );
        assert_eq!(ch2.minimum_ring_size, 0);
    }

    #[test]
    fn snake_case_aliases_work() {
        let (dr, problems) = load(
            r#"
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  export_to: ["*"]
  workload_selector: {match_labels: {app: a}}
  traffic_policy:
    connection_pool:
      http: {http1_max_pending_requests: 5, max_requests_per_connection: 2, http2_keep_alive: {interval: 1s, timeout: 1s}}
      tcp: {max_connections: 7, tcp_keepalive: {probes: 1}}
    outlier_detection: {consecutive_5xx_errors: 3, base_ejection_time: 1m, split_external_local_origin_errors: true}
    load_balancer: {consistent_hash: {http_header_name: x-user, ring_hash: {minimum_ring_size: 10}}, warmup_duration_secs: 5s}
    port_level_settings:
    - port: {number: 80}
      tls: {mode: ISTIO_MUTUAL, insecure_skip_verify: true}
    retry_budget: {min_retry_concurrency: 1}
"#,
        );
        assert!(problems.is_empty(), "{problems:#?}");
        assert_eq!(dr.export_to, ["*"]);
        let tp = dr.traffic_policy.expect("policy");
        let cp = tp.connection_pool.expect("pool");
        let http = cp.http.expect("http");
        assert_eq!(http.http1_max_pending_requests, Some(5));
        assert_eq!(http.max_requests_per_connection, Some(2));
        assert!(http.http2_keep_alive.is_some());
        assert_eq!(cp.tcp.and_then(|t| t.max_connections), Some(7));
        let od = tp.outlier_detection.expect("outlier");
        assert_eq!(od.consecutive_5xx_errors, Some(3));
        assert_eq!(od.base_ejection_time, Some(Duration::from_secs(60)));
        assert!(od.split_external_local_origin_errors);
        let lb = tp.load_balancer.expect("lb");
        assert_eq!(
            lb.consistent_hash().and_then(|c| c.hash_key.clone()),
            Some(HashKey::HttpHeaderName("x-user".into()))
        );
        assert_eq!(lb.warmup_duration_secs, Some(Duration::from_secs(5)));
        assert_eq!(
            tp.port_level_settings[0]
                .tls
                .as_ref()
                .and_then(|t| t.insecure_skip_verify),
            Some(true)
        );
        assert_eq!(
            tp.retry_budget.and_then(|r| r.min_retry_concurrency),
            Some(1)
        );
    }

    #[test]
    fn decoding_problems_are_reported_with_paths() {
        let (_, problems) = load(
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: reviews
  bogus: 1
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      consistentHash: {httpHeaderName: a, useSourceIp: true}
    connectionPool: {tcp: {connectTimeout: 10 seconds}}
    outlierDetection: {consecutive5xxErrors: -1}
    tls: {mode: STRICT}
    retryBudget: {percent: 120}
"#,
        );
        let all = problems.join("\n");
        for needle in [
            "spec.bogus: unknown field",
            "spec.trafficPolicy.loadBalancer: only one of simple, consistentHash, backendUtilization",
            "spec.trafficPolicy.loadBalancer.consistentHash: only one of httpHeaderName",
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout: invalid duration",
            "spec.trafficPolicy.outlierDetection.consecutive5xxErrors: -1 is out of range",
            "spec.trafficPolicy.tls.mode: Unsupported value: \"STRICT\"",
            "spec.trafficPolicy.retryBudget.percent: percentage 120 is not in range 0..100",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }
}
