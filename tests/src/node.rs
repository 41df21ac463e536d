//! [`Node`]: a simulated Kubernetes node — a network namespace on the underlay, a
//! cgroup, and the CNI configuration its pods are created with.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use ambit_netns::Netns;
use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};

use crate::{
    addr::{self, Cidr, MAX_NODES},
    cgroup,
    cmd::{Finished, ip},
    cni::{self, Runtime},
    net::{NetInner, lock},
    ns,
    pod::{self, Pod, PodSpec},
    process::{ChildGuard, Location},
};

/// The primary configuration the harness writes on every node.
const PRIMARY_CONFIG: &str = "10-bridge.conflist";
/// The network name in the nodes' conflist.
pub const NETWORK_NAME: &str = "ambit-test";
/// The bridge the `bridge` plugin creates in each node.
pub const POD_BRIDGE: &str = "cni0";
/// The node's interface on the underlay.
pub const NODE_IFNAME: &str = "eth0";

/// A simulated node. Cheap to clone; it lives as long as its [`crate::TestNet`].
#[derive(Debug, Clone)]
pub struct Node {
    pub(crate) state: Arc<NodeState>,
    pub(crate) net: Arc<NetInner>,
}

#[derive(Debug)]
pub(crate) struct NodeState {
    pub(crate) name: String,
    pub(crate) index: u8,
    pub(crate) netns_name: String,
    pub(crate) netns_path: PathBuf,
    pub(crate) cgroup: PathBuf,
    pub(crate) dir: PathBuf,
    /// Extra directories searched for plugin binaries (see [`Node::chain_cni_plugin`]).
    plugin_dirs: Mutex<Vec<PathBuf>>,
}

pub(crate) fn add(net: &Arc<NetInner>, name: &str) -> Result<Node> {
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        bail!("node names are 1–32 characters of a-z, 0-9 and '-'");
    }
    // Held throughout, so nodes are added one at a time and see each other's routes.
    let mut nodes = lock(&net.nodes);
    if nodes.iter().any(|node| node.name == name) {
        bail!("the test already has a node called {name:?}");
    }
    let index = u8::try_from(nodes.len() + 1)
        .ok()
        .filter(|&n| n <= MAX_NODES)
        .with_context(|| format!("a test can have at most {MAX_NODES} nodes"))?;
    let netns_name = format!("{}-{name}", net.prefix);
    let netns_path = ns::add(&netns_name)?;
    ns::set_sysctls(
        &netns_path,
        &[
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv6/conf/all/forwarding", "1"),
            ("net/ipv6/conf/default/forwarding", "1"),
            // Addresses are usable at once (no duplicate address detection).
            ("net/ipv6/conf/all/accept_dad", "0"),
            ("net/ipv6/conf/default/accept_dad", "0"),
        ],
    )?;
    ip(&["-n", &netns_name, "link", "set", "lo", "up"])?;
    let underlay_end = format!("{}n{index}", net.prefix);
    ip(&[
        "-n",
        &net.underlay_netns,
        "link",
        "add",
        &underlay_end,
        "type",
        "veth",
        "peer",
        "name",
        NODE_IFNAME,
        "netns",
        &netns_name,
    ])?;
    ip(&[
        "-n",
        &net.underlay_netns,
        "link",
        "set",
        &underlay_end,
        "master",
        &net.underlay_bridge,
        "up",
    ])?;
    let v4 = Cidr::new(addr::node_underlay_v4(index), addr::UNDERLAY_V4_LEN);
    let v6 = Cidr::new(addr::node_underlay_v6(index), addr::UNDERLAY_V6_LEN);
    ip(&[
        "-n",
        &netns_name,
        "addr",
        "add",
        &v4.to_string(),
        "dev",
        NODE_IFNAME,
    ])?;
    ip(&[
        "-n",
        &netns_name,
        "-6",
        "addr",
        "add",
        &v6.to_string(),
        "dev",
        NODE_IFNAME,
        "nodad",
    ])?;
    ip(&["-n", &netns_name, "link", "set", NODE_IFNAME, "up"])?;

    let cgroup_path = net.cgroup.join(name);
    cgroup::create(&cgroup_path)?;
    let dir = net.dir.join("nodes").join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let state = Arc::new(NodeState {
        name: name.to_owned(),
        index,
        netns_name,
        netns_path,
        cgroup: cgroup_path,
        dir,
        plugin_dirs: Mutex::default(),
    });
    let node = Node::from_state(net, &state);
    std::fs::create_dir_all(node.cni_bin_dir())?;
    std::fs::create_dir_all(node.cni_conf_dir())?;
    write_json(
        &node.cni_conf_dir().join(PRIMARY_CONFIG),
        &node.bridge_conflist(),
    )?;
    for other in nodes.iter() {
        route_pods(&state, other)?;
        route_pods(other, &state)?;
    }
    nodes.push(Arc::clone(&state));
    Ok(node)
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_vec_pretty(value)?;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Routes, on `from`, the pod subnets of `to` via `to`'s underlay address.
fn route_pods(from: &NodeState, to: &NodeState) -> Result<()> {
    let routes = [
        (
            addr::pod_subnet_v4(to.index),
            IpAddr::from(addr::node_underlay_v4(to.index)),
            "-4",
        ),
        (
            addr::pod_subnet_v6(to.index),
            IpAddr::from(addr::node_underlay_v6(to.index)),
            "-6",
        ),
    ];
    for (subnet, via, family) in routes {
        ip(&[
            "-n",
            &from.netns_name,
            family,
            "route",
            "add",
            &subnet.to_string(),
            "via",
            &via.to_string(),
            "dev",
            NODE_IFNAME,
        ])?;
    }
    Ok(())
}

impl Node {
    pub(crate) fn from_state(net: &Arc<NetInner>, state: &Arc<NodeState>) -> Self {
        Self {
            state: Arc::clone(state),
            net: Arc::clone(net),
        }
    }

    /// The node's name (as in a Pod's `spec.nodeName`).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// N: the node's number (1, 2, …) in the address plan.
    #[must_use]
    pub fn index(&self) -> u8 {
        self.state.index
    }

    /// The node's namespace name: `<prefix>-<name>`.
    #[must_use]
    pub fn netns_name(&self) -> &str {
        &self.state.netns_name
    }

    /// `/var/run/netns/<prefix>-<name>`.
    #[must_use]
    pub fn netns_path(&self) -> &Path {
        &self.state.netns_path
    }

    /// The node's namespace, opened.
    ///
    /// # Errors
    /// When it cannot be opened.
    pub fn netns(&self) -> Result<Netns> {
        Netns::open(&self.state.netns_path).map_err(|error| anyhow!("{error}"))
    }

    /// The node's cgroup: `<test cgroup>/<name>`; its pods' cgroups are below it.
    #[must_use]
    pub fn cgroup_path(&self) -> &Path {
        &self.state.cgroup
    }

    /// A directory of the node's own in the test's temp dir (its IPAM state lives here).
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.state.dir
    }

    /// 198.19.255.N, on the underlay.
    #[must_use]
    pub fn underlay_v4(&self) -> Ipv4Addr {
        addr::node_underlay_v4(self.state.index)
    }

    /// 2001:2:0:ffff::N, on the underlay.
    #[must_use]
    pub fn underlay_v6(&self) -> Ipv6Addr {
        addr::node_underlay_v6(self.state.index)
    }

    /// 198.18.N.0/24.
    #[must_use]
    pub fn pod_subnet_v4(&self) -> Cidr {
        addr::pod_subnet_v4(self.state.index)
    }

    /// 2001:2:0:N::/64.
    #[must_use]
    pub fn pod_subnet_v6(&self) -> Cidr {
        addr::pod_subnet_v6(self.state.index)
    }

    /// The node's CNI binary directory (`/opt/cni/bin` on a real node); it is in
    /// `CNI_PATH` before the reference plugins.
    #[must_use]
    pub fn cni_bin_dir(&self) -> PathBuf {
        self.state.dir.join("cni-bin")
    }

    /// The node's CNI configuration directory (`/etc/cni/net.d` on a real node). It
    /// starts with `10-bridge.conflist` (`bridge` + `host-local` on the node's pod
    /// subnets); like a container runtime, the harness uses the first file by name.
    #[must_use]
    pub fn cni_conf_dir(&self) -> PathBuf {
        self.state.dir.join("net.d")
    }

    /// Appends a plugin to the node's CNI configuration on disk, for pods added from
    /// now on. `config["type"]` must be the file name of `binary`, whose directory joins
    /// `CNI_PATH`.
    ///
    /// # Errors
    /// When the type and binary do not match, the binary does not exist, or the
    /// configuration cannot be rewritten.
    pub fn chain_cni_plugin(&self, config: Value, binary: &Path) -> Result<()> {
        let plugin_type = config["type"]
            .as_str()
            .with_context(|| format!("plugin config has no string `type`: {config}"))?;
        if binary.file_name().and_then(|name| name.to_str()) != Some(plugin_type) {
            bail!(
                "plugin type {plugin_type:?} must be the file name of its binary {}",
                binary.display()
            );
        }
        if !binary.is_file() {
            bail!("CNI plugin binary {} does not exist", binary.display());
        }
        let dir = binary
            .parent()
            .context("plugin binary has no directory")?
            .to_owned();
        let (path, mut conflist) = self.primary_cni_config()?;
        conflist["plugins"]
            .as_array_mut()
            .with_context(|| format!("{} has no plugin list", path.display()))?
            .push(config);
        write_json(&path, &conflist)?;
        let mut dirs = lock(&self.state.plugin_dirs);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
        Ok(())
    }

    /// The conflist pods are created with now: the first file by name in
    /// [`Node::cni_conf_dir`], as a container runtime picks it.
    ///
    /// # Errors
    /// When the directory holds no readable conflist.
    pub fn cni_conflist(&self) -> Result<Value> {
        self.primary_cni_config().map(|(_, conflist)| conflist)
    }

    fn primary_cni_config(&self) -> Result<(PathBuf, Value)> {
        let dir = self.cni_conf_dir();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "conflist"))
            .collect();
        files.sort();
        let path = files
            .into_iter()
            .next()
            .with_context(|| format!("no .conflist in {}", dir.display()))?;
        let text =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let conflist = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        Ok((path, conflist))
    }

    /// `bridge` + `host-local` on the node's pod subnets: the cluster's network.
    fn bridge_conflist(&self) -> Value {
        let bridge = json!({
            "type": "bridge",
            "bridge": POD_BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [
                    [{ "subnet": self.pod_subnet_v4().to_string() }],
                    [{ "subnet": self.pod_subnet_v6().to_string() }],
                ],
                "routes": [{ "dst": "0.0.0.0/0" }, { "dst": "::/0" }],
                "dataDir": self.state.dir.join("ipam"),
            },
        });
        cni::conflist(NETWORK_NAME, vec![bridge])
    }

    /// A CNI runtime that runs plugins in this node's namespace and cgroup, with the
    /// node's binary directory, the chained plugins' directories and the reference
    /// plugins in `CNI_PATH`.
    #[must_use]
    pub fn cni_runtime(&self) -> Runtime {
        let dirs = lock(&self.state.plugin_dirs).clone();
        std::iter::once(self.cni_bin_dir()).chain(dirs).fold(
            Runtime::new(&self.state.netns_path).with_cgroup(&self.state.cgroup),
            Runtime::with_plugin_dir,
        )
    }

    /// Creates a pod on this node: its manifest, its namespace and cgroup, and its
    /// network through the node's CNI chain (see [`crate::Pod`]).
    ///
    /// # Errors
    /// When any step fails (what was made is removed again).
    pub fn add_pod(&self, spec: PodSpec) -> Result<Pod> {
        let what = format!(
            "cannot add pod {}/{} on node {}",
            spec.namespace, spec.name, self.state.name
        );
        pod::add(self, spec).context(what)
    }

    /// Starts `command` in the node's namespace and cgroup, with stdout and stderr
    /// captured to files. It is stopped when the guard or the test network is dropped.
    ///
    /// # Errors
    /// When it cannot start.
    pub fn spawn(&self, command: &mut Command) -> Result<ChildGuard> {
        self.net.spawn(&self.place(), command)
    }

    /// Runs `command` as [`Node::spawn`] does and waits for it to exit; the exit status
    /// is returned, not judged.
    ///
    /// # Errors
    /// When it cannot start or runs past `timeout`.
    pub fn exec(&self, command: &mut Command, timeout: Duration) -> Result<Finished> {
        self.spawn(command)?.finish(timeout)
    }

    /// Runs `f` on the current thread inside the node's namespace (not its cgroup).
    ///
    /// # Errors
    /// When the namespace cannot be entered.
    pub fn run_in<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        ns::run_in(&self.state.netns_path, f)
    }

    /// Runs `ip -n <node netns> ARGS…` (for example `["route"]`), failing unless it
    /// exits 0.
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn ip(&self, args: &[&str]) -> Result<Finished> {
        let mut full = vec!["-n", &self.state.netns_name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Reads a sysctl (`net/ipv4/ip_forward` style) inside the node's namespace.
    ///
    /// # Errors
    /// When it cannot be read.
    pub fn sysctl(&self, key: &str) -> Result<String> {
        ns::sysctl(&self.state.netns_path, key)
    }

    fn place(&self) -> Location {
        Location {
            label: self.state.name.clone(),
            netns: self.state.netns_path.clone(),
            cgroup: self.state.cgroup.clone(),
            pod: None,
        }
    }
}
