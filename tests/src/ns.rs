//! Named network namespaces (`ip netns add/del`) and their sysctls.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Mutex,
};

use ambit_netns::Netns;
use anyhow::{Context, Result, anyhow, bail};

use crate::cmd::ip;

/// Where iproute2 bind-mounts named namespaces.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// `ip netns add` makes `/var/run/netns` a shared mount on first use; two of those
/// at once can stack mounts. One at a time within this process.
static NETNS_CHANGES: Mutex<()> = Mutex::new(());

/// Creates the named namespace `name` and returns its path.
pub(crate) fn add(name: &str) -> Result<PathBuf> {
    {
        let _one_at_a_time = NETNS_CHANGES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ip(&["netns", "add", name])?;
    }
    let path = Path::new(NETNS_RUN_DIR).join(name);
    if !path.exists() {
        bail!(
            "`ip netns add {name}` succeeded but {} does not exist",
            path.display()
        );
    }
    Ok(path)
}

/// Deletes the named namespace `name` (its processes and open fds keep it alive).
pub(crate) fn delete(name: &str) -> Result<()> {
    let _one_at_a_time = NETNS_CHANGES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    ip(&["netns", "del", name]).map(drop)
}

/// The names of all named namespaces.
///
/// # Errors
/// When `ip netns list` fails.
pub fn list() -> Result<Vec<String>> {
    // Lines look like "name" or "name (id: 3)".
    Ok(ip(&["netns", "list"])?
        .stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// Runs `f` on this thread inside the namespace at `path`.
pub(crate) fn run_in<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T> {
    Netns::open(path)
        .and_then(|netns| netns.run(f))
        .map_err(|error| anyhow!("{error}"))
}

/// Writes sysctls (`net/ipv4/ip_forward` style keys) inside the namespace at `path`.
/// `/proc/sys/net` shows the namespace of the thread that opens it.
pub(crate) fn set_sysctls(path: &Path, settings: &[(&str, &str)]) -> Result<()> {
    run_in(path, || {
        for (key, value) in settings {
            let file = Path::new("/proc/sys").join(key);
            fs::write(&file, value).with_context(|| {
                format!(
                    "cannot set {} = {value} in {}",
                    file.display(),
                    path.display()
                )
            })?;
        }
        Ok(())
    })?
}

/// Reads one sysctl inside the namespace at `path`.
pub(crate) fn sysctl(path: &Path, key: &str) -> Result<String> {
    run_in(path, || {
        let file = Path::new("/proc/sys").join(key);
        fs::read_to_string(&file)
            .map(|value| value.trim().to_owned())
            .with_context(|| format!("cannot read {}", file.display()))
    })?
}
