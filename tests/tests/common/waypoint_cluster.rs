//! A two-node cluster with a waypoint, shared by the waypoint's end-to-end tests:
//! namespace `shop` is labelled `istio.io/use-waypoint: waypoint` and has a Gateway of
//! class `istio-waypoint`, whose pod runs the real `ambit-waypoint` on n1; the `app`
//! Service (VIP [`VIP`], port 80) selects pods `app-v1`, `app-v2` (on n2) and `app-v3`
//! (on n1) serving HTTP on [`APP_PORT`], with a DestinationRule defining subsets
//! v1–v3; a client pod on n1.

#![allow(dead_code)] // Each test file uses the part it needs.

use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    time::Duration,
};

use ambit_e2e::{
    ChildGuard, ControlPlane, MeshNode, Pod, PodSpec, TestNet, app,
    mesh::{Metrics, loopback_get},
    wait_for,
};
use anyhow::{Context as _, Result};
use serde_json::{Value, json};

pub const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
pub const USE_WAYPOINT: (&str, &str) = ("istio.io/use-waypoint", "waypoint");
pub const VIP: &str = "198.19.200.20";
pub const APP_PORT: u16 = 8080;
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub fn istio(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": kind,
        "metadata": { "name": name, "namespace": "shop" },
        "spec": spec,
    })
}

/// Where the `app` DestinationRule is written.
pub const DESTINATION_RULE_FILE: &str = "destination-rule.yaml";

/// The `app` DestinationRule: subsets v1–v3 by `version`, and `traffic_policy`.
pub fn destination_rule(traffic_policy: Option<Value>) -> Value {
    let subsets: Vec<Value> = ["v1", "v2", "v3"]
        .iter()
        .map(|v| json!({ "name": v, "labels": { "version": v } }))
        .collect();
    let mut spec = json!({ "host": "app", "subsets": subsets });
    if let Some(policy) = traffic_policy {
        spec["trafficPolicy"] = policy;
    }
    istio("DestinationRule", "app", spec)
}

pub fn virtual_service(http: Value) -> Value {
    istio(
        "VirtualService",
        "app",
        json!({ "hosts": ["app"], "http": http }),
    )
}

pub struct Cluster {
    pub net: TestNet,
    pub meshes: Vec<MeshNode>,
    pub client: Pod,
    pub pods: Vec<Pod>,
    pub waypoint: ChildGuard,
    pub waypoint_pod: Pod,
    /// The HTTP server of each of `pods`, in the same order.
    servers: Vec<ChildGuard>,
    processes: Vec<ChildGuard>,
}

impl Cluster {
    pub fn start() -> Result<Option<Self>> {
        let Some(net) = TestNet::new("waypoint") else {
            return Ok(None);
        };
        net.write_namespace("shop", [AMBIENT, USE_WAYPOINT])?;
        let n1 = net.add_node("n1")?;
        let n2 = net.add_node("n2")?;
        let control = ControlPlane::new(&net, &n1)?;
        let meshes = control.install(&net, &[&n1, &n2])?;
        net.write_waypoint("shop", "waypoint")?;
        let waypoint_pod = n1.add_pod(PodSpec::waypoint("shop", "waypoint"))?;
        let client = n1.add_pod(PodSpec::new("shop", "client"))?;
        let mut pods = Vec::new();
        let mut servers = Vec::new();
        for (node, version) in [(&n2, "v1"), (&n2, "v2"), (&n1, "v3")] {
            let pod = node.add_pod(
                PodSpec::new("shop", &format!("app-{version}"))
                    .label("app", "app")
                    .label("version", version),
            )?;
            servers.push(app::http_serve(
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
        net.write_manifest(DESTINATION_RULE_FILE, &destination_rule(None))?;
        let processes = control.start(&net)?;
        let waypoint = control.start_waypoint(&waypoint_pod, "waypoint")?;
        Ok(Some(Self {
            net,
            meshes,
            client,
            pods,
            waypoint,
            waypoint_pod,
            servers,
            processes: processes.into(),
        }))
    }

    /// Adds pod `name` on node `node` (0 or 1) to the `app` service, labelled
    /// `version`, answering plain requests with `status` (a broken pod: 503).
    pub fn add_app_pod(
        &mut self,
        node: usize,
        name: &str,
        version: &str,
        status: u16,
    ) -> Result<()> {
        let pod = self.meshes[node].node().add_pod(
            PodSpec::new("shop", name)
                .label("app", "app")
                .label("version", version),
        )?;
        self.servers.push(app::http_serve_status(
            &pod,
            SocketAddr::from(([0; 4], APP_PORT)),
            version,
            status,
        )?);
        self.pods.push(pod);
        Ok(())
    }

    /// Restarts the server of `pods[index]`, answering as `version`, plain requests
    /// with `status` (a pod that breaks: 503).
    pub fn restart_app(&mut self, index: usize, version: &str, status: u16) -> Result<()> {
        drop(self.servers.remove(index));
        let server = app::http_serve_status(
            &self.pods[index],
            SocketAddr::from(([0; 4], APP_PORT)),
            version,
            status,
        )?;
        self.servers.insert(index, server);
        Ok(())
    }

    /// Replaces the `app` DestinationRule by one with `traffic_policy`.
    pub fn set_traffic_policy(&self, traffic_policy: Value) -> Result<()> {
        self.net.write_manifest(
            DESTINATION_RULE_FILE,
            &destination_rule(Some(traffic_policy)),
        )?;
        Ok(())
    }

    /// Writes an Istio object of `shop` into the config folder, as `file`.
    pub fn apply(&self, file: &str, kind: &str, name: &str, spec: Value) -> Result<()> {
        self.net.write_manifest(file, &istio(kind, name, spec))?;
        Ok(())
    }

    pub fn set_routes(&self, http: Value) -> Result<()> {
        self.net
            .write_manifest("virtual-service.yaml", &virtual_service(http))?;
        Ok(())
    }

    /// Waits until `count` requests with `header` are all answered by `version`.
    pub fn wait_all_from(&self, header: Option<&str>, version: &str, count: usize) -> Result<()> {
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
    pub fn waypoint_metrics(&self) -> Result<Metrics> {
        let text = self.waypoint_pod.run_in(|| -> std::io::Result<String> {
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", 15020))?;
            stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            let mut text = String::new();
            stream.read_to_string(&mut text)?;
            Ok(text)
        })??;
        Ok(Metrics(text))
    }

    /// The waypoint's `/clusters` (Envoy's text), from its admin port on the pod's
    /// loopback.
    pub fn waypoint_clusters(&self) -> Result<String> {
        self.waypoint_pod
            .run_in(|| loopback_get(15000, "/clusters"))?
    }

    pub fn logs(&self) -> String {
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
