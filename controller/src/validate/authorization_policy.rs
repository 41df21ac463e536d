//! Pass 3 for an AuthorizationPolicy: the rules Istio's own validation applies, plus a
//! warning where ztunnel will enforce an L7-only field at L4 (as Istio's ztunnel does:
//! stricter, never looser).

use ambit_api::{
    ip_block,
    istio::{
        MeshConfig,
        authorization_policy::{
            Action, AuthorizationPolicySpec, Condition, ConditionKey, Operation, Rule, Source,
        },
    },
};

use super::{Findings, Reason, mesh_config};

/// A CUSTOM policy: waypoints ask its provider, which the mesh config must define.
fn check_custom(spec: &AuthorizationPolicySpec, mesh: &MeshConfig, findings: &mut Findings) {
    if !spec.has_target_refs() {
        findings.add("spec.selector", Reason::CustomOnWorkloads);
    }
    match spec.provider.as_ref().map_or("", |p| p.name.as_str()) {
        "" => findings.add(
            "spec.provider.name",
            Reason::Required("the extension provider to ask"),
        ),
        name => {
            if let Some(problem) = mesh_config::provider_problem(mesh, name) {
                findings.add("spec.provider.name", Reason::Provider(problem));
            }
        }
    }
}

/// Checks one AuthorizationPolicy's spec; a CUSTOM one's provider must be an
/// authorizer of `mesh`.
pub(super) fn check(spec: &AuthorizationPolicySpec, mesh: &MeshConfig, findings: &mut Findings) {
    match spec.action {
        Action::Custom => check_custom(spec, mesh, findings),
        Action::Allow | Action::Deny | Action::Audit if spec.provider.is_some() => findings.add(
            "spec.provider",
            Reason::Unsupported("`provider` goes with `action: CUSTOM` only: remove it"),
        ),
        Action::Allow | Action::Deny | Action::Audit => {}
    }
    if spec.selector.is_some() && spec.has_target_refs() {
        findings.add("spec.selector", Reason::Exclusive("selector", "targetRefs"));
    }
    if spec.target_ref.is_some() && !spec.target_refs.is_empty() {
        findings.add(
            "spec.targetRef",
            Reason::Exclusive("targetRef", "targetRefs"),
        );
    }
    let at_l4 = !spec.has_target_refs();
    for (index, rule) in spec.rules.iter().enumerate() {
        let path = format!("spec.rules[{index}]");
        check_rule(findings, &path, rule);
        if at_l4 {
            warn_l7_at_l4(findings, &path, rule, spec.action);
        }
    }
}

fn check_rule(findings: &mut Findings, path: &str, rule: &Rule) {
    for (index, from) in rule.from.iter().enumerate() {
        source(
            findings,
            &format!("{path}.from[{index}].source"),
            &from.source,
        );
    }
    for (index, to) in rule.to.iter().enumerate() {
        operation(
            findings,
            &format!("{path}.to[{index}].operation"),
            &to.operation,
        );
    }
    for (index, condition) in rule.when.iter().enumerate() {
        when(findings, &format!("{path}.when[{index}]"), condition);
    }
}

fn source(findings: &mut Findings, path: &str, source: &Source) {
    let lists = [
        ("principals", &source.principals),
        ("notPrincipals", &source.not_principals),
        ("requestPrincipals", &source.request_principals),
        ("notRequestPrincipals", &source.not_request_principals),
        ("namespaces", &source.namespaces),
        ("notNamespaces", &source.not_namespaces),
        ("ipBlocks", &source.ip_blocks),
        ("notIpBlocks", &source.not_ip_blocks),
        ("remoteIpBlocks", &source.remote_ip_blocks),
        ("notRemoteIpBlocks", &source.not_remote_ip_blocks),
    ];
    if lists.iter().all(|(_, values)| values.is_empty()) {
        findings.add(
            path,
            Reason::Required("at least one field (`principals`, `namespaces`, `ipBlocks`, …)"),
        );
    }
    for (name, values) in lists {
        let at = |index: usize| format!("{path}.{name}[{index}]");
        for (index, value) in values.iter().enumerate() {
            if name.ends_with("pBlocks") {
                ip(findings, &at(index), value);
            } else {
                wildcard(findings, &at(index), value);
            }
        }
    }
}

fn operation(findings: &mut Findings, path: &str, operation: &Operation) {
    let ports = [
        ("ports", &operation.ports),
        ("notPorts", &operation.not_ports),
    ];
    if ports.iter().all(|(_, values)| values.is_empty()) && operation.l7_fields().is_empty() {
        findings.add(
            path,
            Reason::Required("at least one field (`ports`, `methods`, `paths`, `hosts`, …)"),
        );
    }
    for (name, values) in ports {
        for (index, value) in values.iter().enumerate() {
            port(findings, &format!("{path}.{name}[{index}]"), value);
        }
    }
}

fn when(findings: &mut Findings, path: &str, condition: &Condition) {
    let Some(key) = ConditionKey::parse(&condition.key) else {
        if condition.key.is_empty() {
            findings.add(
                format!("{path}.key"),
                Reason::Required("the attribute to test, e.g. `source.ip`"),
            );
        } else {
            findings.add(
                format!("{path}.key"),
                Reason::UnknownConditionKey(condition.key.clone()),
            );
        }
        return;
    };
    if condition.values.is_empty() && condition.not_values.is_empty() {
        findings.add(path, Reason::Required("`values` or `notValues`"));
    }
    for (name, values) in [
        ("values", &condition.values),
        ("notValues", &condition.not_values),
    ] {
        for (index, value) in values.iter().enumerate() {
            let at = format!("{path}.{name}[{index}]");
            match key {
                ConditionKey::SourceIp | ConditionKey::RemoteIp | ConditionKey::DestinationIp => {
                    ip(findings, &at, value);
                }
                ConditionKey::DestinationPort => port(findings, &at, value),
                ConditionKey::SourceNamespace | ConditionKey::SourcePrincipal => {
                    wildcard(findings, &at, value);
                }
                ConditionKey::L7 => {}
            }
        }
    }
}

/// ztunnel cannot see L7 attributes: an ALLOW rule needing it never matches, a DENY rule is
/// enforced without it. Either way the user should know.
fn warn_l7_at_l4(findings: &mut Findings, path: &str, rule: &Rule, action: Action) {
    let consequence = match action {
        Action::Allow => "this rule never matches (nothing it names is allowed)",
        Action::Deny => "this rule denies without that condition (more is denied)",
        Action::Audit | Action::Custom => return,
    };
    let mut fields: Vec<String> = Vec::new();
    for (index, from) in rule.from.iter().enumerate() {
        for field in from.source.l7_fields() {
            fields.push(format!("{path}.from[{index}].source.{field}"));
        }
    }
    for (index, to) in rule.to.iter().enumerate() {
        for field in to.operation.l7_fields() {
            fields.push(format!("{path}.to[{index}].operation.{field}"));
        }
    }
    for (index, condition) in rule.when.iter().enumerate() {
        if ConditionKey::parse(&condition.key) == Some(ConditionKey::L7) {
            fields.push(format!("{path}.when[{index}]"));
        }
    }
    for at in fields {
        let field = at.rsplit('.').next().unwrap_or_default().to_owned();
        findings.add(at, Reason::HttpOnlyAtL4 { field, consequence });
    }
}

fn ip(findings: &mut Findings, path: &str, value: &str) {
    if let Err(error) = ip_block::parse(value) {
        findings.add(path, Reason::IpBlock(error.to_string()));
    }
}

fn port(findings: &mut Findings, path: &str, value: &str) {
    if !value.parse::<u16>().is_ok_and(|port| port != 0) {
        findings.add(path, Reason::NotAPort(value.to_owned()));
    }
}

/// Istio's string matching in policies: exact, `prefix*`, `*suffix`, or `*`.
fn wildcard(findings: &mut Findings, path: &str, value: &str) {
    let inner = value.strip_prefix('*').unwrap_or(value);
    let inner = inner.strip_suffix('*').unwrap_or(inner);
    if inner.contains('*') || (value.len() > 1 && value.starts_with('*') && value.ends_with('*')) {
        findings.add(path, Reason::Wildcard(value.to_owned()));
    }
}
