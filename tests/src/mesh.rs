//! Ambit on a simulated node: the real `ambit-agent` and `ambit-ztunnel` binaries
//! started inside a [`Node`]'s network namespace and cgroup, with `ambit-cni` chained
//! into the node's CNI configuration, as the DaemonSet would set a Kubernetes node up.
//!
//! The agent attaches its cgroup programs to the node's cgroup (pods' cgroups sit
//! below it) and pins under a bpffs directory of the test's own; nothing reaches the
//! machine's root cgroup.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use crate::{ChildGuard, Node, TestNet, bin_path, cmd::Finished};

/// How long a binary may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// ztunnel's admin port (config dump) inside the node's namespace.
pub const ADMIN_PORT: u16 = 15000;
/// ztunnel's Prometheus port inside the node's namespace.
pub const METRICS_PORT: u16 = 15020;

/// Options for [`MeshNode::install`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MeshOptions {
    pub sockmap_acceleration: bool,
    /// The agent takes its enrolment decisions from the controller's push (the
    /// `controller_address` of [`CaClientOptions`]) instead of the config folder.
    pub agent_follows_controller: bool,
}

/// How ztunnel reaches the mesh CA (`--ca-address`, `--ca-token-file`,
/// `--ca-root-file`, `--cert-ttl-secs`).
#[derive(Debug, Clone)]
pub struct CaClientOptions {
    /// For example `https://127.0.0.1:15012` (inside the node's namespace).
    pub address: String,
    pub token_file: PathBuf,
    /// The mesh root the controller's certificates chain to: `root-cert.pem` in the CA
    /// folder (it may appear after ztunnel starts).
    pub root_file: PathBuf,
    pub cert_ttl_secs: Option<u64>,
    /// The controller's config push (`--controller-address`, with `--node-name` the
    /// node's name), for example `https://198.19.255.1:15010`; `None` keeps ztunnel on
    /// plaintext.
    pub controller_address: Option<String>,
    /// A snapshot of the push to read instead (`--local-config`).
    pub local_config: Option<PathBuf>,
}

/// A node running Ambit.
#[derive(Debug)]
pub struct MeshNode {
    node: Node,
    config_dir: PathBuf,
    bpffs_dir: PathBuf,
    run_dir: PathBuf,
    options: MeshOptions,
    ca: Option<CaClientOptions>,
    agent: Option<ChildGuard>,
    ztunnel: Option<ChildGuard>,
}

impl MeshNode {
    /// Starts the agent — which installs `ambit-cni` into the node's CNI binary
    /// directory and chains it into the node's CNI configuration, as the DaemonSet's
    /// agent does — and ztunnel, waiting until both are ready.
    ///
    /// # Errors
    /// When a binary is missing, fails to start or is not ready in time.
    pub fn install(net: &TestNet, node: &Node, options: MeshOptions) -> Result<Self> {
        Self::install_with_ca(net, node, options, None)
    }

    /// [`MeshNode::install`], with ztunnel obtaining workload certificates from `ca`.
    ///
    /// # Errors
    /// As [`MeshNode::install`].
    pub fn install_with_ca(
        net: &TestNet,
        node: &Node,
        options: MeshOptions,
        ca: Option<CaClientOptions>,
    ) -> Result<Self> {
        let run_dir = net.socket_path(node.name())?;
        std::fs::create_dir_all(&run_dir)?;
        let mut mesh = Self {
            node: node.clone(),
            config_dir: net.config_dir(),
            bpffs_dir: net.bpffs_dir(node.name())?,
            run_dir,
            options,
            ca,
            agent: None,
            ztunnel: None,
        };
        mesh.start_agent()?;
        mesh.start_ztunnel()?;
        Ok(mesh)
    }

    #[must_use]
    pub fn node(&self) -> &Node {
        &self.node
    }

    #[must_use]
    pub fn bpffs_dir(&self) -> &Path {
        &self.bpffs_dir
    }

    #[must_use]
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Starts the agent (it adopts pinned programs if there are any) and waits for
    /// `ready`.
    ///
    /// # Errors
    /// When it fails to start or is not ready in time.
    pub fn start_agent(&mut self) -> Result<&ChildGuard> {
        let mut command = Command::new(bin_path("ambit-agent"));
        command
            .arg("run")
            .arg("--cgroup")
            .arg(self.node.cgroup_path())
            .arg("--bpffs-dir")
            .arg(&self.bpffs_dir)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(self.cni_install_args())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        if self.options.sockmap_acceleration {
            command.arg("--sockmap-acceleration");
        }
        let controller = self
            .ca
            .as_ref()
            .and_then(|ca| ca.controller_address.as_ref());
        if let (true, Some(address), Some(ca)) =
            (self.options.agent_follows_controller, controller, &self.ca)
        {
            command
                .args(["--controller-address", address])
                .args(["--node-name", self.node.name()])
                .arg("--controller-token-file")
                .arg(&ca.token_file)
                .arg("--ca-root-file")
                .arg(&ca.root_file);
        } else {
            command.arg("--config-dir").arg(&self.config_dir);
        }
        let agent = self.node.spawn(&mut command)?;
        agent
            .wait_for_log("ready", READY_TIMEOUT)
            .context("waiting for the agent")?;
        Ok(self.agent.insert(agent))
    }

    /// Stops the agent with SIGTERM; the capture programs stay pinned.
    ///
    /// # Errors
    /// When it does not stop.
    pub fn stop_agent(&mut self) -> Result<()> {
        if let Some(agent) = self.agent.take() {
            agent.stop()?;
        }
        Ok(())
    }

    /// Starts ztunnel and waits until it has applied the agent's snapshot.
    ///
    /// # Errors
    /// When it fails to start or is not ready in time.
    pub fn start_ztunnel(&mut self) -> Result<&ChildGuard> {
        let mut command = Command::new(bin_path("ambit-ztunnel"));
        command
            .arg("--agent-socket")
            .arg(self.run_dir.join("ztunnel.sock"))
            .arg("--bpffs-dir")
            .arg(&self.bpffs_dir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        if let Some(ca) = &self.ca {
            command
                .arg("--ca-address")
                .arg(&ca.address)
                .arg("--ca-token-file")
                .arg(&ca.token_file)
                .arg("--ca-root-file")
                .arg(&ca.root_file);
            if let Some(ttl) = ca.cert_ttl_secs {
                command.arg("--cert-ttl-secs").arg(ttl.to_string());
            }
            if let Some(controller) = &ca.controller_address {
                command
                    .arg("--controller-address")
                    .arg(controller)
                    .arg("--node-name")
                    .arg(self.node.name());
            }
            if let Some(path) = &ca.local_config {
                command.arg("--local-config").arg(path);
            }
        }
        let ztunnel = self.node.spawn(&mut command)?;
        ztunnel
            .wait_for_log("applied the agent's snapshot", READY_TIMEOUT)
            .context("waiting for ztunnel")?;
        Ok(self.ztunnel.insert(ztunnel))
    }

    /// Stops ztunnel with SIGTERM.
    ///
    /// # Errors
    /// When it does not stop.
    pub fn stop_ztunnel(&mut self) -> Result<()> {
        if let Some(ztunnel) = self.ztunnel.take() {
            ztunnel.stop()?;
        }
        Ok(())
    }

    /// The running ztunnel (its logs hold the access log).
    ///
    /// # Errors
    /// When ztunnel is not running.
    pub fn ztunnel(&self) -> Result<&ChildGuard> {
        self.ztunnel.as_ref().context("ztunnel is not running")
    }

    /// The running agent.
    ///
    /// # Errors
    /// When the agent is not running.
    pub fn agent(&self) -> Result<&ChildGuard> {
        self.agent.as_ref().context("the agent is not running")
    }

    /// Runs `ambit-agent uninstall` for this node's pins (stop the agent first).
    ///
    /// # Errors
    /// When the command fails.
    pub fn uninstall(&self) -> Result<Finished> {
        self.node
            .exec(
                Command::new(bin_path("ambit-agent"))
                    .arg("uninstall")
                    .arg("--bpffs-dir")
                    .arg(&self.bpffs_dir)
                    .arg("--run-dir")
                    .arg(&self.run_dir)
                    .args(self.cni_install_args())
                    .env("NO_COLOR", "1"),
                READY_TIMEOUT,
            )?
            .success()
    }

    /// Where the agent installs `ambit-cni`: the node's CNI directories.
    fn cni_install_args(&self) -> Vec<std::ffi::OsString> {
        vec![
            "--cni-bin-dir".into(),
            self.node.cni_bin_dir().into(),
            "--cni-conf-dir".into(),
            self.node.cni_conf_dir().into(),
            "--cni-plugin".into(),
            bin_path("ambit-cni").into(),
        ]
    }

    /// ztunnel's Prometheus metrics, fetched inside the node.
    ///
    /// # Errors
    /// When ztunnel does not answer.
    pub fn metrics(&self) -> Result<Metrics> {
        self.http_get(METRICS_PORT, "/metrics").map(Metrics)
    }

    /// Waits until ztunnel holds a valid certificate for `identity` (a SPIFFE URI).
    ///
    /// # Errors
    /// When it does not within `timeout`.
    pub fn wait_certificate(&self, identity: &str, timeout: Duration) -> Result<()> {
        crate::wait_for(
            &format!(
                "{} to hold a valid certificate for {identity}",
                self.node.name()
            ),
            timeout,
            || -> Result<Option<()>> {
                let dump = self.config_dump()?;
                let valid = dump["certificates"].as_array().is_some_and(|rows| {
                    rows.iter()
                        .any(|row| row["identity"] == identity && row["state"] == "valid")
                });
                Ok(valid.then_some(()))
            },
        )
    }

    /// Waits until the L4 policies ztunnel enforces are exactly `names` (`namespace/name`
    /// of AuthorizationPolicies and PeerAuthentications).
    ///
    /// # Errors
    /// When they are not within `timeout`.
    pub fn wait_policies(&self, names: &[&str], timeout: Duration) -> Result<()> {
        let mut want: Vec<&str> = names.to_vec();
        want.sort_unstable();
        crate::wait_for(
            &format!("{} to enforce exactly {want:?}", self.node.name()),
            timeout,
            || -> Result<Option<()>> {
                let dump = self.config_dump()?;
                let policies = &dump["policies"];
                let authorization = policies["authorizationPolicies"].as_array();
                let peer = policies["peerAuthentications"].as_array();
                let mut have: Vec<&str> = authorization
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["name"].as_str())
                    .chain(peer.into_iter().flatten().filter_map(|p| p.as_str()))
                    .collect();
                have.sort_unstable();
                Ok((have == want).then_some(()))
            },
        )
    }

    /// Waits until ztunnel has learnt from the controller that `ip` is a mesh workload
    /// (with `identity`, when given).
    ///
    /// # Errors
    /// When it does not within `timeout`.
    pub fn wait_peer(&self, ip: &str, identity: Option<&str>, timeout: Duration) -> Result<()> {
        crate::wait_for(
            &format!("{} to learn {ip} from the controller", self.node.name()),
            timeout,
            || -> Result<Option<()>> {
                let dump = self.config_dump()?;
                let known = dump["directory"]["peers"].as_array().is_some_and(|peers| {
                    peers.iter().any(|peer| {
                        identity.is_none_or(|identity| peer["identity"] == identity)
                            && peer["ips"]
                                .as_array()
                                .is_some_and(|ips| ips.iter().any(|known| known == ip))
                    })
                });
                Ok(known.then_some(()))
            },
        )
    }

    /// ztunnel's config dump (JSON), fetched inside the node.
    ///
    /// # Errors
    /// When ztunnel does not answer or the body is not JSON.
    pub fn config_dump(&self) -> Result<serde_json::Value> {
        let body = self.http_get(ADMIN_PORT, "/config_dump")?;
        serde_json::from_str(&body).with_context(|| format!("config dump is not JSON: {body}"))
    }

    /// The names of the workloads ztunnel serves.
    ///
    /// # Errors
    /// As [`MeshNode::config_dump`].
    pub fn served_workloads(&self) -> Result<Vec<String>> {
        let dump = self.config_dump()?;
        Ok(dump["workloads"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|w| w["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    fn http_get(&self, port: u16, path: &str) -> Result<String> {
        self.node
            .run_in(|| loopback_get(port, path))?
            .with_context(|| format!("asking ztunnel on {}", self.node.name()))
    }
}

/// `GET path` from `127.0.0.1:port` in the calling thread's network namespace (run it
/// inside [`Node::run_in`] or [`crate::Pod::run_in`]): the body of a 200 answer.
///
/// # Errors
/// When nothing answers, or the answer is not a 200.
pub fn loopback_get(port: u16, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("nothing answers on 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("reading the answer from :{port}{path}"))?;
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!("malformed HTTP response from :{port}{path}: {response}");
    };
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!(":{port}{path} answered {head}");
    }
    Ok(body.to_owned())
}

/// Starts the real `ambit-controller serve-ca` inside `node`'s network namespace,
/// listening on `listen` there, with the CA material in `ca_dir` (generated on first
/// start, reused after), one token file per node in `tokens_dir`, and the test's config
/// folder as the placement of pods on nodes; waits until it serves.
///
/// # Errors
/// When it fails to start or does not serve in time.
pub fn start_ca(
    net: &TestNet,
    node: &Node,
    ca_dir: &Path,
    tokens_dir: &Path,
    listen: std::net::SocketAddr,
) -> Result<ChildGuard> {
    let ca = node.spawn(
        Command::new(bin_path("ambit-controller"))
            .arg("serve-ca")
            .arg("--ca-dir")
            .arg(ca_dir)
            .arg("--tokens-dir")
            .arg(tokens_dir)
            .arg("--config-dir")
            .arg(net.config_dir())
            .arg("--listen")
            .arg(listen.to_string())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1"),
    )?;
    ca.wait_for_log("serving IstioCertificateService", READY_TIMEOUT)
        .context("waiting for the CA")?;
    Ok(ca)
}

/// Starts the real `ambit-controller serve` (the config push) inside `node`'s network
/// namespace, listening on `listen` there over TLS with a certificate from the CA in
/// `ca_dir`, watching the test's config folder and checking subscribers' tokens against
/// `tokens_dir` (as the CA does); waits until it serves.
///
/// # Errors
/// When it fails to start or does not serve in time.
pub fn start_controller(
    net: &TestNet,
    node: &Node,
    ca_dir: &Path,
    tokens_dir: &Path,
    listen: std::net::SocketAddr,
) -> Result<ChildGuard> {
    let controller = node.spawn(
        Command::new(bin_path("ambit-controller"))
            .arg("serve")
            .arg("--ca-dir")
            .arg(ca_dir)
            .arg("--config-dir")
            .arg(net.config_dir())
            .arg("--tokens-dir")
            .arg(tokens_dir)
            .arg("--listen")
            .arg(listen.to_string())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1"),
    )?;
    controller
        .wait_for_log("serving ConfigService", READY_TIMEOUT)
        .context("waiting for the controller")?;
    Ok(controller)
}

/// A Prometheus text exposition, with sums over label matches.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of every sample of `name` whose labels include all of `labels`
    /// (`key="value"` pairs).
    #[must_use]
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
                (metric == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())
                .flatten()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_samples_matching_every_label() {
        let metrics = Metrics(
            "# HELP x\nistio_tcp_connections_opened_total{reporter=\"source\",source_workload=\"a\"} 2\nistio_tcp_connections_opened_total{reporter=\"destination\",source_workload=\"a\"} 5\nistio_tcp_connections_opened_total{reporter=\"source\",source_workload=\"b\"} 1\n"
                .to_owned(),
        );
        let opened = "istio_tcp_connections_opened_total";
        assert!((metrics.sum(opened, &[("reporter", "source")]) - 3.0).abs() < f64::EPSILON);
        assert!((metrics.sum(opened, &[("source_workload", "a")]) - 7.0).abs() < f64::EPSILON);
        assert!(metrics.sum("other", &[]).abs() < f64::EPSILON);
    }
}
