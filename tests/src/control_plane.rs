//! The control plane of a simulated cluster: the real CA (`ambit-controller serve-ca`)
//! and config push (`ambit-controller serve`) on one node's underlay address, both over
//! TLS with certificates from the CA folder's root, with a bootstrap token per node, and
//! what each node's ztunnel is given to reach them (`https://` addresses and the root).

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::{
    ChildGuard, MeshNode, MeshOptions, Node, Pod, TestNet, bin_path,
    mesh::{CaClientOptions, start_ca, start_controller},
};

/// The CA's port.
pub const CA_PORT: u16 = 15012;
/// The config push's port.
pub const CONTROLLER_PORT: u16 = 15010;
const WAYPOINT_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the control plane runs and keeps its files.
#[derive(Debug)]
pub struct ControlPlane {
    node: Node,
    ca_dir: PathBuf,
    tokens_dir: PathBuf,
    address: Ipv4Addr,
    cert_ttl_secs: Option<u64>,
    proxy_log: String,
}

impl ControlPlane {
    /// A control plane on `node` (not started: see [`ControlPlane::start`]).
    ///
    /// # Errors
    /// When its folders cannot be made.
    pub fn new(net: &TestNet, node: &Node) -> Result<Self> {
        let (ca_dir, tokens_dir) = (net.dir().join("ca"), net.dir().join("tokens"));
        for dir in [&ca_dir, &tokens_dir] {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        Ok(Self {
            node: node.clone(),
            ca_dir,
            tokens_dir,
            address: node.underlay_v4(),
            cert_ttl_secs: None,
            proxy_log: "info".to_owned(),
        })
    }

    /// Has ztunnels ask for certificates valid `secs` (renewed at half of it).
    #[must_use]
    pub fn with_cert_ttl_secs(mut self, secs: u64) -> Self {
        self.cert_ttl_secs = Some(secs);
        self
    }

    /// Runs waypoints and ingress gateways with `RUST_LOG=filter` instead of `info` — a
    /// benchmark turns off their access log (`info,access=off`), as Istio's default is.
    /// The filter must keep `info` for the lines the start waits on.
    #[must_use]
    pub fn with_proxy_log(mut self, filter: &str) -> Self {
        filter.clone_into(&mut self.proxy_log);
        self
    }

    /// What `node`'s ztunnel is given: the CA, the node's token (written now), the push.
    ///
    /// # Errors
    /// When the token cannot be written.
    pub fn client_options(&self, node: &Node) -> Result<CaClientOptions> {
        let token_file = self.tokens_dir.join(node.name());
        std::fs::write(&token_file, format!("token-of-{}", node.name()))
            .with_context(|| format!("cannot write {}", token_file.display()))?;
        Ok(CaClientOptions {
            address: format!("https://{}", self.ca_address()),
            token_file,
            root_file: self.root_file(),
            cert_ttl_secs: self.cert_ttl_secs,
            controller_address: Some(format!("https://{}", self.controller_address())),
            local_config: None,
        })
    }

    /// Installs the agent and a ztunnel using this control plane on each of `nodes`.
    ///
    /// # Errors
    /// As [`MeshNode::install_with_ca`].
    pub fn install(&self, net: &TestNet, nodes: &[&Node]) -> Result<Vec<MeshNode>> {
        self.install_with(net, nodes, MeshOptions::default())
    }

    /// [`ControlPlane::install`] with `options`.
    ///
    /// # Errors
    /// As [`MeshNode::install_with_ca`].
    pub fn install_with(
        &self,
        net: &TestNet,
        nodes: &[&Node],
        options: MeshOptions,
    ) -> Result<Vec<MeshNode>> {
        nodes
            .iter()
            .map(|node| {
                MeshNode::install_with_ca(net, node, options, Some(self.client_options(node)?))
            })
            .collect()
    }

    /// Starts the CA and the config push; the CA reads which pods run where when it
    /// starts, so start it after the pods.
    ///
    /// # Errors
    /// When either does not start in time.
    pub fn start(&self, net: &TestNet) -> Result<[ChildGuard; 2]> {
        let ca = self.start_ca(net)?;
        let controller = start_controller(
            net,
            &self.node,
            &self.ca_dir,
            &self.tokens_dir,
            self.controller_address(),
        )?;
        Ok([ca, controller])
    }

    /// Starts the CA only (for nodes that read their config from a file).
    ///
    /// # Errors
    /// When it does not start in time.
    pub fn start_ca(&self, net: &TestNet) -> Result<ChildGuard> {
        start_ca(
            net,
            &self.node,
            &self.ca_dir,
            &self.tokens_dir,
            self.ca_address(),
        )
    }

    /// The CA's folder (Istio's plug-in layout: `root-cert.pem`, `ca-key.pem`, …).
    #[must_use]
    pub fn ca_dir(&self) -> &std::path::Path {
        &self.ca_dir
    }

    /// The mesh root every client verifies the controller with (`--ca-root-file`).
    #[must_use]
    pub fn root_file(&self) -> PathBuf {
        self.ca_dir.join("root-cert.pem")
    }

    /// Starts `ambit-waypoint` for the waypoint `name` inside `pod` (a pod of the Gateway,
    /// outside ambient capture, on its node), with this control plane; waits until it
    /// serves HBONE.
    ///
    /// # Errors
    /// When it does not start in time.
    pub fn start_waypoint(&self, pod: &Pod, name: &str) -> Result<ChildGuard> {
        let waypoint = self.spawn_proxy(pod, &["--name", name])?;
        waypoint
            .wait_for_log("serving HBONE", WAYPOINT_TIMEOUT)
            .context("waiting for the waypoint")?;
        Ok(waypoint)
    }

    /// Starts `ambit-waypoint --ingress` in `pod` (running as `service_account`): the
    /// ingress gateway serving the Istio Gateways that select the pod. Returns once it
    /// has opened `ports`.
    ///
    /// # Errors
    /// When it cannot start or does not open every port in time.
    pub fn start_ingress(
        &self,
        pod: &Pod,
        service_account: &str,
        ports: &[u16],
    ) -> Result<ChildGuard> {
        let gateway = self.spawn_proxy(
            pod,
            &[
                "--ingress",
                "--pod-name",
                pod.name(),
                "--service-account",
                service_account,
            ],
        )?;
        for port in ports {
            gateway
                .wait_for_log(
                    &format!("serving a Gateway port port={port} "),
                    WAYPOINT_TIMEOUT,
                )
                .with_context(|| format!("waiting for the ingress gateway to open port {port}"))?;
        }
        Ok(gateway)
    }

    /// `ambit-waypoint` in `pod` with `extra` flags, following this control plane.
    fn spawn_proxy(&self, pod: &Pod, extra: &[&str]) -> Result<ChildGuard> {
        let options = self.client_options(pod.node())?;
        pod.spawn(
            Command::new(bin_path("ambit-waypoint"))
                .args(extra)
                .args(["--namespace", pod.namespace()])
                .args(["--node-name", pod.node().name()])
                .args(["--ca-address", &options.address])
                .arg("--ca-token-file")
                .arg(&options.token_file)
                .arg("--ca-root-file")
                .arg(&options.root_file)
                .args([
                    "--controller-address",
                    &format!("https://{}", self.controller_address()),
                ])
                .env("RUST_LOG", &self.proxy_log)
                .env("NO_COLOR", "1"),
        )
    }

    /// Where the CA listens.
    #[must_use]
    pub fn ca_address(&self) -> SocketAddr {
        (self.address, CA_PORT).into()
    }

    /// Where the config push listens.
    #[must_use]
    pub fn controller_address(&self) -> SocketAddr {
        (self.address, CONTROLLER_PORT).into()
    }
}
