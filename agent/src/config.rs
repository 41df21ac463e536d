//! The agent's configuration: its command line (subcommands and flags, each with an
//! environment variable), validated all at once, with defaults for a Kubernetes node.

use std::path::{Path, PathBuf};

use ambit_api::channel;
use clap::{Args, Parser, Subcommand};

use crate::cni_install::{CniInstall, PLUGIN_TYPE};

/// Where programs, links and maps are pinned.
pub const DEFAULT_BPFFS_DIR: &str = "/sys/fs/bpf/ambit";
/// Where the agent keeps its sockets and state.
pub const DEFAULT_RUN_DIR: &str = "/var/run/ambit";
/// The CNI plugin's socket, in the run directory.
pub const CNI_SOCKET_NAME: &str = "cni.sock";
/// ztunnel's hand-off socket (SOCK_SEQPACKET), in the run directory.
pub const ZTUNNEL_SOCKET_NAME: &str = "ztunnel.sock";
/// The enrolled pods, persisted across restarts, in the run directory.
pub const STATE_FILE_NAME: &str = "pods.json";
/// How long the agent waits for ztunnel to acknowledge a message.
pub const ZTUNNEL_ACK_TIMEOUT_SECS: u64 = 10;

/// The whole command line of `ambit-agent`.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Ambit's node agent: eBPF traffic capture and pod enrolment"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load (or adopt) the capture programs and enrol pods as the CNI plugin reports them.
    Run(RunArgs),
    /// Detach and remove everything the agent pinned (and the CNI plugin, if its
    /// directories are given); pods leave the mesh.
    Uninstall {
        #[command(flatten)]
        paths: PathArgs,
        #[command(flatten)]
        cni: CniArgs,
    },
}

/// `ambit-agent run` flags.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Folder of Kubernetes YAML (Namespaces, Pods) that decides which pods are enrolled
    /// (for a node without a controller, or to debug one).
    #[arg(
        long,
        env = "AMBIT_CONFIG_DIR",
        required_unless_present = "controller_address",
        conflicts_with = "controller_address"
    )]
    pub config_dir: Option<PathBuf>,
    /// cgroup v2 directory the capture programs attach to [default: the cgroup2 mount
    /// found in /proc/mounts].
    #[arg(long, env = "AMBIT_CGROUP")]
    pub cgroup: Option<PathBuf>,
    #[command(flatten)]
    pub paths: PathArgs,
    /// Join same-node socket pairs with sk_msg instead of the loopback TCP stack.
    #[arg(long, env = "AMBIT_SOCKMAP_ACCELERATION")]
    pub sockmap_acceleration: bool,
    #[command(flatten)]
    pub cni: CniArgs,
    /// Take the enrolment decisions from the controller's push (e.g.
    /// `https://198.19.255.1:15010`) instead of the config folder.
    #[arg(long, env = "AMBIT_CONTROLLER_ADDRESS", requires = "node_name")]
    pub controller_address: Option<String>,
    /// This node's name, as pods' `spec.nodeName` gives it (with --controller-address).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// The token to present to the controller (with --controller-address): the node's
    /// bootstrap token, or in Kubernetes a projected service-account token for the
    /// controller's audience. Read again at each reconnection.
    #[arg(
        long,
        env = "AMBIT_CONTROLLER_TOKEN_FILE",
        requires = "controller_address"
    )]
    pub controller_token_file: Option<PathBuf>,
    /// The mesh root, PEM (Istio's `root-cert.pem`; in Kubernetes the `ambit-root-cert`
    /// ConfigMap) the controller's TLS certificate must chain to (with an `https://`
    /// --controller-address). Read again at each reconnection.
    #[arg(long, env = "AMBIT_CA_ROOT_FILE", requires = "controller_address")]
    pub ca_root_file: Option<PathBuf>,
}

/// Where the push comes from, and for which node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    pub address: String,
    pub node: String,
    /// The token presented to it; `None` for a controller that checks none.
    pub token_file: Option<PathBuf>,
    /// The mesh root its certificate must chain to.
    pub root_file: Option<PathBuf>,
}

/// Where the enrolment decisions come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrolmentSource {
    /// A watched folder of Kubernetes YAML.
    Folder(PathBuf),
    /// The controller's push.
    Controller(Controller),
}

/// Where to install the CNI plugin (a DaemonSet passes the node's directories).
#[derive(Debug, Clone, Default, Args)]
pub struct CniArgs {
    /// The node's CNI binary directory; with --cni-conf-dir, the agent installs
    /// ambit-cni and chains it into the node's CNI configuration at start.
    #[arg(long, env = "AMBIT_CNI_BIN_DIR", requires = "cni_conf_dir")]
    pub cni_bin_dir: Option<PathBuf>,
    /// The node's CNI configuration directory (e.g. /etc/cni/net.d).
    #[arg(long, env = "AMBIT_CNI_CONF_DIR", requires = "cni_bin_dir")]
    pub cni_conf_dir: Option<PathBuf>,
    /// The ambit-cni binary to install [default: next to this agent binary].
    #[arg(long, env = "AMBIT_CNI_PLUGIN")]
    pub cni_plugin: Option<PathBuf>,
}

impl CniArgs {
    /// What to install, when both directories are given.
    #[must_use]
    pub fn install(&self, agent_socket: PathBuf) -> Option<CniInstall> {
        let (bin_dir, conf_dir) = (self.cni_bin_dir.clone()?, self.cni_conf_dir.clone()?);
        let plugin_binary = self.cni_plugin.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|dir| dir.join(PLUGIN_TYPE)))
                .unwrap_or_else(|| PathBuf::from(PLUGIN_TYPE))
        });
        Some(CniInstall {
            plugin_binary,
            bin_dir,
            conf_dir,
            agent_socket,
        })
    }
}

/// Flags shared by `run` and `uninstall`.
#[derive(Debug, Clone, Args)]
pub struct PathArgs {
    /// bpffs directory for Ambit's pins.
    #[arg(long, env = "AMBIT_BPFFS_DIR", default_value = DEFAULT_BPFFS_DIR)]
    pub bpffs_dir: PathBuf,
    /// Directory for the agent's sockets and state file.
    #[arg(long, env = "AMBIT_RUN_DIR", default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
}

/// The validated configuration of a running agent.
#[derive(Debug, Clone)]
pub struct Config {
    pub enrolment: EnrolmentSource,
    pub cgroup: PathBuf,
    pub bpffs_dir: PathBuf,
    pub run_dir: PathBuf,
    pub sockmap_acceleration: bool,
    /// Install and chain the CNI plugin at start.
    pub cni_install: Option<CniInstall>,
}

/// Every problem found in the flags, reported together.
#[derive(Debug, thiserror::Error)]
#[error("invalid agent configuration:\n  - {}", .problems.join("\n  - "))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl Config {
    /// Validates flags, resolving the default cgroup from `mounts` (the text of
    /// `/proc/mounts`).
    ///
    /// # Errors
    /// [`ConfigError`] listing every invalid value.
    pub fn from_args(args: RunArgs, mounts: &str) -> Result<Self, ConfigError> {
        let mut problems = Vec::new();
        let enrolment = match (args.config_dir, args.controller_address, args.node_name) {
            (Some(dir), None, _) => {
                if !dir.is_dir() {
                    problems.push(format!(
                        "--config-dir {}: not a directory — point it at a folder of Kubernetes YAML",
                        dir.display()
                    ));
                }
                EnrolmentSource::Folder(dir)
            }
            (None, Some(address), Some(node)) => {
                let (token, root) = (&args.controller_token_file, &args.ca_root_file);
                if let Err(error) = channel::check(&address, root.is_some(), token.is_some()) {
                    problems.push(format!("--controller-address: {error}"));
                }
                EnrolmentSource::Controller(Controller {
                    address,
                    node,
                    token_file: args.controller_token_file,
                    root_file: args.ca_root_file,
                })
            }
            _ => {
                problems.push(
                    "give either --config-dir, or --controller-address with --node-name".to_owned(),
                );
                EnrolmentSource::Folder(PathBuf::new())
            }
        };
        let cgroup = match args.cgroup {
            Some(path) => path,
            None => cgroup2_mount(mounts).unwrap_or_else(|| {
                problems.push(
                    "no cgroup2 filesystem in /proc/mounts — mount one (mount -t cgroup2 none /sys/fs/cgroup) or pass --cgroup"
                        .to_owned(),
                );
                PathBuf::new()
            }),
        };
        if !cgroup.as_os_str().is_empty() && !cgroup.join("cgroup.procs").exists() {
            problems.push(format!(
                "--cgroup {}: not a cgroup v2 directory (no cgroup.procs)",
                cgroup.display()
            ));
        }
        if !args.paths.bpffs_dir.is_absolute() {
            problems.push(format!(
                "--bpffs-dir {}: must be an absolute path",
                args.paths.bpffs_dir.display()
            ));
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        let cni_install = args.cni.install(args.paths.run_dir.join(CNI_SOCKET_NAME));
        Ok(Self {
            enrolment,
            cgroup,
            bpffs_dir: args.paths.bpffs_dir,
            run_dir: args.paths.run_dir,
            sockmap_acceleration: args.sockmap_acceleration,
            cni_install,
        })
    }

    #[must_use]
    pub fn cni_socket(&self) -> PathBuf {
        self.run_dir.join(CNI_SOCKET_NAME)
    }

    #[must_use]
    pub fn ztunnel_socket(&self) -> PathBuf {
        self.run_dir.join(ZTUNNEL_SOCKET_NAME)
    }

    #[must_use]
    pub fn state_file(&self) -> PathBuf {
        self.run_dir.join(STATE_FILE_NAME)
    }
}

/// The first cgroup2 mount point in the text of `/proc/mounts`.
#[must_use]
pub fn cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| Path::new(target).to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_in_a_hybrid_layout() {
        let mounts = "cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn enrolment_comes_from_the_folder_or_the_controller_never_both() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["ambit-agent", "run"].iter().chain(args)).map(|_| ())
        };
        assert!(parse(&["--config-dir", "/etc/ambit"]).is_ok());
        assert!(
            parse(&[
                "--controller-address",
                "https://c:15010",
                "--node-name",
                "n1"
            ])
            .is_ok()
        );
        assert!(
            parse(&[
                "--controller-address",
                "https://c:15010",
                "--node-name",
                "n1",
                "--controller-token-file",
                "/var/run/secrets/tokens/ambit-ca-token"
            ])
            .is_ok()
        );
        for refused in [
            &[][..],
            &["--controller-address", "https://c:15010"],
            &[
                "--config-dir",
                "/etc/ambit",
                "--controller-token-file",
                "/var/run/secrets/tokens/ambit-ca-token",
            ],
            &[
                "--config-dir",
                "/etc/ambit",
                "--controller-address",
                "https://c:15010",
                "--node-name",
                "n1",
            ],
        ] {
            assert!(parse(refused).is_err(), "accepted {refused:?}");
        }
    }

    #[test]
    fn reports_every_problem_at_once() {
        let args = RunArgs {
            config_dir: Some(PathBuf::from("/nonexistent/config")),
            cgroup: None,
            paths: PathArgs {
                bpffs_dir: PathBuf::from("relative/pins"),
                run_dir: PathBuf::from(DEFAULT_RUN_DIR),
            },
            sockmap_acceleration: false,
            cni: CniArgs::default(),
            controller_address: None,
            node_name: None,
            controller_token_file: None,
            ca_root_file: None,
        };
        let error = Config::from_args(args, "").unwrap_err().to_string();
        for expected in ["--config-dir", "no cgroup2", "--bpffs-dir"] {
            assert!(
                error.contains(expected),
                "expected {expected:?} in: {error}"
            );
        }
    }
}
