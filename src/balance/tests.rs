//! Tests of the balancer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::config::destination_rule::{
    ConsistentHashLb, HashAlgorithm, HashKey, HttpCookie, LbPolicy, LoadBalancerSettings,
    LocalityDistribute, LocalityFailover, LocalityLoadBalancerSetting, Maglev, OutlierDetection,
    RingHash, SimpleLb, WarmupConfiguration,
};
use crate::config::{Loader, Spec};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn eps(weights: &[u32]) -> Arc<[Endpoint]> {
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| Endpoint::new(addr(1000 + i as u16)).with_weight(*w))
        .collect()
}

fn simple(s: SimpleLb) -> LoadBalancerSettings {
    LoadBalancerSettings {
        lb_policy: Some(LbPolicy::Simple(s)),
        ..Default::default()
    }
}

fn hashed(key: HashKey, algo: Option<HashAlgorithm>) -> LoadBalancerSettings {
    LoadBalancerSettings {
        lb_policy: Some(LbPolicy::ConsistentHash(ConsistentHashLb {
            hash_key: Some(key),
            hash_algorithm: algo,
            minimum_ring_size: 0,
        })),
        ..Default::default()
    }
}

fn ring() -> Option<HashAlgorithm> {
    Some(HashAlgorithm::RingHash(RingHash {
        minimum_ring_size: 0,
    }))
}

fn maglev() -> Option<HashAlgorithm> {
    Some(HashAlgorithm::Maglev(Maglev { table_size: 0 }))
}

fn idx(p: &Pick) -> usize {
    p.index().unwrap_or(usize::MAX)
}

/// Counts per endpoint index over `n` picks with an empty context.
fn counts(b: &Balancer, st: &LbState, e: &Arc<[Endpoint]>, n: usize, now: Instant) -> Vec<usize> {
    let mut c = vec![0; e.len()];
    for _ in 0..n {
        let i = idx(&b.pick(st, e, &PickContext::new(now)));
        assert!(i < e.len(), "a pick among a non-empty set");
        c[i] += 1;
    }
    c
}

fn share_near(count: usize, total: usize, want: f64, tol: f64) -> bool {
    let got = count as f64 / total as f64;
    (got - want).abs() <= tol
}

#[test]
fn defaults_are_least_request_and_table_sizes() {
    assert_eq!(Balancer::new(None).algorithm(), &Algorithm::LeastRequest);
    for s in [
        SimpleLb::Unspecified,
        SimpleLb::LeastConn,
        SimpleLb::LeastRequest,
    ] {
        assert_eq!(
            Balancer::new(Some(&simple(s))).algorithm(),
            &Algorithm::LeastRequest
        );
    }
    let b = Balancer::new(Some(&hashed(HashKey::HttpHeaderName("x".into()), None)));
    assert!(b.is_consistent_hash());
    assert_eq!(b.key.table, Some(TableSpec::Ring(DEFAULT_MIN_RING_SIZE)));
    let b = Balancer::new(Some(&hashed(HashKey::HttpHeaderName("x".into()), maglev())));
    assert_eq!(b.key.table, Some(TableSpec::Maglev(65537)));
    // The deprecated top-level minimumRingSize.
    let mut lb = hashed(HashKey::HttpHeaderName("x".into()), None);
    if let Some(LbPolicy::ConsistentHash(c)) = &mut lb.lb_policy {
        c.minimum_ring_size = 4096;
    }
    assert_eq!(
        Balancer::new(Some(&lb)).key.table,
        Some(TableSpec::Ring(4096))
    );
}

#[test]
fn balancer_from_parsed_destination_rule() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: r}
spec:
  host: my-app
  trafficPolicy:
    loadBalancer:
      consistentHash:
        httpCookie: {name: user, path: /, ttl: 60s}
        maglev: {tableSize: 1009}
"#;
    let set = Loader::new().load_str(yaml);
    let Some(Spec::DestinationRule(dr)) = set.resources.first().map(|r| &r.spec) else {
        panic!("a DestinationRule: {:?}", set.problems);
    };
    let policy = ClusterPolicy::resolve(dr.traffic_policy.as_ref().expect("policy"), None);
    let b = Balancer::for_policy(&policy, None);
    let Algorithm::ConsistentHash(h) = b.algorithm() else {
        panic!("consistent hash, got {:?}", b.algorithm());
    };
    assert!(h.is_maglev());
    assert_eq!(b.key.table, Some(TableSpec::Maglev(1009)));
    let st = LbState::with_seed(1);
    let e = eps(&[1, 1, 1]);
    let p = b.pick(&st, &e, &PickContext::new(Instant::now()));
    let Pick::Endpoint {
        set_cookie: Some(c),
        ..
    } = p
    else {
        panic!("a generated cookie, got {p:?}");
    };
    assert_eq!(
        c.header.to_str().expect("ascii"),
        format!("user=\"{}\"; Max-Age=60; Path=/; HttpOnly", c.value)
    );
}

#[test]
fn passthrough_and_empty() {
    let st = LbState::with_seed(1);
    let now = Instant::now();
    let b = Balancer::new(Some(&simple(SimpleLb::Passthrough)));
    assert_eq!(
        b.pick(&st, &eps(&[1]), &PickContext::new(now)),
        Pick::Passthrough
    );
    for s in [
        SimpleLb::RoundRobin,
        SimpleLb::Random,
        SimpleLb::LeastRequest,
    ] {
        let b = Balancer::new(Some(&simple(s)));
        assert_eq!(b.pick(&st, &eps(&[]), &PickContext::new(now)), Pick::None);
    }
}

#[test]
fn round_robin_exact_order() {
    let now = Instant::now();
    let b = Balancer::new(Some(&simple(SimpleLb::RoundRobin)));
    let st = LbState::with_seed(1);
    let e = eps(&[1, 1, 1]);
    let order: Vec<usize> = (0..7)
        .map(|_| idx(&b.pick(&st, &e, &PickContext::new(now))))
        .collect();
    assert_eq!(order, [0, 1, 2, 0, 1, 2, 0]);

    // Weights 1, 2, 1: EDF deadlines 1; 1/2, 1; 1 → B, A, B, C, repeated.
    let st = LbState::with_seed(1);
    let e = eps(&[1, 2, 1]);
    let order: Vec<usize> = (0..8)
        .map(|_| idx(&b.pick(&st, &e, &PickContext::new(now))))
        .collect();
    assert_eq!(order, [1, 0, 1, 2, 1, 0, 1, 2]);

    // Weights 3, 1: A three times per cycle, interleaved.
    let st = LbState::with_seed(1);
    let e = eps(&[3, 1]);
    let c = counts(&b, &st, &e, 400, now);
    assert_eq!(c, [300, 100]);
}

#[test]
fn round_robin_large_weights_still_weighted() {
    let now = Instant::now();
    let b = Balancer::new(Some(&simple(SimpleLb::RoundRobin)));
    let st = LbState::with_seed(1);
    let e = eps(&[100_000, 300_000]);
    let c = counts(&b, &st, &e, 4000, now);
    assert!(share_near(c[1], 4000, 0.75, 0.02), "{c:?}");
}

#[test]
fn random_is_weighted() {
    let now = Instant::now();
    let b = Balancer::new(Some(&simple(SimpleLb::Random)));
    let st = LbState::with_seed(42);
    let e = eps(&[1, 2, 3, 4]);
    let n = 40_000;
    let c = counts(&b, &st, &e, n, now);
    for (i, w) in [1.0, 2.0, 3.0, 4.0].iter().enumerate() {
        assert!(share_near(c[i], n, w / 10.0, 0.02), "{c:?}");
    }
    // Equal weights: uniform.
    let e = eps(&[1, 1, 1, 1]);
    let c = counts(&b, &st, &e, n, now);
    assert!(c.iter().all(|x| share_near(*x, n, 0.25, 0.02)), "{c:?}");
}

#[test]
fn least_request_is_weighted_when_idle_and_prefers_the_less_loaded() {
    let now = Instant::now();
    let b = Balancer::new(None);
    let st = LbState::with_seed(7);
    let e = eps(&[1, 3]);
    let n = 20_000;
    let c = counts(&b, &st, &e, n, now);
    assert!(
        share_near(c[1], n, 0.75, 0.03),
        "idle: weights decide {c:?}"
    );

    let st = LbState::with_seed(7);
    let e = eps(&[1, 1, 1]);
    // Learn the set, then load endpoint 0 with ten requests in flight.
    let _ = b.pick(&st, &e, &PickContext::new(now));
    let guards: Vec<_> = (0..10).map(|_| st.start(e[0].addr)).collect();
    assert_eq!(st.in_flight(e[0].addr), 10);
    let n = 9_000;
    let c = counts(&b, &st, &e, n, now);
    // Endpoint 0 wins only when both choices are it: 1/9.
    assert!(share_near(c[0], n, 1.0 / 9.0, 0.03), "{c:?}");
    assert!(c[1] > 3 * c[0] && c[2] > 3 * c[0], "{c:?}");
    drop(guards);
    assert_eq!(st.in_flight(e[0].addr), 0);
}

#[test]
fn in_flight_guards_count_and_survive_set_changes() {
    let now = Instant::now();
    let b = Balancer::new(None);
    let st = LbState::with_seed(1);
    let e = eps(&[1, 1]);
    let g0 = st.start(e[0].addr);
    assert_eq!(
        st.in_flight(e[0].addr),
        0,
        "unknown set: the guard counts nothing"
    );
    drop(g0);
    let _ = b.pick(&st, &e, &PickContext::new(now));
    let g = st.start(e[1].addr);
    assert_eq!(st.in_flight(e[1].addr), 1);
    // A new endpoint set that keeps the address keeps its counter.
    let e2: Arc<[Endpoint]> = vec![e[1].clone(), Endpoint::new(addr(9))].into();
    let _ = b.pick(&st, &e2, &PickContext::new(now));
    assert_eq!(st.in_flight(e[1].addr), 1);
    drop(g);
    assert_eq!(st.in_flight(e[1].addr), 0);
    assert_eq!(st.in_flight(addr(4242)), 0);
}

#[test]
fn exclusion_ejected_avoided_and_panic() {
    let now = Instant::now();
    let e = eps(&[1, 1, 1, 1]);
    let hk = HashKey::HttpHeaderName("x-user".into());
    let balancers = [
        Balancer::new(Some(&simple(SimpleLb::RoundRobin))),
        Balancer::new(Some(&simple(SimpleLb::Random))),
        Balancer::new(None),
        Balancer::new(Some(&hashed(hk.clone(), ring()))),
        Balancer::new(Some(&hashed(hk, maglev()))),
    ];
    let dead = e[1].addr;
    let ejected = move |a: &SocketAddr| *a == dead;
    let tried = e[2].addr;
    let avoid = move |a: &SocketAddr| *a == tried;
    let all = |_: &SocketAddr| true;
    for b in &balancers {
        let st = LbState::with_seed(3);
        for k in 0..400 {
            let mut headers = http::HeaderMap::new();
            headers.insert("x-user", k.to_string().parse().expect("value"));
            let ctx = PickContext::new(now)
                .headers(&headers)
                .ejected(&ejected, false)
                .avoid(&avoid);
            let i = idx(&b.pick(&st, &e, &ctx));
            assert!(i == 0 || i == 3, "{:?} picked {i}", b.algorithm());
        }
        // Everything ejected: nothing, unless panic mode.
        let ctx = PickContext::new(now).ejected(&all, false);
        assert_eq!(b.pick(&st, &e, &ctx), Pick::None);
        let ctx = PickContext::new(now).ejected(&all, true);
        assert!(b.pick(&st, &e, &ctx).index().is_some());
        // Everything avoided: one is picked anyway.
        let ctx = PickContext::new(now).avoid(&all);
        assert!(b.pick(&st, &e, &ctx).index().is_some());
        // Only the avoided one is healthy: it is picked.
        let not_tried = move |a: &SocketAddr| *a != tried;
        let ctx = PickContext::new(now)
            .avoid(&avoid)
            .ejected(&not_tried, false);
        assert_eq!(idx(&b.pick(&st, &e, &ctx)), 2);
    }
}

/// Which address each of `keys` header values reaches.
fn placements(b: &Balancer, e: &Arc<[Endpoint]>, keys: usize) -> Vec<SocketAddr> {
    let st = LbState::with_seed(5);
    (0..keys)
        .map(|k| {
            let mut headers = http::HeaderMap::new();
            headers.insert("x-user", format!("user-{k}").parse().expect("value"));
            let ctx = PickContext::new(Instant::now()).headers(&headers);
            e[idx(&b.pick(&st, e, &ctx))].addr
        })
        .collect()
}

#[test]
fn consistent_hash_is_stable_and_minimally_disruptive() {
    let hk = HashKey::HttpHeaderName("x-user".into());
    let n = 10usize;
    let keys = 10_000;
    let full = eps(&vec![1; n]);
    let fewer: Arc<[Endpoint]> = full
        .iter()
        .filter(|e| e.addr != addr(1003))
        .cloned()
        .collect();
    for (algo, max_moved) in [(ring(), 0.13), (maglev(), 0.16)] {
        let b = Balancer::new(Some(&hashed(hk.clone(), algo.clone())));
        let before = placements(&b, &full, keys);
        assert_eq!(
            before,
            placements(&b, &full, keys),
            "same key, same endpoint"
        );
        // Spread: every endpoint gets some share (1/10 ± generous).
        let mut per: HashMap<SocketAddr, usize> = HashMap::new();
        for a in &before {
            *per.entry(*a).or_default() += 1;
        }
        assert_eq!(per.len(), n);
        assert!(per.values().all(|c| *c > keys / n / 3), "{algo:?}: {per:?}");
        let after = placements(&b, &fewer, keys);
        let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count();
        let share = moved as f64 / keys as f64;
        assert!(
            share >= 0.05 && share <= max_moved,
            "{algo:?}: {share} of keys moved removing 1 of {n}"
        );
        // Keys of the removed endpoint all moved; under a ring nothing else did.
        let lost = before.iter().filter(|a| **a == addr(1003)).count();
        if matches!(algo, Some(HashAlgorithm::RingHash(_))) {
            assert_eq!(moved, lost);
        }
    }
}

#[test]
fn consistent_hash_honours_weights() {
    let hk = HashKey::HttpHeaderName("x-user".into());
    let e = eps(&[1, 3]);
    for algo in [ring(), maglev()] {
        let b = Balancer::new(Some(&hashed(hk.clone(), algo.clone())));
        let p = placements(&b, &e, 10_000);
        let heavy = p.iter().filter(|a| **a == e[1].addr).count();
        assert!(share_near(heavy, 10_000, 0.75, 0.08), "{algo:?}: {heavy}");
    }
}

#[test]
fn hash_keys_query_source_ip_and_missing_key() {
    let now = Instant::now();
    let e = eps(&[1; 16]);
    let st = LbState::with_seed(9);
    let b = Balancer::new(Some(&hashed(
        HashKey::HttpQueryParameterName("u".into()),
        None,
    )));
    let q = |s: &'static str| idx(&b.pick(&st, &e, &PickContext::new(now).query(s)));
    let first = q("a=1&u=alice");
    for _ in 0..20 {
        assert_eq!(q("u=alice&b=2"), first);
    }
    let distinct: std::collections::HashSet<usize> =
        ["u=a", "u=b", "u=c", "u=d", "u=e", "u=f", "u=g", "u=h"]
            .iter()
            .map(|s| q(s))
            .collect();
    assert!(distinct.len() > 2, "different keys spread: {distinct:?}");
    // No key: random, so several endpoints are reached.
    let none: std::collections::HashSet<usize> = (0..50).map(|_| q("x=1")).collect();
    assert!(none.len() > 4);

    let b = Balancer::new(Some(&hashed(HashKey::UseSourceIp(true), maglev())));
    let ip: IpAddr = "10.1.2.3".parse().expect("ip");
    let pick = || idx(&b.pick(&st, &e, &PickContext::new(now).source_ip(Some(ip))));
    let first = pick();
    assert!((0..20).all(|_| pick() == first));
}

#[test]
fn cookie_generated_when_absent_with_ttl_then_honoured() {
    let now = Instant::now();
    let e = eps(&[1; 16]);
    let st = LbState::with_seed(11);
    let cookie = |ttl: Option<Duration>| {
        HashKey::HttpCookie(HttpCookie {
            name: "sticky".into(),
            path: String::new(),
            ttl,
            attributes: vec![],
        })
    };
    let b = Balancer::new(Some(&hashed(cookie(Some(Duration::ZERO)), None)));
    let p = b.pick(&st, &e, &PickContext::new(now));
    let Pick::Endpoint {
        index,
        set_cookie: Some(c),
    } = p
    else {
        panic!("a generated cookie, got {p:?}");
    };
    assert_eq!(c.value.len(), 16);
    // ttl 0: a session cookie (no Max-Age).
    assert_eq!(
        c.header.to_str().expect("ascii"),
        format!("sticky=\"{}\"; HttpOnly", c.value)
    );
    // The next request carries it (quoted, among other cookies): same endpoint, no new cookie.
    for form in [
        format!("a=b; sticky=\"{}\"", c.value),
        format!("sticky={}", c.value),
    ] {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::COOKIE, form.parse().expect("value"));
        let ctx = PickContext::new(now).headers(&headers);
        assert_eq!(
            b.pick(&st, &e, &ctx),
            Pick::Endpoint {
                index,
                set_cookie: None
            }
        );
    }
    // No ttl: no cookie generated, no affinity.
    let b = Balancer::new(Some(&hashed(cookie(None), None)));
    let p = b.pick(&st, &e, &PickContext::new(now));
    assert!(
        matches!(
            p,
            Pick::Endpoint {
                set_cookie: None,
                ..
            }
        ),
        "{p:?}"
    );
}

#[test]
fn warmup_ramps_new_endpoints() {
    let t0 = Instant::now();
    let mut lb = simple(SimpleLb::RoundRobin);
    lb.warmup = Some(WarmupConfiguration {
        duration: Some(Duration::from_secs(10)),
        minimum_percent: None,
        aggression: None,
    });
    let b = Balancer::new(Some(&lb));
    let st = LbState::with_seed(1);
    let first = eps(&[1, 1]);
    // The first set the state sees is established: equal shares at once.
    let c = counts(&b, &st, &first, 1000, t0);
    assert_eq!(c, [500, 500]);
    // A third endpoint joins at t0.
    let grown = eps(&[1, 1, 1]);
    let _ = b.pick(&st, &grown, &PickContext::new(t0));
    let n = 21_000;
    // 1 s in: factor max(0.1, 1/10) = 0.1 → 0.1 / 2.1.
    let c = counts(&b, &st, &grown, n, t0 + Duration::from_secs(1));
    assert!(share_near(c[2], n, 0.1 / 2.1, 0.01), "{c:?}");
    // 5 s in: 0.5 / 2.5.
    let c = counts(&b, &st, &grown, n, t0 + Duration::from_secs(5));
    assert!(share_near(c[2], n, 0.2, 0.01), "{c:?}");
    // After the window: a full share, in exact round-robin order again.
    let c = counts(&b, &st, &grown, 3000, t0 + Duration::from_secs(11));
    assert_eq!(c, [1000, 1000, 1000]);

    // Aggression and minimumPercent (Envoy: max(min, t^(1/aggression))).
    let w = Warmup {
        window: Duration::from_secs(10),
        min: 0.3,
        aggression: 2.0,
    };
    assert!((w.factor(Some(t0), t0 + Duration::from_secs(1)) - 0.316).abs() < 0.01);
    assert!((w.factor(Some(t0), t0) - 0.3).abs() < 1e-9);
    assert_eq!(w.factor(None, t0), 1.0);
    // Warmup is ignored by RANDOM and consistent hash (Istio: RR and LEAST_REQUEST only).
    let mut lb = simple(SimpleLb::Random);
    lb.warmup_duration_secs = Some(Duration::from_secs(10));
    assert_eq!(Balancer::new(Some(&lb)).warmup, None);
}

fn located(locs: &[&str]) -> Arc<[Endpoint]> {
    locs.iter()
        .enumerate()
        .map(|(i, l)| Endpoint::new(addr(2000 + i as u16)).with_locality(l))
        .collect()
}

fn with_locality(setting: Option<LocalityLoadBalancerSetting>, outlier: bool) -> ClusterPolicy {
    ClusterPolicy {
        load_balancer: Some(LoadBalancerSettings {
            lb_policy: Some(LbPolicy::Simple(SimpleLb::Random)),
            locality_lb_setting: setting,
            ..Default::default()
        }),
        outlier_detection: outlier.then(OutlierDetection::default),
        ..Default::default()
    }
}

fn counts_ejecting(b: &Balancer, e: &Arc<[Endpoint]>, down: &[usize], n: usize) -> Vec<usize> {
    let st = LbState::with_seed(21);
    let down: Vec<SocketAddr> = down.iter().map(|i| e[*i].addr).collect();
    let ejected = move |a: &SocketAddr| down.contains(a);
    let mut c = vec![0; e.len()];
    for _ in 0..n {
        let ctx = PickContext::new(Instant::now()).ejected(&ejected, false);
        c[idx(&b.pick(&st, e, &ctx))] += 1;
    }
    c
}

#[test]
fn locality_failover_priorities() {
    let e = located(&["r1/z1/s1", "r1/z1/s1", "r1/z2/s1", "r2/z1/s1", "r3/z1/s1"]);
    let local = Some("r1/z1/s1");
    // Without outlier detection Istio applies no failover: everything is one pool.
    let b = Balancer::for_policy(&with_locality(None, false), local);
    let c = counts_ejecting(&b, &e, &[], 5000);
    assert!(c.iter().all(|x| *x > 700), "{c:?}");
    // With it (mesh default enabled), the local subzone takes everything.
    let b = Balancer::for_policy(&with_locality(None, true), local);
    let c = counts_ejecting(&b, &e, &[], 2000);
    assert_eq!(c[2] + c[3] + c[4], 0, "{c:?}");
    // One of two local endpoints ejected: 1.4 × 50% = 70% stays, 30% spills to the zone.
    let c = counts_ejecting(&b, &e, &[0], 10_000);
    assert!(share_near(c[1], 10_000, 0.70, 0.03), "{c:?}");
    assert!(share_near(c[2], 10_000, 0.30, 0.03), "{c:?}");
    // Subzone and zone down: the other regions share the traffic.
    let c = counts_ejecting(&b, &e, &[0, 1, 2], 2000);
    assert!(c[3] > 0 && c[4] > 0, "{c:?}");
    // failover r1 → r3: r3 comes before r2.
    let setting = LocalityLoadBalancerSetting {
        failover: vec![LocalityFailover {
            from: "r1".into(),
            to: "r3".into(),
        }],
        ..Default::default()
    };
    let b = Balancer::for_policy(&with_locality(Some(setting.clone()), true), local);
    let c = counts_ejecting(&b, &e, &[0, 1, 2], 2000);
    assert_eq!(c, [0, 0, 0, 0, 2000]);
    // Everything ejected: no healthy upstream.
    let st = LbState::with_seed(1);
    let all = |_: &SocketAddr| true;
    let ctx = PickContext::new(Instant::now()).ejected(&all, false);
    assert_eq!(b.pick(&st, &e, &ctx), Pick::None);
    // enabled: false turns it off; an unknown local locality too.
    let off = LocalityLoadBalancerSetting {
        enabled: Some(false),
        ..setting
    };
    let b = Balancer::for_policy(&with_locality(Some(off), true), local);
    assert!(counts_ejecting(&b, &e, &[], 5000).iter().all(|x| *x > 700));
    let b = Balancer::for_policy(&with_locality(None, true), None);
    assert!(counts_ejecting(&b, &e, &[], 5000).iter().all(|x| *x > 700));
}

#[test]
fn locality_distribute_weights() {
    // Two endpoints in z1 (one of weight 3), one in z2, one in r2 (not a `to`: no traffic).
    let e: Arc<[Endpoint]> = vec![
        Endpoint::new(addr(1)).with_locality("r1/z1/a"),
        Endpoint::new(addr(2))
            .with_locality("r1/z1/b")
            .with_weight(3),
        Endpoint::new(addr(3)).with_locality("r1/z2/a"),
        Endpoint::new(addr(4)).with_locality("r2/z1/a"),
    ]
    .into();
    let setting = LocalityLoadBalancerSetting {
        distribute: vec![
            LocalityDistribute {
                from: "r9/*".into(),
                to: [("r2/*".to_owned(), 100)].into(),
            },
            LocalityDistribute {
                from: "r1/z1/*".into(),
                to: [("r1/z1/*".to_owned(), 80), ("r1/z2/*".to_owned(), 20)].into(),
            },
        ],
        ..Default::default()
    };
    // Distribute needs no outlier detection.
    let b = Balancer::for_policy(&with_locality(Some(setting), false), Some("r1/z1/a"));
    let n = 20_000;
    let c = counts_ejecting(&b, &e, &[], n);
    assert!(share_near(c[0], n, 0.20, 0.02), "{c:?}");
    assert!(share_near(c[1], n, 0.60, 0.02), "{c:?}");
    assert!(share_near(c[2], n, 0.20, 0.02), "{c:?}");
    assert_eq!(c[3], 0, "{c:?}");
}

#[test]
fn table_sizes() {
    let e = eps(&[1, 2, 1]);
    let r = super::hash::Ring::build(&e, 1024);
    // 4 units of weight, 256 entries each.
    assert_eq!(r.len(), 1024);
    let r = super::hash::Ring::build(&eps(&[1; 10]), 1024);
    assert_eq!(r.len(), 1280, "128 per endpoint: at least the minimum");
    let m = super::hash::Maglev::build(&e, 1009);
    assert_eq!(m.len(), 1009);
    // Maglev slots follow weights closely.
    let heavy = (0..1009u64)
        .filter(|h| m.find(*h, |_| true) == Some(1))
        .count();
    assert!((heavy as f64 / 1009.0 - 0.5).abs() < 0.03, "{heavy}");
    assert_eq!(super::hash::Ring::build(&[], 1024).find(1, |_| true), None);
    assert_eq!(super::hash::Maglev::build(&[], 7).find(1, |_| true), None);
}

#[test]
fn retry_remote_localities_moves_a_retry_to_the_next_locality() {
    // Two local endpoints and two in another region; failover on (outlier detection set).
    let e = located(&["r1/z1/s1", "r1/z1/s1", "r2/z1/s1", "r2/z1/s1"]);
    let b = Balancer::for_policy(&with_locality(None, true), Some("r1/z1/s1"));
    let st = LbState::with_seed(5);
    let first_try = e[0].addr;
    let tried = move |a: &SocketAddr| *a == first_try;
    for _ in 0..200 {
        // Without retryRemoteLocalities a retry stays local (previous-host avoidance picks
        // the other local endpoint).
        let ctx = PickContext::new(Instant::now()).avoid(&tried);
        assert_eq!(idx(&b.pick(&st, &e, &ctx)), 1);
        // With it, the local level the first try went to sits out: the retry goes remote.
        let ctx = PickContext::new(Instant::now())
            .avoid(&tried)
            .tried_remote(&tried);
        assert!(idx(&b.pick(&st, &e, &ctx)) >= 2);
    }
    // When every level was tried, all levels count again (no Pick::None).
    let all = |_: &SocketAddr| true;
    let ctx = PickContext::new(Instant::now()).tried_remote(&all);
    assert!(matches!(b.pick(&st, &e, &ctx), Pick::Endpoint { .. }));
}

#[test]
fn latency_ewma_follows_guard_lifetimes_and_survives_set_changes() {
    let now = Instant::now();
    let b = Balancer::new(None);
    let st = LbState::with_seed(1);
    let e = eps(&[1, 1]);
    let _ = b.pick(&st, &e, &PickContext::new(now));
    assert_eq!(st.latency_ewma(e[0].addr), None, "no sample yet");
    let g = st.start(e[0].addr);
    std::thread::sleep(std::time::Duration::from_millis(20));
    drop(g);
    let Some(first) = st.latency_ewma(e[0].addr) else {
        panic!("no estimate after a response")
    };
    assert!(first >= std::time::Duration::from_millis(20), "{first:?}");
    // A fast response moves the average by 1/8 of the difference, not all the way.
    drop(st.start(e[0].addr));
    let Some(second) = st.latency_ewma(e[0].addr) else {
        panic!("estimate lost")
    };
    assert!(
        second < first && second > first / 2,
        "{first:?} → {second:?}"
    );
    // The other endpoint has none; a new set keeping the address keeps the estimate.
    assert_eq!(st.latency_ewma(e[1].addr), None);
    let e2: Arc<[Endpoint]> = vec![Endpoint::new(addr(9)), e[0].clone()].into();
    let _ = b.pick(&st, &e2, &PickContext::new(now));
    assert_eq!(st.latency_ewma(e[0].addr), Some(second));
}

/// A pick with nothing to exclude (no `avoid`, no `ejected`, or panic mode) skips asking
/// about each endpoint: the same endpoints, in the same order, as with callbacks that let
/// every endpoint through, for every algorithm and with one endpoint or several.
#[test]
fn picks_without_exclusions_match_picks_with_callbacks_that_exclude_nothing() {
    let now = Instant::now();
    let none = |_: &SocketAddr| false;
    for s in [
        SimpleLb::RoundRobin,
        SimpleLb::Random,
        SimpleLb::LeastRequest,
    ] {
        let b = Balancer::new(Some(&simple(s)));
        for weights in [&[1][..], &[1, 1][..], &[1, 2, 3][..]] {
            let e = eps(weights);
            let (open, asking) = (LbState::with_seed(9), LbState::with_seed(9));
            // Some load, so that least request compares (after a first pick: the states
            // know the set).
            let first = PickContext::new(now);
            assert_eq!(b.pick(&open, &e, &first), b.pick(&asking, &e, &first));
            let _held = open.start(e[0].addr);
            let _held2 = asking.start(e[0].addr);
            for k in 0..200 {
                let plain = PickContext::new(now);
                let with = PickContext::new(now)
                    .avoid(&none)
                    .ejected(&none, k % 2 == 0);
                let (p, _g) = b.pick_started(&open, &e, &plain);
                let (q, _h) = b.pick_started(&asking, &e, &with);
                assert_eq!(p, q, "{s:?} {weights:?} pick {k}");
            }
        }
    }
}

/// `pick_started` marks the request in flight to the endpoint it picked, until the guard
/// is dropped; no pick, no guard.
#[test]
fn pick_started_counts_the_picked_endpoint_in_flight() {
    let now = Instant::now();
    let b = Balancer::new(Some(&simple(SimpleLb::RoundRobin)));
    let st = LbState::with_seed(1);
    let e = eps(&[1, 1]);
    let (p, guard) = b.pick_started(&st, &e, &PickContext::new(now));
    let i = idx(&p);
    assert_eq!(st.in_flight(e[i].addr), 1);
    assert_eq!(st.in_flight(e[1 - i].addr), 0);
    drop(guard);
    assert_eq!(st.in_flight(e[i].addr), 0);
    assert!(st.latency_ewma(e[i].addr).is_some());
    let all = |_: &SocketAddr| true;
    let (p, guard) = b.pick_started(&st, &e, &PickContext::new(now).ejected(&all, false));
    assert_eq!(p, Pick::None);
    assert!(guard.is_none());
}
