//! Locality-aware load balancing (`localityLbSetting`): Istio's failover priorities and
//! `distribute` weights, as Istio writes them into Envoy's load assignment
//! (`pilot/pkg/networking/core/loadbalancer`), and Envoy's priority load with the 1.4
//! overprovisioning factor.

use std::collections::BTreeMap;

use crate::config::destination_rule::{
    LocalityDistribute, LocalityFailover, LocalityLoadBalancerSetting,
};
use crate::registry::Endpoint;

/// Envoy's default overprovisioning factor (1.4, as a percentage).
const OVERPROVISIONING_PERCENT: u64 = 140;

/// A `region/zone/subzone` locality, split.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Locality {
    region: String,
    zone: String,
    subzone: String,
}

impl Locality {
    pub(crate) fn parse(s: &str) -> Locality {
        let mut it = s.splitn(3, '/');
        Locality {
            region: it.next().unwrap_or("").to_owned(),
            zone: it.next().unwrap_or("").to_owned(),
            subzone: it.next().unwrap_or("").to_owned(),
        }
    }

    /// Istio's `LocalityMatch`: each segment of `rule` matches when it is `*`, equal, or (for
    /// zone and subzone) absent.
    fn matches(&self, rule: &str) -> bool {
        let mut it = rule.splitn(3, '/');
        let region = it.next().unwrap_or("");
        let zone = it.next().unwrap_or("");
        let subzone = it.next().unwrap_or("");
        (region == "*" || region == self.region)
            && (zone == "*" || zone.is_empty() || zone == self.zone)
            && (subzone == "*" || subzone.is_empty() || subzone == self.subzone)
    }

    /// Istio's `LbPriority`: 0 same subzone, 1 same zone, 2 same region, 3 elsewhere.
    fn priority_from(&self, other: &Locality) -> u8 {
        if self.region != other.region {
            3
        } else if self.zone != other.zone {
            2
        } else if self.subzone != other.subzone {
            1
        } else {
            0
        }
    }
}

/// How locality shapes the endpoint set, derived once per (settings, local locality).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LocalityPlan {
    local: Locality,
    mode: Mode,
}

#[derive(Debug, Clone, PartialEq)]
enum Mode {
    /// `distribute`: the entry whose `from` matches the local locality.
    Distribute(BTreeMap<String, u32>),
    /// Failover priorities (Istio's default when outlier detection is configured).
    Failover(Vec<LocalityFailover>),
}

impl LocalityPlan {
    /// The plan for `setting` (absent = Istio's mesh default, `enabled: true` with no
    /// distribute/failover entries) seen from `local`, or `None` when locality load balancing
    /// does nothing: disabled, local locality unknown, no `distribute` entry matching it, or
    /// failover without outlier detection (Istio applies failover priorities only when
    /// `outlierDetection` is set: without it Envoy never leaves the first priority).
    pub(crate) fn new(
        setting: Option<&LocalityLoadBalancerSetting>,
        outlier_detection: bool,
        local: Option<&str>,
    ) -> Option<LocalityPlan> {
        let local = Locality::parse(local.filter(|l| !l.is_empty())?);
        if setting.and_then(|s| s.enabled) == Some(false) {
            return None;
        }
        let distribute: &[LocalityDistribute] = setting.map_or(&[], |s| &s.distribute);
        if !distribute.is_empty() {
            let entry = distribute.iter().find(|d| local.matches(&d.from))?;
            return Some(LocalityPlan {
                local,
                mode: Mode::Distribute(entry.to.clone()),
            });
        }
        if !outlier_detection {
            return None;
        }
        Some(LocalityPlan {
            local,
            mode: Mode::Failover(setting.map(|s| s.failover.clone()).unwrap_or_default()),
        })
    }

    /// Per endpoint: its priority (`None` = receives no traffic) and its weight scale.
    pub(crate) fn view(&self, endpoints: &[Endpoint]) -> LocalityView {
        let locs: Vec<Locality> = endpoints
            .iter()
            .map(|e| {
                e.locality
                    .as_deref()
                    .map(Locality::parse)
                    .unwrap_or_default()
            })
            .collect();
        match &self.mode {
            Mode::Distribute(to) => {
                // Istio's applyLocalityWeights: each `to` pattern's weight is shared by the
                // localities it matches (first match wins) in proportion to their weight;
                // endpoints of unmatched localities get nothing. Per endpoint that is
                // weight × pattern% / (total weight the pattern matched).
                let mut scale: Vec<Option<f64>> = vec![None; endpoints.len()];
                for (pattern, pct) in to {
                    let mut total = 0u64;
                    let matched: Vec<usize> = locs
                        .iter()
                        .enumerate()
                        .filter(|(i, l)| {
                            scale.get(*i).is_some_and(|s| s.is_none()) && l.matches(pattern)
                        })
                        .map(|(i, _)| i)
                        .collect();
                    for i in &matched {
                        total += endpoints.get(*i).map_or(1, |e| u64::from(e.weight.max(1)));
                    }
                    for i in matched {
                        if let Some(s) = scale.get_mut(i) {
                            *s = Some(f64::from(*pct) / total.max(1) as f64);
                        }
                    }
                }
                LocalityView {
                    priority: scale.iter().map(|s| s.map(|_| 0)).collect(),
                    scale: scale.iter().map(|s| s.unwrap_or(0.0)).collect(),
                    levels: 1,
                    weighted: true,
                }
            }
            Mode::Failover(failover) => {
                let raw: Vec<u8> = locs
                    .iter()
                    .map(|l| {
                        let p = self.local.priority_from(l);
                        if p < 3 {
                            return p;
                        }
                        // Region mismatch: with a failover entry from our region, its `to`
                        // region stays at 3 and every other region drops to 4.
                        match failover.iter().find(|f| f.from == self.local.region) {
                            Some(f) if f.to != l.region => 4,
                            _ => 3,
                        }
                    })
                    .collect();
                // Priorities must be consecutive: compact the ones in use.
                let mut used = [false; 5];
                for p in &raw {
                    if let Some(u) = used.get_mut(usize::from(*p)) {
                        *u = true;
                    }
                }
                let mut remap = [0u8; 5];
                let mut next = 0u8;
                for (p, u) in used.iter().enumerate() {
                    if *u {
                        if let Some(r) = remap.get_mut(p) {
                            *r = next;
                        }
                        next += 1;
                    }
                }
                LocalityView {
                    priority: raw
                        .iter()
                        .map(|p| remap.get(usize::from(*p)).copied())
                        .collect(),
                    scale: vec![1.0; endpoints.len()],
                    levels: next,
                    weighted: false,
                }
            }
        }
    }
}

/// The locality shape of one endpoint set.
#[derive(Debug)]
pub(crate) struct LocalityView {
    /// Per endpoint: its priority level, `None` when it gets no traffic.
    pub(crate) priority: Vec<Option<u8>>,
    /// Per endpoint: a factor on its weight (`distribute`), 1.0 otherwise.
    pub(crate) scale: Vec<f64>,
    /// Number of priority levels.
    pub(crate) levels: u8,
    /// Whether `scale` is not all ones.
    pub(crate) weighted: bool,
}

impl LocalityView {
    /// Envoy's priority load: level `p` takes min(remaining, 1.4 × its healthy share) of the
    /// traffic, in order; when the levels' health sums below 100% the loads are normalized.
    /// `healthy(i)` says whether endpoint `i` counts as healthy. `roll` is a uniform value in
    /// `0..100`. `None` when no level has a healthy endpoint.
    pub(crate) fn choose_level(&self, healthy: impl Fn(usize) -> bool, roll: u64) -> Option<u8> {
        let levels = usize::from(self.levels);
        let mut total = vec![0u64; levels];
        let mut up = vec![0u64; levels];
        for (i, p) in self.priority.iter().enumerate() {
            let Some(p) = p else { continue };
            let p = usize::from(*p);
            if let Some(t) = total.get_mut(p) {
                *t += 1;
            }
            if healthy(i)
                && let Some(u) = up.get_mut(p)
            {
                *u += 1;
            }
        }
        let health: Vec<u64> = total
            .iter()
            .zip(&up)
            .map(|(t, u)| {
                if *t == 0 {
                    0
                } else {
                    (OVERPROVISIONING_PERCENT * u / t).min(100)
                }
            })
            .collect();
        let sum: u64 = health.iter().sum();
        if sum == 0 {
            return None;
        }
        let loads: Vec<u64> = if sum >= 100 {
            let mut remaining = 100u64;
            health
                .iter()
                .map(|h| {
                    let l = (*h).min(remaining);
                    remaining -= l;
                    l
                })
                .collect()
        } else {
            health.iter().map(|h| h * 100 / sum).collect()
        };
        let load_sum: u64 = loads.iter().sum::<u64>().max(1);
        let mut r = roll % load_sum;
        for (p, l) in loads.iter().enumerate() {
            if r < *l {
                return u8::try_from(p).ok();
            }
            r -= l;
        }
        // Rounding left the roll past the loads: the last level with a healthy endpoint.
        up.iter()
            .rposition(|u| *u > 0)
            .and_then(|p| u8::try_from(p).ok())
    }
}
