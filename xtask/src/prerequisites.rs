//! What the end-to-end tests, the demo and the benchmarks need from the machine,
//! installed when missing: Debian packages (`ip`, the CNI reference plugins the
//! simulated container runtime runs, bpftool, iptables/nft to prove no rule exists,
//! tshark to prove only TLS crosses between nodes) and a mounted bpf filesystem.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::cmd;

/// The Debian packages that provide them.
const PACKAGES: [&str; 8] = [
    "iproute2",
    "containernetworking-plugins",
    "bpftool",
    "iptables",
    "nftables",
    "curl",
    "tshark",
    "openssl",
];

/// Installs missing packages (apt-get) and mounts bpffs if it is not mounted.
///
/// # Errors
/// When not root, or when apt-get or mount fails.
pub fn ensure() -> anyhow::Result<()> {
    if cmd::output(Command::new("id").arg("-u"))?.trim() != "0" {
        bail!(
            "the end-to-end tests and the demo need root (network namespaces, cgroups, eBPF): run as root"
        );
    }
    install_missing(&PACKAGES).context("installing the test prerequisites")?;
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if !mounts
        .lines()
        .any(|line| line.split_whitespace().nth(2) == Some("bpf"))
    {
        cmd::run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
            .context("mounting bpffs at /sys/fs/bpf")?;
    }
    Ok(())
}

/// Installs those of the Debian `packages` that are missing (apt-get, as root; a
/// package's service is not started where `policy-rc.d` forbids it, as in containers).
///
/// # Errors
/// When apt-get fails.
pub fn install_missing(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing Debian packages: {}", missing.join(" "));
    cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
    cmd::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing),
    )
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("ok installed"))
}
