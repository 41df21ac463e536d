//! `cargo xtask demo`: build everything (the eBPF object included) and run
//! `ambit-demo`, Ambit on two simulated nodes with the config folder
//! `deploy/examples/demo/`; `--down` removes what a killed run left behind.

use std::process::Command;

use anyhow::bail;
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
    /// Once every step passed, leave the mesh running (with commands to poke at it)
    /// until Enter is pressed.
    #[arg(long, conflicts_with = "down")]
    pub keep: bool,
    /// Remove everything a killed demo run left behind (processes, network
    /// namespaces, cgroups, bpffs pins, temp files), without building anything.
    #[arg(long)]
    pub down: bool,
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let binary = cmd::target_dir().join("debug/ambit-demo");
    if args.down {
        if !binary.exists() {
            bail!(
                "{} was never built, so no demo ran from this checkout",
                binary.display()
            );
        }
        return cmd::run(Command::new(&binary).arg("--down"));
    }
    prerequisites::ensure()?;
    let object = build_ebpf::run()?;
    cmd::run(
        Command::new("cargo")
            .env("AMBIT_EBPF_OBJECT", &object)
            .args(["build", "--quiet", "--workspace", "--bins"]),
    )?;
    let mut demo = Command::new(binary);
    for (set, flag) in [
        (args.json, "--json"),
        (args.verbose, "--verbose"),
        (args.keep, "--keep"),
    ] {
        if set {
            demo.arg(flag);
        }
    }
    cmd::run(&mut demo)
}
