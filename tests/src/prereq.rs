//! What the end-to-end tests need from the machine, checked once per test process.
//!
//! Without a prerequisite a test skips (printing why); under `CI=true` it fails
//! instead, because CI is where the tests must really run.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use crate::{cgroup, cmd};

/// Where bpffs is (or gets) mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Where the CNI reference plugins are looked for, in order (Debian's
/// `containernetworking-plugins`, then the upstream default).
pub const CNI_PLUGIN_DIRS: [&str; 2] = ["/usr/lib/cni", "/opt/cni/bin"];

/// The reference plugins the harness runs.
const REQUIRED_PLUGINS: [&str; 2] = ["bridge", "host-local"];

/// What the checks found.
#[derive(Debug)]
pub struct Prerequisites {
    /// The cgroup v2 mount point (from `/proc/mounts`).
    pub cgroup2: PathBuf,
    /// The directory holding the CNI reference plugins.
    pub cni_plugin_dir: PathBuf,
    /// bpffs mount point.
    pub bpffs: PathBuf,
}

/// Checks the prerequisites. `None` means skip: the reason has been printed. Under
/// `CI=true` a missing prerequisite panics instead.
///
/// # Panics
/// Under `CI=true`, when a prerequisite is missing.
#[must_use]
pub fn require(test: &str) -> Option<&'static Prerequisites> {
    static CHECKED: OnceLock<Result<Prerequisites, String>> = OnceLock::new();
    match CHECKED.get_or_init(check) {
        Ok(found) => Some(found),
        Err(why) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("{test}: end-to-end prerequisite missing under CI=true: {why}")
        }
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            None
        }
    }
}

fn check() -> Result<Prerequisites, String> {
    let uid = effective_uid().ok_or("cannot read the effective uid from /proc/self/status")?;
    if uid != 0 {
        return Err(format!(
            "not root (euid {uid}): network namespaces, cgroups and bpffs need root"
        ));
    }
    cmd::run(Command::new("ip").arg("-V"))
        .map_err(|error| format!("`ip` (iproute2) is not usable: {error:#}"))?;
    let cni_plugin_dir = CNI_PLUGIN_DIRS
        .iter()
        .map(Path::new)
        .find(|dir| {
            REQUIRED_PLUGINS
                .iter()
                .all(|plugin| dir.join(plugin).is_file())
        })
        .ok_or_else(|| {
            format!(
                "CNI plugins {REQUIRED_PLUGINS:?} not found in {CNI_PLUGIN_DIRS:?}: \
                 install Debian's containernetworking-plugins"
            )
        })?
        .to_owned();
    let cgroup2 = cgroup::cgroup2_mount().ok_or("no cgroup2 filesystem in /proc/mounts")?;
    if !cgroup2.join("cgroup.procs").exists() {
        return Err(format!(
            "{} has no cgroup.procs: not a usable cgroup2 mount",
            cgroup2.display()
        ));
    }
    let bpffs = PathBuf::from(BPFFS);
    if !cgroup::is_mounted(&bpffs, "bpf") {
        cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS])).map_err(|error| {
            format!("bpffs is not mounted at {BPFFS} and mounting it failed: {error:#}")
        })?;
    }
    Ok(Prerequisites {
        cgroup2,
        cni_plugin_dir,
        bpffs,
    })
}

/// The effective uid, from the `Uid:` line of `/proc/self/status` (real, effective, …).
fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}
