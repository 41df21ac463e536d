//! `cargo xtask bench <name>`: build the release binaries (agent with its eBPF object)
//! and run a benchmark from `tests/benches/` — or, for `controller`, the controller's
//! in-process benchmark (no root, no eBPF).

use std::process::Command;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::{build_ebpf, cmd, prerequisites};

/// The Debian packages the l7 benchmark runs: nginx (compared with) and h2load.
const L7_PACKAGES: [&str; 2] = ["nginx", "nghttp2-client"];

/// The binaries the simulated-node benchmarks start, each built on its own as the image
/// builds them: built together, cargo would give every one the union of their
/// dependencies' features, and ztunnel would carry the controller's (tracing's `log`
/// bridge, regex's Unicode tables, tonic's transport): 0.4 MB more code, all resident.
const RELEASE_PACKAGES: [&str; 6] = [
    "ambit-agent",
    "ambit-cni",
    "ambit-controller",
    "ambit-ztunnel",
    "ambit-waypoint",
    "ambit-e2e",
];

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Benchmark {
    /// Same-node capture: direct vs eBPF (with and without sockmap) vs iptables REDIRECT.
    Capture,
    /// Direct vs the mesh: mutual TLS (HBONE) between two nodes and the same-node fast
    /// path; latency at fixed rates; ztunnel CPU and memory, idle with 1,000 workloads.
    L4,
    /// HTTP/1.1 and HTTP/2 at fixed rates: direct vs nginx vs Ambit's ingress gateway
    /// vs the waypoint (the same three routes); proxy CPU and memory.
    L7,
    /// The controller with 1,000 services, 10,000 pods, 2,000 VirtualServices and 500
    /// AuthorizationPolicies: load time, RSS, push latency and delta size to 100 ztunnels.
    Controller,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    pub benchmark: Benchmark,
    /// Runs per figure (the median is reported); `0` with l4: the memory step alone.
    #[arg(long, env = "AMBIT_BENCH_RUNS", default_value_t = 3)]
    pub runs: u32,
    /// Print the medians as one JSON object on stdout instead of tables (l4 and l7).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    if args.json && !matches!(args.benchmark, Benchmark::L4 | Benchmark::L7) {
        anyhow::bail!("--json: only the l4 and l7 benchmarks print JSON");
    }
    match args.benchmark {
        Benchmark::Capture => simulated_nodes("capture", args),
        Benchmark::L4 => simulated_nodes("l4", args),
        Benchmark::L7 => {
            // What l7 compares with, and its HTTP/2 load.
            prerequisites::install_missing(&L7_PACKAGES)
                .context("installing nginx and h2load for the l7 benchmark")?;
            simulated_nodes("l7", args)
        }
        Benchmark::Controller => cmd::run(Command::new("cargo").args([
            "bench",
            "--package",
            "ambit-controller",
            "--bench",
            "controller",
        ])),
    }
}

/// A benchmark on simulated nodes: release binaries with the eBPF object, then
/// `tests/benches/<name>`.
fn simulated_nodes(name: &str, args: &BenchArgs) -> anyhow::Result<()> {
    prerequisites::ensure()?;
    let object = build_ebpf::run()?;
    for package in RELEASE_PACKAGES {
        cmd::run(
            Command::new("cargo")
                .env("AMBIT_EBPF_OBJECT", &object)
                .args(["build", "--release", "--bins", "--package", package]),
        )?;
    }
    cmd::run(
        Command::new("cargo")
            .env("AMBIT_EBPF_OBJECT", &object)
            .env("AMBIT_BENCH_RUNS", args.runs.to_string())
            .env("AMBIT_BENCH_JSON", if args.json { "1" } else { "0" })
            .args(["bench", "--package", "ambit-e2e", "--bench", name]),
    )
}
