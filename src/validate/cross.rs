//! Checks across resources, beyond Istio's webhook, as `istioctl analyze` does: a route that
//! names a subset no DestinationRule defines (Istio accepts it, then answers 503 at request
//! time).

use std::collections::BTreeMap;

use crate::config::virtual_service::{Destination, VirtualService};
use crate::config::{Resource, Spec};
use crate::path::FieldPath;
use crate::validate::{Findings, Severity, ValidationError};

/// The cluster domain short names expand into.
const CLUSTER_DOMAIN: &str = "cluster.local";

/// Expands a short host name with the namespace of the resource that wrote it, as Istio does:
/// `reviews` in `default` → `reviews.default.svc.cluster.local`. Names with a dot, and
/// wildcards, are taken as written.
pub fn fqdn(host: &str, namespace: &str) -> String {
    if host.contains('.') || host.starts_with('*') {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{CLUSTER_DOMAIN}")
    }
}

/// Whether a (possibly wildcard) DestinationRule host covers `host`.
fn host_covers(pattern: &str, host: &str) -> bool {
    if pattern == host || pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix) && host.len() > suffix.len(),
        None => false,
    }
}

struct RuleSubsets<'a> {
    host: String,
    resource: &'a Resource,
    subsets: Vec<&'a str>,
}

/// Runs the cross-resource checks.
pub(crate) fn check(resources: &[Resource]) -> Vec<ValidationError> {
    let mut rules: Vec<RuleSubsets<'_>> = Vec::new();
    for res in resources {
        if let Spec::DestinationRule(dr) = &res.spec {
            rules.push(RuleSubsets {
                host: fqdn(&dr.host, &res.metadata.namespace),
                resource: res,
                subsets: dr.subsets.iter().map(|s| s.name.as_str()).collect(),
            });
        }
    }
    let mut out = Vec::new();
    for res in resources {
        if let Spec::VirtualService(vs) = &res.spec {
            let mut findings = Findings::new(res);
            check_virtual_service(res, vs, &rules, &mut findings);
            out.extend(findings.into_problems());
        }
    }
    out
}

fn check_virtual_service(
    res: &Resource,
    vs: &VirtualService,
    rules: &[RuleSubsets<'_>],
    out: &mut Findings<'_>,
) {
    let spec = FieldPath::ROOT.field("spec");
    let mut check = |path: &FieldPath<'_>, dest: &Destination| {
        check_subset(res, dest, rules, path, out);
    };
    let http = spec.field("http");
    for (i, route) in vs.http.iter().enumerate() {
        let r = http.index(i);
        let dests = r.field("route");
        for (j, d) in route.route.iter().enumerate() {
            if let Some(dest) = &d.destination {
                let dj = dests.index(j);
                check(&dj.field("destination"), dest);
            }
        }
        if let Some(m) = &route.mirror {
            check(&r.field("mirror"), m);
        }
        let mirrors = r.field("mirrors");
        for (j, m) in route.mirrors.iter().enumerate() {
            if let Some(dest) = &m.destination {
                let mj = mirrors.index(j);
                check(&mj.field("destination"), dest);
            }
        }
    }
    let l4 = [
        ("tls", vs.tls.iter().map(|t| &t.route).collect::<Vec<_>>()),
        ("tcp", vs.tcp.iter().map(|t| &t.route).collect::<Vec<_>>()),
    ];
    for (field, routes) in l4 {
        let list = spec.field(field);
        for (i, route) in routes.into_iter().enumerate() {
            let r = list.index(i);
            let dests = r.field("route");
            for (j, d) in route.iter().enumerate() {
                if let Some(dest) = &d.destination {
                    let dj = dests.index(j);
                    check(&dj.field("destination"), dest);
                }
            }
        }
    }
}

fn check_subset(
    res: &Resource,
    dest: &Destination,
    rules: &[RuleSubsets<'_>],
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    if dest.subset.is_empty() {
        return;
    }
    let host = fqdn(&dest.host, &res.metadata.namespace);
    // Istio picks the most specific DestinationRule: exact host first, then wildcards.
    let exact: Vec<&RuleSubsets<'_>> = rules.iter().filter(|r| r.host == host).collect();
    let matching = if exact.is_empty() {
        rules
            .iter()
            .filter(|r| host_covers(&r.host, &host))
            .collect()
    } else {
        exact
    };
    if matching
        .iter()
        .any(|r| r.subsets.contains(&dest.subset.as_str()))
    {
        return;
    }
    let p = path.field("subset");
    let message = if matching.is_empty() {
        format!(
            "subset {:?} is not defined: no DestinationRule for host {host} (requests to it will fail with 503)",
            dest.subset
        )
    } else {
        let mut defined: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for r in &matching {
            defined
                .entry(r.resource.key())
                .or_default()
                .extend(r.subsets.iter().copied());
        }
        let names: Vec<String> = defined
            .iter()
            .map(|(k, v)| format!("{k} defines [{}]", v.join(", ")))
            .collect();
        format!(
            "subset {:?} is not defined by the DestinationRule for host {host}: {} (requests to it will fail with 503)",
            dest.subset,
            names.join("; ")
        )
    };
    out.unnumbered(Severity::Warning, &p, message);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::testing::*;

    const VS: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: my-app}
spec:
  hosts: [my-app]
  http:
  - route:
    - destination: {host: my-app, subset: v1}
      weight: 80
    - destination: {host: my-app, subset: v2}
      weight: 20
";

    fn dr(host: &str, subsets: &str) -> String {
        format!(
            "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: my-app}}
spec:
  host: {host}
  subsets: {subsets}
"
        )
    }

    #[test]
    fn expands_short_names_with_the_resource_namespace() {
        assert_eq!(
            fqdn("reviews", "default"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(fqdn("reviews.other", "default"), "reviews.other");
        assert!(host_covers("*.example.com", "a.b.example.com"));
        assert!(!host_covers("*.example.com", "example.com"));
    }

    #[test]
    fn a_route_to_a_subset_no_destination_rule_defines_warns() {
        let both = format!(
            "{VS}---\n{}",
            dr(
                "my-app",
                "[{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]"
            )
        );
        no_finding(&both, "spec.http[0].route[1].destination.subset");
        let only_v1 = format!(
            "{VS}---\n{}",
            dr("my-app.default.svc.cluster.local", "[{name: v1}]")
        );
        warns(
            &only_v1,
            "spec.http[0].route[1].destination.subset",
            "subset \"v2\" is not defined by the DestinationRule for host my-app.default.svc.cluster.local: default/my-app defines [v1]",
        );
        warns(
            VS,
            "spec.http[0].route[0].destination.subset",
            "no DestinationRule for host my-app.default.svc.cluster.local",
        );
    }
}
