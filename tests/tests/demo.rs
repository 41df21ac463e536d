//! The demo (`cargo xtask demo`) is also an integration test: every step must pass,
//! judged from its JSON report, not only from its exit status.

use std::{process::Command, time::Duration};

use ambit_e2e::{bin_path, cmd, prereq};
use anyhow::{Context as _, Result, ensure};

#[test]
fn the_demo_completes_every_step() -> Result<()> {
    if prereq::require("the_demo_completes_every_step").is_none() {
        return Ok(());
    }
    let done = cmd::run_with_input(
        Command::new(bin_path("ambit-demo")).arg("--json"),
        b"",
        Duration::from_secs(120),
    )?;
    let report: serde_json::Value = serde_json::from_str(done.stdout.trim())
        .with_context(|| format!("the demo should print one JSON report: {done}"))?;
    let steps = report["steps"].as_array().context("steps")?;
    ensure!(
        steps.len() >= 9,
        "the demo ran only {} steps: {report:#}",
        steps.len()
    );
    for step in steps {
        ensure!(step["ok"] == true, "demo step failed: {step:#}");
    }
    ensure!(
        report["ok"] == true && done.status.success(),
        "the demo failed: {done}"
    );
    Ok(())
}
