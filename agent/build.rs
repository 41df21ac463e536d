//! Embeds the eBPF object built by `cargo xtask build-ebpf`, or an empty placeholder
//! when it has not been built, so that a plain `cargo build` never needs bpf-linker.
//! The agent says clearly at start when it carries the placeholder.

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=AMBIT_EBPF_OBJECT");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let object = env::var_os("AMBIT_EBPF_OBJECT").map_or_else(default_object_path, PathBuf::from);
    println!("cargo:rerun-if-changed={}", object.display());
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("ambit-ebpf.o");
    let bytes = fs::read(&object).unwrap_or_default();
    fs::write(&out, bytes).expect("OUT_DIR is writable");
}

/// Where `cargo xtask build-ebpf` puts the object: `<target>/ebpf/bpfel-unknown-none/release/ambit-ebpf`.
fn default_object_path() -> PathBuf {
    let target = env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"),
        PathBuf::from,
    );
    target.join("ebpf/bpfel-unknown-none/release/ambit-ebpf")
}
