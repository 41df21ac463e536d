//! [`TestNet`]: everything one test builds, and its teardown.

use std::{
    collections::BTreeMap,
    fs,
    hash::{BuildHasher, Hasher},
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tempfile::TempDir;

use crate::{
    PodSpec, addr, cgroup,
    cmd::ip,
    manifest,
    node::{self, Node, NodeState},
    ns,
    pod::{self, PodState},
    prereq::{self, Prerequisites},
    process::{self, ChildGuard, ChildSlot, Location},
};

/// The directory under the cgroup2 mount that holds every test's cgroup.
pub const CGROUP_PARENT: &str = "ambit-test";

/// Set to `1` to keep the test's temp dir (manifests, logs) after the test.
pub const KEEP_ENV: &str = "AMBIT_E2E_KEEP";

/// Longest unix socket path (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// One test's simulated cluster: an underlay network joining its nodes, a temp dir
/// (config folder, logs, IPAM state, sockets) and a cgroup.
///
/// Dropping it — also while a test panics — stops every process it started, removes
/// the remaining pods (CNI DEL), then deletes all of the test's network namespaces,
/// cgroups, bpffs directories and its temp dir. Failures are logged to stderr.
#[derive(Debug)]
pub struct TestNet {
    inner: Arc<NetInner>,
    tempdir: Option<TempDir>,
    /// Keep the temp dir when dropped (see [`TestNet::keep_dir`]).
    keep_dir: AtomicBool,
}

/// State shared by the [`TestNet`] and its [`Node`]/[`crate::Pod`] handles.
#[derive(Debug)]
pub(crate) struct NetInner {
    pub(crate) prefix: String,
    pub(crate) test_name: String,
    pub(crate) prereq: &'static Prerequisites,
    pub(crate) dir: PathBuf,
    pub(crate) cgroup: PathBuf,
    pub(crate) underlay_netns: String,
    pub(crate) underlay_bridge: String,
    pub(crate) nodes: Mutex<Vec<Arc<NodeState>>>,
    pub(crate) pods: Mutex<Vec<Arc<PodState>>>,
    children: Mutex<Vec<Arc<ChildSlot>>>,
    seq: AtomicU64,
    torn_down: AtomicBool,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl TestNet {
    /// A fresh test network, or `None` (after printing "skipping …") when the machine
    /// lacks a prerequisite. `test_name` appears in messages and the temp dir name.
    ///
    /// # Panics
    /// Under `CI=true` when a prerequisite is missing, and whenever setting up fails.
    #[must_use]
    pub fn new(test_name: &str) -> Option<Self> {
        let prereq = prereq::require(test_name)?;
        match Self::create(test_name, prereq) {
            Ok(net) => Some(net),
            Err(error) => panic!("{test_name}: cannot set up the test network: {error:?}"),
        }
    }

    fn create(test_name: &str, prereq: &'static Prerequisites) -> Result<Self> {
        let cgroup_parent = prereq.cgroup2.join(CGROUP_PARENT);
        match fs::create_dir(&cgroup_parent) {
            Err(error) if error.kind() != io::ErrorKind::AlreadyExists => {
                return Err(error)
                    .with_context(|| format!("cannot create cgroup {}", cgroup_parent.display()));
            }
            _ => {}
        }
        let (prefix, cgroup) = claim_prefix(&cgroup_parent, &prereq.bpffs)?;
        let tempdir = tempfile::Builder::new()
            .prefix(&format!("ambit-{prefix}-"))
            .tempdir()
            .context("cannot create the test's temp dir")?;
        let net = Self {
            inner: Arc::new(NetInner {
                underlay_netns: format!("{prefix}-underlay"),
                underlay_bridge: format!("{prefix}br"),
                prefix,
                test_name: test_name.to_owned(),
                prereq,
                dir: tempdir.path().to_owned(),
                cgroup,
                nodes: Mutex::default(),
                pods: Mutex::default(),
                children: Mutex::default(),
                seq: AtomicU64::new(0),
                torn_down: AtomicBool::new(false),
            }),
            tempdir: Some(tempdir),
            keep_dir: AtomicBool::new(false),
        };
        // From here on, dropping `net` cleans up whatever was made.
        for dir in ["config", "logs", "run", "nodes"] {
            let path = net.inner.dir.join(dir);
            fs::create_dir(&path).with_context(|| format!("cannot create {}", path.display()))?;
        }
        net.create_underlay()
            .context("cannot create the underlay network")?;
        Ok(net)
    }

    fn create_underlay(&self) -> Result<()> {
        let (netns, bridge) = (&self.inner.underlay_netns, &self.inner.underlay_bridge);
        let path = ns::add(netns)?;
        ns::set_sysctls(
            &path,
            &[
                ("net/ipv6/conf/all/accept_dad", "0"),
                ("net/ipv6/conf/default/accept_dad", "0"),
            ],
        )?;
        ip(&["-n", netns, "link", "set", "lo", "up"])?;
        ip(&["-n", netns, "link", "add", bridge, "type", "bridge"])?;
        ip(&["-n", netns, "link", "set", bridge, "up"])?;
        Ok(())
    }

    /// The per-test prefix of every name: `a` and 5 hex digits.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The test's temp dir.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Keeps the temp dir (manifests, process logs) when the network is dropped, as
    /// [`KEEP_ENV`] does: for a program that points a person at the logs of a failure.
    pub fn keep_dir(&self) {
        self.keep_dir.store(true, Ordering::SeqCst);
    }

    /// The config folder Ambit's binaries read Kubernetes objects from.
    #[must_use]
    pub fn config_dir(&self) -> PathBuf {
        self.inner.dir.join("config")
    }

    /// Where process logs go.
    #[must_use]
    pub fn logs_dir(&self) -> PathBuf {
        self.inner.dir.join("logs")
    }

    /// A path for a unix socket called `name` in the test's temp dir.
    ///
    /// # Errors
    /// When the path would be too long for a unix socket.
    pub fn socket_path(&self, name: &str) -> Result<PathBuf> {
        let path = self.inner.dir.join("run").join(name);
        if path.as_os_str().len() > MAX_SOCKET_PATH {
            bail!(
                "socket path {} is longer than {MAX_SOCKET_PATH} bytes: use a shorter name or TMPDIR",
                path.display()
            );
        }
        Ok(path)
    }

    /// The test's own cgroup (`<cgroup2>/ambit-test/<prefix>`); nodes' cgroups are below.
    #[must_use]
    pub fn cgroup_path(&self) -> &Path {
        &self.inner.cgroup
    }

    /// The namespace holding the bridge that joins the nodes.
    #[must_use]
    pub fn underlay_netns_path(&self) -> PathBuf {
        Path::new(ns::NETNS_RUN_DIR).join(&self.inner.underlay_netns)
    }

    /// Adds node `name` (lowercase letters, digits, `-`): its namespace joined to the
    /// underlay, its cgroup, and routes between its pod subnets and every other node's.
    ///
    /// # Errors
    /// When the name is bad or taken, or any step fails.
    pub fn add_node(&self, name: &str) -> Result<Node> {
        node::add(&self.inner, name).with_context(|| format!("cannot add node {name:?}"))
    }

    /// The node called `name`.
    #[must_use]
    pub fn node(&self, name: &str) -> Option<Node> {
        self.nodes().into_iter().find(|node| node.name() == name)
    }

    /// All nodes, in the order they were added.
    #[must_use]
    pub fn nodes(&self) -> Vec<Node> {
        lock(&self.inner.nodes)
            .iter()
            .map(|state| Node::from_state(&self.inner, state))
            .collect()
    }

    /// Writes a Namespace object with `labels` to the config folder.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_namespace<K: Into<String>, V: Into<String>>(
        &self,
        name: &str,
        labels: impl IntoIterator<Item = (K, V)>,
    ) -> Result<PathBuf> {
        let labels: BTreeMap<String, String> = labels
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self.write_manifest(
            &manifest::namespace_file(name),
            &manifest::namespace(name, &labels),
        )
    }

    /// Writes any object (for example a Service) as YAML to `file_name` in the config
    /// folder, replacing the file atomically.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_manifest(&self, file_name: &str, object: &Value) -> Result<PathBuf> {
        manifest::write(&self.config_dir(), file_name, object)
    }

    /// Writes the Gateway API `Gateway` that declares the waypoint `namespace/name`
    /// (`gatewayClassName: istio-waypoint`, listener `mesh` on 15008 HBONE); its pod is
    /// [`crate::PodSpec::waypoint`].
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn write_waypoint(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        self.write_manifest(
            &format!("waypoint-{namespace}-{name}.yaml"),
            &serde_json::json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "Gateway",
                "metadata": { "name": name, "namespace": namespace },
                "spec": {
                    "gatewayClassName": "istio-waypoint",
                    "listeners": [{ "name": "mesh", "port": 15008, "protocol": "HBONE" }],
                },
            }),
        )
    }

    /// Writes the manifest of phantom pod `index` (see [`crate::addr`]): `Running` on
    /// node `node_name` at its own addresses, but with no namespace, process or CNI
    /// behind it — for what Ambit's binaries hold at scale, not for traffic (nothing
    /// answers at its addresses, and `node_name` need not be a node of this test).
    /// Returns the IPv4 address and the manifest's file name (for
    /// [`TestNet::remove_manifest`]).
    ///
    /// # Errors
    /// When `index` is outside the plan or the file cannot be written.
    pub fn write_phantom_pod(
        &self,
        spec: &PodSpec,
        node_name: &str,
        index: u16,
    ) -> Result<(Ipv4Addr, String)> {
        let (ipv4, ipv6) = addr::phantom_pod(index)?;
        let uid = pod::random_uuid(&self.inner);
        let file_name = manifest::pod_file(&spec.namespace, &spec.name);
        self.write_manifest(
            &file_name,
            &manifest::pod(spec, &uid, node_name, None, Some((ipv4, ipv6))),
        )?;
        Ok((ipv4, file_name))
    }

    /// Removes `file_name` from the config folder.
    ///
    /// # Errors
    /// When it does not exist or cannot be removed.
    pub fn remove_manifest(&self, file_name: &str) -> Result<()> {
        let path = self.config_dir().join(file_name);
        fs::remove_file(&path).with_context(|| format!("cannot remove manifest {}", path.display()))
    }

    /// A fresh, empty directory `/sys/fs/bpf/ambit-test-<prefix>-<name>` for pins,
    /// removed with everything in it when the test ends.
    ///
    /// # Errors
    /// When it already exists or cannot be created.
    pub fn bpffs_dir(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty() || name.contains('/') {
            bail!("bpffs dir name {name:?} must be a plain name");
        }
        let path = self
            .inner
            .prereq
            .bpffs
            .join(format!("{}{name}", bpffs_prefix(&self.inner.prefix)));
        fs::create_dir(&path)
            .with_context(|| format!("cannot create bpffs dir {}", path.display()))?;
        Ok(path)
    }

    /// Runs `command` inside the underlay namespace (for example `tcpdump`), in the
    /// test's cgroup.
    ///
    /// # Errors
    /// When it cannot start.
    pub fn spawn_in_underlay(&self, command: &mut Command) -> Result<ChildGuard> {
        let place = Location {
            label: "underlay".to_owned(),
            netns: self.underlay_netns_path(),
            cgroup: self.inner.cgroup.clone(),
            pod: None,
        };
        self.inner.spawn(&place, command)
    }
}

/// Names in /sys/fs/bpf that belong to the test with `prefix` start with this.
#[must_use]
pub fn bpffs_prefix(prefix: &str) -> String {
    format!("ambit-test-{prefix}-")
}

impl NetInner {
    /// The next number in this test (log file names, ids).
    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts `command` at `place` and registers it for cleanup.
    pub(crate) fn spawn(&self, place: &Location, command: &mut Command) -> Result<ChildGuard> {
        if self.torn_down.load(Ordering::SeqCst) {
            bail!(
                "the test network {} has already been torn down",
                self.prefix
            );
        }
        let guard = process::spawn(place, command, &self.dir.join("logs"), self.next_seq())?;
        let mut children = lock(&self.children);
        // Forget processes whose guard is gone: the guard stopped them.
        children.retain(|slot| Arc::strong_count(slot) > 1);
        children.push(guard.slot());
        Ok(guard)
    }

    /// The registered processes started in the pod whose namespace is `pod_netns`.
    pub(crate) fn children_of_pod(&self, pod_netns: &str) -> Vec<Arc<ChildSlot>> {
        lock(&self.children)
            .iter()
            .filter(|slot| slot.pod.as_deref() == Some(pod_netns))
            .cloned()
            .collect()
    }

    fn teardown(&self) {
        self.torn_down.store(true, Ordering::SeqCst);
        let log = |what: &str, error: anyhow::Error| {
            eprintln!(
                "ambit-e2e cleanup [{} {}]: {what}: {error:#}",
                self.test_name, self.prefix
            );
        };
        // Pods first, like a kubelet would, while the node's agent still runs.
        let pods: Vec<_> = lock(&self.pods).drain(..).collect();
        for state in pods.iter().rev() {
            if let Err(error) = pod::remove(self, state) {
                log(
                    &format!("removing pod {}/{}", state.namespace, state.name),
                    error,
                );
            }
        }
        let children: Vec<_> = lock(&self.children).drain(..).collect();
        process::stop_all(&children);
        if std::thread::panicking() {
            eprintln!(
                "ambit-e2e: test {} (prefix {}) failed; the logs of its processes follow",
                self.test_name, self.prefix
            );
            for slot in &children {
                eprintln!("{}", slot.log_tail(30));
            }
        }
        remove_kernel_objects(&self.prefix, &self.cgroup, &self.prereq.bpffs, log);
    }
}

/// Removes what the test network with `prefix` made in the kernel: its processes
/// (killed through its cgroup), cgroups, network namespaces (and so every link) and
/// bpffs dirs; failures go to `log`.
fn remove_kernel_objects(
    prefix: &str,
    cgroup: &Path,
    bpffs: &Path,
    log: impl Fn(&str, anyhow::Error),
) {
    if cgroup.exists()
        && let Err(error) = cgroup::kill_and_remove(cgroup)
    {
        log("removing the cgroups", error);
    }
    match ns::list() {
        Ok(names) => {
            let ours = format!("{prefix}-");
            for name in names.iter().filter(|name| name.starts_with(&ours)) {
                if let Err(error) = ns::delete(name) {
                    log("deleting a network namespace", error);
                }
            }
        }
        Err(error) => log("listing network namespaces", error),
    }
    if let Err(error) = remove_bpffs_dirs(bpffs, &bpffs_prefix(prefix)) {
        log("removing bpffs dirs", error);
    }
}

/// Removes the leftovers of the test network with `prefix` (see [`TestNet::prefix`])
/// whose process was killed before it could tear down — everything its drop would have
/// removed except its temp dir, whose path only the caller knows. Removing the
/// leftovers of a network that still runs breaks it.
///
/// # Errors
/// When `prefix` is not a test prefix, cgroup2 or bpffs is not mounted, or anything
/// could not be removed (each failure is also printed).
pub fn remove_leftovers(prefix: &str) -> Result<()> {
    let valid = prefix.len() == 6
        && prefix.starts_with('a')
        && prefix[1..].chars().all(|c| c.is_ascii_hexdigit());
    if !valid {
        bail!("{prefix:?} is not a test network's prefix (a and 5 hex digits)");
    }
    let cgroup2 = cgroup::cgroup2_mount().context("cgroup2 is not mounted")?;
    let bpffs = Path::new(prereq::BPFFS);
    let failed = AtomicBool::new(false);
    remove_kernel_objects(
        prefix,
        &cgroup2.join(CGROUP_PARENT).join(prefix),
        bpffs,
        |what, error| {
            failed.store(true, Ordering::SeqCst);
            eprintln!("ambit-e2e cleanup [{prefix}]: {what}: {error:#}");
        },
    );
    if failed.load(Ordering::SeqCst) {
        bail!("some leftovers of {prefix} could not be removed (see above)");
    }
    Ok(())
}

impl Drop for TestNet {
    fn drop(&mut self) {
        self.inner.teardown();
        if let Some(tempdir) = self.tempdir.take() {
            let keep = self.keep_dir.load(Ordering::SeqCst)
                || std::env::var(KEEP_ENV).is_ok_and(|keep| keep == "1");
            if keep {
                eprintln!("ambit-e2e: kept {}", tempdir.keep().display());
            } else if let Err(error) = tempdir.close() {
                eprintln!(
                    "ambit-e2e cleanup [{}]: removing the temp dir: {error}",
                    self.inner.prefix
                );
            }
        }
    }
}

fn remove_bpffs_dirs(bpffs: &Path, prefix: &str) -> Result<()> {
    let entries =
        fs::read_dir(bpffs).with_context(|| format!("cannot list {}", bpffs.display()))?;
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let path = entry.path();
            let removed = if entry.file_type()?.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// Picks a prefix no other test (in this or another process, or a crashed earlier run)
/// uses, and claims it by creating its cgroup directory.
fn claim_prefix(cgroup_parent: &Path, bpffs: &Path) -> Result<(String, PathBuf)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for _ in 0..64 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        let prefix = format!("a{:05x}", hasher.finish() & 0xf_ffff);
        let in_use = Path::new(ns::NETNS_RUN_DIR)
            .join(format!("{prefix}-underlay"))
            .exists()
            || fs::read_dir(bpffs).is_ok_and(|entries| {
                entries.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&bpffs_prefix(&prefix))
                })
            });
        if in_use {
            continue;
        }
        let cgroup = cgroup_parent.join(&prefix);
        match fs::create_dir(&cgroup) {
            Ok(()) => return Ok((prefix, cgroup)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot create cgroup {}", cgroup.display()));
            }
        }
    }
    bail!(
        "no free test prefix after 64 tries: are stale ambit-test cgroups in {}?",
        cgroup_parent.display()
    )
}
