//! Resilience benches.
//!
//! * `pick/*`: one [`Balancer::pick`] among 1,000 endpoints (weight 1, no exclusion), the
//!   endpoint set and its tables already cached in the [`LbState`] (built once, by a warm-up
//!   pick): LEAST_REQUEST (power of two choices), ROUND_ROBIN, RANDOM, consistent hash on a
//!   header with a ring (`minimumRingSize` 1024) and with Maglev (`tableSize` 65537); P2C
//!   also with 10% of the endpoints ejected (rejection sampling), and with previous hosts to
//!   avoid (a retry).
//! * `build/*`: building the ring and the Maglev table of 1,000 endpoints (once per endpoint
//!   set change).
//!
//! Run: `cargo bench --bench resilience` (`-- --quick` for a short run).

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use tower_mesh::balance::{Balancer, LbState, PickContext};
use tower_mesh::config::destination_rule::{
    ConsistentHashLb, HashAlgorithm, HashKey, LbPolicy, LoadBalancerSettings, Maglev, RingHash,
    SimpleLb,
};
use tower_mesh::registry::Endpoint;

const N: usize = 1_000;

fn endpoints() -> Arc<[Endpoint]> {
    (0..N)
        .map(|i| {
            Endpoint::new(SocketAddr::from((
                [10, (i / 250) as u8, (i % 250) as u8, 1],
                8080,
            )))
        })
        .collect()
}

fn lb(policy: LbPolicy) -> LoadBalancerSettings {
    LoadBalancerSettings {
        lb_policy: Some(policy),
        ..Default::default()
    }
}

fn hashed(algo: HashAlgorithm) -> LoadBalancerSettings {
    lb(LbPolicy::ConsistentHash(ConsistentHashLb {
        hash_key: Some(HashKey::HttpHeaderName("x-user".into())),
        hash_algorithm: Some(algo),
        minimum_ring_size: 0,
    }))
}

fn pick(c: &mut Criterion) {
    let eps = endpoints();
    let now = Instant::now();
    let mut headers = http::HeaderMap::new();
    headers.insert("x-user", "user-12345".parse().expect("header value"));
    let cases = [
        ("p2c", lb(LbPolicy::Simple(SimpleLb::LeastRequest))),
        ("round_robin", lb(LbPolicy::Simple(SimpleLb::RoundRobin))),
        ("random", lb(LbPolicy::Simple(SimpleLb::Random))),
        (
            "ring_hash",
            hashed(HashAlgorithm::RingHash(RingHash {
                minimum_ring_size: 1024,
            })),
        ),
        (
            "maglev",
            hashed(HashAlgorithm::Maglev(Maglev { table_size: 65537 })),
        ),
    ];
    let mut g = c.benchmark_group("pick");
    for (name, settings) in &cases {
        let b = Balancer::new(Some(settings));
        let state = LbState::with_seed(1);
        let ctx = PickContext::new(now).headers(&headers);
        let _ = b.pick(&state, &eps, &ctx);
        g.bench_function(format!("{name}/1000"), |bench| {
            bench.iter(|| black_box(b.pick(&state, black_box(&eps), black_box(&ctx))))
        });
    }
    let b = Balancer::default();
    let state = LbState::with_seed(1);
    let ejected =
        |a: &SocketAddr| matches!(a.ip(), std::net::IpAddr::V4(v4) if v4.octets()[2] % 10 == 0);
    let ctx = PickContext::new(now).ejected(&ejected, false);
    let _ = b.pick(&state, &eps, &ctx);
    g.bench_function("p2c/1000_10pct_ejected", |bench| {
        bench.iter(|| black_box(b.pick(&state, black_box(&eps), black_box(&ctx))))
    });
    let tried = [eps[3].addr, eps[500].addr];
    let avoid = move |a: &SocketAddr| tried.contains(a);
    let ctx = PickContext::new(now).avoid(&avoid);
    g.bench_function("p2c/1000_retry_avoiding_2", |bench| {
        bench.iter(|| black_box(b.pick(&state, black_box(&eps), black_box(&ctx))))
    });
    g.finish();

    let mut g = c.benchmark_group("build");
    g.sample_size(20);
    for (name, settings) in &cases[3..] {
        let b = Balancer::new(Some(settings));
        let ctx = PickContext::new(now).headers(&headers);
        g.bench_function(format!("{name}/1000"), |bench| {
            bench.iter(|| {
                // A fresh state: the first pick builds the table.
                let state = LbState::with_seed(1);
                black_box(b.pick(&state, &eps, &ctx))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
