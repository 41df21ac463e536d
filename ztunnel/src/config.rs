//! ztunnel's configuration: command-line flags (each with an environment variable).

use std::{net::SocketAddr, path::PathBuf};

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
}
