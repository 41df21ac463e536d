//! `cargo xtask test`: what CI runs, in the order that fails fastest.

use std::process::Command;

use clap::Args;

use crate::{build_ebpf, cmd, prerequisites};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    pub no_lint: bool,
    /// Extra arguments for the test runner (e.g. a test name filter).
    #[arg(last = true)]
    pub cargo_test_args: Vec<String>,
}

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    if !args.no_lint {
        cmd::run(
            Command::new("cargo")
                .env_remove("RUSTUP_TOOLCHAIN")
                .args(["+nightly", "fmt", "--all", "--check"]),
        )?;
        cmd::run(Command::new("cargo").args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    prerequisites::ensure()?;
    let object = build_ebpf::run()?;
    // The agent embeds the object at build time; the tests run the real binaries.
    cmd::run(
        Command::new("cargo")
            .env("AMBIT_EBPF_OBJECT", &object)
            .args(["build", "--workspace", "--bins"]),
    )?;
    cmd::run(Command::new("cargo").args(["test", "--workspace", "--doc"]))?;
    // nextest runs each test in its own process and ends with one summary line; plain
    // `cargo test` is the fallback where it is not installed.
    let nextest = Command::new("cargo")
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut test = Command::new("cargo");
    test.env("AMBIT_EBPF_OBJECT", &object);
    if nextest {
        test.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
        if !args.cargo_test_args.is_empty() {
            test.arg("--").args(&args.cargo_test_args);
        }
    } else {
        test.args([
            "test",
            "--workspace",
            "--all-targets",
            "--no-fail-fast",
            "--",
        ])
        .args(&args.cargo_test_args);
    }
    cmd::run(&mut test)?;
    no_firewall_rules_on_the_host()
}

/// Ambit never writes iptables or nftables rules: after the whole suite, the host's
/// rulesets must still be empty.
fn no_firewall_rules_on_the_host() -> anyhow::Result<()> {
    let mut rules = Vec::new();
    for command in [
        vec!["iptables-save"],
        vec!["ip6tables-save"],
        vec!["nft", "list", "ruleset"],
    ] {
        let out = cmd::output(Command::new(command[0]).args(&command[1..]))?;
        rules.extend(
            out.lines()
                .filter(|line| line.starts_with("-A") || line.starts_with("table"))
                .map(|line| format!("{}: {line}", command.join(" "))),
        );
    }
    if !rules.is_empty() {
        anyhow::bail!(
            "firewall rules exist on the host after the tests:\n{}",
            rules.join("\n")
        );
    }
    // Silent on success: the test runner's summary stays the last line of the run.
    Ok(())
}
