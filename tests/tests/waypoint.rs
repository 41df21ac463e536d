//! The waypoint end to end: namespace `shop` is labelled `istio.io/use-waypoint:
//! waypoint` and has a Gateway of class `istio-waypoint`, whose pod runs the real
//! `ambit-waypoint` on n1. A client's request to the `app` Service's VIP is captured by
//! its ztunnel, carried over HBONE to the waypoint (the VIP as the destination), routed
//! there by the VirtualService and DestinationRule, and carried over HBONE again to the
//! chosen pod's ztunnel — which accepts it only because it comes from the waypoint. An
//! AuthorizationPolicy attached to the waypoint (`targetRefs`) allows GET and denies
//! POST, and the waypoint counts requests with Istio's labels.

use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    time::Duration,
};

use ambit_e2e::{
    ChildGuard, ControlPlane, MeshNode, Pod, PodSpec, TestNet, app, mesh::Metrics, wait_for,
};
use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
const USE_WAYPOINT: (&str, &str) = ("istio.io/use-waypoint", "waypoint");
const VIP: &str = "198.19.200.20";
const APP_PORT: u16 = 8080;
const READY_TIMEOUT: Duration = Duration::from_secs(20);

fn istio(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": kind,
        "metadata": { "name": name, "namespace": "shop" },
        "spec": spec,
    })
}

fn virtual_service(http: Value) -> Value {
    istio(
        "VirtualService",
        "app",
        json!({ "hosts": ["app"], "http": http }),
    )
}

struct Cluster {
    net: TestNet,
    meshes: Vec<MeshNode>,
    client: Pod,
    pods: Vec<Pod>,
    waypoint: ChildGuard,
    waypoint_pod: Pod,
    _processes: Vec<ChildGuard>,
}

impl Cluster {
    fn start() -> Result<Option<Self>> {
        let Some(net) = TestNet::new("waypoint") else {
            return Ok(None);
        };
        net.write_namespace("shop", [AMBIENT, USE_WAYPOINT])?;
        let n1 = net.add_node("n1")?;
        let n2 = net.add_node("n2")?;
        let control = ControlPlane::new(&net, &n1)?;
        let meshes = control.install(&net, &[&n1, &n2])?;
        net.write_manifest(
            "gateway.yaml",
            &json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": { "name": "waypoint", "namespace": "shop" },
                "spec": {
                    "gatewayClassName": "istio-waypoint",
                    "listeners": [{ "name": "mesh", "port": 15008, "protocol": "HBONE" }],
                },
            }),
        )?;
        let waypoint_pod = n1.add_pod(
            PodSpec::new("shop", "waypoint-0")
                .service_account("waypoint")
                .label("gateway.networking.k8s.io/gateway-name", "waypoint")
                .label("istio.io/dataplane-mode", "none"),
        )?;
        let client = n1.add_pod(PodSpec::new("shop", "client"))?;
        let mut pods = Vec::new();
        let mut processes = Vec::new();
        for (node, version) in [(&n2, "v1"), (&n2, "v2"), (&n1, "v3")] {
            let pod = node.add_pod(
                PodSpec::new("shop", &format!("app-{version}"))
                    .label("app", "app")
                    .label("version", version),
            )?;
            processes.push(app::http_serve(
                &pod,
                SocketAddr::from(([0; 4], APP_PORT)),
                version,
            )?);
            pods.push(pod);
        }
        net.write_manifest(
            "app.yaml",
            &json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": { "name": "app", "namespace": "shop" },
                "spec": {
                    "clusterIP": VIP,
                    "selector": { "app": "app" },
                    "ports": [{ "name": "http", "port": 80, "targetPort": APP_PORT }],
                },
            }),
        )?;
        let subsets: Vec<Value> = ["v1", "v2", "v3"]
            .iter()
            .map(|v| json!({ "name": v, "labels": { "version": v } }))
            .collect();
        net.write_manifest(
            "destination-rule.yaml",
            &istio(
                "DestinationRule",
                "app",
                json!({ "host": "app", "subsets": subsets }),
            ),
        )?;
        processes.extend(control.start(&net)?);
        let waypoint = control.start_waypoint(&waypoint_pod, "waypoint")?;
        Ok(Some(Self {
            net,
            meshes,
            client,
            pods,
            waypoint,
            waypoint_pod,
            _processes: processes,
        }))
    }

    fn set_routes(&self, http: Value) -> Result<()> {
        self.net
            .write_manifest("virtual-service.yaml", &virtual_service(http))?;
        Ok(())
    }

    /// Waits until `count` requests with `header` are all answered by `version`.
    fn wait_all_from(&self, header: Option<&str>, version: &str, count: usize) -> Result<()> {
        let vip: SocketAddr = format!("{VIP}:80").parse()?;
        let last = std::cell::RefCell::new(None);
        wait_for(
            &format!("{count} requests ({header:?}) all answered by {version}"),
            READY_TIMEOUT,
            || -> Result<Option<()>> {
                let report = app::http_get(&self.client, vip, count, header)?;
                let all = report.bodies.get(version) == Some(&(count as u64));
                *last.borrow_mut() = Some(report);
                Ok(all.then_some(()))
            },
        )
        .with_context(|| format!("last report: {:?}\n{}", last.borrow(), self.logs()))
    }

    /// The waypoint's Prometheus text from its port 15020, read inside its pod.
    fn waypoint_metrics(&self) -> Result<Metrics> {
        let text = self.waypoint_pod.run_in(|| -> std::io::Result<String> {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", 15020))?;
            stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })??;
        Ok(Metrics(text))
    }

    fn logs(&self) -> String {
        let ztunnel = |mesh: &MeshNode| mesh.ztunnel().map(ChildGuard::stdout).unwrap_or_default();
        let services = self.meshes[0]
            .config_dump()
            .map(|dump| dump["directory"]["services"].to_string())
            .unwrap_or_default();
        format!(
            "n1's services: {services}\nwaypoint:\n{}\nn1 ztunnel:\n{}\nn2 ztunnel:\n{}",
            self.waypoint.stdout(),
            ztunnel(&self.meshes[0]),
            ztunnel(&self.meshes[1])
        )
    }
}

#[test]
fn requests_to_a_service_go_through_its_waypoint_and_follow_the_routes() -> Result<()> {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    // Everything to v2, except the requests of user jason, to v3.
    cluster.set_routes(json!([
        {
            "match": [{ "headers": { "end-user": { "exact": "jason" } } }],
            "route": [{ "destination": { "host": "app", "subset": "v3" } }],
        },
        { "route": [{ "destination": { "host": "app", "subset": "v2" } }] },
    ]))?;
    cluster.wait_all_from(None, "v2", 50)?;
    cluster.wait_all_from(Some("end-user: jason"), "v3", 20)?;

    // A 50/50 split between v1 and v2, within 5% over 2,000 requests.
    cluster.set_routes(json!([{
        "route": [
            { "destination": { "host": "app", "subset": "v1" }, "weight": 50 },
            { "destination": { "host": "app", "subset": "v2" }, "weight": 50 },
        ],
    }]))?;
    let vip: SocketAddr = format!("{VIP}:80").parse()?;
    wait_for(
        "the 50/50 split to apply",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            let report = app::http_get(&cluster.client, vip, 20, None)?;
            Ok(report.bodies.contains_key("v1").then_some(()))
        },
    )?;
    let report = app::http_get(&cluster.client, vip, 2_000, None)?;
    let v1 = report.bodies.get("v1").copied().unwrap_or(0);
    let v2 = report.bodies.get("v2").copied().unwrap_or(0);
    ensure!(
        v1 + v2 == 2_000 && (900..=1_100).contains(&v1),
        "expected 1,000 ± 100 of 2,000 on each of v1 and v2: {report:?}"
    );

    // L7 policy at the waypoint: GET allowed, POST denied with Istio's 403.
    cluster.net.write_manifest(
        "authorization.yaml",
        &json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": { "name": "get-only", "namespace": "shop" },
            "spec": {
                "targetRefs": [{
                    "kind": "Gateway",
                    "group": "gateway.networking.k8s.io",
                    "name": "waypoint",
                }],
                "action": "ALLOW",
                "rules": [{ "to": [{ "operation": { "methods": ["GET"] } }] }],
            },
        }),
    )?;
    wait_for(
        "POST to be denied by the waypoint",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            let report = app::http_request(&cluster.client, "POST", vip, 1, None)?;
            Ok(report.statuses.contains_key("403").then_some(()))
        },
    )
    .with_context(|| cluster.logs())?;
    let get = app::http_get(&cluster.client, vip, 10, None)?;
    ensure!(
        get.statuses.get("200") == Some(&10),
        "GET stays allowed: {get:?}"
    );
    let metrics = cluster.waypoint_metrics()?;
    let requests = |code: &str| {
        metrics.sum(
            "istio_requests_total",
            &[
                ("reporter", "waypoint"),
                ("response_code", code),
                ("destination_service", "app.shop.svc.cluster.local"),
                ("connection_security_policy", "mutual_tls"),
                (
                    "source_principal",
                    "spiffe://cluster.local/ns/shop/sa/default",
                ),
            ],
        )
    };
    ensure!(
        requests("200") >= 2_000.0 && requests("403") >= 1.0,
        "the waypoint should count the requests it answered, with Istio's labels:\n{}",
        metrics.0
    );

    // The pods behind the waypoint take mesh traffic only from it.
    let direct = app::http_get(&cluster.client, cluster.pods[0].addr_v4(APP_PORT), 1, None)?;
    ensure!(
        !direct.ok,
        "a request to an app pod's own address must not bypass the waypoint: {direct:?}"
    );
    cluster.meshes[1]
        .ztunnel()?
        .wait_for_log(
            "must go through the waypoint shop/waypoint",
            Duration::from_secs(5),
        )
        .context("n2's ztunnel should say why the bypass was refused")?;
    Ok(())
}
