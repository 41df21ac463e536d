//! AuthorizationPolicy and PeerAuthentication: what Istio rejects is rejected with the
//! field and the fix; what ztunnel can only approximate is accepted with a warning.

use super::*;

fn diagnostics(yaml: &str) -> (Vec<String>, Report) {
    validate_file("policies.yaml", yaml)
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
        "shop/bad (AuthorizationPolicy) in policies.yaml document 1: spec.selector: ztunnel does not enforce CUSTOM policies",
        "spec.provider.name: required: the extension provider to ask",
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

/// The root namespace's `istio` ConfigMap with this `mesh` text (indented for a block
/// scalar).
fn mesh_config_map(mesh: &str) -> String {
    format!(
        "apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |
{}",
        mesh.lines()
            .map(|line| format!("    {line}\n"))
            .collect::<String>()
    )
}

const CUSTOM_POLICY: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: sso, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: CUSTOM
  provider: {name: oauth2-proxy}
  rules: [{to: [{operation: {paths: ['/admin*']}}]}]
";

#[test]
fn a_custom_policy_names_an_authorizer_of_the_mesh_config() {
    let providers = "accessLogFile: /dev/stdout
extensionProviders:
- name: oauth2-proxy
  envoyExtAuthzHttp:
    service: oauth2-proxy.auth.svc.cluster.local
    port: 4180
    includeRequestHeadersInCheck: [cookie]
- name: opa
  envoyExtAuthzGrpc: {service: opa.opa.svc.cluster.local, port: 9191}";
    let (lines, report) = diagnostics(&format!(
        "{}---\n{CUSTOM_POLICY}",
        mesh_config_map(providers)
    ));
    assert_eq!(lines, Vec::<String>::new());
    assert_eq!(report.model.authorization_policies.len(), 1);
    let mesh = &report
        .model
        .mesh_config
        .as_ref()
        .expect("the mesh config is accepted")
        .object;
    assert_eq!(
        mesh.provider("oauth2-proxy")
            .and_then(|p| p.envoy_ext_authz_http.as_ref())
            .map(|h| h.port),
        Some(4180)
    );

    let grpc = CUSTOM_POLICY.replace("oauth2-proxy}", "opa}");
    let (lines, report) = diagnostics(&format!("{}---\n{grpc}", mesh_config_map(providers)));
    assert_eq!(lines, Vec::<String>::new(), "a gRPC authorizer serves too");
    assert_eq!(report.model.authorization_policies.len(), 1);

    let zipkin = CUSTOM_POLICY.replace("oauth2-proxy}", "zipkin}");
    let tracing = "extensionProviders: [{name: zipkin, zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}}]";
    let (lines, _) = diagnostics(&format!("{}---\n{zipkin}", mesh_config_map(tracing)));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("spec.provider.name: `zipkin` is no external authorizer")),
        "{lines:#?}"
    );

    let (lines, report) = diagnostics(CUSTOM_POLICY);
    assert_eq!(
        lines,
        [
            "error: shop/sso (AuthorizationPolicy) in policies.yaml document 1: spec.provider.name: the mesh config (ConfigMap istio-system/istio, key `mesh`) has no extension provider `oauth2-proxy`: add it to `extensionProviders` or correct the name"
        ]
    );
    assert!(report.model.is_empty());
}

#[test]
fn a_bad_mesh_config_is_reported_at_its_field() {
    let (lines, report) = diagnostics(&mesh_config_map(
        "extensionProviders:
- name: a
  envoyExtAuthzHttp: {service: a.shop.svc.cluster.local, port: 70000, statusOnError: nope}
- name: a
  envoyExtAuthzGrpc: {port: 80, includeRequestBodyInCheck: {allowPartialMessage: true}}",
    ));
    let expected = [
        "data.mesh.extensionProviders[0].envoyExtAuthzHttp.port: port 70000 is out of range",
        "data.mesh.extensionProviders[0].envoyExtAuthzHttp.statusOnError: `nope` is not an HTTP status",
        "data.mesh.extensionProviders[1].name: also defined in extensionProviders, as `a`",
        "data.mesh.extensionProviders[1].envoyExtAuthzGrpc.service: required: service",
        "data.mesh.extensionProviders[1].envoyExtAuthzGrpc.includeRequestBodyInCheck.maxRequestBytes: required: how many bytes",
    ];
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    for (line, part) in lines.iter().zip(expected) {
        assert!(line.contains(part), "expected {part:?} in {line}");
    }
    assert!(report.model.mesh_config.is_none());

    let (lines, _) = diagnostics(&mesh_config_map("extensionProviders: {name: a}"));
    assert!(
        lines[0].contains("istio-system/istio (ConfigMap) in policies.yaml document 1: data.mesh: extensionProviders: invalid type: map, expected a sequence at line 1"),
        "{lines:#?}"
    );
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
