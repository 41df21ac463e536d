//! `cargo xtask build-ebpf`: build `ebpf/` for `bpfel-unknown-none` with the nightly
//! toolchain, installing its prerequisites on a fresh machine first:
//! - the `rust-src` component of the nightly (for `-Z build-std=core`);
//! - bpf-linker, built against the LLVM shared library the nightly ships (there is no
//!   system LLVM of the same version), into cargo's bin directory.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd::{self, output, target_dir, workspace_root};

const TOOLCHAIN: &str = "nightly";
const TARGET: &str = "bpfel-unknown-none";
/// The LLVM major version of the nightly toolchain, as bpf-linker's feature names it.
const LLVM_FEATURE: &str = "llvm-22";

/// Builds the eBPF object and returns its path.
pub fn run() -> anyhow::Result<PathBuf> {
    let sysroot = PathBuf::from(
        output(Command::new("rustc").env_remove("RUSTUP_TOOLCHAIN").args([
            &format!("+{TOOLCHAIN}"),
            "--print",
            "sysroot",
        ]))
        .context("the nightly toolchain is needed to build eBPF: rustup toolchain install nightly")?
        .trim(),
    );
    ensure_rust_src(&sysroot)?;
    let llvm_lib = sysroot.join("lib");
    ensure_bpf_linker(&llvm_lib)?;

    let target_dir = target_dir().join("ebpf");
    cmd::run(
        Command::new("cargo")
            .current_dir(workspace_root().join("ebpf"))
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("CARGO_TARGET_DIR")
            .env("LD_LIBRARY_PATH", join_paths(&llvm_lib))
            .args([
                &format!("+{TOOLCHAIN}"),
                "build",
                "--release",
                "--target",
                TARGET,
                "-Z",
                "build-std=core",
            ])
            .arg("--target-dir")
            .arg(&target_dir),
    )?;
    let object = target_dir.join(TARGET).join("release/ambit-ebpf");
    if !object.exists() {
        bail!(
            "the eBPF build succeeded but {} is missing",
            object.display()
        );
    }
    eprintln!("eBPF object: {}", object.display());
    Ok(object)
}

fn ensure_rust_src(sysroot: &Path) -> anyhow::Result<()> {
    if sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        return Ok(());
    }
    eprintln!("installing rust-src for the {TOOLCHAIN} toolchain");
    cmd::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        TOOLCHAIN,
    ]))
}

/// bpf-linker must link against the same LLVM as the nightly's rustc: build it against
/// the nightly's own `libLLVM.so` when it is missing or cannot start.
fn ensure_bpf_linker(llvm_lib: &Path) -> anyhow::Result<()> {
    let works = Command::new("bpf-linker")
        .arg("--version")
        .env("LD_LIBRARY_PATH", join_paths(llvm_lib))
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Ok(());
    }
    let library = fs::read_dir(llvm_lib)
        .with_context(|| format!("reading {}", llvm_lib.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| {
            format!(
                "no libLLVM.so.* in {} — is the nightly toolchain complete?",
                llvm_lib.display()
            )
        })?;
    let prefix = target_dir().join("llvm-prefix");
    fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&library, &link)
        .with_context(|| format!("linking {} to {}", link.display(), library.display()))?;
    eprintln!(
        "building bpf-linker against {} (about 90 s)",
        library.display()
    );
    cmd::run(
        Command::new("cargo")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env("LLVM_PREFIX", &prefix)
            .env("LD_LIBRARY_PATH", join_paths(llvm_lib))
            .args([
                "install",
                "--locked",
                "bpf-linker",
                "--no-default-features",
                "--features",
                LLVM_FEATURE,
            ]),
    )
}

/// `LD_LIBRARY_PATH` with `dir` in front of whatever was there.
fn join_paths(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_owned()];
    if let Some(existing) = env::var_os("LD_LIBRARY_PATH") {
        paths.extend(env::split_paths(&existing));
    }
    env::join_paths(paths).unwrap_or_else(|_| dir.as_os_str().to_owned())
}
