//! Ambit's end-to-end test harness: simulated Kubernetes nodes and pods made of network
//! namespaces and cgroups on one machine, on which the tests run Ambit's real binaries
//! and drive real TCP traffic.
//!
//! A [`TestNet`] is one test's cluster. Its nodes hang off an "underlay" bridge and
//! route to each other's pod subnets; each pod is created the way a container runtime
//! creates one — a namespace, then CNI ADD through the real `bridge` + `host-local`
//! reference plugins and any chained plugin (Ambit's `ambit-cni`) — after its manifest
//! is written to the config folder Ambit reads. Processes run inside a node or a pod:
//! its network namespace *and* its cgroup, so Ambit's cgroup eBPF programs see them.
//!
//! ```no_run
//! use ambit_e2e::{PodSpec, TestNet, app};
//! # fn main() -> anyhow::Result<()> {
//! let Some(net) = TestNet::new("pods_talk") else { return Ok(()) }; // skipped
//! let (n1, n2) = (net.add_node("node1")?, net.add_node("node2")?);
//! let client = n1.add_pod(PodSpec::new("default", "client"))?;
//! let server = n2.add_pod(PodSpec::new("default", "server"))?;
//! let _serving = app::serve(&server, "[::]:8080".parse()?)?;
//! let report = app::connect(&client, server.addr_v4(8080))?.expect_ok()?;
//! assert_eq!(report.server_saw.unwrap().peer.ip(), client.ipv4());
//! # Ok(()) }
//! ```
//!
//! # Rules the harness keeps
//! - Every name (namespaces, links, cgroups, bpffs dirs, temp files) carries the
//!   test's prefix ([`TestNet::prefix`]), so tests run in parallel.
//! - Addresses come only from 198.18.0.0/15 and 2001:2::/48 (see [`addr`]) and exist
//!   only in the test's namespaces. The host's interfaces, root cgroup and firewall
//!   are never touched; CNI plugins never run in the host's namespace.
//! - Dropping the [`TestNet`] — also when the test panics — stops its processes and
//!   removes everything it made.
//! - Without root, `ip`, the CNI reference plugins, cgroup2 or bpffs a test is skipped
//!   ([`TestNet::new`] returns `None`); under `CI=true` it fails instead.
//!
//! - Set `AMBIT_E2E_KEEP=1` to keep each test's temp dir (manifests, process logs);
//!   a failing test prints the end of its processes' logs either way.
//!
//! # Layout
//! - [`net`]: [`TestNet`], the underlay, the config folder, bpffs dirs, teardown;
//! - [`node`]: [`Node`], its namespace, routes, cgroup and CNI chain;
//! - [`pod`]: [`Pod`] and [`PodSpec`], created and removed through CNI;
//! - [`cni`]: running CNI plugins like a runtime ([`cni::Runtime`]), also raw;
//! - [`process`]: [`ChildGuard`], processes in a namespace and cgroup, logs;
//! - [`cgroup`], [`ns`]: cgroup v2 directories and named network namespaces;
//! - [`mesh`]: Ambit's agent and ztunnel running on a node ([`mesh::MeshNode`]);
//! - [`app`]: driving the `pod-app` test program (`src/bin/pod-app.rs`);
//! - [`openssl`]: TLS servers with their own certificates, and clients that report the
//!   certificate they were shown (for TLS passed through);
//! - [`cmd`], [`wait`], [`paths`], [`prereq`], [`addr`]: commands with good errors,
//!   polling with deadlines, finding binaries, prerequisites, the address plan.
//!
//! The harness does not emulate Kubernetes beyond writing manifests: there is no API
//! server, scheduler or kubelet loop, and pods are not restarted.
#![deny(unsafe_code)]

pub mod addr;
pub mod app;
pub mod cgroup;
pub mod cmd;
pub mod cni;
pub mod control_plane;
pub mod gateway_client;
mod manifest;
pub mod mesh;
pub mod net;
pub mod node;
pub mod ns;
pub mod openssl;
pub mod paths;
pub mod pod;
pub mod prereq;
pub mod process;
pub mod wait;

pub use addr::Cidr;
pub use cmd::Finished;
pub use control_plane::ControlPlane;
pub use mesh::{MeshNode, MeshOptions};
pub use net::TestNet;
pub use node::Node;
pub use paths::{bin_path, pod_app, workspace_dir};
pub use pod::{Pod, PodSpec};
pub use process::ChildGuard;
pub use wait::{wait_for, wait_until};
