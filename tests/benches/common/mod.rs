//! What the benchmarks share: running `pod-app` in a pod for one JSON report, medians,
//! where clients and servers run ([`pinning`]) and what a process costs
//! ([`proc_stats`]), and what an open-loop load reports ([`rate`]).

#[allow(
    dead_code,
    reason = "shared by every bench (each includes this module), used by those that pin"
)]
pub mod pinning;
#[allow(
    dead_code,
    reason = "shared by every bench (each includes this module), used by those that measure processes"
)]
pub mod proc_stats;
#[allow(
    dead_code,
    reason = "shared by every bench (each includes this module), used by those with open-loop loads"
)]
pub mod rate;

use std::time::Duration;

use ambit_e2e::{ChildGuard, TestNet};
use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// How long one measurement may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Waits for a `pod-app` client and returns its report, failing unless it says `ok`.
pub fn report(name: &str, child: ChildGuard) -> Result<Value> {
    let done = child.finish(RUN_TIMEOUT)?;
    let report = done.json().with_context(|| format!("{name}: {done}"))?;
    if report["ok"] != true {
        bail!("{name}: {report}");
    }
    Ok(report)
}

/// The median, NaN when every measurement failed.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs a benchmark's body and turns its error into a failed exit, named.
pub fn main(name: &str, run: impl FnOnce() -> Result<()>) -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench {name} failed: {error:?}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs per figure: `AMBIT_BENCH_RUNS` (set by `cargo xtask bench --runs`), default 3.
pub fn runs() -> usize {
    std::env::var("AMBIT_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
}

/// Whether to print JSON instead of tables: `AMBIT_BENCH_JSON=1` (set by `cargo xtask
/// bench --json`).
#[allow(
    dead_code,
    reason = "shared by every bench (each includes this module), used by those with JSON"
)]
pub fn json_output() -> bool {
    std::env::var("AMBIT_BENCH_JSON").is_ok_and(|value| value == "1")
}

/// A test network with namespace `shop` labelled ambient and `plain` left alone.
pub fn cluster(name: &str) -> Result<TestNet> {
    let Some(net) = TestNet::new(name) else {
        bail!("the benchmark needs root, ip, the CNI plugins, cgroup2 and bpffs");
    };
    net.write_namespace("shop", [("istio.io/dataplane-mode", "ambient")])?;
    net.write_namespace("plain", Vec::<(String, String)>::new())?;
    Ok(net)
}
