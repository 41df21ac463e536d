//! Ambit's developer commands, run as `cargo xtask <command>`.
//!
//! # Layout
//! - `demo` ([`demo`]): Ambit on two simulated nodes, step by step;
//! - `build-ebpf` ([`build_ebpf`]): installs what a fresh machine lacks (the nightly's
//!   `rust-src`, bpf-linker built against the nightly's own LLVM) and builds `ebpf/`;
//! - `test` ([`test`]): everything CI checks — fmt, clippy, the eBPF build, the tests;
//! - `bench` ([`bench`]): the data-path benchmarks;
//! - `gen-crds`: the CRD manifests in `deploy/crds`, generated from the Rust types by
//!   `ambit-controller crds`.
//!
//! xtask only orchestrates: it runs cargo, rustup and the project's binaries, and
//! holds no logic the binaries need. Its own progress goes to stderr, so stdout holds
//! only what the commands it runs print (a benchmark's table or JSON).

mod bench;
mod build_ebpf;
mod cmd;
mod demo;
mod prerequisites;
mod test;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Ambit's developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run Ambit on two simulated nodes and show what it does (as root).
    Demo(demo::DemoArgs),
    /// Build the eBPF programs (installing rust-src and bpf-linker when missing).
    BuildEbpf,
    /// Run every check CI runs: fmt, clippy, the eBPF build, unit and end-to-end tests.
    Test(test::TestArgs),
    /// Run a data-path benchmark on simulated nodes (release build).
    Bench(bench::BenchArgs),
    /// Regenerate the CRD manifests in deploy/crds from the Istio types.
    GenCrds,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo(args) => demo::run(&args),
        Command::BuildEbpf => build_ebpf::run().map(drop),
        Command::Test(args) => test::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::GenCrds => cmd::run(
            std::process::Command::new("cargo")
                .args([
                    "run",
                    "--quiet",
                    "-p",
                    "ambit-controller",
                    "--",
                    "crds",
                    "--out",
                ])
                .arg(cmd::workspace_root().join("deploy/crds")),
        ),
    }
}
