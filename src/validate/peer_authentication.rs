//! Validation rules for PeerAuthentication (rules 11–12, 147, 148).

use crate::config::Resource;
use crate::config::peer_authentication::PeerAuthentication;
use crate::path::FieldPath;
use crate::validate::Findings;
use crate::validate::common::check_selector;

/// Checks every rule for a PeerAuthentication.
pub(crate) fn check(
    _res: &Resource,
    spec: &PeerAuthentication,
    path: &FieldPath<'_>,
    out: &mut Findings<'_>,
) {
    let selector_labels = spec.selector.as_ref().map(|s| &s.match_labels);
    if let Some(labels) = selector_labels {
        let sel = path.field("selector");
        check_selector(out, &sel, &sel.field("matchLabels"), labels);
    }
    // Rule 147: portLevelMtls needs a non-empty selector; non-empty; keys are ports 1..65535.
    if let Some(ports) = &spec.port_level_mtls {
        let p = path.field("portLevelMtls");
        if selector_labels.is_none_or(|l| l.is_empty()) {
            out.error(
                147,
                &p,
                "portLevelMtls requires selector: mesh/namespace peer authentication cannot have port level mTLS",
            );
        }
        if ports.is_empty() {
            out.error(
                147,
                &p,
                "port level mTLS, if defined, must have at least one element",
            );
        }
        for key in ports.keys() {
            if !key.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n)) {
                out.error(
                    147,
                    &p.key(key),
                    format!("port must be between 1-65535, found {key:?}"),
                );
            }
        }
    }
    // Rule 148 (mtls.mode enum) is enforced when decoding: `MtlsMode` has only the four values.
}

#[cfg(test)]
mod tests {
    use crate::validate::testing::*;

    fn pa(spec: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: p, namespace: foo}}\nspec:\n{spec}"
        )
    }

    #[test]
    fn rule_147_port_level_mtls() {
        passes(&pa(
            "  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    8080: {mode: DISABLE}\n",
        ));
        fails(
            &pa("  portLevelMtls:\n    8080: {mode: DISABLE}\n"),
            "spec.portLevelMtls",
            "requires selector",
        );
        fails(
            &pa("  selector: {matchLabels: {app: a}}\n  portLevelMtls: {}\n"),
            "spec.portLevelMtls",
            "at least one",
        );
        fails(
            &pa("  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    0: {mode: DISABLE}\n"),
            "spec.portLevelMtls[0]",
            "1-65535",
        );
        fails(
            &pa(
                "  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    65536: {mode: DISABLE}\n",
            ),
            "spec.portLevelMtls[65536]",
            "1-65535",
        );
        fails(
            &pa(
                "  selector: {matchLabels: {app: a}}\n  portLevelMtls:\n    abc: {mode: DISABLE}\n",
            ),
            "spec.portLevelMtls[abc]",
            "1-65535",
        );
    }

    #[test]
    fn rule_148_mtls_mode_enum() {
        passes(&pa("  mtls: {mode: PERMISSIVE}\n"));
        fails(
            &pa("  mtls: {mode: BLAH}\n"),
            "spec.mtls.mode",
            "Unsupported value: \"BLAH\"",
        );
    }
}
