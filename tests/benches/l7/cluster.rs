//! The cluster every path runs in: two nodes, the control plane, the pods, the
//! Services, the Istio config with the three routes, and Ambit's L7 proxies started.
//!
//! n1 holds the clients and the proxies, n2 the HTTP servers (`pod-app http`, each
//! answering its version):
//! - plain pods `web-v1`..`web-v3` (no mesh) behind Service `web`: the direct path's
//!   server, nginx's upstreams, and the second ingress gateway's;
//! - enrolled pods in `shop`: `app-v1`..`app-v3` behind Service `app` ([`APP_VIP`],
//!   labelled `istio.io/use-waypoint: waypoint`, so mesh clients reach it through the
//!   waypoint), and `edge-v1`..`edge-v3` behind `app-edge` ([`EDGE_VIP`], no waypoint:
//!   what the ingress gateway routes to, straight to the pods' ztunnel). Not the same
//!   pods: Ambit's ztunnel refuses traffic that bypasses the waypoint of any Service
//!   selecting the pod. A DestinationRule per Service defines subsets `v1`..`v3` by the
//!   `version` label;
//! - the waypoint's pod (Gateway `waypoint`, class `istio-waypoint`) with a
//!   VirtualService for `app`, and the ingress gateway's pod (`istio: ingressgateway`
//!   in `istio-system`, an Istio Gateway with an HTTP server on port 80) with a
//!   VirtualService bound to it for `app-edge`; a second ingress gateway's pod
//!   (`istio: ingressgateway-plain`, its own process, so each has its own CPU and RSS
//!   figures) whose Gateway's VirtualService is for `web`. Every VirtualService routes
//!   `/v1`, `/v2`, `/v3` (prefixes) to the subsets of the same names.

use std::{net::SocketAddr, time::Duration};

use ambit_e2e::{ChildGuard, ControlPlane, MeshNode, Pod, PodSpec, TestNet, app, wait_for};
use anyhow::{Context as _, Result};
use serde_json::{Value, json};

use crate::common::{self, pinning::Pinned};

/// The versions the app pods answer with, and the paths routed to each.
pub const VERSIONS: [&str; 3] = ["v1", "v2", "v3"];
pub const PATHS: [&str; 3] = ["/v1", "/v2", "/v3"];
/// Where the app pods serve HTTP.
pub const APP_PORT: u16 = 8080;
/// The Services' VIPs and port.
pub const APP_VIP: [u8; 4] = [198, 19, 200, 20];
pub const EDGE_VIP: [u8; 4] = [198, 19, 200, 21];
pub const WEB_VIP: [u8; 4] = [198, 19, 200, 22];
pub const SERVICE_PORT: u16 = 80;
/// The ingress gateways' HTTP port (their Istio Gateways' server).
pub const INGRESS_PORT: u16 = 80;
const GATEWAY_ACCOUNT: &str = "istio-ingressgateway";
/// Access logs off, as in Istio's default install (and in the nginx config).
const PROXY_LOG: &str = "info,access=off";
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The running cluster. Fields drop in order: the processes before the network.
pub struct Cluster {
    pub meshes: Vec<MeshNode>,
    /// A plain pod (direct, nginx, ingress) and an enrolled one (waypoint), on n1.
    pub client: Pod,
    pub mesh_client: Pod,
    /// The plain servers `web-v1`..`web-v3` on n2.
    pub web: Vec<Pod>,
    pub nginx_pod: Pod,
    pub ingress_pod: Pod,
    pub ingress: ChildGuard,
    /// The ingress gateway routing to the plain pods.
    pub ingress_plain_pod: Pod,
    pub ingress_plain: ChildGuard,
    pub waypoint: ChildGuard,
    _processes: Vec<ChildGuard>,
    _pods: Vec<Pod>,
    pub net: TestNet,
}

impl Cluster {
    pub fn start() -> Result<Self> {
        let net = common::cluster("bench_l7")?;
        let n1 = net.add_node("n1")?;
        let n2 = net.add_node("n2")?;
        let control = ControlPlane::new(&net, &n1)?.with_proxy_log(PROXY_LOG);
        let meshes = control.install(&net, &[&n1, &n2])?;
        let client = n1.add_pod(PodSpec::new("plain", "client"))?;
        let mesh_client =
            n1.add_pod(PodSpec::new("shop", "mesh-client").service_account("client"))?;
        let nginx_pod = n1.add_pod(PodSpec::new("plain", "nginx"))?;
        let gateway_pod = |name: &str, selected_as: &str| {
            n1.add_pod(
                PodSpec::new("istio-system", name)
                    .service_account(GATEWAY_ACCOUNT)
                    .label("istio", selected_as),
            )
        };
        let ingress_pod = gateway_pod("ingress-0", "ingressgateway")?;
        let ingress_plain_pod = gateway_pod("ingress-plain-0", "ingressgateway-plain")?;
        let waypoint_pod = n1.add_pod(PodSpec::waypoint("shop", "waypoint"))?;
        let mut processes = Vec::new();
        let mut web = Vec::new();
        let mut apps = Vec::new();
        for version in VERSIONS {
            let plain = n2.add_pod(
                PodSpec::new("plain", &format!("web-{version}"))
                    .label("app", "web")
                    .label("version", version),
            )?;
            let enrolled = |app: &str| {
                n2.add_pod(
                    PodSpec::new("shop", &format!("{app}-{version}"))
                        .service_account(app)
                        .label("app", app)
                        .label("version", version),
                )
            };
            let (mesh, edge) = (enrolled("app")?, enrolled("edge")?);
            for pod in [&plain, &mesh, &edge] {
                let listen = SocketAddr::from(([0; 4], APP_PORT));
                processes.push(app::http_serve(&Pinned::server(pod), listen, version)?);
            }
            web.push(plain);
            apps.extend([mesh, edge]);
        }
        write_config(&net)?;
        // The CA reads which pods run where when it starts: after the pods.
        processes.extend(control.start(&net)?);
        let waypoint = control.start_waypoint(&waypoint_pod, "waypoint")?;
        let ingress = control.start_ingress(&ingress_pod, GATEWAY_ACCOUNT, &[INGRESS_PORT])?;
        let ingress_plain =
            control.start_ingress(&ingress_plain_pod, GATEWAY_ACCOUNT, &[INGRESS_PORT])?;
        Ok(Self {
            meshes,
            client,
            mesh_client,
            web,
            nginx_pod,
            ingress_pod,
            ingress,
            ingress_plain_pod,
            ingress_plain,
            waypoint,
            _processes: processes,
            _pods: apps.into_iter().chain([waypoint_pod]).collect(),
            net,
        })
    }

    /// Waits until every path of [`PATHS`] from `client` to `to` is answered by the
    /// version `expect` says, 20 times in a row: the routes are in force (through a
    /// proxy that has not learnt them yet, or a VIP without its waypoint, the versions
    /// would mix).
    pub fn wait_routes(&self, client: &Pod, to: SocketAddr, expect: [&str; 3]) -> Result<()> {
        const COUNT: usize = 20;
        for (path, version) in PATHS.into_iter().zip(expect) {
            let call = app::HttpCall {
                path,
                count: COUNT,
                ..app::HttpCall::default()
            };
            let last = std::cell::RefCell::new(None);
            wait_for(
                &format!("{to}{path} answered by {version} only"),
                READY_TIMEOUT,
                || -> Result<Option<()>> {
                    let report = app::http_call(client, to, call)?;
                    let all = report.bodies.get(version) == Some(&(COUNT as u64));
                    *last.borrow_mut() = Some(report);
                    Ok(all.then_some(()))
                },
            )
            .with_context(|| format!("last answer: {:?}", last.borrow()))?;
        }
        Ok(())
    }

    /// The ztunnels' process ids, n1's first.
    pub fn ztunnels(&self) -> Result<Vec<u32>> {
        self.meshes
            .iter()
            .map(|mesh| Ok(mesh.ztunnel()?.pid()))
            .collect()
    }
}

/// The Services, DestinationRules, Gateways and VirtualServices.
fn write_config(net: &TestNet) -> Result<()> {
    for (namespace, name, app, vip, waypoint) in [
        ("shop", "app", "app", APP_VIP, true),
        ("shop", "app-edge", "edge", EDGE_VIP, false),
        ("plain", "web", "web", WEB_VIP, false),
    ] {
        let labels = if waypoint {
            json!({ "istio.io/use-waypoint": "waypoint" })
        } else {
            json!({})
        };
        net.write_manifest(
            &format!("service-{name}.yaml"),
            &json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": { "name": name, "namespace": namespace, "labels": labels },
                "spec": {
                    "clusterIP": std::net::Ipv4Addr::from(vip).to_string(),
                    "selector": { "app": app },
                    "ports": [{ "name": "http", "port": SERVICE_PORT, "targetPort": APP_PORT }],
                },
            }),
        )?;
        let subsets: Vec<Value> = VERSIONS
            .iter()
            .map(|v| json!({ "name": v, "labels": { "version": v } }))
            .collect();
        net.write_manifest(
            &format!("destination-rule-{name}.yaml"),
            &istio(
                "DestinationRule",
                namespace,
                name,
                json!({ "host": name, "subsets": subsets }),
            ),
        )?;
    }
    net.write_waypoint("shop", "waypoint")?;
    net.write_manifest("gateway.yaml", &http_gateway("public", "ingressgateway"))?;
    net.write_manifest(
        "gateway-plain.yaml",
        &http_gateway("plain", "ingressgateway-plain"),
    )?;
    net.write_manifest(
        "virtual-service-web.yaml",
        &istio(
            "VirtualService",
            "plain",
            "web",
            json!({
                "hosts": ["*"],
                "gateways": ["istio-system/plain"],
                "http": routes("web"),
            }),
        ),
    )?;
    net.write_manifest(
        "virtual-service-app.yaml",
        &istio(
            "VirtualService",
            "shop",
            "app",
            json!({ "hosts": ["app"], "http": routes("app") }),
        ),
    )?;
    net.write_manifest(
        "virtual-service-edge.yaml",
        &istio(
            "VirtualService",
            "shop",
            "edge",
            json!({
                "hosts": ["*"],
                "gateways": ["istio-system/public"],
                "http": routes("app-edge"),
            }),
        ),
    )?;
    Ok(())
}

/// Istio Gateway `istio-system/name` selecting the pods labelled `istio: <selected>`,
/// with an HTTP server on [`INGRESS_PORT`] for any host.
fn http_gateway(name: &str, selected: &str) -> Value {
    istio(
        "Gateway",
        "istio-system",
        name,
        json!({
            "selector": { "istio": selected },
            "servers": [{
                "port": { "number": INGRESS_PORT, "name": "http", "protocol": "HTTP" },
                "hosts": ["*"],
            }],
        }),
    )
}

/// `/v1`, `/v2`, `/v3` (prefixes) to the subsets of `host` of the same names.
fn routes(host: &str) -> Value {
    PATHS
        .iter()
        .zip(VERSIONS)
        .map(|(path, version)| {
            json!({
                "name": version,
                "match": [{ "uri": { "prefix": path } }],
                "route": [{ "destination": {
                    "host": host,
                    "subset": version,
                    "port": { "number": SERVICE_PORT },
                } }],
            })
        })
        .collect()
}

fn istio(kind: &str, namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": kind,
        "metadata": { "name": name, "namespace": namespace },
        "spec": spec,
    })
}
