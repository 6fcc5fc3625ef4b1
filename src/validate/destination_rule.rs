//! Validation rules for DestinationRule (rules 77–100, plus the shared rules 4–9 and 11–13
//! on its duration, port, exportTo, selector and label fields).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::config::Resource;
use crate::config::destination_rule::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy,
    HashAlgorithm, HashKey, LbPolicy, LoadBalancerSettings, LocalityLoadBalancerSetting,
    OutlierDetection, PortTrafficPolicy, TrafficPolicy, TunnelSettings,
};
use crate::path::FieldPath;
use crate::validate::common::{
    check_duration, check_export_to, check_label_map, check_port, check_selector, is_dns_label,
    is_ip, is_lowercase_dns_label, validate_fqdn, validate_wildcard_domain,
};
use crate::validate::{Findings, Severity};

/// The CRD's `maxItems` of `portLevelSettings`.
const MAX_PORT_LEVEL_SETTINGS: usize = 4096;

/// Maglev table sizes must be below this prime (Envoy's limit).
const MAGLEV_TABLE_SIZE_LIMIT: u64 = 5_000_011;

/// Topology labels that cannot be used in `failoverPriority` together with `failover`.
const TOPOLOGY_LABELS: [&str; 3] = [
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

/// Checks every rule for a DestinationRule.
pub(crate) fn check(
    res: &Resource,
    spec: &DestinationRule,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    // Rule 77: host is required and a (wildcard) domain.
    let host = path.field("host");
    if spec.host.is_empty() {
        out.error(77, &host, "host is required: empty domain name not allowed");
    } else if let Err(e) = validate_wildcard_domain(&spec.host) {
        out.error(77, &host, e);
    }

    if let Some(tp) = &spec.traffic_policy {
        check_traffic_policy(tp, &path.field("trafficPolicy"), out);
    }

    // Rule 80: subsets have unique, valid names; rule 13: their labels are Kubernetes labels.
    let subsets = path.field("subsets");
    let mut names = BTreeSet::new();
    for (i, subset) in spec.subsets.iter().enumerate() {
        let sp = subsets.index(i);
        let name = sp.field("name");
        if subset.name.is_empty() {
            out.error(80, &name, "subset name cannot be empty");
        } else {
            if !is_dns_label(&subset.name) {
                out.error(
                    80,
                    &name,
                    format!("subset name is invalid: {:?}", subset.name),
                );
            }
            if !names.insert(subset.name.as_str()) {
                out.error(
                    80,
                    &name,
                    format!("duplicate subset names: {:?}", subset.name),
                );
            }
        }
        check_label_map(out, &sp.field("labels"), &subset.labels);
        if let Some(tp) = &subset.traffic_policy {
            check_traffic_policy(tp, &sp.field("trafficPolicy"), out);
        }
    }

    // Rules 7–9: exportTo; rule 100: with a workload selector, only the own namespace.
    let export = path.field("exportTo");
    check_export_to(
        out,
        &export,
        &spec.export_to,
        &res.metadata.namespace,
        false,
    );
    if spec.workload_selector.is_some() {
        check_export_to_with_selector(out, &export, &spec.export_to, &res.metadata.namespace);
    }

    // Rules 11–12: the workload selector.
    if let Some(sel) = &spec.workload_selector {
        let sp = path.field("workloadSelector");
        check_selector(out, &sp, &sp.field("matchLabels"), &sel.match_labels);
    }
}

/// Rule 100: a DestinationRule with a workload selector may be exported to its own namespace
/// only. Entries invalid under rule 7 are ignored here (they are reported there).
fn check_export_to_with_selector(
    out: &mut Findings<'_>,
    path: &FieldPath<'_>,
    export_to: &[String],
    namespace: &str,
) {
    let valid: BTreeSet<&str> = export_to
        .iter()
        .map(|e| if e == "." { namespace } else { e.as_str() })
        .filter(|e| *e == "*" || is_lowercase_dns_label(e))
        .collect();
    if valid.is_empty() {
        return;
    }
    if valid.contains(namespace) {
        if valid.len() > 1 {
            out.error(
                100,
                path,
                "destination rule with workload selector cannot have multiple entries in exportTo",
            );
        }
    } else {
        out.error(
            100,
            path,
            "destination rule with workload selector cannot have exportTo beyond current namespace",
        );
    }
}

/// A top-level or subset `trafficPolicy`.
fn check_traffic_policy(tp: &TrafficPolicy, path: &FieldPath<'_>, out: &mut Findings<'_>) {
    // Rule 78: at least one field.
    if tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        out.error(78, path, "traffic policy must have at least one field");
        return;
    }
    // Rule 79: tunnel and proxyProtocol are exclusive.
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        out.error(
            79,
            path,
            "tunnel and proxyProtocol must not be set together",
        );
    }
    check_sections(
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        tp.tls.as_ref(),
        path,
        out,
    );

    // Rule 81: portLevelSettings.
    let pls = path.field("portLevelSettings");
    if tp.port_level_settings.len() > MAX_PORT_LEVEL_SETTINGS {
        out.error(
            81,
            &pls,
            format!(
                "Too many: {}: must have at most {MAX_PORT_LEVEL_SETTINGS} items",
                tp.port_level_settings.len()
            ),
        );
    }
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        check_port_traffic_policy(p, &pls.index(i), out);
    }

    if let Some(t) = &tp.tunnel {
        check_tunnel(t, &path.field("tunnel"), out);
    }
    // Rule 99 (proxyProtocol.version is V1 or V2) is enforced when decoding.
    if let Some(rb) = &tp.retry_budget
        && let Some(d) = rb.budget_interval
    {
        let p = path.field("retryBudget");
        check_duration(out, &p.field("budgetInterval"), d);
    }
}

/// The four sections shared by a traffic policy and a port traffic policy.
fn check_sections(
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierDetection>,
    tls: Option<&ClientTlsSettings>,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    if let Some(o) = outlier {
        check_outlier_detection(o, &path.field("outlierDetection"), out);
    }
    if let Some(c) = pool {
        check_connection_pool(c, &path.field("connectionPool"), out);
    }
    if let Some(l) = lb {
        check_load_balancer(l, outlier.is_some(), &path.field("loadBalancer"), out);
    }
    if let Some(t) = tls {
        check_tls(t, &path.field("tls"), out);
    }
}

/// Rule 81 (and rule 6 on its port): a `portLevelSettings` entry.
fn check_port_traffic_policy(p: &PortTrafficPolicy, path: &FieldPath<'_>, out: &mut Findings<'_>) {
    match p.port {
        None => out.error(81, path, "portTrafficPolicy must have valid port"),
        Some(port) => {
            let pp = path.field("port");
            check_port(out, &pp.field("number"), port.number);
        }
    }
    if p.load_balancer.is_none()
        && p.connection_pool.is_none()
        && p.outlier_detection.is_none()
        && p.tls.is_none()
    {
        out.error(81, path, "port traffic policy must have at least one field");
        return;
    }
    check_sections(
        p.load_balancer.as_ref(),
        p.connection_pool.as_ref(),
        p.outlier_detection.as_ref(),
        p.tls.as_ref(),
        path,
        out,
    );
}

/// Rules 82–85 and 4–5: a `connectionPool` (also the Sidecar's `ingress[].connectionPool`
/// and `inboundConnectionPool`, which Istio validates with the same function).
pub(crate) fn check_connection_pool(
    c: &ConnectionPoolSettings,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    if c.http.is_none() && c.tcp.is_none() {
        out.error(82, path, "connection pool must have at least one field");
        return;
    }
    if let Some(h) = &c.http {
        let hp = path.field("http");
        non_negative(
            out,
            &hp,
            "http1MaxPendingRequests",
            "http1 max pending requests",
            h.http1_max_pending_requests,
        );
        non_negative(
            out,
            &hp,
            "http2MaxRequests",
            "http2 max requests",
            h.http2_max_requests,
        );
        non_negative(
            out,
            &hp,
            "maxRequestsPerConnection",
            "max requests per connection",
            h.max_requests_per_connection,
        );
        non_negative(out, &hp, "maxRetries", "max retries", h.max_retries);
        non_negative(
            out,
            &hp,
            "maxConcurrentStreams",
            "max concurrent streams",
            h.max_concurrent_streams,
        );
        if let Some(d) = h.idle_timeout {
            check_duration(out, &hp.field("idleTimeout"), d);
        }
        // Rule 84.
        if h.use_client_protocol && h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) {
            out.error(
                84,
                &hp,
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
        // Rule 85.
        if let Some(ka) = &h.http2_keep_alive {
            let kp = hp.field("http2KeepAlive");
            match ka.interval {
                None => out.error(
                    85,
                    &kp.field("interval"),
                    "http2 keepalive interval is required",
                ),
                Some(d) => check_duration(out, &kp.field("interval"), d),
            }
            match ka.timeout {
                None => out.error(
                    85,
                    &kp.field("timeout"),
                    "http2 keepalive timeout is required",
                ),
                Some(d) => check_duration(out, &kp.field("timeout"), d),
            }
        }
    }
    if let Some(t) = &c.tcp {
        let tp = path.field("tcp");
        non_negative(
            out,
            &tp,
            "maxConnections",
            "max connections",
            t.max_connections,
        );
        if let Some(d) = t.connect_timeout {
            check_duration(out, &tp.field("connectTimeout"), d);
        }
        if let Some(d) = t.max_connection_duration {
            check_duration(out, &tp.field("maxConnectionDuration"), d);
        }
        // Rule 5: `0s` disables the idle timeout. Like Istio, anything under a whole
        // millisecond counts as 0.
        if let Some(d) = t.idle_timeout
            && d.as_millis() != 0
        {
            check_duration(out, &tp.field("idleTimeout"), d);
        }
        if let Some(ka) = &t.tcp_keepalive {
            let kp = tp.field("tcpKeepalive");
            if let Some(d) = ka.time {
                check_duration(out, &kp.field("time"), d);
            }
            if let Some(d) = ka.interval {
                check_duration(out, &kp.field("interval"), d);
            }
        }
    }
}

/// Rule 83: a connection pool limit must not be negative.
fn non_negative(
    out: &mut Findings<'_>,
    parent: &FieldPath<'_>,
    field: &str,
    what: &str,
    value: Option<i32>,
) {
    if let Some(v) = value
        && v < 0
    {
        out.error(
            83,
            &parent.field(field),
            format!("{what} must be non-negative, found {v}"),
        );
    }
}

/// Rules 86–88 and 4: `outlierDetection`.
fn check_outlier_detection(o: &OutlierDetection, path: &FieldPath<'_>, out: &mut Findings<'_>) {
    if let Some(d) = o.base_ejection_time {
        check_duration(out, &path.field("baseEjectionTime"), d);
    }
    if let Some(n) = o.consecutive_errors
        && n != 0
    {
        out.warn(
            88,
            &path.field("consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    if !o.split_external_local_origin_errors
        && o.consecutive_local_origin_failures.is_some_and(|n| n > 0)
    {
        out.error(
            87,
            &path.field("consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    if let Some(d) = o.interval {
        check_duration(out, &path.field("interval"), d);
    }
    for (name, value) in [
        ("maxEjectionPercent", o.max_ejection_percent),
        ("minHealthPercent", o.min_health_percent),
    ] {
        if let Some(v) = value
            && !(0..=100).contains(&v)
        {
            out.error(
                86,
                &path.field(name),
                format!("percentage {v} is not in range 0..100"),
            );
        }
    }
    let codes = path.field("outlierDetectionHttpErrorCodes");
    for (i, code) in o.outlier_detection_http_error_codes.iter().enumerate() {
        if !(100..=599).contains(code) {
            out.error(
                88,
                &codes.index(i),
                format!("HTTP status code {code} is not in range 100..599"),
            );
        }
    }
}

/// Rules 89–94 and 4: `loadBalancer`. `has_outlier`: whether the same policy sets
/// `outlierDetection` (locality failover needs it).
fn check_load_balancer(
    lb: &LoadBalancerSettings,
    has_outlier: bool,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    match &lb.lb_policy {
        Some(LbPolicy::ConsistentHash(ch)) => {
            let cp = path.field("consistentHash");
            if let Some(HashKey::HttpCookie(cookie)) = &ch.hash_key {
                let kp = cp.field("httpCookie");
                // Rule 89.
                if cookie.name.is_empty() {
                    out.error(89, &kp.field("name"), "name required for HttpCookie");
                }
                let attrs = kp.field("attributes");
                let mut seen = BTreeSet::new();
                for (i, a) in cookie.attributes.iter().enumerate() {
                    let ap = attrs.index(i);
                    if a.name.is_empty() {
                        out.error(89, &ap.field("name"), "cookie attribute name is required");
                    } else if !seen.insert(a.name.as_str()) {
                        out.error(
                            89,
                            &ap.field("name"),
                            format!("duplicate cookie attribute name: {:?}", a.name),
                        );
                    }
                }
                // `0s` means a session cookie.
                if let Some(ttl) = cookie.ttl
                    && ttl != Duration::ZERO
                {
                    check_duration(out, &kp.field("ttl"), ttl);
                }
            }
            // Rule 90.
            if ch.minimum_ring_size != 0 {
                out.warn(
                    90,
                    &cp.field("minimumRingSize"),
                    "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
                );
                if ch.hash_algorithm.is_some() {
                    out.error(
                        90,
                        &cp,
                        "only one of MinimumRingSize or Maglev/Ringhash can be specified",
                    );
                }
            }
            // Rule 91.
            if let Some(HashAlgorithm::Maglev(m)) = &ch.hash_algorithm {
                let mp = cp.field("maglev");
                let tp = mp.field("tableSize");
                if m.table_size == 0 {
                    out.error(91, &tp, "tableSize must be set for maglev");
                }
                if m.table_size >= MAGLEV_TABLE_SIZE_LIMIT {
                    out.error(
                        91,
                        &tp,
                        format!(
                            "tableSize must be less than {MAGLEV_TABLE_SIZE_LIMIT} for maglev, found {}",
                            m.table_size
                        ),
                    );
                }
                if !is_prime(m.table_size) {
                    out.error(
                        91,
                        &tp,
                        format!(
                            "tableSize must be a prime number for maglev, found {}",
                            m.table_size
                        ),
                    );
                }
            }
        }
        Some(LbPolicy::BackendUtilization(b)) => {
            let bp = path.field("backendUtilization");
            for (name, d) in [
                ("weightExpirationPeriod", b.weight_expiration_period),
                ("weightStabilizationPeriod", b.weight_stabilization_period),
                ("weightUpdatePeriod", b.weight_update_period),
            ] {
                if let Some(d) = d {
                    check_duration(out, &bp.field(name), d);
                }
            }
        }
        Some(LbPolicy::Simple(_)) | None => {}
    }

    // Rule 92.
    if lb.locality_lb_setting.is_some() && lb.zone_aware_lb_setting.is_some() {
        out.error(
            92,
            path,
            "only one of localityLbSetting and zoneAwareLbSetting can be set",
        );
    }
    // Rule 93.
    if let Some(l) = &lb.locality_lb_setting {
        check_locality_lb_setting(l, has_outlier, &path.field("localityLbSetting"), out);
    }
    if let Some(z) = &lb.zone_aware_lb_setting
        && z.min_cluster_size == Some(0)
    {
        let zp = path.field("zoneAwareLbSetting");
        out.unnumbered(
            Severity::Error,
            &zp.field("minClusterSize"),
            "minClusterSize should be greater than or equal to 1",
        );
    }

    // Rule 94 (and rule 4 on the warmup durations).
    if let Some(d) = lb.warmup_duration_secs {
        check_duration(out, &path.field("warmupDurationSecs"), d);
    }
    if let Some(w) = &lb.warmup {
        let wp = path.field("warmup");
        if lb.warmup_duration_secs.is_some() {
            out.error(
                94,
                path,
                "only one of warmupDurationSecs or warmup can be set",
            );
        }
        match w.duration {
            None => out.error(94, &wp.field("duration"), "duration is required"),
            Some(d) => check_duration(out, &wp.field("duration"), d),
        }
        if let Some(p) = w.minimum_percent {
            if p > 100.0 {
                out.error(
                    94,
                    &wp.field("minimumPercent"),
                    format!("minimumPercent value should be less than or equal to 100, found {p}"),
                );
            } else if p < 0.0 {
                out.error(
                    94,
                    &wp.field("minimumPercent"),
                    format!("minimumPercent value should be greater than or equal to 0, found {p}"),
                );
            }
        }
        if let Some(a) = w.aggression
            && a <= 0.0
        {
            out.error(
                94,
                &wp.field("aggression"),
                format!("aggression should be greater than 0, found {a}"),
            );
        }
    }
}

/// Envoy's primality test for Maglev table sizes (0 is not prime; 1, 2 and 3 are accepted).
fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x.is_multiple_of(2) {
        return false;
    }
    let mut factor = 3u64;
    while factor.saturating_mul(factor) <= x {
        if x.is_multiple_of(factor) {
            return false;
        }
        factor += 2;
    }
    true
}

/// Rule 93: `localityLbSetting`.
fn check_locality_lb_setting(
    l: &LocalityLoadBalancerSetting,
    has_outlier: bool,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        out.error(
            93,
            path,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
        return;
    }
    if !l.failover.is_empty() {
        let fp = path.field("failoverPriority");
        for (i, label) in l.failover_priority.iter().enumerate() {
            if TOPOLOGY_LABELS.contains(&label.as_str()) {
                out.error(
                    93,
                    &fp.index(i),
                    format!("can not simultaneously set 'failover' and topology label '{label}' in 'failover_priority'"),
                );
            }
        }
    }

    let dist = path.field("distribute");
    for (i, d) in l.distribute.iter().enumerate() {
        let dp = dist.index(i);
        let to = dp.field("to");
        let mut bad_weight = false;
        for (loc, w) in &d.to {
            if !(1..=100).contains(w) {
                bad_weight = true;
                out.error(
                    93,
                    &to.key(loc),
                    format!("locality weight must be in range [1, 100], found {w}"),
                );
            }
        }
        if bad_weight {
            continue;
        }
        let total: u64 = d.to.values().map(|w| u64::from(*w)).sum();
        if total != 100 {
            out.error(93, &to, format!("total locality weight {total} != 100"));
            continue;
        }
        if let Err(e) = validate_localities(d.to.keys().map(String::as_str)) {
            out.error(93, &to, e);
        }
    }
    if let Err(e) = validate_localities(l.distribute.iter().map(|d| d.from.as_str())) {
        out.error(93, &dist, e);
    }

    if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !has_outlier {
        out.warn(
            93,
            path,
            "outlier detection policy must be provided for failover",
        );
    }
    let fo = path.field("failover");
    for (i, f) in l.failover.iter().enumerate() {
        let fp = fo.index(i);
        if f.from == f.to {
            out.error(
                93,
                &fp,
                "locality lb failover settings must specify different regions",
            );
        }
        if f.from.contains('/') || f.to.contains('/') {
            out.error(93, &fp, "locality lb failover only specify region");
        }
        if f.from.contains('*') || f.to.contains('*') {
            out.error(
                93,
                &fp,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
}

/// Localities (`region[/zone[/subzone]]`, optionally ending in `*`) must be well formed and
/// must not overlap each other.
fn validate_localities<'a>(localities: impl Iterator<Item = &'a str>) -> Result<(), String> {
    // region -> zone -> subzones; "*" marks "everything below".
    let mut seen: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    let overlap = |loc: &str| format!("locality {loc} overlap with previous specified ones");
    for loc in localities {
        let stars = loc.matches('*').count();
        if stars > 1 || (stars == 1 && !loc.ends_with('*')) {
            return Err(format!(
                "locality {loc} wildcard '*' number can not exceed 1 and must be in the end"
            ));
        }
        if seen.contains_key("*") {
            return Err(overlap(loc));
        }
        let items: Vec<&str> = loc.splitn(3, '/').collect();
        if items.iter().any(|s| s.is_empty()) {
            return Err(format!(
                "locality {loc} must not contain empty region/zone/subzone info"
            ));
        }
        match items.as_slice() {
            [region] => {
                if seen.contains_key(region) {
                    return Err(overlap(loc));
                }
                seen.insert(region, BTreeMap::from([("*", BTreeSet::from(["*"]))]));
            }
            [region, zone] => match seen.get_mut(region) {
                Some(zones) => {
                    if zones.contains_key("*") || zones.contains_key(zone) {
                        return Err(overlap(loc));
                    }
                    zones.insert(zone, BTreeSet::from(["*"]));
                }
                None => {
                    seen.insert(region, BTreeMap::from([(*zone, BTreeSet::from(["*"]))]));
                }
            },
            [region, zone, subzone] => match seen.get_mut(region) {
                Some(zones) => {
                    if zones.contains_key("*") {
                        return Err(overlap(loc));
                    }
                    match zones.get_mut(zone) {
                        Some(subzones) => {
                            if subzones.contains("*") || subzones.contains(subzone) {
                                return Err(overlap(loc));
                            }
                            subzones.insert(subzone);
                        }
                        None => {
                            zones.insert(zone, BTreeSet::from([*subzone]));
                        }
                    }
                }
                None => {
                    seen.insert(
                        region,
                        BTreeMap::from([(*zone, BTreeSet::from([*subzone]))]),
                    );
                }
            },
            _ => {}
        }
    }
    Ok(())
}

/// Rules 95–97: client `tls`.
fn check_tls(t: &ClientTlsSettings, path: &FieldPath<'_>, out: &mut Findings<'_>) {
    let mode = t.mode.unwrap_or(ClientTlsMode::Disable);
    // Rule 97.
    if t.insecure_skip_verify == Some(true) {
        match mode {
            ClientTlsMode::Simple
                if !t.ca_certificates.is_empty()
                    || !t.credential_name.is_empty()
                    || !t.subject_alt_names.is_empty() =>
            {
                out.error(
                    97,
                    path,
                    "cannot specify CaCertificates or CredentialName or SubjectAltNames when InsecureSkipVerify is set true",
                );
            }
            ClientTlsMode::Mutual
                if !t.ca_certificates.is_empty() || !t.subject_alt_names.is_empty() =>
            {
                out.error(
                    97,
                    path,
                    "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true",
                );
            }
            _ => {}
        }
    }
    // Rule 96.
    if matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual)
        && !t.credential_name.is_empty()
    {
        if !t.client_certificate.is_empty()
            || !t.ca_certificates.is_empty()
            || !t.private_key.is_empty()
            || !t.ca_crl.is_empty()
        {
            out.error(
                96,
                path,
                "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
            );
        }
        return;
    }
    // Rule 95.
    if mode == ClientTlsMode::Mutual {
        if t.client_certificate.is_empty() {
            out.error(
                95,
                &path.field("clientCertificate"),
                "client certificate required for mutual tls",
            );
        }
        if t.private_key.is_empty() {
            out.error(
                95,
                &path.field("privateKey"),
                "private key required for mutual tls",
            );
        }
    }
}

/// Rule 98 (and rule 6 on its port): `tunnel`.
fn check_tunnel(t: &TunnelSettings, path: &FieldPath<'_>, out: &mut Findings<'_>) {
    if !matches!(t.protocol.as_str(), "" | "CONNECT" | "POST") {
        out.error(
            98,
            &path.field("protocol"),
            format!(
                "tunnel protocol must be \"CONNECT\" or \"POST\", found {:?}",
                t.protocol
            ),
        );
    }
    if let Err(e) = validate_fqdn(&t.target_host)
        && !is_ip(&t.target_host)
    {
        out.error(
            98,
            &path.field("targetHost"),
            format!(
                "tunnel target host must be valid FQDN or IP address: {e}; {:?} is not a valid IP",
                t.target_host
            ),
        );
    }
    check_port(out, &path.field("targetPort"), t.target_port);
}

#[cfg(test)]
mod tests {
    use crate::validate::testing::*;

    /// A DestinationRule in namespace `foo` with `spec` (indented two spaces).
    fn dr(spec: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: d, namespace: foo}}\nspec:\n{spec}"
        )
    }

    /// A DestinationRule for `reviews` with `policy` as its trafficPolicy (flow YAML).
    fn tp(policy: &str) -> String {
        dr(&format!("  host: reviews\n  trafficPolicy: {policy}\n"))
    }

    #[test]
    fn rule_005_tcp_idle_timeout_zero_allowed() {
        passes(&tp("{connectionPool: {tcp: {idleTimeout: 0s}}}"));
        passes(&tp("{connectionPool: {tcp: {idleTimeout: 1h}}}"));
        fails(
            &tp("{connectionPool: {tcp: {idleTimeout: 1.0005s}}}"),
            "spec.trafficPolicy.connectionPool.tcp.idleTimeout",
            "ms precision",
        );
        // Other duration fields keep the 1ms minimum.
        fails(
            &tp("{connectionPool: {http: {idleTimeout: 0s}}}"),
            "spec.trafficPolicy.connectionPool.http.idleTimeout",
            "greater than 1ms",
        );
    }

    #[test]
    fn rule_004_every_destination_rule_duration() {
        let cases = [
            (
                "{connectionPool: {tcp: {connectTimeout: X}}}",
                "connectionPool.tcp.connectTimeout",
            ),
            (
                "{connectionPool: {tcp: {maxConnectionDuration: X}}}",
                "connectionPool.tcp.maxConnectionDuration",
            ),
            (
                "{connectionPool: {tcp: {tcpKeepalive: {time: X}}}}",
                "connectionPool.tcp.tcpKeepalive.time",
            ),
            (
                "{connectionPool: {tcp: {tcpKeepalive: {interval: X}}}}",
                "connectionPool.tcp.tcpKeepalive.interval",
            ),
            (
                "{connectionPool: {http: {idleTimeout: X}}}",
                "connectionPool.http.idleTimeout",
            ),
            (
                "{connectionPool: {http: {http2KeepAlive: {interval: X, timeout: 1s}}}}",
                "connectionPool.http.http2KeepAlive.interval",
            ),
            (
                "{connectionPool: {http: {http2KeepAlive: {interval: 1s, timeout: X}}}}",
                "connectionPool.http.http2KeepAlive.timeout",
            ),
            (
                "{outlierDetection: {interval: X}}",
                "outlierDetection.interval",
            ),
            (
                "{outlierDetection: {baseEjectionTime: X}}",
                "outlierDetection.baseEjectionTime",
            ),
            (
                "{loadBalancer: {warmupDurationSecs: X}}",
                "loadBalancer.warmupDurationSecs",
            ),
            (
                "{loadBalancer: {warmup: {duration: X}}}",
                "loadBalancer.warmup.duration",
            ),
            (
                "{loadBalancer: {consistentHash: {httpCookie: {name: c, ttl: X}}}}",
                "loadBalancer.consistentHash.httpCookie.ttl",
            ),
            (
                "{loadBalancer: {backendUtilization: {weightUpdatePeriod: X}}}",
                "loadBalancer.backendUtilization.weightUpdatePeriod",
            ),
            (
                "{retryBudget: {budgetInterval: X}}",
                "retryBudget.budgetInterval",
            ),
            (
                "{portLevelSettings: [{port: {number: 80}, outlierDetection: {interval: X}}]}",
                "portLevelSettings[0].outlierDetection.interval",
            ),
        ];
        for (policy, field) in cases {
            passes(&tp(&policy.replace('X', "1.5s")));
            fails(
                &tp(&policy.replace('X', "500us")),
                &format!("spec.trafficPolicy.{field}"),
                "greater than 1ms",
            );
            fails(
                &tp(&policy.replace('X', "1.0005s")),
                &format!("spec.trafficPolicy.{field}"),
                "ms precision",
            );
        }
        // A session cookie (ttl 0s) is fine.
        passes(&tp(
            "{loadBalancer: {consistentHash: {httpCookie: {name: c, ttl: 0s}}}}",
        ));
    }

    #[test]
    fn rule_006_ports_of_port_level_settings_and_tunnel() {
        passes(&tp(
            "{portLevelSettings: [{port: {number: 80}, tls: {mode: SIMPLE}}]}",
        ));
        fails(
            &tp("{portLevelSettings: [{port: {number: 0}, tls: {mode: SIMPLE}}]}"),
            "spec.trafficPolicy.portLevelSettings[0].port.number",
            "1..65535",
        );
        fails(
            &tp("{tunnel: {targetHost: example.com, targetPort: 70000}}"),
            "spec.trafficPolicy.tunnel.targetPort",
            "1..65535",
        );
    }

    #[test]
    fn rule_077_host_is_a_wildcard_domain() {
        passes(&dr("  host: reviews\n"));
        passes(&dr("  host: \"*.example.com\"\n"));
        fails(&dr("  host: \"foo.*.com\"\n"), "spec.host", "invalid");
        fails(&dr("  host: \"a..b\"\n"), "spec.host", "invalid");
        fails(&dr("  subsets: [{name: v1}]\n"), "spec.host", "required");
    }

    #[test]
    fn rule_078_traffic_policy_not_empty() {
        passes(&tp("{tls: {mode: ISTIO_MUTUAL}}"));
        passes(&tp("{retryBudget: {percent: 10}}"));
        fails(&tp("{}"), "spec.trafficPolicy", "at least one field");
        fails(
            &dr("  host: reviews\n  subsets: [{name: v1, trafficPolicy: {}}]\n"),
            "spec.subsets[0].trafficPolicy",
            "at least one field",
        );
    }

    #[test]
    fn rule_079_tunnel_and_proxy_protocol_exclusive() {
        passes(&tp("{tunnel: {targetHost: example.com, targetPort: 443}}"));
        passes(&tp("{proxyProtocol: {version: V2}}"));
        fails(
            &tp("{tunnel: {targetHost: example.com, targetPort: 443}, proxyProtocol: {}}"),
            "spec.trafficPolicy",
            "must not be set together",
        );
    }

    #[test]
    fn rule_080_subset_names() {
        passes(&dr(
            "  host: reviews\n  subsets: [{name: v1}, {name: V2-canary}]\n",
        ));
        fails(
            &dr("  host: reviews\n  subsets: [{name: v1}, {name: v1}]\n"),
            "spec.subsets[1].name",
            "duplicate subset names",
        );
        fails(
            &dr("  host: reviews\n  subsets: [{labels: {version: v1}}]\n"),
            "spec.subsets[0].name",
            "cannot be empty",
        );
        fails(
            &dr("  host: reviews\n  subsets: [{name: v1.0}]\n"),
            "spec.subsets[0].name",
            "subset name is invalid",
        );
        // Labels are checked too (rule 13).
        fails(
            &dr("  host: reviews\n  subsets: [{name: v1, labels: {version: \"a b\"}}]\n"),
            "spec.subsets[0].labels[version]",
            "invalid tag value",
        );
    }

    #[test]
    fn rule_081_port_level_settings() {
        passes(&tp(
            "{portLevelSettings: [{port: {number: 80}, loadBalancer: {simple: RANDOM}}]}",
        ));
        fails(
            &tp("{portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}"),
            "spec.trafficPolicy.portLevelSettings[0]",
            "must have valid port",
        );
        fails(
            &tp("{portLevelSettings: [{port: {number: 80}}]}"),
            "spec.trafficPolicy.portLevelSettings[0]",
            "port traffic policy must have at least one field",
        );
        let many = vec!["{port: {number: 80}, tls: {mode: SIMPLE}}"; 4097].join(", ");
        fails(
            &tp(&format!("{{portLevelSettings: [{many}]}}")),
            "spec.trafficPolicy.portLevelSettings",
            "at most 4096",
        );
    }

    #[test]
    fn rule_082_connection_pool_not_empty() {
        passes(&tp("{connectionPool: {tcp: {maxConnections: 1}}}"));
        passes(&tp("{connectionPool: {http: {}}}"));
        fails(
            &tp("{connectionPool: {}}"),
            "spec.trafficPolicy.connectionPool",
            "connection pool must have at least one field",
        );
    }

    #[test]
    fn rule_083_connection_pool_limits_non_negative() {
        passes(&tp(
            "{connectionPool: {tcp: {maxConnections: 0}, http: {http1MaxPendingRequests: 0, http2MaxRequests: 1, maxRequestsPerConnection: 0, maxRetries: 0, maxConcurrentStreams: 0}}}",
        ));
        let cases = [
            ("tcp", "maxConnections", "max connections"),
            (
                "http",
                "http1MaxPendingRequests",
                "http1 max pending requests",
            ),
            ("http", "http2MaxRequests", "http2 max requests"),
            (
                "http",
                "maxRequestsPerConnection",
                "max requests per connection",
            ),
            ("http", "maxRetries", "max retries"),
            ("http", "maxConcurrentStreams", "max concurrent streams"),
        ];
        for (section, field, what) in cases {
            fails(
                &tp(&format!(
                    "{{connectionPool: {{{section}: {{{field}: -1}}}}}}"
                )),
                &format!("spec.trafficPolicy.connectionPool.{section}.{field}"),
                &format!("{what} must be non-negative"),
            );
        }
    }

    #[test]
    fn rule_084_use_client_protocol_with_upgrade() {
        passes(&tp("{connectionPool: {http: {useClientProtocol: true}}}"));
        passes(&tp("{connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}"));
        fails(
            &tp("{connectionPool: {http: {useClientProtocol: true, h2UpgradePolicy: UPGRADE}}}"),
            "spec.trafficPolicy.connectionPool.http",
            "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
        );
    }

    #[test]
    fn rule_085_http2_keepalive_both_required() {
        passes(&tp(
            "{connectionPool: {http: {http2KeepAlive: {interval: 15s, timeout: 5s}}}}",
        ));
        fails(
            &tp("{connectionPool: {http: {http2KeepAlive: {timeout: 5s}}}}"),
            "spec.trafficPolicy.connectionPool.http.http2KeepAlive.interval",
            "http2 keepalive interval is required",
        );
        fails(
            &tp("{connectionPool: {http: {http2KeepAlive: {interval: 5s}}}}"),
            "spec.trafficPolicy.connectionPool.http.http2KeepAlive.timeout",
            "http2 keepalive timeout is required",
        );
    }

    #[test]
    fn rule_086_outlier_percentages() {
        passes(&tp(
            "{outlierDetection: {maxEjectionPercent: 100, minHealthPercent: 0}}",
        ));
        fails(
            &tp("{outlierDetection: {maxEjectionPercent: 101}}"),
            "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
            "percentage 101 is not in range 0..100",
        );
        fails(
            &tp("{outlierDetection: {minHealthPercent: -1}}"),
            "spec.trafficPolicy.outlierDetection.minHealthPercent",
            "not in range 0..100",
        );
    }

    #[test]
    fn rule_087_local_origin_failures_need_split() {
        passes(&tp(
            "{outlierDetection: {splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3}}",
        ));
        passes(&tp(
            "{outlierDetection: {consecutiveLocalOriginFailures: 0}}",
        ));
        fails(
            &tp("{outlierDetection: {consecutiveLocalOriginFailures: 3}}"),
            "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
            "split external local origin errors is set to false",
        );
    }

    #[test]
    fn rule_088_deprecated_consecutive_errors_and_error_codes() {
        no_finding(
            &tp("{outlierDetection: {consecutive5xxErrors: 5}}"),
            "spec.trafficPolicy.outlierDetection.consecutiveErrors",
        );
        warns(
            &tp("{outlierDetection: {consecutiveErrors: 5}}"),
            "spec.trafficPolicy.outlierDetection.consecutiveErrors",
            "consecutive errors is deprecated",
        );
        passes(&tp(
            "{outlierDetection: {outlierDetectionHttpErrorCodes: [100, 599]}}",
        ));
        fails(
            &tp("{outlierDetection: {outlierDetectionHttpErrorCodes: [500, 600]}}"),
            "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[1]",
            "not in range 100..599",
        );
    }

    #[test]
    fn rule_089_http_cookie() {
        passes(&tp(
            "{loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 10s, attributes: [{name: SameSite, value: Lax}, {name: Secure}]}}}}",
        ));
        fails(
            &tp("{loadBalancer: {consistentHash: {httpCookie: {ttl: 10s}}}}"),
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
            "name required for HttpCookie",
        );
        fails(
            &tp(
                "{loadBalancer: {consistentHash: {httpCookie: {name: u, attributes: [{value: x}]}}}}",
            ),
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[0].name",
            "cookie attribute name is required",
        );
        fails(
            &tp(
                "{loadBalancer: {consistentHash: {httpCookie: {name: u, attributes: [{name: Secure}, {name: Secure}]}}}}",
            ),
            "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.attributes[1].name",
            "duplicate cookie attribute name",
        );
    }

    #[test]
    fn rule_090_deprecated_minimum_ring_size() {
        passes(&tp(
            "{loadBalancer: {consistentHash: {useSourceIp: true, ringHash: {minimumRingSize: 1024}}}}",
        ));
        warns(
            &tp("{loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 1024}}}"),
            "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
            "deprecated",
        );
        fails(
            &tp(
                "{loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 1024, maglev: {tableSize: 65537}}}}",
            ),
            "spec.trafficPolicy.loadBalancer.consistentHash",
            "only one of MinimumRingSize or Maglev/Ringhash can be specified",
        );
    }

    #[test]
    fn rule_091_maglev_table_size() {
        passes(&tp(
            "{loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 65537}}}}",
        ));
        passes(&tp(
            "{loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 4999999}}}}",
        ));
        let path = "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize";
        fails(
            &tp("{loadBalancer: {consistentHash: {useSourceIp: true, maglev: {}}}}"),
            path,
            "tableSize must be set",
        );
        fails(
            &tp("{loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}}}"),
            path,
            "must be a prime number",
        );
        fails(
            &tp(
                "{loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 5000011}}}}",
            ),
            path,
            "must be less than 5000011",
        );
    }

    #[test]
    fn rule_092_locality_and_zone_aware_exclusive() {
        passes(&tp("{loadBalancer: {localityLbSetting: {enabled: true}}}"));
        passes(&tp(
            "{loadBalancer: {zoneAwareLbSetting: {enabled: true, minClusterSize: 3}}}",
        ));
        fails(
            &tp(
                "{loadBalancer: {localityLbSetting: {enabled: true}, zoneAwareLbSetting: {enabled: true}}}",
            ),
            "spec.trafficPolicy.loadBalancer",
            "only one of localityLbSetting and zoneAwareLbSetting can be set",
        );
    }

    #[test]
    fn rule_093_locality_lb_setting() {
        let loc = |setting: &str| {
            tp(&format!(
                "{{outlierDetection: {{consecutive5xxErrors: 5}}, loadBalancer: {{localityLbSetting: {setting}}}}}"
            ))
        };
        let base = "spec.trafficPolicy.loadBalancer.localityLbSetting";
        passes(&loc(
            "{distribute: [{from: \"us-west/zone1/*\", to: {\"us-west/zone1/*\": 80, \"us-west/zone2/*\": 20}}, {from: \"us-east/*\", to: {\"us-east\": 100}}]}",
        ));
        passes(&loc(
            "{failover: [{from: us-east, to: eu-west}], failoverPriority: [network]}",
        ));
        fails(
            &loc("{distribute: [{from: a, to: {a: 100}}], failover: [{from: a, to: b}]}"),
            base,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
        fails(
            &loc("{distribute: [{from: a, to: {a: 0, b: 100}}]}"),
            &format!("{base}.distribute[0].to[a]"),
            "locality weight must be in range [1, 100]",
        );
        fails(
            &loc("{distribute: [{from: a, to: {a: 50, b: 40}}]}"),
            &format!("{base}.distribute[0].to"),
            "total locality weight 90 != 100",
        );
        fails(
            &loc("{distribute: [{from: \"a/*/c\", to: {a: 100}}]}"),
            &format!("{base}.distribute"),
            "wildcard '*' number can not exceed 1 and must be in the end",
        );
        fails(
            &loc("{distribute: [{from: \"a//c\", to: {a: 100}}]}"),
            &format!("{base}.distribute"),
            "must not contain empty region/zone/subzone info",
        );
        fails(
            &loc("{distribute: [{from: a, to: {a: 100}}, {from: a/z1, to: {a: 100}}]}"),
            &format!("{base}.distribute"),
            "overlap with previous specified ones",
        );
        fails(
            &loc("{distribute: [{from: a, to: {\"a/*\": 50, \"a/z1\": 50}}]}"),
            &format!("{base}.distribute[0].to"),
            "overlap with previous specified ones",
        );
        fails(
            &loc("{failover: [{from: us-east, to: us-east}]}"),
            &format!("{base}.failover[0]"),
            "must specify different regions",
        );
        fails(
            &loc("{failover: [{from: us-east/z1, to: us-west}]}"),
            &format!("{base}.failover[0]"),
            "only specify region",
        );
        fails(
            &loc("{failover: [{from: \"us-*\", to: us-west}]}"),
            &format!("{base}.failover[0]"),
            "should not contain '*' wildcard",
        );
        fails(
            &loc(
                "{failover: [{from: us-east, to: us-west}], failoverPriority: [topology.kubernetes.io/zone]}",
            ),
            &format!("{base}.failoverPriority[0]"),
            "can not simultaneously set 'failover' and topology label",
        );
        warns(
            &tp("{loadBalancer: {localityLbSetting: {failover: [{from: us-east, to: us-west}]}}}"),
            base,
            "outlier detection policy must be provided for failover",
        );
    }

    #[test]
    fn rule_094_warmup() {
        passes(&tp(
            "{loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 60s, minimumPercent: 10, aggression: 1.5}}}",
        ));
        passes(&tp("{loadBalancer: {warmupDurationSecs: 60s}}"));
        let base = "spec.trafficPolicy.loadBalancer.warmup";
        fails(
            &tp("{loadBalancer: {warmup: {minimumPercent: 5}}}"),
            &format!("{base}.duration"),
            "duration is required",
        );
        fails(
            &tp("{loadBalancer: {warmup: {duration: 1s, minimumPercent: 150}}}"),
            &format!("{base}.minimumPercent"),
            "minimumPercent value should be less than or equal to 100",
        );
        fails(
            &tp("{loadBalancer: {warmup: {duration: 1s, aggression: 0}}}"),
            &format!("{base}.aggression"),
            "aggression should be greater than 0",
        );
        fails(
            &tp("{loadBalancer: {warmupDurationSecs: 1s, warmup: {duration: 1s}}}"),
            "spec.trafficPolicy.loadBalancer",
            "only one of warmupDurationSecs or warmup",
        );
    }

    #[test]
    fn rule_095_mutual_tls_needs_client_cert_and_key() {
        passes(&tp(
            "{tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}}",
        ));
        passes(&tp("{tls: {mode: MUTUAL, credentialName: client-secret}}"));
        fails(
            &tp("{tls: {mode: MUTUAL, privateKey: /k.pem}}"),
            "spec.trafficPolicy.tls.clientCertificate",
            "client certificate required for mutual tls",
        );
        fails(
            &tp("{tls: {mode: MUTUAL, clientCertificate: /c.pem}}"),
            "spec.trafficPolicy.tls.privateKey",
            "private key required for mutual tls",
        );
    }

    #[test]
    fn rule_096_credential_name_excludes_files() {
        passes(&tp(
            "{tls: {mode: SIMPLE, credentialName: ca-secret, sni: a.example.com}}",
        ));
        for field in ["clientCertificate", "caCertificates", "privateKey", "caCrl"] {
            fails(
                &tp(&format!(
                    "{{tls: {{mode: SIMPLE, credentialName: s, {field}: /f.pem}}}}"
                )),
                "spec.trafficPolicy.tls",
                "cannot specify client certificates or CA certificate or CA CRL If credentialName is set",
            );
        }
        fails(
            &tp("{tls: {mode: MUTUAL, credentialName: s, caCertificates: /ca.pem}}"),
            "spec.trafficPolicy.tls",
            "If credentialName is set",
        );
    }

    #[test]
    fn rule_097_insecure_skip_verify_conflicts() {
        passes(&tp("{tls: {mode: SIMPLE, insecureSkipVerify: true}}"));
        passes(&tp(
            "{tls: {mode: SIMPLE, insecureSkipVerify: false, caCertificates: /ca.pem}}",
        ));
        passes(&tp(
            "{tls: {mode: MUTUAL, insecureSkipVerify: true, credentialName: s}}",
        ));
        fails(
            &tp(
                "{tls: {mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [a.example.com]}}",
            ),
            "spec.trafficPolicy.tls",
            "when InsecureSkipVerify is set true",
        );
        fails(
            &tp("{tls: {mode: SIMPLE, insecureSkipVerify: true, credentialName: s}}"),
            "spec.trafficPolicy.tls",
            "CredentialName",
        );
        fails(
            &tp(
                "{tls: {mode: MUTUAL, insecureSkipVerify: true, caCertificates: /ca.pem, clientCertificate: /c.pem, privateKey: /k.pem}}",
            ),
            "spec.trafficPolicy.tls",
            "cannot specify CaCertificates or SubjectAltNames when InsecureSkipVerify is set true",
        );
    }

    #[test]
    fn rule_098_tunnel() {
        passes(&tp(
            "{tunnel: {targetHost: egress.example.com, targetPort: 443}}",
        ));
        passes(&tp(
            "{tunnel: {protocol: POST, targetHost: 10.0.0.1, targetPort: 8080}}",
        ));
        passes(&tp(
            "{tunnel: {protocol: CONNECT, targetHost: \"::1\", targetPort: 8080}}",
        ));
        fails(
            &tp("{tunnel: {protocol: GET, targetHost: example.com, targetPort: 443}}"),
            "spec.trafficPolicy.tunnel.protocol",
            "tunnel protocol must be \"CONNECT\" or \"POST\"",
        );
        fails(
            &tp("{tunnel: {targetHost: \"bad_host!\", targetPort: 443}}"),
            "spec.trafficPolicy.tunnel.targetHost",
            "tunnel target host must be valid FQDN or IP address",
        );
        fails(
            &tp("{tunnel: {targetPort: 443}}"),
            "spec.trafficPolicy.tunnel.targetHost",
            "valid FQDN or IP address",
        );
        fails(
            &tp("{tunnel: {targetHost: example.com}}"),
            "spec.trafficPolicy.tunnel.targetPort",
            "1..65535",
        );
    }

    #[test]
    fn rule_099_proxy_protocol_version() {
        passes(&tp("{proxyProtocol: {version: V1}}"));
        passes(&tp("{proxyProtocol: {}}"));
        fails(
            &tp("{proxyProtocol: {version: V3}}"),
            "spec.trafficPolicy.proxyProtocol.version",
            "Unsupported value: \"V3\"",
        );
    }

    #[test]
    fn rule_100_workload_selector_export_to_own_namespace() {
        let sel = |export: &str| {
            dr(&format!(
                "  host: reviews\n  workloadSelector: {{matchLabels: {{app: a}}}}\n  exportTo: {export}\n"
            ))
        };
        passes(&sel("[\".\"]"));
        passes(&sel("[foo]"));
        passes(&sel("[]"));
        fails(
            &sel("[bar]"),
            "spec.exportTo",
            "cannot have exportTo beyond current namespace",
        );
        fails(
            &sel("[\"*\"]"),
            "spec.exportTo",
            "cannot have exportTo beyond current namespace",
        );
        fails(
            &sel("[\".\", bar]"),
            "spec.exportTo",
            "cannot have multiple entries in exportTo",
        );
        // Without a selector, any namespace is fine.
        passes(&dr("  host: reviews\n  exportTo: [bar, baz]\n"));
    }

    #[test]
    fn shared_rules_apply_to_export_to_and_selector() {
        fails(
            &dr("  host: reviews\n  exportTo: [\"~\"]\n"),
            "spec.exportTo[0]",
            "not allowed",
        );
        fails(
            &dr("  host: reviews\n  exportTo: [\".\", foo]\n"),
            "spec.exportTo[1]",
            "duplicate",
        );
        fails(
            &dr("  host: reviews\n  exportTo: [\"*\", bar]\n"),
            "spec.exportTo",
            "public",
        );
        fails(
            &dr("  host: reviews\n  workloadSelector: {matchLabels: {app: \"*\"}}\n"),
            "spec.workloadSelector.matchLabels[app]",
            "wildcard",
        );
        warns(
            &dr("  host: reviews\n  workloadSelector: {}\n"),
            "spec.workloadSelector",
            "without labels",
        );
    }
}
