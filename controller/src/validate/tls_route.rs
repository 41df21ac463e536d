//! Pass 3 for the Gateway API's TLSRoute: its parents, rules, backends and
//! ReferenceGrants as a TCPRoute's ([`super::tcp_route`]: its rules are TCPRoute rules),
//! and what is TLSRoute's own — `hostnames`, the server names (SNI) it takes, each a
//! host name the ClientHello can carry.

use ambit_api::gateway_api::TlsRouteSpec;

use super::{Findings, fields, http_route, tcp_route};

/// The kind, as ReferenceGrants name it.
const KIND: &str = "TLSRoute";

/// Checks one TLSRoute in `namespace`.
pub(super) fn check(
    spec: &TlsRouteSpec,
    namespace: &str,
    context: &http_route::Context<'_>,
    findings: &mut Findings,
) {
    for (i, hostname) in spec.hostnames.iter().enumerate() {
        fields::hostname(findings, &format!("spec.hostnames[{i}]"), hostname);
    }
    tcp_route::check_rules(
        (KIND, namespace),
        &spec.parent_refs,
        &spec.rules,
        context,
        findings,
    );
}
