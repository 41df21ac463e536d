//! AuthorizationPolicy and PeerAuthentication: what Istio rejects is rejected with the
//! field and the fix; what ztunnel can only approximate is accepted with a warning.

use std::path::Path;

use super::*;

fn diagnostics(yaml: &str) -> (Vec<String>, Report) {
    let mut manifests = Manifests::default();
    manifests.parse_documents(Path::new("policies.yaml"), yaml);
    let report = validate(&manifests);
    let lines = report.diagnostics.iter().map(ToString::to_string).collect();
    (lines, report)
}

#[test]
fn valid_policies_of_both_versions_reach_the_model() {
    let (lines, report) = diagnostics(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-web, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  rules:
  - from: [{source: {principals: [cluster.local/ns/shop/sa/web], ipBlocks: [198.18.0.0/15]}}]
    to: [{operation: {ports: ['8080']}}]
    when: [{key: source.namespace, values: [shop]}]
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec:
  selector: {matchLabels: {app: cart}}
  mtls: {mode: STRICT}
  portLevelMtls:
    9090: {mode: PERMISSIVE}
    '9091': {mode: DISABLE}
",
    );
    assert_eq!(lines, Vec::<String>::new());
    assert_eq!(report.model.authorization_policies.len(), 1);
    let pa = &report.model.peer_authentications[0].object.spec;
    assert_eq!(
        pa.port_level_mtls.keys().copied().collect::<Vec<_>>(),
        [9090, 9091],
        "port keys are read plain or quoted"
    );
}

#[test]
fn each_mistake_is_reported_at_its_field() {
    let (lines, report) = diagnostics(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: shop}
spec:
  action: CUSTOM
  rules:
  - from: [{source: {ipBlocks: [10.0.0.0/40], principals: ['a*b']}}, {source: {}}]
    to: [{operation: {ports: ['0', http]}}]
    when: [{key: source.color, values: [red]}, {key: destination.port}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ports, namespace: shop}
spec:
  mtls: {mode: SOMETIMES}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: no-selector, namespace: shop}
spec:
  portLevelMtls: {8080: {mode: STRICT}}
---
apiVersion: security.istio.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: old, namespace: shop}
spec: {}
",
    );
    let expected = [
        "shop/bad (AuthorizationPolicy) in policies.yaml document 1: spec.action: CUSTOM",
        "spec.rules[0].from[0].source.ipBlocks[0]: `10.0.0.0/40` is not an IP address or CIDR",
        "spec.rules[0].from[0].source.principals[0]: `a*b`: `*` may only stand alone",
        "spec.rules[0].from[1].source: required: at least one field",
        "spec.rules[0].to[0].operation.ports[0]: `0` is not a port",
        "spec.rules[0].to[0].operation.ports[1]: `http` is not a port",
        "spec.rules[0].when[0].key: unknown key `source.color`: use one of source.ip",
        "spec.rules[0].when[1]: required: `values` or `notValues`",
        "shop/ports (PeerAuthentication) in policies.yaml document 2: spec.mtls.mode: unknown value `SOMETIMES`",
        "shop/no-selector (PeerAuthentication) in policies.yaml document 3: spec.portLevelMtls: port-level settings need a `selector`",
        "`security.istio.io/v1alpha1` is not a version Istio serves: use security.istio.io/v1 (or v1beta1)",
    ];
    for text in expected {
        assert!(
            lines.iter().any(|line| line.contains(text)),
            "expected a diagnostic containing {text:?} in:\n{}",
            lines.join("\n")
        );
    }
    assert_eq!(report.model.len(), 0, "every object here is rejected");
}

#[test]
fn l7_fields_in_a_workload_policy_warn_and_do_not_reject() {
    let (lines, report) = diagnostics(
        "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: shop}
spec:
  rules:
  - to: [{operation: {methods: [GET]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: waypoint, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  rules:
  - to: [{operation: {methods: [GET]}}]
",
    );
    assert_eq!(
        lines,
        [
            "warning: shop/get-only (AuthorizationPolicy) in policies.yaml document 1: spec.rules[0].to[0].operation.methods: `methods` needs an L7 proxy and ztunnel enforces this policy at L4, so this rule never matches (nothing it names is allowed); to check it, attach the policy to a waypoint with `targetRefs`"
        ],
        "a policy for a waypoint is not warned about"
    );
    assert_eq!(report.model.authorization_policies.len(), 2);
}
