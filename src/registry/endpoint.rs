//! One endpoint of a service port, and the round-robin picker.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One address traffic for a (service host, service port) can go to: a ServiceEntry
/// `endpoints[]` entry, a WorkloadEntry selected by a ServiceEntry's `workloadSelector`, an
/// address a `resolution: DNS` host resolved to, or an endpoint the user gave
/// ([`EndpointRegistry::set_static`](super::EndpointRegistry::set_static),
/// [`EndpointRegistry::discover`](super::EndpointRegistry::discover)).
///
/// Plain data: two endpoints are equal when every field is, which is how the registry tells
/// that a set did not change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The IP and port connections go to: the endpoint's `address` with the port from the
    /// endpoint's `ports[<port name>]`, else the service port's `targetPort`, else its `number`.
    pub addr: SocketAddr,
    /// WorkloadEntry `labels`: DestinationRule subsets select endpoints by them. Empty when
    /// absent.
    pub labels: Arc<BTreeMap<String, String>>,
    /// WorkloadEntry `weight`: relative load-balancing weight. Istio's default for an absent
    /// (0) weight is 1, and the registry stores 1 then; never 0 in endpoints it builds.
    pub weight: u32,
    /// WorkloadEntry `locality` (`region/zone/subzone`); `None` when absent (unknown).
    pub locality: Option<Arc<str>>,
    /// WorkloadEntry `serviceAccount` (the workload's identity); `None` when absent.
    pub service_account: Option<Arc<str>>,
    /// WorkloadEntry `network`; `None` when absent (the caller's own network).
    pub network: Option<Arc<str>>,
}

impl Endpoint {
    /// An endpoint at `addr` with Istio's defaults: no labels, weight 1, no locality, service
    /// account or network.
    pub fn new(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            labels: Arc::default(),
            weight: 1,
            locality: None,
            service_account: None,
            network: None,
        }
    }

    /// With these `labels` (WorkloadEntry `labels`).
    pub fn with_labels<K, V>(mut self, labels: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.labels = Arc::new(
            labels
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        );
        self
    }

    /// With this `weight` (WorkloadEntry `weight`); 0 means Istio's default, 1.
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// With this `locality` (WorkloadEntry `locality`, `region/zone/subzone`).
    pub fn with_locality(mut self, locality: &str) -> Self {
        self.locality = Some(locality.into());
        self
    }

    /// With a weight of 0 replaced by Istio's default, 1.
    pub(crate) fn normalized(mut self) -> Self {
        self.weight = self.weight.max(1);
        self
    }

    /// Whether the endpoint belongs to a DestinationRule subset with these `labels`: it
    /// carries every one of them with the same value. Empty labels select every endpoint.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.get(k).is_some_and(|have| have == v))
    }
}

/// A round-robin picker over an endpoint set: each call takes the next endpoint, wrapping
/// around. Lock-free (one `AtomicUsize`), shareable between tasks.
///
/// Endpoint `weight`s are ignored for now: every endpoint gets the same share. (Istio's
/// `ROUND_ROBIN` is weighted; the weighted balancers come with the load-balancing issue.)
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A picker starting at the first endpoint.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next endpoint of `eps`, or `None` when `eps` is empty. When the set changes size
    /// between calls, the rotation continues from the counter modulo the new length.
    pub fn pick<'a>(&self, eps: &'a [Endpoint]) -> Option<&'a Endpoint> {
        if eps.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        eps.get(n % eps.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(port: u16) -> Endpoint {
        Endpoint::new(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    #[test]
    fn subset_needs_every_label_with_the_same_value() {
        let e = ep(1).with_labels([("version", "v1"), ("app", "reviews")]);
        let mut want = BTreeMap::new();
        assert!(e.matches(&want), "empty subset labels select everything");
        want.insert("version".to_owned(), "v1".to_owned());
        assert!(e.matches(&want));
        want.insert("zone".to_owned(), "a".to_owned());
        assert!(!e.matches(&want), "a missing label excludes the endpoint");
        want.remove("zone");
        want.insert("app".to_owned(), "ratings".to_owned());
        assert!(!e.matches(&want), "a different value excludes the endpoint");
    }

    #[test]
    fn weight_zero_means_one() {
        assert_eq!(ep(1).with_weight(0).weight, 1);
        assert_eq!(ep(1).with_weight(7).weight, 7);
        assert_eq!(ep(1).weight, 1);
    }

    #[test]
    fn round_robin_cycles_and_handles_empty() {
        let rr = RoundRobin::new();
        assert_eq!(rr.pick(&[]), None);
        let eps = [ep(1), ep(2), ep(3)];
        let ports: Vec<u16> = (0..7)
            .filter_map(|_| rr.pick(&eps).map(|e| e.addr.port()))
            .collect();
        // The empty call above advanced nothing: the rotation starts at the first endpoint.
        assert_eq!(ports, [1, 2, 3, 1, 2, 3, 1]);
        let fewer = [ep(9)];
        assert_eq!(rr.pick(&fewer).map(|e| e.addr.port()), Some(9));
    }
}
