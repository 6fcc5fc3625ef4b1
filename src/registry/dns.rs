//! `resolution: DNS` / `DNS_ROUND_ROBIN`: resolving endpoint names, and re-resolving them.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::endpoint::Endpoint;
use super::service::{ConfigEndpoint, EndpointAddress, ServicePort};
use super::store::Entry;

/// The future a [`Resolve`] returns.
pub type ResolveFuture = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'static>>;

/// How the registry turns a host name into IP addresses, for ServiceEntries with
/// `resolution: DNS` or `DNS_ROUND_ROBIN`. The default is [`SystemResolver`]; a custom one
/// (a caching resolver, a test double) is set with
/// [`EndpointRegistry::with_resolver`](super::EndpointRegistry::with_resolver).
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `name`, in the order the resolver gives them (`DNS_ROUND_ROBIN` uses
    /// the first). An error or an empty answer keeps the addresses resolved before.
    fn resolve(&self, name: &str) -> ResolveFuture;
}

/// The system resolver, through `tokio::net::lookup_host` (getaddrinfo on a blocking
/// thread: `/etc/hosts`, then DNS).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: &str) -> ResolveFuture {
        let name = name.to_owned();
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((name.as_str(), 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// What a DNS service's resolver task does; compared across config reloads so an unchanged
/// service keeps its running resolver (and its addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DnsPlan {
    /// `DNS_ROUND_ROBIN`: the first address of each name only.
    pub(crate) first_only: bool,
    /// The endpoints to resolve (an IP address stands for itself).
    pub(crate) endpoints: Vec<ConfigEndpoint>,
    /// The service ports, each a registry key with the service host.
    pub(crate) ports: Vec<ServicePort>,
}

/// The resolver loop of one DNS service: resolve every endpoint name, publish the endpoints
/// of each port, sleep `refresh`, again. Runs until aborted (by a config change that changes
/// the plan, or the registry being dropped). It writes as task `id`: once a reload gives its
/// keys to someone else, its writes are ignored.
pub(crate) async fn resolve_loop(
    host: Arc<str>,
    id: u64,
    plan: DnsPlan,
    entries: Vec<Arc<Entry>>,
    resolver: Arc<dyn Resolve>,
    refresh: Arc<AtomicU64>,
) {
    let mut last: Vec<Vec<IpAddr>> = vec![Vec::new(); plan.endpoints.len()];
    loop {
        for (ep, ips) in plan.endpoints.iter().zip(last.iter_mut()) {
            match &ep.address {
                EndpointAddress::Ip(ip) => *ips = vec![*ip],
                EndpointAddress::Dns(name) => match resolver.resolve(name).await {
                    Ok(mut found) if !found.is_empty() => {
                        dedup_in_order(&mut found);
                        if plan.first_only {
                            found.truncate(1);
                        }
                        *ips = found;
                    }
                    Ok(_) => tracing::warn!(
                        service = %host, name = %name,
                        "DNS resolution returned no address; keeping the last addresses"
                    ),
                    Err(error) => tracing::warn!(
                        service = %host, name = %name, %error,
                        "DNS resolution failed; keeping the last addresses"
                    ),
                },
            }
        }
        for (port, entry) in plan.ports.iter().zip(&entries) {
            let endpoints: Vec<Endpoint> = plan
                .endpoints
                .iter()
                .zip(&last)
                .flat_map(|(ep, ips)| ips.iter().map(move |ip| ep.endpoint(*ip, port)))
                .collect();
            entry.update(|s| s.set_config_from(id, endpoints));
        }
        tokio::time::sleep(refresh_interval(&refresh)).await;
    }
}

/// The refresh interval, at least 1 ms (so a zero interval cannot spin).
fn refresh_interval(refresh: &AtomicU64) -> Duration {
    Duration::from_millis(refresh.load(Ordering::Relaxed).max(1))
}

fn dedup_in_order(ips: &mut Vec<IpAddr>) {
    let mut seen = Vec::with_capacity(ips.len());
    ips.retain(|ip| {
        if seen.contains(ip) {
            false
        } else {
            seen.push(*ip);
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_keeps_first_occurrences_in_order() {
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let mut ips = vec![b, a, b, a];
        dedup_in_order(&mut ips);
        assert_eq!(ips, [b, a]);
    }

    #[test]
    fn refresh_interval_is_never_zero() {
        assert_eq!(
            refresh_interval(&AtomicU64::new(0)),
            Duration::from_millis(1)
        );
        assert_eq!(
            refresh_interval(&AtomicU64::new(30_000)),
            Duration::from_secs(30)
        );
    }
}
