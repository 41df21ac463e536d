//! What an open-loop `pod-app rate` run reports, read from its JSON.

use anyhow::{Context as _, Result};
use serde_json::Value;

/// The number `key` of a `pod-app` report.
pub fn number(report: &Value, key: &str) -> Result<f64> {
    report[key]
        .as_f64()
        .with_context(|| format!("no number {key:?} in {report}"))
}

/// What one open-loop `pod-app rate` run reports (latencies in µs, from when each
/// request was due).
pub struct RateReport {
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub achieved_per_s: f64,
    /// How late the client itself sent (p99): its own share of the latency.
    pub send_lag_p99_us: f64,
    pub answered: f64,
    pub errors: f64,
    pub first_error: Option<String>,
}

impl RateReport {
    /// Reads `pod-app rate`'s JSON report.
    pub fn from_json(report: &Value) -> Result<Self> {
        Ok(Self {
            p50_us: number(report, "p50_us")?,
            p99_us: number(report, "p99_us")?,
            p999_us: number(report, "p999_us")?,
            achieved_per_s: number(report, "achieved_per_s")?,
            send_lag_p99_us: number(report, "send_lag_p99_us")?,
            answered: number(report, "answered")?,
            errors: number(report, "errors")?,
            first_error: report["first_error"].as_str().map(str::to_owned),
        })
    }
}
