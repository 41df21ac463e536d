//! Ingress with the Gateway API, as Istio's ambient getting-started sets Bookinfo up: a
//! `Gateway` of class `istio` in `shop` (an HTTP listener on 80, an HTTPS one on 443
//! with a Secret's certificate for one host) and an HTTPRoute attached to it sending
//! `/productpage` (exact) and `/static` (a path prefix) to the `app` Service, whose pod
//! on the other node is reached over HBONE. The gateway's pod is labelled
//! `gateway.networking.k8s.io/gateway-name` as Istio labels the pods it deploys, and
//! runs the real `ambit-waypoint --ingress`. A route in another namespace attached to
//! the same Gateway, granted the `app` Service by a ReferenceGrant, is still not
//! admitted (`allowedRoutes` defaults to the Gateway's own namespace). A TCP listener
//! on 9000 relays the connections of the TCPRoute attached to it to the `echo` Service
//! (an echo server that speaks first, on the same pod), and a TLS passthrough listener
//! on 8443 those of the TLSRoute for `secure.example.com` to the `secure` Service, whose
//! pod (`openssl s_server`) presents its own certificate.

use std::{net::SocketAddr, time::Duration};

use ambit_e2e::{
    ControlPlane, PodSpec, TestNet, app,
    gateway_client::{self, TestPki},
    openssl, wait_for,
};
use anyhow::{Context as _, Result, ensure};
use serde_json::json;

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
const APP_PORT: u16 = 8080;
const ECHO_PORT: u16 = 9000;
const SECURE_PORT: u16 = 8443;
const SECURE_HOST: &str = "secure.example.com";
const GATEWAY: &str = "bookinfo-gateway";
const HOST: &str = "bookinfo.example.com";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

fn route(namespace: &str, name: &str, rules: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "parentRefs": [{ "name": GATEWAY, "namespace": "shop" }],
            "rules": rules,
        },
    })
}

/// Service `name` of `shop` at `vip` over the `app` pod, with one `port`.
fn app_service(name: &str, vip: &str, port: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": "shop" },
        "spec": { "clusterIP": vip, "selector": { "app": "app" }, "ports": [port] },
    })
}

#[test]
fn a_gateway_api_gateway_serves_the_http_routes_attached_to_it() -> Result<()> {
    let Some(net) = TestNet::new("gwapi") else {
        return Ok(());
    };
    net.write_namespace("shop", [AMBIENT])?;
    let n1 = net.add_node("n1")?;
    let n2 = net.add_node("n2")?;
    let control = ControlPlane::new(&net, &n1)?;
    let _meshes = control.install(&net, &[&n1, &n2])?;
    let app_pod = n2.add_pod(PodSpec::new("shop", "app-v1").label("app", "app"))?;
    let _server = app::http_serve(&app_pod, SocketAddr::from(([0; 4], APP_PORT)), "v1")?;
    let _echo = app::serve(&app_pod, SocketAddr::from(([0; 4], ECHO_PORT)))?;
    let _secure = openssl::serve(&app_pod, SECURE_PORT, SECURE_HOST, net.dir())?;
    net.write_manifest(
        "secure.yaml",
        &app_service(
            "secure",
            "198.19.210.12",
            json!({ "name": "tls", "port": SECURE_PORT }),
        ),
    )?;
    net.write_manifest(
        "secure-route.yaml",
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1alpha2",
            "kind": "TLSRoute",
            "metadata": { "name": "secure", "namespace": "shop" },
            "spec": {
                "parentRefs": [{ "name": GATEWAY, "sectionName": "tls" }],
                "hostnames": [SECURE_HOST],
                "rules": [{ "backendRefs": [{ "name": "secure", "port": SECURE_PORT }] }],
            },
        }),
    )?;
    net.write_manifest(
        "echo.yaml",
        &app_service(
            "echo",
            "198.19.210.11",
            json!({ "name": "tcp-echo", "port": ECHO_PORT }),
        ),
    )?;
    net.write_manifest(
        "echo-route.yaml",
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1alpha2",
            "kind": "TCPRoute",
            "metadata": { "name": "echo", "namespace": "shop" },
            "spec": {
                "parentRefs": [{ "name": GATEWAY, "sectionName": "echo" }],
                "rules": [{ "backendRefs": [{ "name": "echo", "port": ECHO_PORT }] }],
            },
        }),
    )?;
    let http_port = json!({ "name": "http", "port": 9080, "targetPort": APP_PORT });
    net.write_manifest("app.yaml", &app_service("app", "198.19.210.10", http_port))?;
    let pki = TestPki::generate(HOST)?;
    net.write_manifest("secret.yaml", &pki.secret("shop", "bookinfo-cert"))?;
    net.write_manifest(
        "gateway.yaml",
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": { "name": GATEWAY, "namespace": "shop" },
            "spec": {
                "gatewayClassName": "istio",
                "listeners": [
                    { "name": "http", "port": 80, "protocol": "HTTP" },
                    { "name": "https", "port": 443, "protocol": "HTTPS", "hostname": HOST,
                      "tls": { "certificateRefs": [{ "name": "bookinfo-cert" }] } },
                    { "name": "echo", "port": ECHO_PORT, "protocol": "TCP" },
                    { "name": "tls", "port": SECURE_PORT, "protocol": "TLS",
                      "tls": { "mode": "Passthrough" } },
                ],
            },
        }),
    )?;
    let to_app = json!([{ "name": "app", "port": 9080 }]);
    net.write_manifest(
        "route.yaml",
        &route(
            "shop",
            "bookinfo",
            json!([{
                "matches": [
                    { "path": { "type": "Exact", "value": "/productpage" } },
                    { "path": { "type": "PathPrefix", "value": "/static" } },
                ],
                "backendRefs": to_app,
            }]),
        ),
    )?;
    net.write_manifest(
        "foreign-route.yaml",
        &route(
            "outside",
            "foreign",
            json!([{
                "matches": [{ "path": { "type": "PathPrefix", "value": "/foreign" } }],
                "backendRefs": [{ "name": "app", "namespace": "shop", "port": 9080 }],
            }]),
        ),
    )?;
    net.write_manifest(
        "grant.yaml",
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1beta1",
            "kind": "ReferenceGrant",
            "metadata": { "name": "from-outside", "namespace": "shop" },
            "spec": {
                "from": [{
                    "group": "gateway.networking.k8s.io",
                    "kind": "HTTPRoute",
                    "namespace": "outside",
                }],
                "to": [{ "group": "", "kind": "Service" }],
            },
        }),
    )?;
    let gateway_pod = n1.add_pod(PodSpec::waypoint("shop", GATEWAY))?;
    let client = n1.add_pod(PodSpec::new("outside", "curl"))?;
    let _processes = control.start(&net)?;
    let _gateway =
        control.start_ingress(&gateway_pod, GATEWAY, &[80, 443, ECHO_PORT, SECURE_PORT])?;

    let http = gateway_pod.addr_v4(80);
    let get = |path: &str| gateway_client::plain_get(&client, http, HOST, path);
    wait_for(
        "the gateway to route /productpage to the app",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            let response = get("/productpage")?;
            Ok(response.contains("v1").then_some(()))
        },
    )
    .context("the HTTPRoute should route /productpage through the Gateway")?;
    for (path, status) in [
        ("/static/css/style.css", "200"),
        ("/static", "200"),
        ("/productpage/x", "404"),
        ("/staticx", "404"),
        ("/foreign", "404"),
    ] {
        let response = get(path)?;
        ensure!(
            response.starts_with(&format!("HTTP/1.1 {status}")),
            "{path}: expected {status}, got {response}"
        );
    }
    let https = gateway_pod.addr_v4(443);
    let response = pki.get(&client, https, "/productpage")?;
    ensure!(
        response.starts_with("HTTP/1.1 200") && response.contains("v1"),
        "HTTPS with the Secret's certificate: {response}"
    );
    let relayed = app::connect_with(
        &client,
        gateway_pod.addr_v4(ECHO_PORT),
        "hello\n",
        READY_TIMEOUT,
    )?;
    ensure!(
        relayed.ok && relayed.echo.as_deref() == Some("hello\n"),
        "the TCPRoute relays the TCP listener's connection to the echo server: {relayed:?}"
    );
    let presented = openssl::presented_to(
        &client,
        gateway_pod.addr_v4(SECURE_PORT),
        SECURE_HOST,
        READY_TIMEOUT,
    )?;
    ensure!(
        presented.as_deref() == Some(SECURE_HOST),
        "the TLSRoute passes TLS through to the pod's own certificate, got {presented:?}"
    );
    Ok(())
}
