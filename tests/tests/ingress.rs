//! The ingress gateway end to end, as Istio's getting-started guides set it up: a
//! gateway pod labelled `istio: ingressgateway` in `istio-system` runs the real
//! `ambit-waypoint --ingress`; an Istio Gateway selects it with an HTTP server on port 80
//! (`hosts: ["*"]`), an HTTPS server on 443 whose certificate comes from a Secret, and an
//! HTTP server on 8080 that redirects to HTTPS. A VirtualService bound to the Gateway
//! routes `/` to the `app` service, whose pod on the other node is reached over HBONE,
//! and `/via-waypoint` to `app-waypointed` (the same pod), whose traffic must go through
//! the namespace's waypoint: the gateway tunnels it there. The client is a pod outside
//! the mesh. A fourth server, on 8443, passes TLS for `secure.example.com` through
//! (`tls.mode: PASSTHROUGH`): a VirtualService `tls:` route sends it by SNI to service
//! `secure`, whose pod terminates it with its own certificate (`openssl s_server`). A
//! fifth, on 31400, is TCP (Istio's tcp-echo example): a `tcp:` route relays it to
//! service `echo`, whose server speaks first; a sixth, on 31443, terminates TLS with the
//! Secret's certificate and relays the rest to `echo` the same way. `/legacy` goes to
//! subset `v1` of service `legacy`, whose pods are outside the mesh: reached in plain
//! TCP, picked by label. An AuthorizationPolicy in `istio-system` that selects the
//! gateway's pod applies there, as on Istio's gateways, `connection.sni` included.

use std::{net::SocketAddr, time::Duration};

use ambit_e2e::{
    ChildGuard, ControlPlane, MeshNode, Pod, PodSpec, TestNet, app,
    gateway_client::{self, TestPki},
    openssl, wait_for,
};
use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
const APP_PORT: u16 = 8080;
const HOST: &str = "shop.example.com";
const SECURE_HOST: &str = "secure.example.com";
const SECURE_PORT: u16 = 9443;
const PASSTHROUGH_PORT: u16 = 8443;
const TCP_PORT: u16 = 31400;
const TLS_TCP_PORT: u16 = 31443;
const ECHO_PORT: u16 = 9000;
const GATEWAY_ACCOUNT: &str = "istio-ingressgateway";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

struct Ingress {
    net: TestNet,
    _meshes: Vec<MeshNode>,
    _app: Pod,
    _legacy: Vec<Pod>,
    _waypoint_pod: Pod,
    waypoint: ChildGuard,
    client: Pod,
    gateway_pod: Pod,
    gateway: ChildGuard,
    pki: TestPki,
    _processes: Vec<ChildGuard>,
}

impl Ingress {
    fn start() -> Result<Option<Self>> {
        let Some(net) = TestNet::new("ingress") else {
            return Ok(None);
        };
        net.write_namespace("shop", [AMBIENT])?;
        let n1 = net.add_node("n1")?;
        let n2 = net.add_node("n2")?;
        let control = ControlPlane::new(&net, &n1)?;
        let meshes = control.install(&net, &[&n1, &n2])?;
        let app_pod = n2.add_pod(PodSpec::new("shop", "app-v1").label("app", "app"))?;
        let mut processes = vec![
            app::http_serve(&app_pod, SocketAddr::from(([0; 4], APP_PORT)), "v1")?,
            openssl::serve(&app_pod, SECURE_PORT, SECURE_HOST, net.dir())?,
            app::serve(&app_pod, SocketAddr::from(([0; 4], ECHO_PORT)))?,
        ];
        let mut legacy = Vec::new();
        for version in ["v1", "v2"] {
            let pod = n2.add_pod(
                PodSpec::new("outside", &format!("legacy-{version}"))
                    .label("app", "legacy")
                    .label("version", version),
            )?;
            let listen = SocketAddr::from(([0; 4], APP_PORT));
            processes.push(app::http_serve(&pod, listen, &format!("legacy-{version}"))?);
            legacy.push(pod);
        }
        net.write_manifest(
            "legacy.yaml",
            &service(
                ("outside", "legacy"),
                "198.19.200.34",
                "legacy",
                ("http", 80, APP_PORT),
            ),
        )?;
        net.write_manifest(
            "legacy-destination-rule.yaml",
            &json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "DestinationRule",
                "metadata": { "name": "legacy", "namespace": "outside" },
                "spec": {
                    "host": "legacy",
                    "subsets": [
                        { "name": "v1", "labels": { "version": "v1" } },
                        { "name": "v2", "labels": { "version": "v2" } },
                    ],
                },
            }),
        )?;
        let gateway_pod = n1.add_pod(
            PodSpec::new("istio-system", "ingress-0")
                .service_account(GATEWAY_ACCOUNT)
                .label("istio", "ingressgateway"),
        )?;
        let waypoint_pod = n1.add_pod(PodSpec::waypoint("shop", "waypoint"))?;
        let client = n1.add_pod(PodSpec::new("outside", "curl"))?;
        let pki = TestPki::generate(HOST)?;
        net.write_manifest(
            "app.yaml",
            &service(
                ("shop", "app"),
                "198.19.200.30",
                "app",
                ("http", 80, APP_PORT),
            ),
        )?;
        let mut waypointed = service(
            ("shop", "app-waypointed"),
            "198.19.200.31",
            "app",
            ("http", 80, APP_PORT),
        );
        waypointed["metadata"]["labels"] = json!({ "istio.io/use-waypoint": "waypoint" });
        net.write_manifest("app-waypointed.yaml", &waypointed)?;
        net.write_manifest(
            "secure.yaml",
            &service(
                ("shop", "secure"),
                "198.19.200.32",
                "app",
                ("tls", SECURE_PORT, SECURE_PORT),
            ),
        )?;
        net.write_manifest(
            "secure-virtual-service.yaml",
            &json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": { "name": "secure", "namespace": "shop" },
                "spec": {
                    "hosts": [SECURE_HOST],
                    "gateways": ["istio-system/public"],
                    "tls": [{
                        "match": [{ "port": PASSTHROUGH_PORT, "sniHosts": [SECURE_HOST] }],
                        "route": [{ "destination": {
                            "host": "secure.shop.svc.cluster.local",
                            "port": { "number": SECURE_PORT },
                        } }],
                    }],
                },
            }),
        )?;
        net.write_manifest(
            "echo.yaml",
            &service(
                ("shop", "echo"),
                "198.19.200.33",
                "app",
                ("tcp-echo", ECHO_PORT, ECHO_PORT),
            ),
        )?;
        net.write_manifest(
            "echo-virtual-service.yaml",
            &json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": { "name": "echo", "namespace": "shop" },
                "spec": {
                    "hosts": ["*"],
                    "gateways": ["istio-system/public"],
                    "tcp": [{
                        "match": [{ "port": TCP_PORT }, { "port": TLS_TCP_PORT }],
                        "route": [{ "destination": {
                            "host": "echo.shop.svc.cluster.local",
                            "port": { "number": ECHO_PORT },
                        } }],
                    }],
                },
            }),
        )?;
        net.write_waypoint("shop", "waypoint")?;
        net.write_manifest("secret.yaml", &pki.secret("istio-system", "shop-cert"))?;
        net.write_manifest(
            "gateway.yaml",
            &json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "Gateway",
                "metadata": { "name": "public", "namespace": "istio-system" },
                "spec": {
                    "selector": { "istio": "ingressgateway" },
                    "servers": [
                        { "port": { "number": 80, "name": "http", "protocol": "HTTP" },
                          "hosts": ["*"] },
                        { "port": { "number": 443, "name": "https", "protocol": "HTTPS" },
                          "hosts": [HOST],
                          "tls": { "mode": "SIMPLE", "credentialName": "shop-cert" } },
                        { "port": { "number": 8080, "name": "redirect", "protocol": "HTTP" },
                          "hosts": [HOST],
                          "tls": { "httpsRedirect": true } },
                        { "port": { "number": PASSTHROUGH_PORT, "name": "tls", "protocol": "TLS" },
                          "hosts": [SECURE_HOST, "other.example.com"],
                          "tls": { "mode": "PASSTHROUGH" } },
                        { "port": { "number": TCP_PORT, "name": "tcp", "protocol": "TCP" },
                          "hosts": ["*"] },
                        { "port": { "number": TLS_TCP_PORT, "name": "tls-tcp", "protocol": "TLS" },
                          "hosts": [HOST],
                          "tls": { "mode": "SIMPLE", "credentialName": "shop-cert" } },
                    ],
                },
            }),
        )?;
        net.write_manifest(
            "virtual-service.yaml",
            &json!({
                "apiVersion": "networking.istio.io/v1",
                "kind": "VirtualService",
                "metadata": { "name": "app", "namespace": "shop" },
                "spec": {
                    "hosts": ["*"],
                    "gateways": ["istio-system/public"],
                    "http": [
                        {
                            "match": [{ "uri": { "prefix": "/legacy" } }],
                            "route": [{ "destination": {
                                "host": "legacy.outside.svc.cluster.local",
                                "subset": "v1",
                            } }],
                        },
                        {
                            "match": [{ "uri": { "prefix": "/via-waypoint" } }],
                            "route": [{ "destination": { "host": "app-waypointed" } }],
                        },
                        {
                            "match": [{ "uri": { "prefix": "/" } }],
                            "route": [{ "destination": { "host": "app", "port": { "number": 80 } } }],
                        },
                    ],
                },
            }),
        )?;
        processes.extend(control.start(&net)?);
        let waypoint = control.start_waypoint(&waypoint_pod, "waypoint")?;
        let gateway = control.start_ingress(
            &gateway_pod,
            GATEWAY_ACCOUNT,
            &[80, 443, 8080, PASSTHROUGH_PORT, TCP_PORT, TLS_TCP_PORT],
        )?;
        Ok(Some(Self {
            net,
            _meshes: meshes,
            _app: app_pod,
            _legacy: legacy,
            _waypoint_pod: waypoint_pod,
            waypoint,
            client,
            gateway_pod,
            gateway,
            pki,
            _processes: processes,
        }))
    }

    /// `GET path` for `host` from the client pod to the gateway's `port`, over TLS for
    /// [`HOST`] when `tls`: the whole response.
    fn request(&self, port: u16, host: &str, path: &str, tls: bool) -> Result<String> {
        let to = self.gateway_pod.addr_v4(port);
        if tls {
            self.pki.get(&self.client, to, path)
        } else {
            gateway_client::plain_get(&self.client, to, host, path)
        }
    }
}

/// Service `namespace/name` at `vip`, selecting the pods labelled `app: <app>`, with one
/// port: `(name, port, targetPort)`.
fn service(
    (namespace, name): (&str, &str),
    vip: &str,
    app: &str,
    (port_name, port, target_port): (&str, u16, u16),
) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": namespace },
        "spec": {
            "clusterIP": vip,
            "selector": { "app": app },
            "ports": [{ "name": port_name, "port": port, "targetPort": target_port }],
        },
    })
}

#[test]
fn the_ingress_gateway_serves_http_https_redirects_tls_and_tcp() -> Result<()> {
    let Some(ingress) = Ingress::start()? else {
        return Ok(());
    };
    let logs = || format!("gateway:\n{}", ingress.gateway.stdout());

    // HTTP on 80, any host: routed by the bound VirtualService to v1 over HBONE.
    let to = ingress.gateway_pod.addr_v4(80);
    wait_for(
        "the gateway routing to v1",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            let report = app::http_get(&ingress.client, to, 20, None)?;
            Ok((report.bodies.get("v1") == Some(&20)).then_some(()))
        },
    )
    .with_context(logs)?;

    // HTTPS on 443 with the Secret's certificate, verified by the client for HOST.
    let response = ingress
        .request(443, HOST, "/hello", true)
        .with_context(logs)?;
    ensure!(
        response.starts_with("HTTP/1.1 200") && response.trim_end().ends_with("v1"),
        "HTTPS through the gateway: {response}\n{}",
        logs()
    );

    // 8080 redirects HOST to HTTPS, and does not serve other hosts.
    let response = ingress.request(8080, HOST, "/hello", false)?;
    ensure!(
        response.starts_with("HTTP/1.1 301")
            && response
                .to_ascii_lowercase()
                .contains(&format!("location: https://{HOST}/hello\r\n")),
        "httpsRedirect: {response}"
    );
    let response = ingress.request(8080, "other.example.org", "/hello", false)?;
    ensure!(
        response.starts_with("HTTP/1.1 404"),
        "a host no server on the port accepts: {response}"
    );

    // TLS passed through on 8443 by SNI to `secure`, whose pod shows its own certificate;
    // a name the server accepts but no `tls:` route takes, or one it does not accept,
    // gets no handshake.
    let passthrough = ingress.gateway_pod.addr_v4(PASSTHROUGH_PORT);
    let shown =
        |name: &str| openssl::presented_to(&ingress.client, passthrough, name, READY_TIMEOUT);
    let presented = shown(SECURE_HOST)?;
    ensure!(
        presented.as_deref() == Some(SECURE_HOST),
        "TLS passed through for {SECURE_HOST}: shown {presented:?}\n{}",
        logs()
    );
    for name in ["other.example.com", "unknown.example.org"] {
        let presented = shown(name)?;
        ensure!(presented.is_none(), "SNI {name}: shown {presented:?}");
    }

    // A subset of a service outside the mesh: its pods' labels are known, in plain TCP.
    let report = app::http_call(
        &ingress.client,
        to,
        app::HttpCall {
            path: "/legacy",
            count: 10,
            ..app::HttpCall::default()
        },
    )?;
    ensure!(
        report.bodies.get("legacy-v1") == Some(&10),
        "/legacy to subset v1 outside the mesh: {report:?}\n{}",
        logs()
    );

    // TCP on 31400, relayed to `echo` at once: its server speaks first, so a gateway
    // waiting for a TLS ClientHello (up to 15 s) would miss the 5 s timeout.
    let report = app::connect_with(
        &ingress.client,
        ingress.gateway_pod.addr_v4(TCP_PORT),
        "hello\n",
        Duration::from_secs(5),
    )?;
    ensure!(
        report.ok
            && report.echo.as_deref() == Some("hello\n")
            && report
                .server_saw
                .as_ref()
                .is_some_and(|saw| saw.local.port() == ECHO_PORT),
        "TCP through the gateway: {report:?}\n{}",
        logs()
    );

    // TLS terminated on 31443, then the same relay: the greeting, then the echo.
    let received = ingress
        .pki
        .send(
            &ingress.client,
            ingress.gateway_pod.addr_v4(TLS_TCP_PORT),
            "hello\n",
        )
        .with_context(logs)?;
    ensure!(
        received.ends_with("hello\n") && received.contains(&format!(":{ECHO_PORT}\"")),
        "TCP over TLS terminated by the gateway: {received:?}\n{}",
        logs()
    );

    // A service with a waypoint is reached through it (its ztunnel takes nothing else).
    let response = ingress.request(80, HOST, "/via-waypoint", false)?;
    ensure!(
        response.starts_with("HTTP/1.1 200") && response.trim_end().ends_with("v1"),
        "through the waypoint: {response}\n{}\nwaypoint:\n{}",
        logs(),
        ingress.waypoint.stdout()
    );
    ensure!(
        ingress.waypoint.stdout().contains("path=\"/via-waypoint\""),
        "the waypoint logged no such request:\n{}",
        ingress.waypoint.stdout()
    );
    Ok(())
}

#[test]
fn a_policy_selecting_the_gateway_pod_applies_at_the_gateway() -> Result<()> {
    let Some(ingress) = Ingress::start()? else {
        return Ok(());
    };
    let logs = || format!("gateway:\n{}", ingress.gateway.stdout());
    wait_for("the gateway routing to v1", READY_TIMEOUT, || {
        let response = ingress.request(80, HOST, "/hello", false)?;
        Ok::<_, anyhow::Error>(response.starts_with("HTTP/1.1 200").then_some(()))
    })
    .with_context(logs)?;
    ingress.net.write_manifest(
        "deny-admin.yaml",
        &json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": { "name": "deny-admin", "namespace": "istio-system" },
            "spec": {
                "selector": { "matchLabels": { "istio": "ingressgateway" } },
                "action": "DENY",
                "rules": [
                    { "to": [{ "operation": { "paths": ["/admin*"] } }] },
                    {
                        "to": [{ "operation": { "paths": ["/tls-only"] } }],
                        "when": [{ "key": "connection.sni", "values": [HOST] }],
                    },
                ],
            },
        }),
    )?;
    wait_for("/admin refused at the gateway", READY_TIMEOUT, || {
        let response = ingress.request(80, HOST, "/admin/users", false)?;
        Ok::<_, anyhow::Error>(response.starts_with("HTTP/1.1 403").then_some(()))
    })
    .with_context(logs)?;
    let response = ingress.request(80, HOST, "/hello", false)?;
    ensure!(
        response.starts_with("HTTP/1.1 200") && response.trim_end().ends_with("v1"),
        "other paths still reach the app: {response}\n{}",
        logs()
    );
    // `connection.sni` is the TLS server name: set over HTTPS, absent in plaintext.
    let over_tls = ingress.request(443, HOST, "/tls-only", true)?;
    ensure!(
        over_tls.starts_with("HTTP/1.1 403"),
        "HTTPS with SNI {HOST}: {over_tls}\n{}",
        logs()
    );
    let plain = ingress.request(80, HOST, "/tls-only", false)?;
    ensure!(plain.starts_with("HTTP/1.1 200"), "plaintext: {plain}");
    Ok(())
}
