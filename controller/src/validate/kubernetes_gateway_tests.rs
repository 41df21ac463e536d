//! Gateway API Gateways of class `istio`: Istio's Bookinfo gateway is valid; listeners
//! Ambit's gateway cannot serve are rejected by field path (a TLS listener passes TLS
//! through, it does not terminate it); a waypoint's Gateway (class `istio-waypoint`) is
//! not checked here.

use super::*;

fn diagnostics(yaml: &str) -> (Vec<String>, Report) {
    validate_file("gw.yaml", yaml)
}

#[test]
fn the_bookinfo_gateway_is_valid() {
    let (lines, report) = diagnostics(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: default}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}}
  - name: https
    hostname: bookinfo.example.com
    port: 443
    protocol: HTTPS
    tls: {mode: Terminate, certificateRefs: [{kind: Secret, name: bookinfo-cert, namespace: default}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: default}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
",
    );
    assert_eq!(lines, Vec::<String>::new());
    assert_eq!(report.model.kubernetes_gateways.len(), 1);
}

#[test]
fn listeners_the_gateway_cannot_serve_are_rejected_by_field() {
    let (lines, report) = diagnostics(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: istio
  listeners:
  - {name: udp, port: 9000, protocol: UDP}
  - {name: https, port: 443, protocol: HTTPS}
  - {name: https, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: c, namespace: other}]}}
  - {name: http, port: 443, protocol: HTTP, hostname: 'a.*.com'}
  - {name: more, port: 8080, protocol: HTTP, allowedRoutes: {namespaces: {from: Selector}}}
",
    );
    let expected = [
        "spec.listeners[0].protocol: not served by Ambit's gateway yet",
        "spec.listeners[1].tls: required: an HTTPS listener needs `tls.certificateRefs`",
        "spec.listeners[2].name: `https` is also the name of listeners[1]",
        "spec.listeners[2].tls.certificateRefs[0].namespace: a Secret of another namespace needs a ReferenceGrant",
        "spec.listeners[3].protocol: port 443 is already HTTPS in listeners[1]",
        "spec.listeners[3].hostname: `a.*.com` is not a host name",
        "spec.listeners[4].allowedRoutes.namespaces.from: Selector is not served",
    ];
    assert_errors_of(&lines, "shop/edge (Gateway)", &expected);
    assert!(report.model.kubernetes_gateways.is_empty());
}

#[test]
fn a_tcp_listener_takes_tcp_routes_and_no_tls() {
    let (lines, report) = diagnostics(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: streams, namespace: shop}
spec:
  gatewayClassName: istio
  listeners:
  - {name: db, port: 5432, protocol: TCP, allowedRoutes: {kinds: [{kind: TCPRoute}, {kind: HTTPRoute}]}}
  - {name: cache, port: 6379, protocol: TCP, tls: {certificateRefs: [{name: c}]}}
",
    );
    let expected = [
        "spec.listeners[0].allowedRoutes.kinds[1]: ignored: a TCP listener of Ambit's gateway takes TCPRoute, not HTTPRoute",
        "spec.listeners[1].tls: a TCP listener relays bytes and has no TLS",
    ];
    assert_lines(&lines, &expected);
    assert!(
        report.model.kubernetes_gateways.is_empty(),
        "the TLS conflict is an error"
    );
}

#[test]
fn a_tls_listener_passes_tls_through_to_tls_routes() {
    let (lines, report) = diagnostics(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: secure, namespace: shop}
spec:
  gatewayClassName: istio
  listeners:
  - name: tls
    hostname: '*.example.com'
    port: 443
    protocol: TLS
    tls: {mode: Passthrough, certificateRefs: [{name: unused}]}
    allowedRoutes: {kinds: [{kind: TLSRoute}, {kind: HTTPRoute}]}
",
    );
    let expected = [
        "warning: shop/secure (Gateway) in gw.yaml document 1: spec.listeners[0].tls.certificateRefs: ignored: a Passthrough listener does not terminate TLS",
        "warning: shop/secure (Gateway) in gw.yaml document 1: spec.listeners[0].allowedRoutes.kinds[1]: ignored: a TLS listener of Ambit's gateway takes TLSRoute, not HTTPRoute",
    ];
    assert_lines(&lines, &expected);
    assert_eq!(
        report.model.kubernetes_gateways.len(),
        1,
        "warnings keep it"
    );
}

#[test]
fn a_tls_listener_that_would_terminate_tls_is_refused_by_field() {
    let (lines, report) = diagnostics(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: secure, namespace: shop}
spec:
  gatewayClassName: istio
  listeners:
  - {name: terminate, port: 443, protocol: TLS, tls: {mode: Terminate, certificateRefs: [{name: c}]}}
  - {name: default, port: 8443, protocol: TLS, tls: {certificateRefs: [{name: c}]}}
  - {name: bare, port: 9443, protocol: TLS}
",
    );
    let expected = [
        "spec.listeners[0].tls.mode: Ambit's gateway passes TLS through only (Terminate is the default): set `mode: Passthrough`, or use an HTTPS listener to terminate TLS",
        "spec.listeners[1].tls.mode: Ambit's gateway passes TLS through only",
        "spec.listeners[2].tls: required: a TLS listener needs `tls: {mode: Passthrough}`",
    ];
    assert_errors_of(&lines, "shop/secure (Gateway)", &expected);
    assert!(report.model.kubernetes_gateways.is_empty());
}
