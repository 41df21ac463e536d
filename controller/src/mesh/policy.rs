//! AuthorizationPolicy and PeerAuthentication turned into what the receiving ztunnel
//! enforces (`ambit.config.v1.Authorization`, `PeerAuthentication`).
//!
//! Scope: a policy in the root namespace applies to the whole mesh, any other to its
//! namespace; a non-empty selector narrows either to the workloads it selects.
//!
//! L7 attributes at L4, as Istio's ztunnel handles them (never looser): an ALLOW rule
//! that needs one is dropped (it can never match); a DENY rule keeps its L4 conditions
//! only (it matches more). A policy with `targetRefs` is a waypoint's, and AUDIT decides
//! nothing: neither reaches ztunnel.

use std::collections::HashMap;

use ambit_api::{
    config as pb, ip_block,
    istio::{
        AuthorizationPolicy, PeerAuthentication, WorkloadSelector,
        authorization_policy::{Action, Condition, ConditionKey, Operation, Rule, Source},
        peer_authentication::MtlsMode,
    },
};

/// The L4 form of `policy`; `None` when ztunnel has nothing to enforce.
#[must_use]
pub fn authorization(
    policy: &AuthorizationPolicy,
    root_namespace: &str,
) -> Option<pb::Authorization> {
    let spec = &policy.spec;
    if spec.has_target_refs() {
        return None;
    }
    let action = match spec.action {
        Action::Allow => pb::AuthorizationAction::Allow,
        Action::Deny => pb::AuthorizationAction::Deny,
        Action::Audit | Action::Custom => return None,
    };
    let (namespace, name) = names(policy);
    let (scope, selector) = scope(&namespace, spec.selector.as_ref(), root_namespace);
    let rules = spec
        .rules
        .iter()
        .filter(|rule| action == pb::AuthorizationAction::Deny || !needs_l7(rule))
        .map(rule)
        .collect();
    Some(pb::Authorization {
        namespace,
        name,
        scope: scope.into(),
        selector,
        action: action.into(),
        rules,
    })
}

/// The L4 form of `policy`.
#[must_use]
pub fn peer_authentication(
    policy: &PeerAuthentication,
    root_namespace: &str,
) -> pb::PeerAuthentication {
    let spec = &policy.spec;
    let (namespace, name) = names(policy);
    let (scope, selector) = scope(&namespace, spec.selector.as_ref(), root_namespace);
    pb::PeerAuthentication {
        namespace,
        name,
        scope: scope.into(),
        selector,
        mode: mode(spec.mtls.map(|m| m.mode)).into(),
        port_modes: spec
            .port_level_mtls
            .iter()
            .map(|(port, mtls)| (*port, mode(Some(mtls.mode)).into()))
            .collect(),
    }
}

fn names<K: kube::Resource>(object: &K) -> (String, String) {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn scope(
    namespace: &str,
    selector: Option<&WorkloadSelector>,
    root_namespace: &str,
) -> (pb::PolicyScope, HashMap<String, String>) {
    let labels: HashMap<String, String> = selector
        .map(|s| s.match_labels.clone().into_iter().collect())
        .unwrap_or_default();
    let scope = if namespace == root_namespace {
        pb::PolicyScope::Mesh
    } else if labels.is_empty() {
        pb::PolicyScope::Namespace
    } else {
        pb::PolicyScope::WorkloadSelector
    };
    (scope, labels)
}

fn mode(mode: Option<MtlsMode>) -> pb::MtlsMode {
    match mode.unwrap_or_default() {
        MtlsMode::Unset => pb::MtlsMode::Unset,
        MtlsMode::Disable => pb::MtlsMode::Disable,
        MtlsMode::Permissive => pb::MtlsMode::Permissive,
        MtlsMode::Strict => pb::MtlsMode::Strict,
    }
}

fn needs_l7(rule: &Rule) -> bool {
    rule.from.iter().any(|f| !f.source.l7_fields().is_empty())
        || rule.to.iter().any(|t| !t.operation.l7_fields().is_empty())
        || rule
            .when
            .iter()
            .any(|c| ConditionKey::parse(&c.key) == Some(ConditionKey::L7))
}

/// `from` and `to` each become one clause (any entry); each `when` condition one or two
/// (`values`, `notValues`). L7 parts are left out: they hold at L4.
fn rule(rule: &Rule) -> pb::AuthorizationRule {
    let mut clauses = Vec::new();
    if !rule.from.is_empty() {
        clauses.push(pb::AuthorizationClause {
            matches: rule.from.iter().map(|f| source(&f.source)).collect(),
        });
    }
    if !rule.to.is_empty() {
        clauses.push(pb::AuthorizationClause {
            matches: rule.to.iter().map(|t| operation(&t.operation)).collect(),
        });
    }
    for condition in &rule.when {
        clauses.extend(when(condition));
    }
    pb::AuthorizationRule { clauses }
}

fn source(source: &Source) -> pb::ConnectionMatch {
    pb::ConnectionMatch {
        principals: source.principals.clone(),
        not_principals: source.not_principals.clone(),
        namespaces: source.namespaces.clone(),
        not_namespaces: source.not_namespaces.clone(),
        // At L4 the original client is the peer.
        source_ips: cidrs(source.ip_blocks.iter().chain(&source.remote_ip_blocks)),
        not_source_ips: cidrs(
            source
                .not_ip_blocks
                .iter()
                .chain(&source.not_remote_ip_blocks),
        ),
        ..Default::default()
    }
}

fn operation(operation: &Operation) -> pb::ConnectionMatch {
    pb::ConnectionMatch {
        destination_ports: ports(&operation.ports),
        not_destination_ports: ports(&operation.not_ports),
        ..Default::default()
    }
}

fn when(condition: &Condition) -> Vec<pb::AuthorizationClause> {
    let Some(key) = ConditionKey::parse(&condition.key) else {
        return Vec::new();
    };
    let mut clauses = Vec::new();
    for (values, negated) in [(&condition.values, false), (&condition.not_values, true)] {
        if values.is_empty() {
            continue;
        }
        let mut set = pb::ConnectionMatch::default();
        let texts = values.clone();
        match (key, negated) {
            (ConditionKey::SourceIp | ConditionKey::RemoteIp, false) => {
                set.source_ips = cidrs(values)
            }
            (ConditionKey::SourceIp | ConditionKey::RemoteIp, true) => {
                set.not_source_ips = cidrs(values);
            }
            (ConditionKey::DestinationIp, false) => set.destination_ips = cidrs(values),
            (ConditionKey::DestinationIp, true) => set.not_destination_ips = cidrs(values),
            (ConditionKey::SourceNamespace, false) => set.namespaces = texts,
            (ConditionKey::SourceNamespace, true) => set.not_namespaces = texts,
            (ConditionKey::SourcePrincipal, false) => set.principals = texts,
            (ConditionKey::SourcePrincipal, true) => set.not_principals = texts,
            (ConditionKey::DestinationPort, false) => set.destination_ports = ports(values),
            (ConditionKey::DestinationPort, true) => set.not_destination_ports = ports(values),
            (ConditionKey::L7, _) => continue,
        }
        clauses.push(pb::AuthorizationClause { matches: vec![set] });
    }
    clauses
}

/// Validated IP blocks, normalized (`198.18.0.7` → `198.18.0.7/32`).
fn cidrs<'a>(texts: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    texts
        .into_iter()
        .filter_map(|text| ip_block::parse(text).ok())
        .map(|net| net.to_string())
        .collect()
}

/// Validated ports.
fn ports(texts: &[String]) -> Vec<u32> {
    texts.iter().filter_map(|text| text.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use ambit_api::istio::AuthorizationPolicySpec;

    use super::*;

    fn policy(namespace: &str, yaml: &str) -> AuthorizationPolicy {
        let spec: AuthorizationPolicySpec = serde_yaml_ng::from_str(yaml).expect("a spec");
        let mut policy = AuthorizationPolicy::new("p", spec);
        policy.metadata.namespace = Some(namespace.to_owned());
        policy
    }

    const MIXED: &str = "
rules:
- from: [{source: {namespaces: [lab]}}]
  to: [{operation: {methods: [POST], ports: ['8080']}}]
- from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]
";

    #[test]
    fn an_allow_rule_needing_l7_is_dropped() {
        let converted = authorization(&policy("shop", MIXED), "istio-system").expect("enforced");
        assert_eq!(converted.action(), pb::AuthorizationAction::Allow);
        assert_eq!(converted.scope(), pb::PolicyScope::Namespace);
        assert_eq!(converted.rules.len(), 1, "only the L4 rule is left");
        assert_eq!(
            converted.rules[0].clauses[0].matches[0].principals,
            ["cluster.local/ns/shop/sa/web"]
        );
    }

    #[test]
    fn a_deny_rule_keeps_its_l4_conditions() {
        let yaml = format!("action: DENY\n{MIXED}");
        let converted = authorization(&policy("shop", &yaml), "istio-system").expect("enforced");
        assert_eq!(converted.rules.len(), 2);
        let to = &converted.rules[0].clauses[1].matches[0];
        assert_eq!(
            to.destination_ports,
            [8080],
            "the port stays, the method goes"
        );
    }

    #[test]
    fn scope_from_namespace_and_selector_and_what_ztunnel_skips() {
        let mesh = authorization(&policy("istio-system", "{}"), "istio-system").expect("enforced");
        assert_eq!(mesh.scope(), pb::PolicyScope::Mesh);
        let selected = policy("shop", "selector: {matchLabels: {app: cart}}");
        let selected = authorization(&selected, "istio-system").expect("enforced");
        assert_eq!(selected.scope(), pb::PolicyScope::WorkloadSelector);
        assert_eq!(selected.selector["app"], "cart");
        let when = policy(
            "shop",
            "rules: [{when: [{key: source.ip, values: [10.1.2.3], notValues: [10.9.9.9]}]}]",
        );
        let when = authorization(&when, "istio-system").expect("enforced");
        let clauses = &when.rules[0].clauses;
        assert_eq!(clauses[0].matches[0].source_ips, ["10.1.2.3/32"]);
        assert_eq!(clauses[1].matches[0].not_source_ips, ["10.9.9.9/32"]);
        let audit = policy("shop", "action: AUDIT");
        assert!(authorization(&audit, "istio-system").is_none());
        let waypoint = policy("shop", "targetRefs: [{kind: Gateway, name: waypoint}]");
        assert!(authorization(&waypoint, "istio-system").is_none());
    }
}
