//! `cargo xtask bench <name>`: build the release binaries (agent with its eBPF object)
//! and run a benchmark from `tests/benches/`.

use std::process::Command;

use clap::{Args, ValueEnum};

use crate::{build_ebpf, cmd, prerequisites};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Benchmark {
    /// Same-node capture: direct vs eBPF (with and without sockmap) vs iptables REDIRECT.
    Capture,
    /// Cross-node: direct vs mutual TLS (HBONE) between two ztunnels.
    L4,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    pub benchmark: Benchmark,
    /// Runs per figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    prerequisites::ensure()?;
    let object = build_ebpf::run()?;
    cmd::run(
        Command::new("cargo")
            .env("AMBIT_EBPF_OBJECT", &object)
            .args(["build", "--release", "--workspace", "--bins"]),
    )?;
    let name = match args.benchmark {
        Benchmark::Capture => "capture",
        Benchmark::L4 => "l4",
    };
    cmd::run(
        Command::new("cargo")
            .env("AMBIT_EBPF_OBJECT", &object)
            .env("AMBIT_BENCH_RUNS", args.runs.to_string())
            .args(["bench", "--package", "ambit-e2e", "--bench", name]),
    )
}
