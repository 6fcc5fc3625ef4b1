//! Building blocks shared by several kinds: [`Percent`], [`StringMatch`], [`PortSelector`],
//! the workload selectors and [`PolicyTargetReference`].

use std::collections::BTreeMap;
use std::fmt;

use crate::config::decode::{Cx, Decode, Fields};
use crate::path::FieldPath;
use crate::yaml::Node;

/// A percentage in `0.0..=100.0` (Istio's `Percent {value: double}`), checked when decoded.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Percent(f64);

impl Percent {
    /// 100%.
    pub const HUNDRED: Percent = Percent(100.0);
    /// 0%.
    pub const ZERO: Percent = Percent(0.0);

    /// A percentage, if `value` is finite and within `0..=100`.
    pub fn new(value: f64) -> Option<Self> {
        (value.is_finite() && (0.0..=100.0).contains(&value)).then_some(Percent(value))
    }

    /// The value, between 0 and 100.
    pub fn value(self) -> f64 {
        self.0
    }

    /// Parts per million, as Envoy's `FractionalPercent` counts.
    pub fn per_million(self) -> u32 {
        (self.0 * 10_000.0).round() as u32
    }
}

impl Eq for Percent {}

impl std::hash::Hash for Percent {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.to_bits().hash(state);
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0)
    }
}

impl Decode for Percent {
    /// `{value: <double>}`.
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let value: Option<f64> = f.get("value", cx);
        f.finish(cx);
        let value = value.unwrap_or(0.0);
        match Percent::new(value) {
            Some(p) => Some(p),
            None => {
                let p = path.field("value");
                cx.error(
                    &p,
                    node,
                    format!("percentage {value} is not in range 0..100"),
                );
                None
            }
        }
    }
}

/// Istio's `StringMatch`: `exact`, `prefix` or `regex` (RE2, matched against the whole
/// value). The schema makes it a oneof; a match with none set means "present" where it is
/// used in `headers`, `queryParams` and `withoutHeaders`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StringMatch {
    /// `exact`: the whole value, case-sensitive.
    Exact(String),
    /// `prefix`: a raw string prefix.
    Prefix(String),
    /// `regex`: an RE2 pattern matched against the whole value.
    Regex(String),
    /// `{}`: no condition set (header or parameter present).
    Any,
}

impl Decode for StringMatch {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let exact: Option<String> = f.get("exact", cx);
        let prefix: Option<String> = f.get("prefix", cx);
        let regex: Option<String> = f.get("regex", cx);
        f.finish(cx);
        let set = [exact.is_some(), prefix.is_some(), regex.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if set > 1 {
            cx.error(
                path,
                node,
                "only one of exact, prefix or regex may be set (they are a oneof)",
            );
        }
        Some(if let Some(e) = exact {
            StringMatch::Exact(e)
        } else if let Some(p) = prefix {
            StringMatch::Prefix(p)
        } else if let Some(r) = regex {
            StringMatch::Regex(r)
        } else {
            StringMatch::Any
        })
    }
}

/// Istio's `PortSelector`: `{number}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PortSelector {
    /// The port number (0 when unset).
    pub number: u32,
}

impl Decode for PortSelector {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let number = f.get("number", cx).unwrap_or(0);
        f.finish(cx);
        Some(PortSelector { number })
    }
}

/// The networking kinds' `workloadSelector: {labels}` (ServiceEntry, Sidecar).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct WorkloadSelector {
    /// Labels a workload must carry.
    pub labels: BTreeMap<String, String>,
}

impl Decode for WorkloadSelector {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let labels = f.map("labels", cx);
        f.finish(cx);
        Some(WorkloadSelector { labels })
    }
}

/// `{matchLabels}`: the selector of the security kinds and of DestinationRule
/// (`workloadSelector.matchLabels`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MatchLabelsSelector {
    /// Labels a workload must carry.
    pub match_labels: BTreeMap<String, String>,
}

impl Decode for MatchLabelsSelector {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let match_labels = f.map("matchLabels", cx);
        f.finish(cx);
        Some(MatchLabelsSelector { match_labels })
    }
}

/// `targetRef` / `targetRefs[]` of the security kinds: the resource a policy attaches to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PolicyTargetReference {
    /// API group (`""` for core, `gateway.networking.k8s.io`, `networking.istio.io`).
    pub group: String,
    /// Kind (`Service`, `Gateway`, `GatewayClass`, `ServiceEntry`).
    pub kind: String,
    /// Name of the target.
    pub name: String,
    /// Namespace; must be empty (same namespace as the policy).
    pub namespace: String,
}

impl Decode for PolicyTargetReference {
    fn decode(node: &Node, path: &FieldPath<'_>, cx: &mut Cx) -> Option<Self> {
        let mut f = Fields::new(node, path, cx)?;
        let r = PolicyTargetReference {
            group: f.get("group", cx).unwrap_or_default(),
            kind: f.get("kind", cx).unwrap_or_default(),
            name: f.get("name", cx).unwrap_or_default(),
            namespace: f.get("namespace", cx).unwrap_or_default(),
        };
        f.finish(cx);
        Some(r)
    }
}
