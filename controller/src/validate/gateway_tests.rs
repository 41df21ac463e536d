//! Istio Gateways: the getting-started ingress passes; what Istio rejects, and what
//! Ambit's gateway cannot serve yet, is rejected with the server's field path.

use super::*;

fn diagnostics(yaml: &str) -> (Vec<String>, Report) {
    validate_file("gw.yaml", yaml)
}

#[test]
fn the_getting_started_gateways_are_valid() {
    let (lines, report) = diagnostics(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: httpbin-gateway, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['shop/httpbin.example.com']
    tls: {mode: SIMPLE, credentialName: httpbin-credential}
  - port: {number: 8443, name: mtls, protocol: https}
    hosts: ['*.example.com']
    tls: {mode: MUTUAL, credentialName: httpbin-credential}
",
    );
    assert_eq!(lines, Vec::<String>::new());
    assert_eq!(report.model.gateways.len(), 1);
}

#[test]
fn tls_passed_through_needs_no_certificate_but_cannot_share_a_terminating_port() {
    let (lines, report) = diagnostics(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, protocol: HTTPS}
    hosts: [secure.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 8443, protocol: TLS}
    hosts: ['*.example.com']
    tls: {mode: PASSTHROUGH}
",
    );
    assert_eq!(lines, Vec::<String>::new());
    assert_eq!(report.model.gateways.len(), 1);

    let (lines, _) = diagnostics(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: mixed, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, protocol: HTTPS}
    hosts: [secure.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 443, protocol: HTTPS}
    hosts: [www.example.com]
    tls: {mode: SIMPLE, credentialName: www}
  - port: {number: 9000, protocol: TLS}
    hosts: ['*']
",
    );
    let at = "error: istio-system/mixed (Gateway) in gw.yaml document 1";
    assert_eq!(
        lines,
        [
            format!(
                "{at}: spec.servers[1].port.protocol: port 443 is already served with another protocol or TLS mode by spec.servers[0]: one port, one protocol (TLS passed through or terminated, not both)"
            ),
            format!(
                "{at}: spec.servers[2].tls: required: a TLS server needs `tls`: `mode: PASSTHROUGH`, or `SIMPLE` with a `credentialName` to terminate it"
            ),
        ]
    );
}

#[test]
fn tcp_and_mongo_servers_relay_bytes_and_tls_servers_may_terminate_first() {
    let (lines, report) = diagnostics(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ['*']
  - port: {number: 27017, name: mongo, protocol: MONGO}
    hosts: ['*']
  - port: {number: 31443, name: tls, protocol: TLS}
    hosts: [db.example.com]
    tls: {mode: SIMPLE, credentialName: db-cert}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tcp-with-tls, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 31400, protocol: TCP}
    hosts: ['*']
    tls: {mode: SIMPLE, credentialName: tcp}
",
    );
    assert_eq!(
        lines,
        [
            "error: istio-system/tcp-with-tls (Gateway) in gw.yaml document 2: spec.servers[0].tls: a TCP server relays bytes as they come: remove `tls`, or use protocol TLS with `mode: PASSTHROUGH`"
        ]
    );
    assert_eq!(report.model.gateways.len(), 1);
}

#[test]
fn each_bad_server_field_is_reported_and_the_gateway_rejected() {
    let (lines, report) = diagnostics(
        "apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {name: broken, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 70000, protocol: HTTP}
    hosts: []
  - port: {number: 443, protocol: HTTPS}
    hosts: ['api.*.com']
  - port: {number: 8443, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: AUTO_PASSTHROUGH}
  - port: {number: 9000, protocol: QUIC}
    hosts: ['*']
  - port: {number: 443, protocol: HTTP}
    hosts: ['*']
",
    );
    let at = "error: istio-system/broken (Gateway) in gw.yaml document 1";
    assert_eq!(
        lines,
        [
            format!(
                "{at}: spec.servers[0].port.number: port 70000 is out of range: use 1 to 65535"
            ),
            format!(
                "{at}: spec.servers[0].hosts: required: list the hosts this server accepts (`*` for any)"
            ),
            format!(
                "{at}: spec.servers[1].hosts[0]: `api.*.com` is not a server host: write `host` or `namespace/host`, with `*` alone or as the first label (`*.example.com`)"
            ),
            format!(
                "{at}: spec.servers[1].tls: required: an HTTPS server needs `tls` with `mode: SIMPLE` and a `credentialName`"
            ),
            format!(
                "{at}: spec.servers[2].tls.mode: AUTO_PASSTHROUGH and ISTIO_MUTUAL are not served by Ambit's gateway yet: use SIMPLE, MUTUAL or PASSTHROUGH"
            ),
            format!(
                "{at}: spec.servers[2].tls.credentialName: required: the Secret with the server's certificate (or `serverCertificate` and `privateKey` files)"
            ),
            format!(
                "{at}: spec.servers[3].port.protocol: unknown protocol `QUIC`: use HTTP, HTTPS, HTTP2, GRPC or GRPC-WEB"
            ),
            format!(
                "{at}: spec.servers[4].port.protocol: port 443 is already served with another protocol or TLS mode by spec.servers[1]: one port, one protocol (TLS passed through or terminated, not both)"
            ),
        ]
    );
    assert!(report.model.gateways.is_empty());
}

#[test]
fn a_virtual_service_bound_to_a_missing_gateway_is_applied_with_a_warning() {
    let (lines, report) = diagnostics(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: ['*']
  gateways: [istio-system/public, mesh, public-typo]
  http: [{route: [{destination: {host: web}}]}]
",
    );
    assert_eq!(
        lines,
        [
            "warning: shop/web (VirtualService) in gw.yaml document 2: spec.gateways[2]: no Istio Gateway shop/public-typo: the routes apply once it exists — correct the name (`namespace/name`, or `name` in this namespace), or add the Gateway"
        ]
    );
    assert_eq!(report.model.virtual_services.len(), 1);
}
