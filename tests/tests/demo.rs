//! The demo (`cargo xtask demo`) is also an integration test: every step must pass,
//! judged from its JSON report, not only from its exit status.

use std::{process::Command, time::Duration};

use ambit_e2e::{bin_path, cmd, prereq};
use anyhow::{Context as _, Result, ensure};

/// What the demo must show, in this order: a word or two from each step's name.
const EXPECTED_STEPS: &[&str] = &[
    "nodes start",
    "join the mesh by namespace label",
    "no iptables or nftables rule",
    "SPIFFE identity",
    "mutual TLS",
    "same node",
    "other node",
    "outside the mesh is captured",
    "fail closed",
    "STRICT",
    "balances app's requests over v1 and v2",
    "sends everything to v2",
    "90/10 canary",
    "Gateway API HTTPRoute",
    "AuthorizationPolicy",
    "ingress gateway",
    "direct vs through the mesh",
];

#[test]
fn the_demo_completes_every_step() -> Result<()> {
    if prereq::require("the_demo_completes_every_step").is_none() {
        return Ok(());
    }
    let done = cmd::run_with_input(
        Command::new(bin_path("ambit-demo")).arg("--json"),
        b"",
        Duration::from_secs(180),
    )?;
    let report: serde_json::Value = serde_json::from_str(done.stdout.trim())
        .with_context(|| format!("the demo should print one JSON report: {done}"))?;
    let steps = report["steps"].as_array().context("steps")?;
    for step in steps {
        ensure!(step["ok"] == true, "demo step failed: {step:#}");
    }
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    ensure!(
        names.len() == EXPECTED_STEPS.len()
            && names
                .iter()
                .zip(EXPECTED_STEPS)
                .all(|(name, expected)| name.contains(expected)),
        "expected steps about {EXPECTED_STEPS:#?}, the demo ran {names:#?}"
    );
    ensure!(
        report["ok"] == true && done.status.success(),
        "the demo failed: {done}"
    );
    Ok(())
}
