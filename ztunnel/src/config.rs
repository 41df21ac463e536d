//! ztunnel's configuration: command-line flags (each with an environment variable).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use ambit_api::{
    channel,
    identity::{DEFAULT_TRUST_DOMAIN, check_trust_domain},
};
use clap::Parser;

/// The agent's hand-off socket on a node.
pub const DEFAULT_AGENT_SOCKET: &str = "/var/run/ambit/ztunnel.sock";
/// Where the agent pins the capture maps.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/ambit";
/// Prometheus metrics (Istio's port).
pub const DEFAULT_METRICS_ADDR: &str = "[::]:15020";
/// Readiness (Istio's port).
pub const DEFAULT_READINESS_ADDR: &str = "[::]:15021";
/// Admin: config dump; localhost only.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:15000";
/// Longest wait between attempts to reach the agent.
pub const MAX_RECONNECT_DELAY_MS: u64 = 2_000;
/// How long in-flight connections may finish after a shutdown signal.
pub const DRAIN_TIMEOUT_SECS: u64 = 5;
/// How long connecting upstream (to a destination, an app, or a peer's 15008) may take.
/// A transparent delivery to a closed port gets no RST back (the kernel's reset carries
/// no delivery mark), so without a bound it would wait for TCP's SYN retries.
pub const UPSTREAM_CONNECT_TIMEOUT_SECS: u64 = 5;
/// Relay buffer per direction, per connection (allocated for the connection's life).
pub const RELAY_BUFFER_BYTES: usize = 64 * 1024;

/// `ambit-ztunnel` flags.
#[derive(Debug, Clone, Parser)]
#[command(
    version,
    about = "Ambit's per-node L4 tunnel: in-pod listeners and the relay"
)]
pub struct Config {
    /// The agent's SOCK_SEQPACKET hand-off socket.
    #[arg(long, env = "AMBIT_AGENT_SOCKET", default_value = DEFAULT_AGENT_SOCKET)]
    pub agent_socket: PathBuf,
    /// bpffs directory where the agent pins the capture maps.
    #[arg(long, env = "AMBIT_BPFFS_DIR", default_value = DEFAULT_BPFFS_DIR)]
    pub bpffs_dir: PathBuf,
    /// Address for Prometheus metrics (/metrics, /stats/prometheus).
    #[arg(long, env = "AMBIT_METRICS_ADDR", default_value = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: SocketAddr,
    /// Address for readiness (/healthz/ready).
    #[arg(long, env = "AMBIT_READINESS_ADDR", default_value = DEFAULT_READINESS_ADDR)]
    pub readiness_addr: SocketAddr,
    /// Address for the admin endpoint (/config_dump); keep it on localhost.
    #[arg(long, env = "AMBIT_ADMIN_ADDR", default_value = DEFAULT_ADMIN_ADDR)]
    pub admin_addr: SocketAddr,
    /// The mesh CA (Istio's `IstioCertificateService`), e.g. `https://198.19.255.1:15012`.
    /// Without it ztunnel obtains no workload certificates.
    #[arg(long, env = "AMBIT_CA_ADDRESS")]
    pub ca_address: Option<String>,
    /// The node's bootstrap token for the CA, or in Kubernetes the pod's projected
    /// service-account token for the CA's audience (read again at every request, so a
    /// rotated token is used).
    #[arg(long, env = "AMBIT_CA_TOKEN_FILE")]
    pub ca_token_file: Option<PathBuf>,
    /// The mesh root(s), PEM (Istio's `root-cert.pem`: the controller's `--ca-dir` has
    /// it, Kubernetes mounts the `ambit-root-cert` ConfigMap): the CA's and the
    /// controller's TLS certificates must chain to it, and it is the workloads' trust
    /// root. Required with `https://` addresses; read again at each connection to the
    /// controller.
    #[arg(long, env = "AMBIT_CA_ROOT_FILE")]
    pub ca_root_file: Option<PathBuf>,
    /// The SPIFFE trust domain of the workloads' identities.
    #[arg(long, env = "AMBIT_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Workload certificate lifetime to ask for, in seconds; absent lets the CA choose.
    #[arg(long, env = "AMBIT_CERT_TTL_SECS")]
    pub cert_ttl_secs: Option<u64>,
    /// The controller's config push (`ambit-controller serve`), e.g.
    /// `https://198.19.255.1:15010`. With it (and certificates), traffic to mesh workloads
    /// goes over HBONE; without it everything is relayed in plaintext.
    #[arg(long, env = "AMBIT_CONTROLLER_ADDRESS")]
    pub controller_address: Option<String>,
    /// This node's name, as the controller knows it (required with
    /// `--controller-address`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Instead of subscribing, read this node's config from a snapshot of the push
    /// (`ambit-controller snapshot --node NODE --kind ztunnel --out FILE`), and again
    /// whenever the file changes: for debugging, and for running without a controller.
    #[arg(
        long,
        env = "AMBIT_LOCAL_CONFIG",
        conflicts_with = "controller_address"
    )]
    pub local_config: Option<PathBuf>,
    /// Threads relaying traffic, each serving its own share of the pods (a pod and
    /// all its connections stay on one); `0`: one per CPU. The control plane (hand-off,
    /// config push, certificates, admin) runs on the main thread besides.
    #[arg(long, env = "AMBIT_WORKER_THREADS", default_value_t = DEFAULT_WORKER_THREADS)]
    pub worker_threads: usize,
}

/// Relay threads by default: 2, as Istio's ztunnel (each is a single-threaded runtime,
/// so a busy node uses two cores without connections waking each other across them;
/// see [`ambit_workers`]).
pub const DEFAULT_WORKER_THREADS: usize = 2;

/// Every problem with a [`Config`], reported at once.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    /// Checks the flags that depend on each other.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.ca_address.is_some() && self.ca_token_file.is_none() {
            problems.push(
                "--ca-address is set but --ca-token-file is not: pass the node's bootstrap token file too"
                    .to_owned(),
            );
        }
        if self.ca_address.is_none() {
            let root_unused = self.controller_address.is_none() && self.ca_root_file.is_some();
            for (flag, set) in [
                ("--ca-token-file", self.ca_token_file.is_some()),
                ("--ca-root-file", root_unused),
                ("--cert-ttl-secs", self.cert_ttl_secs.is_some()),
            ] {
                if set {
                    problems.push(format!(
                        "{flag} is set but --ca-address is not: name the CA or drop {flag}"
                    ));
                }
            }
        }
        // ztunnel presents its --ca-token-file to both.
        let (root, token) = (self.ca_root_file.is_some(), self.ca_token_file.is_some());
        for (flag, address) in [
            ("--ca-address", &self.ca_address),
            ("--controller-address", &self.controller_address),
        ] {
            if let Some(Err(error)) = address
                .as_deref()
                .map(|address| channel::check(address, root, token))
            {
                problems.push(format!("{flag}: {error}"));
            }
        }
        if self.controller_address.is_some() && self.node_name.is_none() {
            problems.push(
                "--controller-address is set but --node-name is not: name this node as the controller knows it"
                    .to_owned(),
            );
        }
        if self.cert_ttl_secs == Some(0) {
            problems.push(
                "--cert-ttl-secs 0 is not a lifetime: ask for 1 s or more, or omit it for the CA's default"
                    .to_owned(),
            );
        }
        if let Err(error) = check_trust_domain(&self.trust_domain) {
            problems.push(format!("--trust-domain: {error}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(problems))
        }
    }

    /// The certificate lifetime to ask the CA for.
    #[must_use]
    pub fn cert_ttl(&self) -> Option<Duration> {
        self.cert_ttl_secs.map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("ambit-ztunnel").chain(args.iter().copied()))
            .expect("flags parse")
    }

    #[test]
    fn defaults_fetch_no_certificates() {
        let config = parse(&[]);
        assert!(config.validate().is_ok());
        assert_eq!(config.ca_address, None);
        assert_eq!(config.controller_address, None);
        assert_eq!(config.trust_domain, "cluster.local");
    }

    /// What `validate` says of `args`, which it must refuse.
    fn refusal(args: &[&str]) -> String {
        parse(args)
            .validate()
            .expect_err("invalid flags are refused")
            .to_string()
    }

    #[test]
    fn an_address_without_a_token_names_both_flags() {
        let error = refusal(&["--ca-address", "http://127.0.0.1:15012"]);
        assert!(
            error.contains("--ca-address") && error.contains("--ca-token-file"),
            "{error}"
        );
        let error = parse(&["--cert-ttl-secs", "0", "--trust-domain", "Bad/Domain"])
            .validate()
            .expect_err("three problems")
            .0;
        assert_eq!(error.len(), 3, "every problem at once: {error:?}");
        let error = refusal(&["--controller-address", "https://127.0.0.1:15010"]);
        assert!(
            error.contains("--node-name") && error.contains("--ca-root-file"),
            "a node name and a root are required: {error}"
        );
        let tls = [
            "--ca-address",
            "https://127.0.0.1:15012",
            "--ca-token-file",
            "/run/token",
            "--ca-root-file",
            "/run/root-cert.pem",
            "--cert-ttl-secs",
            "4",
        ];
        assert!(parse(&tls).validate().is_ok());
        let plaintext = tls.map(|arg| arg.replace("https://", "http://"));
        let error = refusal(&plaintext.each_ref().map(String::as_str));
        assert!(
            error.contains("in clear") && error.contains("https://127.0.0.1:15012"),
            "a token is never sent in clear: {error}"
        );
    }
}
