//! [`Pod`]: a simulated pod — its manifest in the config folder, a network namespace
//! wired up by the node's CNI chain exactly as a container runtime does it, and a
//! cgroup for its processes.

use std::{
    collections::BTreeMap,
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use ambit_netns::Netns;
use anyhow::{Context as _, Result, anyhow, bail};
use serde_json::Value;

use crate::{
    cgroup,
    cmd::{Finished, ip},
    cni::{self, CniArgs, Runtime},
    manifest,
    net::{NetInner, lock},
    node::Node,
    ns,
    process::{self, ChildGuard, Location},
};

/// The interface name the runtime asks for inside the pod.
pub const POD_IFNAME: &str = "eth0";

/// What a test says about a pod: its Kubernetes identity.
#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    /// The Kubernetes namespace (`default` when empty).
    pub namespace: String,
    /// The pod's name (a-z, 0-9, `-`, `.`).
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `spec.serviceAccountName` (`default` when `None`).
    pub service_account: Option<String>,
}

impl PodSpec {
    #[must_use]
    pub fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            ..Self::default()
        }
    }

    #[must_use]
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    #[must_use]
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    #[must_use]
    pub fn service_account(mut self, name: &str) -> Self {
        self.service_account = Some(name.to_owned());
        self
    }

    /// Pod `<gateway>-0` of the waypoint `namespace/gateway`, as Istio deploys one: the
    /// Gateway's name as its service account and `gateway-name` label, and outside
    /// ambient capture (it speaks HBONE itself).
    #[must_use]
    pub fn waypoint(namespace: &str, gateway: &str) -> Self {
        Self::new(namespace, &format!("{gateway}-0"))
            .service_account(gateway)
            .label("gateway.networking.k8s.io/gateway-name", gateway)
            .label("istio.io/dataplane-mode", "none")
    }
}

/// A pod on a [`Node`]. Dropping it removes it (best effort, errors logged): its
/// processes are stopped, CNI DEL runs through the chain in reverse, and its
/// namespace, cgroup and manifest are deleted. [`Pod::remove`] does the same and
/// reports errors.
#[derive(Debug)]
pub struct Pod {
    state: Arc<PodState>,
    node: Node,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
}

#[derive(Debug)]
pub(crate) struct PodState {
    pub(crate) namespace: String,
    pub(crate) name: String,
    uid: String,
    container_id: String,
    netns_name: String,
    netns_path: PathBuf,
    cgroup: PathBuf,
    manifest: PathBuf,
    /// The chain the pod was added with; DEL uses the same one.
    conflist: Value,
    runtime: Runtime,
    add_attempted: AtomicBool,
    /// The final ADD result, cached for CHECK and DEL as libcni caches it.
    result: Mutex<Option<Value>>,
    removed: AtomicBool,
}

impl PodState {
    fn cni_args(&self) -> CniArgs {
        CniArgs {
            container_id: self.container_id.clone(),
            netns: Some(self.netns_path.clone()),
            ifname: POD_IFNAME.to_owned(),
            pod_namespace: self.namespace.clone(),
            pod_name: self.name.clone(),
            pod_uid: Some(self.uid.clone()),
        }
    }
}

pub(crate) fn add(node: &Node, mut spec: PodSpec) -> Result<Pod> {
    if spec.namespace.is_empty() {
        "default".clone_into(&mut spec.namespace);
    }
    for (what, value) in [("namespace", &spec.namespace), ("name", &spec.name)] {
        if value.is_empty()
            || value.len() > 63
            || !value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            bail!("pod {what} {value:?} is not 1–63 characters of a-z, 0-9, '-' and '.'");
        }
    }
    let net = &node.net;
    let netns_name = format!("{}-{}", node.netns_name(), spec.name);
    let config_dir = net.dir.join("config");
    let state = Arc::new(PodState {
        uid: random_uuid(net),
        container_id: random_hex(net, 64),
        netns_path: Path::new(ns::NETNS_RUN_DIR).join(&netns_name),
        netns_name,
        cgroup: node.cgroup_path().join(&spec.name),
        manifest: config_dir.join(manifest::pod_file(&spec.namespace, &spec.name)),
        namespace: spec.namespace.clone(),
        name: spec.name.clone(),
        conflist: node.cni_conflist()?,
        runtime: node.cni_runtime(),
        add_attempted: AtomicBool::new(false),
        result: Mutex::default(),
        removed: AtomicBool::new(false),
    });
    {
        let mut pods = lock(&net.pods);
        if pods.iter().any(|pod| pod.netns_name == state.netns_name) {
            bail!(
                "node {} already has a pod called {:?} (names must be unique per node)",
                node.name(),
                spec.name
            );
        }
        pods.push(Arc::clone(&state));
    }
    match create(node, &spec, &state) {
        Ok((ipv4, ipv6)) => Ok(Pod {
            state,
            node: node.clone(),
            ipv4,
            ipv6,
        }),
        Err(error) => {
            if let Err(cleanup) = remove(net, &state) {
                eprintln!(
                    "ambit-e2e: cleaning up after the failed pod {}/{}: {cleanup:#}",
                    spec.namespace, spec.name
                );
            }
            Err(error)
        }
    }
}

fn create(node: &Node, spec: &PodSpec, state: &PodState) -> Result<(Ipv4Addr, Ipv6Addr)> {
    let config_dir = node.net.dir.join("config");
    let file_name = manifest::pod_file(&spec.namespace, &spec.name);
    manifest::write(
        &config_dir,
        &file_name,
        &pod_object(node, spec, state, None),
    )?;

    // The sandbox, as a runtime makes it: a namespace with loopback up.
    ns::add(&state.netns_name)?;
    ns::set_sysctls(
        &state.netns_path,
        &[
            ("net/ipv6/conf/all/accept_dad", "0"),
            ("net/ipv6/conf/default/accept_dad", "0"),
        ],
    )?;
    ip(&["-n", &state.netns_name, "link", "set", "lo", "up"])?;
    cgroup::create(&state.cgroup)?;

    state.add_attempted.store(true, Ordering::SeqCst);
    let result = state.runtime.add_list(&state.conflist, &state.cni_args())?;
    *lock(&state.result) = Some(result.clone());
    let ips = cni::result_ips(&result)?;
    let ipv4 = ips.iter().find_map(|cidr| match cidr.addr {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    });
    let ipv6 = ips.iter().find_map(|cidr| match cidr.addr {
        IpAddr::V6(ip) => Some(ip),
        IpAddr::V4(_) => None,
    });
    let (Some(ipv4), Some(ipv6)) = (ipv4, ipv6) else {
        bail!("expected an IPv4 and an IPv6 address in the CNI result, got {result}");
    };
    // What the kubelet reports once the sandbox is up.
    manifest::write(
        &config_dir,
        &file_name,
        &pod_object(node, spec, state, Some((ipv4, ipv6))),
    )?;
    Ok((ipv4, ipv6))
}

fn pod_object(
    node: &Node,
    spec: &PodSpec,
    state: &PodState,
    ips: Option<(Ipv4Addr, Ipv6Addr)>,
) -> Value {
    manifest::pod(spec, &state.uid, node.name(), Some(node.underlay_v4()), ips)
}

/// Tears the pod down: processes, CNI DEL (reverse chain), namespace, cgroup,
/// manifest. Every step is tried; the error lists the ones that failed.
pub(crate) fn remove(net: &NetInner, state: &PodState) -> Result<()> {
    if state.removed.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let mut problems = Vec::new();
    process::stop_all(&net.children_of_pod(&state.netns_name));
    if state.add_attempted.load(Ordering::SeqCst) {
        let result = lock(&state.result).clone();
        if let Err(error) =
            state
                .runtime
                .del_list(&state.conflist, &state.cni_args(), result.as_ref())
        {
            problems.push(format!("{error:#}"));
        }
    }
    if state.netns_path.exists()
        && let Err(error) = ns::delete(&state.netns_name)
    {
        problems.push(format!("{error:#}"));
    }
    if let Err(error) = cgroup::kill_and_remove(&state.cgroup) {
        problems.push(format!("{error:#}"));
    }
    match fs::remove_file(&state.manifest) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => {
            problems.push(format!(
                "cannot remove {}: {error}",
                state.manifest.display()
            ));
        }
        _ => {}
    }
    lock(&net.pods).retain(|pod| !std::ptr::eq(pod.as_ref(), state));
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "removing pod {}/{}:\n{}",
            state.namespace,
            state.name,
            problems.join("\n")
        )
    }
}

impl Pod {
    /// The pod's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The pod's Kubernetes namespace.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.state.namespace
    }

    /// `metadata.uid` (also `K8S_POD_UID`).
    #[must_use]
    pub fn uid(&self) -> &str {
        &self.state.uid
    }

    /// The sandbox id (`CNI_CONTAINERID`).
    #[must_use]
    pub fn container_id(&self) -> &str {
        &self.state.container_id
    }

    /// The node the pod runs on.
    #[must_use]
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// `<prefix>-<node>-<pod>`.
    #[must_use]
    pub fn netns_name(&self) -> &str {
        &self.state.netns_name
    }

    /// `/var/run/netns/<prefix>-<node>-<pod>` (`CNI_NETNS`).
    #[must_use]
    pub fn netns_path(&self) -> &Path {
        &self.state.netns_path
    }

    /// The pod's namespace, opened (for its cookie, or to hand to a process).
    ///
    /// # Errors
    /// When it cannot be opened.
    pub fn netns(&self) -> Result<Netns> {
        Netns::open(&self.state.netns_path).map_err(|error| anyhow!("{error}"))
    }

    /// The pod's cgroup: `<node cgroup>/<pod>`.
    #[must_use]
    pub fn cgroup_path(&self) -> &Path {
        &self.state.cgroup
    }

    /// The pod's manifest in the config folder.
    #[must_use]
    pub fn manifest_path(&self) -> &Path {
        &self.state.manifest
    }

    /// The pod's IPv4 address (from the CNI result).
    #[must_use]
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }

    /// The pod's IPv6 address (from the CNI result).
    #[must_use]
    pub fn ipv6(&self) -> Ipv6Addr {
        self.ipv6
    }

    /// Both addresses, IPv4 first.
    #[must_use]
    pub fn ips(&self) -> [IpAddr; 2] {
        [self.ipv4.into(), self.ipv6.into()]
    }

    /// `ipv4:port`.
    #[must_use]
    pub fn addr_v4(&self, port: u16) -> SocketAddr {
        (self.ipv4, port).into()
    }

    /// `[ipv6]:port`.
    #[must_use]
    pub fn addr_v6(&self, port: u16) -> SocketAddr {
        (self.ipv6, port).into()
    }

    /// The final result of CNI ADD (what the last plugin printed).
    #[must_use]
    pub fn cni_result(&self) -> Value {
        lock(&self.state.result).clone().unwrap_or(Value::Null)
    }

    /// The CNI parameters the pod was added with (to invoke a plugin by hand).
    #[must_use]
    pub fn cni_args(&self) -> CniArgs {
        self.state.cni_args()
    }

    /// Runs CNI CHECK through the pod's chain with the cached ADD result.
    ///
    /// # Errors
    /// When a plugin fails the check.
    pub fn cni_check(&self) -> Result<()> {
        self.state.runtime.check_list(
            &self.state.conflist,
            &self.state.cni_args(),
            &self.cni_result(),
        )
    }

    /// Starts `command` in the pod's namespace AND cgroup (so cgroup eBPF programs
    /// apply to it), with stdout and stderr captured to files. It is stopped when the
    /// guard, the pod or the test network is dropped.
    ///
    /// # Errors
    /// When it cannot start.
    pub fn spawn(&self, command: &mut Command) -> Result<ChildGuard> {
        self.spawn_in_cgroup(self.state.cgroup.clone(), command)
    }

    /// Starts `command` in the pod's namespace but in a cgroup outside every node's
    /// (`<test cgroup>/uncaptured`), so Ambit's cgroup programs do not see it — for
    /// example a benchmark's iptables baseline, which must reach ztunnel another way.
    ///
    /// # Errors
    /// When the cgroup cannot be made or the process cannot start.
    pub fn spawn_uncaptured(&self, command: &mut Command) -> Result<ChildGuard> {
        let cgroup = self.node.net.cgroup.join("uncaptured");
        std::fs::create_dir_all(&cgroup)
            .with_context(|| format!("cannot create cgroup {}", cgroup.display()))?;
        self.spawn_in_cgroup(cgroup, command)
    }

    fn spawn_in_cgroup(&self, cgroup: PathBuf, command: &mut Command) -> Result<ChildGuard> {
        if self.state.removed.load(Ordering::SeqCst) {
            bail!(
                "pod {}/{} has been removed",
                self.state.namespace,
                self.state.name
            );
        }
        let place = Location {
            label: format!("{}-{}", self.node.name(), self.state.name),
            netns: self.state.netns_path.clone(),
            cgroup,
            pod: Some(self.state.netns_name.clone()),
        };
        self.node.net.spawn(&place, command)
    }

    /// Runs `command` as [`Pod::spawn`] does and waits for it to exit; the exit status
    /// is returned, not judged.
    ///
    /// # Errors
    /// When it cannot start or runs past `timeout`.
    pub fn exec(&self, command: &mut Command, timeout: Duration) -> Result<Finished> {
        self.spawn(command)?.finish(timeout)
    }

    /// Runs `f` on the current thread inside the pod's network namespace.
    ///
    /// The test process is NOT in the pod's cgroup, so cgroup eBPF hooks (connect,
    /// sock_ops, getsockopt, …) do not see sockets made here: use [`Pod::spawn`] for
    /// traffic that must be captured.
    ///
    /// # Errors
    /// When the namespace cannot be entered.
    pub fn run_in<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        ns::run_in(&self.state.netns_path, f)
    }

    /// Runs `ip -n <pod netns> ARGS…`, failing unless it exits 0.
    ///
    /// # Errors
    /// When `ip` fails.
    pub fn ip(&self, args: &[&str]) -> Result<Finished> {
        let mut full = vec!["-n", &self.state.netns_name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Removes the pod now (see [`Pod`]), reporting what failed.
    ///
    /// # Errors
    /// When a step failed; all steps are tried.
    pub fn remove(self) -> Result<()> {
        remove(&self.node.net, &self.state)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if let Err(error) = remove(&self.node.net, &self.state) {
            eprintln!("ambit-e2e: {error:#}");
        }
    }
}

/// `n` hex digits, random enough for ids within one test.
fn random_hex(net: &NetInner, n: usize) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(n + 16);
    while out.len() < n {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write(net.prefix.as_bytes());
        hasher.write_u64(net.next_seq());
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out.truncate(n);
    out
}

/// A version-4-shaped UUID.
pub(crate) fn random_uuid(net: &NetInner) -> String {
    let hex = random_hex(net, 32);
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}
