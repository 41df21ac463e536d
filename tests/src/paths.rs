//! Finding the workspace's binaries (ambit-agent, ambit-ztunnel, ambit-cni, pod-app).

use std::{
    env,
    path::{Path, PathBuf},
};

/// The workspace root (the parent of this crate).
#[must_use]
pub fn workspace_dir() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_owned()
}

/// Where binaries are looked for, best first: the profile directory of the running test
/// executable (`target/<profile>` above `deps/`), `$CARGO_TARGET_DIR/debug`, then
/// `<workspace>/target/debug`.
#[must_use]
pub fn binary_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_owned))
    {
        dirs.push(if dir.ends_with("deps") {
            dir.parent().unwrap_or(&dir).to_owned()
        } else {
            dir
        });
    }
    if let Some(target) = env::var_os("CARGO_TARGET_DIR") {
        dirs.push(workspace_dir().join(target).join("debug"));
    }
    dirs.push(workspace_dir().join("target").join("debug"));
    dirs.dedup();
    dirs
}

/// The path of the workspace binary `name`.
///
/// # Panics
/// When it has not been built.
#[must_use]
pub fn bin_path(name: &str) -> PathBuf {
    let dirs = binary_dirs();
    dirs.iter().map(|dir| dir.join(name)).find(|path| path.is_file()).unwrap_or_else(|| {
        panic!(
            "binary {name:?} not found in {dirs:?}: build it first: cargo build --workspace --bins \
             (cargo xtask test does this)"
        )
    })
}

/// This crate's `pod-app` (cargo builds it before running this crate's integration
/// tests, so it is always next to them).
///
/// # Panics
/// When it has not been built.
#[must_use]
pub fn pod_app() -> PathBuf {
    bin_path("pod-app")
}
