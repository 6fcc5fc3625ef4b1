//! Validation rules for AuthorizationPolicy (rules 11–12 and 127–142), and the policy-scope
//! checks (127–128) shared with RequestAuthentication.

use crate::config::Resource;
use crate::config::authorization_policy::{
    Action, AuthorizationPolicy, Condition, Operation, Rule, Source,
};
use crate::config::common::{MatchLabelsSelector, PolicyTargetReference};
use crate::path::FieldPath;
use crate::validate::Findings;
use crate::validate::common::{check_selector, is_cidr, is_ip};

/// CRD `maxItems` of `rules` and of `rules[].from` (rule 142).
const MAX_RULES: usize = 512;
/// CRD `maxItems` of `targetRefs` (rule 128).
const MAX_TARGET_REFS: usize = 16;
/// Limit on `serviceAccounts` / `notServiceAccounts` entries (rule 136).
const MAX_SERVICE_ACCOUNTS: usize = 16;
/// Maximum length of a service account entry (rule 136).
const MAX_SERVICE_ACCOUNT_LEN: usize = 320;

/// Rules 11–12 and 127–128: `selector`, `targetRef` and `targetRefs` of the security kinds
/// (AuthorizationPolicy, RequestAuthentication).
pub(crate) fn check_policy_scope(
    path: &FieldPath<'_>,
    selector: Option<&MatchLabelsSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
    out: &mut Findings<'_>,
) {
    if let Some(sel) = selector {
        let p = path.field("selector");
        check_selector(out, &p, &p.field("matchLabels"), &sel.match_labels);
    }
    // Rule 127: at most one of selector, targetRef, targetRefs.
    let set: Vec<&str> = [
        ("selector", selector.is_some()),
        ("targetRef", target_ref.is_some()),
        ("targetRefs", !target_refs.is_empty()),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(name, _)| *name)
    .collect();
    if set.len() > 1 {
        out.error(
            127,
            path,
            format!(
                "only one of targetRefs or selector can be set (found {})",
                set.join(", ")
            ),
        );
    }
    // Rule 128: each target reference.
    if let Some(r) = target_ref {
        check_target_ref(&path.field("targetRef"), r, out);
    }
    let refs_path = path.field("targetRefs");
    if target_refs.len() > MAX_TARGET_REFS {
        out.error(
            128,
            &refs_path,
            format!(
                "must have at most {MAX_TARGET_REFS} items, found {}",
                target_refs.len()
            ),
        );
    }
    for (i, r) in target_refs.iter().enumerate() {
        check_target_ref(&refs_path.index(i), r, out);
    }
}

/// Rule 128: one `targetRef` / `targetRefs[]` entry.
fn check_target_ref(path: &FieldPath<'_>, r: &PolicyTargetReference, out: &mut Findings<'_>) {
    if r.name.is_empty() {
        out.error(128, &path.field("name"), "targetRef name must be set");
    } else if r.name.len() > 253 {
        out.error(
            128,
            &path.field("name"),
            "targetRef name must be at most 253 characters",
        );
    }
    if !r.namespace.is_empty() {
        out.error(
            128,
            &path.field("namespace"),
            format!(
                "targetRef namespace must not be set (found {:?}): cross namespace referencing is not supported",
                r.namespace
            ),
        );
    }
    let group = if r.group.is_empty() {
        "core"
    } else {
        r.group.as_str()
    };
    let allowed = matches!(
        (group, r.kind.as_str()),
        ("core", "Service")
            | ("networking.istio.io", "ServiceEntry")
            | ("gateway.networking.k8s.io", "Gateway" | "GatewayClass")
    );
    if !allowed {
        out.error(
            128,
            path,
            format!(
                "targetRef must be to one of Service (core), ServiceEntry (networking.istio.io), \
                 Gateway or GatewayClass (gateway.networking.k8s.io) but was {:?}/{:?}",
                r.group, r.kind
            ),
        );
    }
}

/// Checks every rule for an AuthorizationPolicy.
pub(crate) fn check(
    _res: &Resource,
    spec: &AuthorizationPolicy,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    check_policy_scope(
        path,
        spec.selector.as_ref(),
        spec.target_ref.as_ref(),
        &spec.target_refs,
        out,
    );
    let rules_path = path.field("rules");
    let custom = spec.action == Action::Custom;

    // Rule 129: CUSTOM needs `rules` (possibly `[{}]`) and a provider name.
    if custom {
        if spec.rules.is_none() {
            out.error(
                129,
                &rules_path,
                "CUSTOM action without `rules` is meaningless as it will never be triggered, \
                 add an empty rule `{}` if you want it be triggered for every request",
            );
        } else if spec.provider.as_ref().is_none_or(|p| p.name.is_empty()) {
            let p = path.field("provider");
            let name = p.field("name");
            out.error(
                129,
                if spec.provider.is_some() { &name } else { &p },
                "`provider.name` must not be empty",
            );
        }
    }
    // Rule 130: provider only with CUSTOM.
    if spec.provider.is_some() && !custom {
        out.error(
            130,
            &path.field("provider"),
            format!(
                "`provider` must not be with non CUSTOM action, found {}",
                spec.action
            ),
        );
    }
    // Rule 131: DENY needs `rules`.
    if spec.action == Action::Deny && spec.rules.is_none() {
        out.error(
            131,
            &rules_path,
            "DENY action without `rules` is meaningless as it will never be triggered, \
             add an empty rule `{}` if you want it be triggered for every request",
        );
    }

    let Some(rules) = &spec.rules else { return };
    // Rule 142: CRD maxItems.
    if rules.len() > MAX_RULES {
        out.error(
            142,
            &rules_path,
            format!("must have at most {MAX_RULES} items, found {}", rules.len()),
        );
    }
    for (i, rule) in rules.iter().enumerate() {
        check_rule(&rules_path.index(i), rule, spec.action, out);
    }
}

/// Rules 129 (CUSTOM restrictions), 132–142 for one entry of `rules`.
fn check_rule(path: &FieldPath<'_>, rule: &Rule, action: Action, out: &mut Findings<'_>) {
    let custom = action == Action::Custom;
    let mut tcp_in_from = false;
    let mut tcp_in_to = false;
    let mut from_exists = false;
    let mut to_exists = false;

    let from_path = path.field("from");
    if let Some(from) = &rule.from {
        // Rule 132: a present `from` is a non-empty list.
        if from.is_empty() {
            out.error(
                132,
                &from_path,
                "`from` must not be empty: remove it to match any source",
            );
        }
        if from.len() > MAX_RULES {
            out.error(
                142,
                &from_path,
                format!("must have at most {MAX_RULES} items, found {}", from.len()),
            );
        }
        for (j, entry) in from.iter().enumerate() {
            let fp = from_path.index(j);
            let sp = fp.field("source");
            let Some(src) = &entry.source else {
                out.error(132, &sp, "`from.source` must not be nil");
                continue;
            };
            from_exists = true;
            check_source(&sp, src, custom, out);
            tcp_in_from |= has_tcp_source(src);
        }
    }

    let to_path = path.field("to");
    if let Some(to) = &rule.to {
        if to.is_empty() {
            out.error(
                132,
                &to_path,
                "`to` must not be empty: remove it to match any operation",
            );
        }
        for (j, entry) in to.iter().enumerate() {
            let tp = to_path.index(j);
            let op_path = tp.field("operation");
            let Some(op) = &entry.operation else {
                out.error(132, &op_path, "`to.operation` must not be nil");
                continue;
            };
            to_exists = true;
            check_operation(&op_path, op, out);
            tcp_in_to |= !op.ports.is_empty() || !op.not_ports.is_empty();
        }
    }

    let when_path = path.field("when");
    for (k, cond) in rule.when.iter().enumerate() {
        check_condition(&when_path.index(k), cond, custom, out);
    }

    // Rule 141 (W): a DENY rule with only HTTP attributes also denies all TCP traffic.
    if action == Action::Deny
        && ((from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to))
    {
        out.warn(
            141,
            path,
            "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope \
             due to the use of only HTTP attributes in a DENY rule; it is recommended to \
             explicitly specify the port",
        );
    }
}

/// Whether a source uses an attribute available on TCP connections (anything but
/// `requestPrincipals`).
fn has_tcp_source(src: &Source) -> bool {
    src.lists().iter().any(|(name, l)| {
        !l.is_empty() && !matches!(*name, "requestPrincipals" | "notRequestPrincipals")
    })
}

/// Source fields a CUSTOM policy cannot use (rule 129).
const CUSTOM_UNSUPPORTED_SOURCES: [&str; 10] = [
    "principals",
    "notPrincipals",
    "requestPrincipals",
    "notRequestPrincipals",
    "namespaces",
    "notNamespaces",
    "serviceAccounts",
    "notServiceAccounts",
    "trustDomains",
    "notTrustDomains",
];

/// Rules 129, 132–137 for a `from[].source`.
fn check_source(path: &FieldPath<'_>, src: &Source, custom: bool, out: &mut Findings<'_>) {
    if src.is_empty() {
        out.error(132, path, "`from.source` must not be empty");
    }
    // Rule 133.
    let identity = !src.principals.is_empty()
        || !src.not_principals.is_empty()
        || !src.namespaces.is_empty()
        || !src.not_namespaces.is_empty();
    if identity && (!src.service_accounts.is_empty() || !src.not_service_accounts.is_empty()) {
        out.error(
            133,
            path,
            "cannot set serviceAccounts with namespaces or principals",
        );
    }
    for (name, list) in src.lists() {
        if list.is_empty() {
            continue;
        }
        let lp = path.field(name);
        if custom && CUSTOM_UNSUPPORTED_SOURCES.contains(&name) {
            out.error(
                129,
                &lp,
                format!("{name} is currently not supported with CUSTOM action"),
            );
        }
        match name {
            "serviceAccounts" | "notServiceAccounts" => {
                check_service_accounts(&lp, name, list, out);
                continue; // includes the empty-value check
            }
            "ipBlocks" | "notIpBlocks" | "remoteIpBlocks" | "notRemoteIpBlocks" => {
                check_ips(&lp, list, 135, out);
            }
            "trustDomains" | "notTrustDomains" => {
                for (n, v) in list.iter().enumerate() {
                    if v.contains('/') {
                        out.error(
                            137,
                            &lp.index(n),
                            format!("trust domain must not contain '/', found {v:?}"),
                        );
                    }
                }
            }
            _ => {}
        }
        check_empty_values(&lp, name, list, out);
    }
}

/// Rule 134: no empty string in a list.
fn check_empty_values(path: &FieldPath<'_>, name: &str, list: &[String], out: &mut Findings<'_>) {
    for (n, v) in list.iter().enumerate() {
        if v.is_empty() {
            out.error(
                134,
                &path.index(n),
                format!("empty value not allowed, found in {name}"),
            );
        }
    }
}

/// Rule 135 (and 140 for IP `when` keys): each value is an IP or a CIDR block.
fn check_ips(path: &FieldPath<'_>, list: &[String], rule: u16, out: &mut Findings<'_>) {
    for (n, v) in list.iter().enumerate() {
        if v.is_empty() {
            continue; // reported as an empty value
        }
        if v.contains('/') {
            if !is_cidr(v) {
                out.error(rule, &path.index(n), format!("bad CIDR range ({v})"));
            }
        } else if !is_ip(v) {
            out.error(rule, &path.index(n), format!("bad IP address ({v})"));
        }
    }
}

/// Rule 136: `serviceAccounts` / `notServiceAccounts` (and `source.serviceAccount` values).
fn check_service_accounts(
    path: &FieldPath<'_>,
    name: &str,
    list: &[String],
    out: &mut Findings<'_>,
) {
    if list.len() > MAX_SERVICE_ACCOUNTS {
        out.error(
            136,
            path,
            format!(
                "may not have more than {MAX_SERVICE_ACCOUNTS} values, found {}",
                list.len()
            ),
        );
    }
    for (n, v) in list.iter().enumerate() {
        let p = path.index(n);
        let problem = if v.is_empty() {
            out.error(134, &p, format!("empty value not allowed, found in {name}"));
            continue;
        } else if v.contains('*') {
            format!("wildcard not allowed, found {v:?} in {name}")
        } else if v.len() > MAX_SERVICE_ACCOUNT_LEN {
            format!(
                "value cannot exceed {MAX_SERVICE_ACCOUNT_LEN} characters, found {} in {name}",
                v.len()
            )
        } else {
            match v.split_once('/') {
                Some((ns, sa)) if ns.is_empty() || sa.is_empty() || sa.contains('/') => format!(
                    "expected format 'serviceAccount' or 'namespace/serviceAccount', found {v:?} in {name}"
                ),
                _ => continue,
            }
        };
        out.error(136, &p, problem);
    }
}

/// Rule 138: a port is a decimal number up to 65535.
fn check_ports(path: &FieldPath<'_>, list: &[String], out: &mut Findings<'_>) {
    for (n, v) in list.iter().enumerate() {
        let ok = !v.is_empty()
            && v.bytes().all(|b| b.is_ascii_digit())
            && v.parse::<u64>().is_ok_and(|p| p <= 65535);
        if !ok && !v.is_empty() {
            out.error(
                138,
                &path.index(n),
                format!("bad port ({v}): must be a decimal number in 0..65535"),
            );
        }
    }
}

/// Rules 132, 134, 138, 139 for a `to[].operation`.
fn check_operation(path: &FieldPath<'_>, op: &Operation, out: &mut Findings<'_>) {
    if op.is_empty() {
        out.error(132, path, "`to.operation` must not be empty");
    }
    for (name, list) in op.lists() {
        if list.is_empty() {
            continue;
        }
        let lp = path.field(name);
        check_empty_values(&lp, name, list, out);
        match name {
            "ports" | "notPorts" => check_ports(&lp, list, out),
            "paths" | "notPaths" => {
                for (n, v) in list.iter().enumerate() {
                    if let Err(e) = check_path_template(v) {
                        out.error(
                            139,
                            &lp.index(n),
                            format!("invalid or unsupported path {v:?}, found in {name}: {e}"),
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// Rule 139: a path using the `{*}` / `{**}` templates: `{**}` is the last operator, no
/// other `{`/`}`, and (in a template) every literal segment is made of RFC 3986 pchars.
fn check_path_template(path: &str) -> Result<(), String> {
    let is_template = path.contains("{*}") || path.contains("{**}");
    let mut found_any = false;
    for glob in path.trim_matches('/').split('/') {
        let operator = glob == "{*}" || glob == "{**}";
        if operator && found_any {
            return Err("{**} is not the last operator".into());
        }
        if operator {
            found_any |= glob == "{**}";
            continue;
        }
        if glob.contains(['{', '}']) {
            return Err("contains '{' or '}' beyond a supported path template".into());
        }
        if is_template && !is_pchar_literal(glob) {
            return Err(format!(
                "contains segment {glob:?} with invalid string literal"
            ));
        }
    }
    Ok(())
}

/// A non-empty run of RFC 3986 `pchar`s (unreserved, `%`, sub-delims but `*`, `:`, `@`).
fn is_pchar_literal(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&b))
}

/// What a `when` key names, for validating its values.
enum KeyKind {
    /// Any string values.
    Plain,
    /// IPs or CIDR blocks.
    Ip,
    /// Port numbers.
    Port,
    /// Service accounts (`sa` or `ns/sa`).
    ServiceAccount,
    /// Trust domains (`*` only at one end).
    TrustDomain,
}

/// Rule 140: classifies a `when` key, or says why it is refused.
fn classify_key(key: &str) -> Result<KeyKind, String> {
    let bracketed = |prefix: &str| -> Result<KeyKind, String> {
        let rest = &key[prefix.len()..];
        match rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            Some(inner) if !inner.is_empty() => Ok(KeyKind::Plain),
            _ => Err(format!("bad key ({key}): should have format a[b]")),
        }
    };
    match key {
        "source.ip" | "remote.ip" | "destination.ip" => Ok(KeyKind::Ip),
        "destination.port" => Ok(KeyKind::Port),
        "source.serviceAccount" => Ok(KeyKind::ServiceAccount),
        "source.trustDomain" => Ok(KeyKind::TrustDomain),
        "source.namespace"
        | "source.principal"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => Ok(KeyKind::Plain),
        "destination.namespace" => Err(format!(
            "attribute {key} is replaced by the metadata.namespace"
        )),
        "destination.name" | "destination.user" => Err(format!(
            "deprecated attribute {key}: only supported in v1alpha1"
        )),
        _ if key.starts_with("request.headers") => bracketed("request.headers"),
        _ if key.starts_with("request.auth.claims") => bracketed("request.auth.claims"),
        _ if key.starts_with("experimental.envoy.filters.") => {
            // `a[b]`: a `[` after the start, `]` at the end, something in between.
            match key.find('[') {
                Some(open) if key.ends_with(']') && open > 0 && open + 2 < key.len() => {
                    Ok(KeyKind::Plain)
                }
                _ => Err(format!("bad key ({key}): should have format a[b]")),
            }
        }
        _ if key.starts_with("destination.labels") => Err(format!(
            "attribute {key} is replaced by the workload selector"
        )),
        _ => Err(format!("unknown attribute: {key}")),
    }
}

/// Rules 129 (CUSTOM), 134, 136, 138, 140 for a `when` condition.
fn check_condition(path: &FieldPath<'_>, cond: &Condition, custom: bool, out: &mut Findings<'_>) {
    let key_path = path.field("key");
    let key = cond.key.as_str();
    if key.is_empty() {
        out.error(140, &key_path, "`key` must not be empty");
        return;
    }
    if custom
        && (matches!(
            key,
            "source.namespace"
                | "source.serviceAccount"
                | "source.principal"
                | "source.trustDomain"
        ) || key.starts_with("request.auth."))
    {
        out.error(
            129,
            &key_path,
            format!("{key} is currently not supported with CUSTOM action"),
        );
    }
    if cond.values.is_empty() && cond.not_values.is_empty() {
        out.error(
            140,
            path,
            format!("at least one of `values` or `notValues` must be set for key {key}"),
        );
        return;
    }
    let kind = match classify_key(key) {
        Ok(kind) => kind,
        Err(e) => {
            out.error(140, &key_path, format!("invalid `key`: {e}"));
            return;
        }
    };
    for (name, list) in [("values", &cond.values), ("notValues", &cond.not_values)] {
        if list.is_empty() {
            continue;
        }
        let lp = path.field(name);
        if matches!(kind, KeyKind::ServiceAccount) {
            check_service_accounts(&lp, key, list, out);
            continue;
        }
        check_empty_values(&lp, key, list, out);
        match kind {
            KeyKind::Ip => check_ips(&lp, list, 140, out),
            KeyKind::Port => check_ports(&lp, list, out),
            KeyKind::TrustDomain => {
                for (n, v) in list.iter().enumerate() {
                    let stars = v.matches('*').count();
                    let ok = stars == 0 || (stars == 1 && (v.starts_with('*') || v.ends_with('*')));
                    if !ok {
                        out.error(
                            140,
                            &lp.index(n),
                            format!(
                                "invalid value {v:?} for key {key}: a wildcard is only supported \
                                 once, at the start or the end"
                            ),
                        );
                    }
                }
            }
            KeyKind::Plain | KeyKind::ServiceAccount => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validate::testing::*;

    fn ap(spec: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: a, namespace: foo}}\nspec:\n{spec}"
        )
    }

    /// An ALLOW policy with one rule whose `from` has `source`.
    fn with_source(source: &str) -> String {
        ap(&format!("  rules:\n  - from:\n    - source: {source}\n"))
    }

    /// An ALLOW policy with one rule whose `to` has `operation`.
    fn with_operation(op: &str) -> String {
        ap(&format!("  rules:\n  - to:\n    - operation: {op}\n"))
    }

    /// An ALLOW policy with one rule with one `when` condition.
    fn with_when(cond: &str) -> String {
        ap(&format!("  rules:\n  - when:\n    - {cond}\n"))
    }

    #[test]
    fn rule_011_selector_labels() {
        passes(&ap("  selector: {matchLabels: {app: a}}\n  rules: [{}]\n"));
        fails(
            &ap("  selector: {matchLabels: {app: \"a*\"}}\n  rules: [{}]\n"),
            "spec.selector.matchLabels[app]",
            "wildcard is not supported",
        );
    }

    #[test]
    fn rule_012_selector_without_labels() {
        no_finding(
            &ap("  selector: {matchLabels: {app: a}}\n  rules: [{}]\n"),
            "spec.selector",
        );
        warns(
            &ap("  selector: {}\n  rules: [{}]\n"),
            "spec.selector",
            "without labels",
        );
    }

    #[test]
    fn rule_127_selector_or_target_refs() {
        passes(&ap(
            "  targetRefs:\n  - {group: gateway.networking.k8s.io, kind: Gateway, name: gw}\n  rules: [{}]\n",
        ));
        fails(
            &ap(
                "  selector: {matchLabels: {app: a}}\n  targetRef: {kind: Service, name: s}\n  rules: [{}]\n",
            ),
            "spec",
            "only one of targetRefs or selector can be set",
        );
        fails(
            &ap(
                "  targetRef: {kind: Service, name: s}\n  targetRefs:\n  - {kind: Service, name: t}\n",
            ),
            "spec",
            "only one of targetRefs or selector",
        );
    }

    #[test]
    fn rule_128_target_ref_fields() {
        passes(&ap("  targetRef: {kind: Service, name: s}\n"));
        passes(&ap(
            "  targetRefs:\n  - {group: networking.istio.io, kind: ServiceEntry, name: se}\n  - {group: gateway.networking.k8s.io, kind: GatewayClass, name: c}\n  - {group: core, kind: Service, name: s}\n",
        ));
        fails(
            &ap("  targetRef: {kind: Service}\n"),
            "spec.targetRef.name",
            "targetRef name must be set",
        );
        fails(
            &ap("  targetRef: {kind: Service, name: s, namespace: bar}\n"),
            "spec.targetRef.namespace",
            "cross namespace referencing is not supported",
        );
        fails(
            &ap("  targetRefs:\n  - {group: apps, kind: Deployment, name: d}\n"),
            "spec.targetRefs[0]",
            "targetRef must be to one of",
        );
        fails(
            &ap("  targetRefs:\n  - {group: \"\", kind: Gateway, name: g}\n"),
            "spec.targetRefs[0]",
            "targetRef must be to one of",
        );
        let many: String = (0..17)
            .map(|i| format!("  - {{kind: Service, name: s{i}}}\n"))
            .collect();
        fails(
            &ap(&format!("  targetRefs:\n{many}")),
            "spec.targetRefs",
            "at most 16",
        );
    }

    #[test]
    fn rule_129_custom_action() {
        passes(&ap(
            "  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - to:\n    - operation: {paths: [/admin]}\n    when:\n    - {key: source.ip, values: [10.0.0.0/8]}\n",
        ));
        passes(&ap(
            "  action: CUSTOM\n  provider: {name: ext}\n  rules: [{}]\n",
        ));
        fails(
            &ap("  action: CUSTOM\n  provider: {name: ext}\n"),
            "spec.rules",
            "CUSTOM action without `rules` is meaningless",
        );
        fails(
            &ap("  action: CUSTOM\n  rules: [{}]\n"),
            "spec.provider",
            "`provider.name` must not be empty",
        );
        fails(
            &ap("  action: CUSTOM\n  provider: {}\n  rules: [{}]\n"),
            "spec.provider.name",
            "`provider.name` must not be empty",
        );
        fails(
            &ap(
                "  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - from:\n    - source: {principals: [a]}\n",
            ),
            "spec.rules[0].from[0].source.principals",
            "not supported with CUSTOM action",
        );
        fails(
            &ap(
                "  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - from:\n    - source: {notServiceAccounts: [sa]}\n",
            ),
            "spec.rules[0].from[0].source.notServiceAccounts",
            "not supported with CUSTOM action",
        );
        fails(
            &ap(
                "  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - when:\n    - {key: \"request.auth.claims[iss]\", values: [a]}\n",
            ),
            "spec.rules[0].when[0].key",
            "not supported with CUSTOM action",
        );
        fails(
            &ap(
                "  action: CUSTOM\n  provider: {name: ext}\n  rules:\n  - when:\n    - {key: source.principal, values: [a]}\n",
            ),
            "spec.rules[0].when[0].key",
            "not supported with CUSTOM action",
        );
    }

    #[test]
    fn rule_130_provider_only_with_custom() {
        passes(&ap(
            "  action: CUSTOM\n  provider: {name: ext}\n  rules: [{}]\n",
        ));
        fails(
            &ap("  provider: {name: ext}\n  rules: [{}]\n"),
            "spec.provider",
            "`provider` must not be with non CUSTOM action, found ALLOW",
        );
        fails(
            &ap("  action: DENY\n  provider: {name: ext}\n  rules: [{}]\n"),
            "spec.provider",
            "found DENY",
        );
    }

    #[test]
    fn rule_131_deny_needs_rules() {
        passes(&ap("  action: DENY\n  rules: [{}]\n"));
        // ALLOW without rules is legal: it allows nothing.
        passes(&ap("  action: ALLOW\n"));
        passes(&ap("  action: AUDIT\n"));
        fails(
            &ap("  action: DENY\n"),
            "spec.rules",
            "DENY action without `rules` is meaningless",
        );
        fails(
            &ap("  action: DENY\n  rules: ~\n"),
            "spec.rules",
            "DENY action without `rules`",
        );
    }

    #[test]
    fn rule_132_rule_from_to_not_empty() {
        passes(&ap("  rules: [{}]\n"));
        passes(&with_source("{principals: [a]}"));
        passes(&with_source("{trustDomains: [td]}"));
        passes(&with_operation("{methods: [GET]}"));
        fails(&ap("  rules: [~]\n"), "spec.rules[0]", "must not be nil");
        fails(
            &ap("  rules:\n  - from: []\n"),
            "spec.rules[0].from",
            "`from` must not be empty",
        );
        fails(
            &ap("  rules:\n  - to: []\n"),
            "spec.rules[0].to",
            "`to` must not be empty",
        );
        fails(
            &ap("  rules:\n  - from:\n    - {}\n"),
            "spec.rules[0].from[0].source",
            "`from.source` must not be nil",
        );
        fails(
            &with_source("{}"),
            "spec.rules[0].from[0].source",
            "`from.source` must not be empty",
        );
        fails(
            &ap("  rules:\n  - to:\n    - {}\n"),
            "spec.rules[0].to[0].operation",
            "`to.operation` must not be nil",
        );
        fails(
            &with_operation("{}"),
            "spec.rules[0].to[0].operation",
            "`to.operation` must not be empty",
        );
    }

    #[test]
    fn rule_133_service_accounts_exclusive() {
        passes(&ap(
            "  rules:\n  - from:\n    - source: {serviceAccounts: [ns/sa]}\n    - source: {principals: [p]}\n",
        ));
        fails(
            &with_source("{serviceAccounts: [bar/sa], namespaces: [bar]}"),
            "spec.rules[0].from[0].source",
            "cannot set serviceAccounts with namespaces or principals",
        );
        fails(
            &with_source("{notServiceAccounts: [sa], notPrincipals: [p]}"),
            "spec.rules[0].from[0].source",
            "cannot set serviceAccounts",
        );
    }

    #[test]
    fn rule_134_no_empty_values() {
        passes(&with_source("{principals: [a, b]}"));
        fails(
            &with_source("{principals: [a, \"\"]}"),
            "spec.rules[0].from[0].source.principals[1]",
            "empty value not allowed, found in principals",
        );
        fails(
            &with_source("{notTrustDomains: [\"\"]}"),
            "spec.rules[0].from[0].source.notTrustDomains[0]",
            "empty value not allowed",
        );
        fails(
            &with_operation("{methods: [\"\"]}"),
            "spec.rules[0].to[0].operation.methods[0]",
            "empty value not allowed, found in methods",
        );
        fails(
            &with_when("{key: \"request.headers[x]\", values: [\"\"]}"),
            "spec.rules[0].when[0].values[0]",
            "empty value not allowed",
        );
    }

    #[test]
    fn rule_135_ip_blocks() {
        passes(&with_source(
            "{ipBlocks: [1.2.3.4, 10.0.0.0/8], notRemoteIpBlocks: [\"::1\", \"2001:db8::/32\"]}",
        ));
        fails(
            &with_source("{ipBlocks: [1.2.3]}"),
            "spec.rules[0].from[0].source.ipBlocks[0]",
            "bad IP address (1.2.3)",
        );
        fails(
            &with_source("{remoteIpBlocks: [10.0.0.0/33]}"),
            "spec.rules[0].from[0].source.remoteIpBlocks[0]",
            "bad CIDR range",
        );
        fails(
            &with_source("{notIpBlocks: [example.com]}"),
            "spec.rules[0].from[0].source.notIpBlocks[0]",
            "bad IP address",
        );
    }

    #[test]
    fn rule_136_service_accounts() {
        passes(&with_source("{serviceAccounts: [sa, ns/sa]}"));
        fails(
            &with_source("{serviceAccounts: [\"ns/*\"]}"),
            "spec.rules[0].from[0].source.serviceAccounts[0]",
            "wildcard not allowed",
        );
        fails(
            &with_source("{serviceAccounts: [a/b/c]}"),
            "spec.rules[0].from[0].source.serviceAccounts[0]",
            "expected format 'serviceAccount' or 'namespace/serviceAccount'",
        );
        fails(
            &with_source("{notServiceAccounts: [/sa]}"),
            "spec.rules[0].from[0].source.notServiceAccounts[0]",
            "expected format",
        );
        fails(
            &with_source("{serviceAccounts: [ns/]}"),
            "spec.rules[0].from[0].source.serviceAccounts[0]",
            "expected format",
        );
        let long = "a".repeat(321);
        fails(
            &with_source(&format!("{{serviceAccounts: [{long}]}}")),
            "spec.rules[0].from[0].source.serviceAccounts[0]",
            "cannot exceed 320",
        );
        let many: Vec<String> = (0..17).map(|i| format!("sa{i}")).collect();
        fails(
            &with_source(&format!("{{serviceAccounts: [{}]}}", many.join(", "))),
            "spec.rules[0].from[0].source.serviceAccounts",
            "more than 16",
        );
        fails(
            &with_when("{key: source.serviceAccount, values: [\"ns/*\"]}"),
            "spec.rules[0].when[0].values[0]",
            "wildcard not allowed",
        );
    }

    #[test]
    fn rule_137_trust_domains() {
        passes(&with_source(
            "{trustDomains: [cluster.local, \"td-*\"], notTrustDomains: [\"bad*\"]}",
        ));
        fails(
            &with_source("{trustDomains: [cluster.local/ns/foo]}"),
            "spec.rules[0].from[0].source.trustDomains[0]",
            "trust domain must not contain '/'",
        );
        fails(
            &with_source("{notTrustDomains: [a/b]}"),
            "spec.rules[0].from[0].source.notTrustDomains[0]",
            "must not contain '/'",
        );
    }

    #[test]
    fn rule_138_ports() {
        passes(&with_operation(
            "{ports: [\"80\", \"65535\"], notPorts: [\"0\"]}",
        ));
        passes(&with_when("{key: destination.port, values: [\"8080\"]}"));
        fails(
            &with_operation("{ports: [\"65536\"]}"),
            "spec.rules[0].to[0].operation.ports[0]",
            "bad port (65536)",
        );
        fails(
            &with_operation("{notPorts: [http]}"),
            "spec.rules[0].to[0].operation.notPorts[0]",
            "bad port",
        );
        fails(
            &with_operation("{ports: [\"-1\"]}"),
            "spec.rules[0].to[0].operation.ports[0]",
            "bad port",
        );
        fails(
            &with_when("{key: destination.port, notValues: [\"99999\"]}"),
            "spec.rules[0].when[0].notValues[0]",
            "bad port",
        );
    }

    #[test]
    fn rule_139_path_templates() {
        passes(&with_operation(
            "{paths: [/exact, \"/prefix/*\", \"*/suffix\", \"*\", \"/path/template/{*}\", \"/{**}/path/template\", \"/a/{*}/b/{**}\"]}",
        ));
        fails(
            &with_operation("{paths: [\"/{**}/a/{*}\"]}"),
            "spec.rules[0].to[0].operation.paths[0]",
            "{**} is not the last operator",
        );
        fails(
            &with_operation("{notPaths: [\"/{**}/{**}\"]}"),
            "spec.rules[0].to[0].operation.notPaths[0]",
            "{**} is not the last operator",
        );
        fails(
            &with_operation("{paths: [\"/foo/{bar}\"]}"),
            "spec.rules[0].to[0].operation.paths[0]",
            "beyond a supported path template",
        );
        fails(
            &with_operation("{paths: [\"/{*}/foo*\"]}"),
            "spec.rules[0].to[0].operation.paths[0]",
            "invalid string literal",
        );
        fails(
            &with_operation("{paths: [\"/{*}//foo\"]}"),
            "spec.rules[0].to[0].operation.paths[0]",
            "invalid string literal",
        );
    }

    #[test]
    fn rule_140_when_conditions() {
        for cond in [
            "{key: \"request.headers[X-Token]\", values: [a]}",
            "{key: source.ip, values: [10.0.0.1, 10.0.0.0/8]}",
            "{key: remote.ip, notValues: [\"::1\"]}",
            "{key: source.namespace, values: [ns]}",
            "{key: source.serviceAccount, values: [ns/sa]}",
            "{key: source.principal, values: [\"*\"]}",
            "{key: source.trustDomain, values: [\"td-*\", \"*-td\", \"*\"]}",
            "{key: request.auth.principal, values: [a/b]}",
            "{key: request.auth.audiences, values: [a]}",
            "{key: request.auth.presenter, values: [a]}",
            "{key: \"request.auth.claims[groups]\", values: [a]}",
            "{key: \"request.auth.claims[a][b]\", values: [a]}",
            "{key: destination.ip, values: [10.0.0.1]}",
            "{key: destination.port, values: [\"80\"]}",
            "{key: connection.sni, values: [a.com]}",
            "{key: \"experimental.envoy.filters.a.b[c]\", values: [x]}",
        ] {
            passes(&with_when(cond));
        }
        fails(
            &with_when("{key: \"\", values: [a]}"),
            "spec.rules[0].when[0].key",
            "`key` must not be empty",
        );
        fails(
            &with_when("{values: [a]}"),
            "spec.rules[0].when[0].key",
            "`key` must not be empty",
        );
        fails(
            &with_when("{key: source.ip}"),
            "spec.rules[0].when[0]",
            "at least one of `values` or `notValues` must be set",
        );
        fails(
            &with_when("{key: source.nmespace, values: [a]}"),
            "spec.rules[0].when[0].key",
            "unknown attribute: source.nmespace",
        );
        fails(
            &with_when("{key: request.headers, values: [a]}"),
            "spec.rules[0].when[0].key",
            "should have format a[b]",
        );
        fails(
            &with_when("{key: \"request.auth.claims[]\", values: [a]}"),
            "spec.rules[0].when[0].key",
            "should have format a[b]",
        );
        fails(
            &with_when("{key: experimental.envoy.filters.a, values: [a]}"),
            "spec.rules[0].when[0].key",
            "should have format a[b]",
        );
        fails(
            &with_when("{key: source.ip, values: [not-an-ip]}"),
            "spec.rules[0].when[0].values[0]",
            "bad IP address",
        );
        fails(
            &with_when("{key: destination.ip, notValues: [10.0.0.0/40]}"),
            "spec.rules[0].when[0].notValues[0]",
            "bad CIDR range",
        );
        fails(
            &with_when("{key: source.trustDomain, values: [\"a*b\"]}"),
            "spec.rules[0].when[0].values[0]",
            "wildcard",
        );
        fails(
            &with_when("{key: destination.namespace, values: [a]}"),
            "spec.rules[0].when[0].key",
            "replaced by the metadata.namespace",
        );
        fails(
            &with_when("{key: \"destination.labels[app]\", values: [a]}"),
            "spec.rules[0].when[0].key",
            "replaced by the workload selector",
        );
        fails(
            &with_when("{key: destination.user, values: [a]}"),
            "spec.rules[0].when[0].key",
            "deprecated attribute",
        );
        fails(
            &with_when("{key: destination.name, values: [a]}"),
            "spec.rules[0].when[0].key",
            "deprecated attribute",
        );
    }

    #[test]
    fn rule_141_deny_with_only_http_attributes() {
        let deny = |rule: &str| ap(&format!("  action: DENY\n  rules:\n  - {rule}\n"));
        no_finding(
            &deny("{to: [{operation: {methods: [GET], ports: [\"80\"]}}]}"),
            "spec.rules[0]",
        );
        no_finding(
            &deny("{from: [{source: {principals: [a]}}]}"),
            "spec.rules[0]",
        );
        no_finding(&deny("{}"), "spec.rules[0]");
        // ALLOW with only HTTP attributes: no warning (the rule narrows on TCP).
        no_finding(
            &ap("  rules:\n  - to: [{operation: {methods: [GET]}}]\n"),
            "spec.rules[0]",
        );
        warns(
            &deny("{to: [{operation: {methods: [GET]}}]}"),
            "spec.rules[0]",
            "will deny all traffic to TCP ports",
        );
        warns(
            &deny("{from: [{source: {requestPrincipals: [\"*\"]}}]}"),
            "spec.rules[0]",
            "will deny all traffic to TCP ports",
        );
        warns(
            &deny("{from: [{source: {principals: [a]}}], to: [{operation: {paths: [/a]}}]}"),
            "spec.rules[0]",
            "HTTP attributes in a DENY rule",
        );
    }

    #[test]
    fn rule_142_max_items() {
        let rules_512: String = "  - {}\n".repeat(512);
        passes(&ap(&format!("  rules:\n{rules_512}")));
        let rules_513: String = "  - {}\n".repeat(513);
        fails(
            &ap(&format!("  rules:\n{rules_513}")),
            "spec.rules",
            "at most 512",
        );
        let from_513: String = "    - source: {principals: [a]}\n".repeat(513);
        fails(
            &ap(&format!("  rules:\n  - from:\n{from_513}")),
            "spec.rules[0].from",
            "at most 512",
        );
    }
}
