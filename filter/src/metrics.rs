//! The names of the filter's decision counters, and how to read them back (for tests, the
//! benchmarks and the demo, which read Envoy's `/stats`).
//!
//! Every decision increments `keybound.requests_total` with four labels written into the stat
//! name as Istio writes tags (`name=.=value;.;`): `decision` (`allow`, `deny`, `unavailable`,
//! `serve`), `reason`, `requirement` and `mode`. Envoy names it
//! `wasmcustom.keybound.requests_total.decision=.=allow;.;reason=.=ok;.;requirement=.=default;.;mode=.=enforce;.;`
//! in `/stats`; with the `stats_tags` of every configuration we ship (and Istio's
//! `extraStatTags`), `/stats/prometheus` shows
//! `keybound_requests_total{decision="allow",reason="ok",requirement="default",mode="enforce"}`.

/// The labels of the decision counter, in order.
pub const LABELS: [&str; 4] = ["decision", "reason", "requirement", "mode"];

/// The name of the decision counter for these label values (`wasmcustom.` is Envoy's prefix,
/// not part of it).
pub fn decision_counter(decision: &str, reason: &str, requirement: &str, mode: &str) -> String {
    format!(
        "keybound.requests_total.decision=.={decision};.;reason=.={reason};.;requirement=.={requirement};.;mode=.={mode};.;"
    )
}

/// The label values of a decision counter's name as `/stats` shows it (with or without Envoy's
/// `wasmcustom.` prefix): `[decision, reason, requirement, mode]`. The native module's counter
/// (`dynamicmodulescustom.keybound.requests_total.decision.allow.reason.ok.requirement.default.mode.enforce`,
/// real Envoy tags) reads back the same way.
pub fn parse_decision_counter(name: &str) -> Option<[&str; 4]> {
    if let Some(rest) = name.strip_prefix("dynamicmodulescustom.keybound.requests_total.") {
        return parse_module_decision_counter(rest);
    }
    let rest = name.strip_prefix("wasmcustom.").unwrap_or(name);
    let mut rest = rest.strip_prefix("keybound.requests_total.")?;
    let mut out = [""; 4];
    for (slot, label) in out.iter_mut().zip(LABELS) {
        rest = rest.strip_prefix(label)?.strip_prefix("=.=")?;
        let (value, tail) = rest.split_once(";.;")?;
        *slot = value;
        rest = tail;
    }
    rest.is_empty().then_some(out)
}

/// `decision.<d>.reason.<r>.requirement.<q>.mode.<m>`, the native module's tagged name.
fn parse_module_decision_counter(rest: &str) -> Option<[&str; 4]> {
    let rest = rest.strip_prefix("decision.")?;
    let (decision, rest) = rest.split_once(".reason.")?;
    let (reason, rest) = rest.split_once(".requirement.")?;
    let (requirement, mode) = rest.rsplit_once(".mode.")?;
    Some([decision, reason, requirement, mode])
}

/// The `stats_tags` that turn the labels into Prometheus labels, as Envoy bootstrap YAML
/// (indented for `stats_config:`); the same regular expressions Istio renders from
/// `extraStatTags`.
pub fn stats_tags_yaml() -> String {
    let mut out = String::from("  stats_tags:\n");
    for l in LABELS {
        out.push_str(&format!("  - tag_name: {l}\n    regex: \"({l}=\\\\.=(.*?);\\\\.;)\"\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back() {
        let n = decision_counter("deny", "jkt_mismatch", "payments", "report");
        assert_eq!(
            parse_decision_counter(&format!("wasmcustom.{n}")),
            Some(["deny", "jkt_mismatch", "payments", "report"])
        );
        assert_eq!(
            parse_decision_counter(&n),
            Some(["deny", "jkt_mismatch", "payments", "report"])
        );
        assert_eq!(parse_decision_counter("wasmcustom.keybound.replays"), None);
        assert_eq!(
            parse_decision_counter(
                "dynamicmodulescustom.keybound.requests_total.decision.deny.reason.jkt_mismatch.requirement.payments.mode.report"
            ),
            Some(["deny", "jkt_mismatch", "payments", "report"])
        );
        assert_eq!(parse_decision_counter(&format!("{n}x")), None);
        assert!(stats_tags_yaml().contains(r#"regex: "(reason=\\.=(.*?);\\.;)""#));
    }
}
