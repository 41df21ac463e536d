//! cgroup v2 directories for nodes and pods: finding the mount, creating, emptying and
//! removing them.
//!
//! The harness never enables controllers and never attaches anything here itself; the
//! directories exist so that Ambit can attach its cgroup eBPF programs to a node's or a
//! pod's processes and nothing else.

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result};

use crate::{cmd, wait::wait_for};

/// How long killed processes get to leave a cgroup before removal gives up.
const EMPTY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where cgroup v2 is mounted, from `/proc/mounts` (first `cgroup2` entry).
#[must_use]
pub fn cgroup2_mount() -> Option<PathBuf> {
    mount_point_of_type("cgroup2")
}

/// The mount point of the first filesystem of type `fstype` in `/proc/mounts`.
pub(crate) fn mount_point_of_type(fstype: &str) -> Option<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut fields = line.split(' ');
        let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
        (kind == fstype).then(|| PathBuf::from(unescape_mount_field(point)))
    })
}

/// Whether a filesystem of type `fstype` is mounted exactly at `path`.
pub(crate) fn is_mounted(path: &Path, fstype: &str) -> bool {
    fs::read_to_string("/proc/mounts").is_ok_and(|mounts| {
        mounts.lines().any(|line| {
            let mut fields = line.split(' ');
            let _device = fields.next();
            fields.next().map(unescape_mount_field).as_deref() == path.to_str()
                && fields.next() == Some(fstype)
        })
    })
}

/// `/proc/mounts` writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let Some(digits) = octal {
            out.push(
                digits
                    .iter()
                    .fold(0u8, |n, d| n.wrapping_mul(8).wrapping_add(d - b'0')),
            );
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Creates the cgroup directory `path` (its parent must exist).
pub(crate) fn create(path: &Path) -> Result<()> {
    fs::create_dir(path).with_context(|| format!("cannot create cgroup {}", path.display()))
}

/// The processes directly in the cgroup `path`.
///
/// # Errors
/// When `cgroup.procs` cannot be read.
pub fn procs(path: &Path) -> Result<Vec<u32>> {
    let file = path.join("cgroup.procs");
    let text =
        fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    text.lines()
        .map(|line| {
            line.trim()
                .parse()
                .with_context(|| format!("bad pid {line:?} in {}", file.display()))
        })
        .collect()
}

/// Whether any process is in `path` or below (`populated` in `cgroup.events`).
///
/// # Errors
/// When `cgroup.events` cannot be read.
pub fn is_populated(path: &Path) -> Result<bool> {
    let file = path.join("cgroup.events");
    let text =
        fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(text.lines().any(|line| line == "populated 1"))
}

/// Kills every process in the cgroup tree at `path`, waits until it is empty, and
/// removes its directories deepest first. A missing `path` is not an error.
pub(crate) fn kill_and_remove(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    kill_all(path)?;
    wait_for(
        &format!(
            "the processes of cgroup {} to exit after SIGKILL",
            path.display()
        ),
        EMPTY_TIMEOUT,
        || is_populated(path).map(|populated| (!populated).then_some(())),
    )?;
    let mut dirs = Vec::new();
    collect_dirs(path, &mut dirs)
        .with_context(|| format!("cannot list cgroup {}", path.display()))?;
    // Children sort after their parents; remove in reverse.
    dirs.sort();
    for dir in dirs.iter().rev() {
        wait_for(
            &format!("rmdir of cgroup {}", dir.display()),
            EMPTY_TIMEOUT,
            || match fs::remove_dir(dir) {
                Ok(()) => Ok(Some(())),
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Some(())),
                Err(error) => Err(error),
            },
        )?;
    }
    Ok(())
}

/// SIGKILLs everything in the tree: `cgroup.kill` (Linux 5.14+), else each pid.
fn kill_all(path: &Path) -> Result<()> {
    let kill_file = path.join("cgroup.kill");
    if kill_file.exists() {
        return fs::write(&kill_file, "1")
            .with_context(|| format!("cannot write {}", kill_file.display()));
    }
    let mut dirs = Vec::new();
    collect_dirs(path, &mut dirs)?;
    let mut pids = Vec::new();
    for dir in &dirs {
        pids.extend(procs(dir)?.into_iter().map(|pid| pid.to_string()));
    }
    if !pids.is_empty() {
        // Some may have exited meanwhile: `kill` then fails for those, which is fine.
        let _ = cmd::run(Command::new("kill").arg("-KILL").args(&pids));
    }
    Ok(())
}

fn collect_dirs(path: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    out.push(path.to_owned());
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            collect_dirs(&entry.path(), out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_fields_are_unescaped() {
        assert_eq!(
            unescape_mount_field(r"/mnt/with\040space"),
            "/mnt/with space"
        );
        assert_eq!(unescape_mount_field("/sys/fs/cgroup"), "/sys/fs/cgroup");
    }
}
