//! What the benchmarks share: running `pod-app` in a pod for one JSON report, and
//! medians.

use std::time::Duration;

use ambit_e2e::ChildGuard;
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
