//! Pass 3 for the Gateway API's TCPRoute: its parents, backends and ReferenceGrants as
//! an HTTPRoute's ([`super::http_route`]), and what is TCPRoute's own — a rule has no
//! matches, so the first rule takes every connection: it needs backends (without, every
//! connection is refused), and the rules after it take nothing. A TLSRoute's rules are
//! the same, and checked here too ([`check_rules`]).

use ambit_api::gateway_api::{
    http_route::ParentReference,
    tcp_route::{TcpRouteRule, TcpRouteSpec},
};

use super::{Findings, Reason, http_route};

/// The kind, as ReferenceGrants name it.
const KIND: &str = "TCPRoute";

/// Checks one TCPRoute in `namespace`.
pub(super) fn check(
    spec: &TcpRouteSpec,
    namespace: &str,
    context: &http_route::Context<'_>,
    findings: &mut Findings,
) {
    check_rules(
        (KIND, namespace),
        &spec.parent_refs,
        &spec.rules,
        context,
        findings,
    );
}

/// Checks the parents and rules of a route of `kind` in `namespace` whose rules are a
/// TCPRoute's (a TCPRoute, a TLSRoute): weighted Service backends and no matches, so
/// only the first rule ever takes a connection.
pub(super) fn check_rules(
    (kind, namespace): (&str, &str),
    parents: &[ParentReference],
    rules: &[TcpRouteRule],
    context: &http_route::Context<'_>,
    findings: &mut Findings,
) {
    http_route::check_parents(parents, namespace, context, findings);
    if rules.is_empty() {
        findings.add(
            "spec.rules",
            Reason::Required(
                "without a rule every connection is refused: add one with `backendRefs`",
            ),
        );
    }
    for (i, rule) in rules.iter().enumerate() {
        let path = format!("spec.rules[{i}]");
        if i > 0 {
            findings.add(
                path.clone(),
                Reason::NotServed(format!(
                    "a {kind}'s rules have no matches, so spec.rules[0] takes every connection and this rule none: move its backendRefs into the first rule, or into a route of their own"
                )),
            );
        }
        if rule.backend_refs.is_empty() {
            findings.add(
                format!("{path}.backendRefs"),
                Reason::Required(
                    "a rule without backends refuses its connections: add a backendRef to a Service (its name and port)",
                ),
            );
        }
        for (j, backend) in rule.backend_refs.iter().enumerate() {
            let path = format!("{path}.backendRefs[{j}]");
            http_route::check_weighted_backend(&backend.backend, backend.weight, &path, findings);
        }
    }
    let backends = rules.iter().enumerate().flat_map(|(i, rule)| {
        rule.backend_refs
            .iter()
            .enumerate()
            .map(move |(j, backend)| {
                (
                    format!("spec.rules[{i}].backendRefs[{j}]"),
                    backend.backend.clone(),
                )
            })
    });
    http_route::check_references(
        parents,
        backends,
        (kind, namespace),
        &context.grants,
        findings,
    );
}
