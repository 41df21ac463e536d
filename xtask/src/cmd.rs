//! Running external commands with errors that say what was run.

use std::process::Command;

use anyhow::{Context as _, bail};

/// Runs `command`, inheriting stdio; fails with the command line if it fails.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let line = format!("{command:?}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {line}"))?;
    if !status.success() {
        bail!("{line} failed ({status})");
    }
    Ok(())
}

/// Runs `command` and returns its stdout; fails with stderr if it fails.
pub fn output(command: &mut Command) -> anyhow::Result<String> {
    let line = format!("{command:?}");
    let output = command
        .output()
        .with_context(|| format!("cannot start {line}"))?;
    if !output.status.success() {
        bail!(
            "{line} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_owned()
}

/// The cargo target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), Into::into)
}
