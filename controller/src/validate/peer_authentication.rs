//! Pass 3 for a PeerAuthentication: the rules Istio's own validation applies.

use ambit_api::istio::PeerAuthenticationSpec;

use super::{Findings, Reason, fields};

/// Checks one PeerAuthentication's spec.
pub(super) fn check(spec: &PeerAuthenticationSpec, findings: &mut Findings) {
    if !spec.port_level_mtls.is_empty() && spec.selector.is_none() {
        findings.add("spec.portLevelMtls", Reason::PortLevelNeedsSelector);
    }
    for port in spec.port_level_mtls.keys() {
        fields::port(
            findings,
            &format!("spec.portLevelMtls[{port}]"),
            Some(*port),
        );
    }
}
