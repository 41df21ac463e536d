//! `cargo xtask demo`: build everything (the eBPF object included) and run
//! `ambit-demo`, Ambit on two simulated nodes with the config folder
//! `deploy/examples/demo/`.

use std::process::Command;

use clap::Args;

use crate::{build_ebpf, cmd, prerequisites};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print the results as JSON (one object with every step).
    #[arg(long)]
    pub json: bool,
    /// On failure, also print the end of the failing component's log.
    #[arg(long)]
    pub verbose: bool,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    prerequisites::ensure()?;
    let object = build_ebpf::run()?;
    cmd::run(
        Command::new("cargo")
            .env("AMBIT_EBPF_OBJECT", &object)
            .args(["build", "--quiet", "--workspace", "--bins"]),
    )?;
    let mut demo = Command::new(cmd::target_dir().join("debug/ambit-demo"));
    if args.json {
        demo.arg("--json");
    }
    if args.verbose {
        demo.arg("--verbose");
    }
    cmd::run(&mut demo)
}
