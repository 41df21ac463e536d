//! The figures each path collects over the runs, and how they are printed: a table
//! (ratios to the direct path between the same nodes) or, with `AMBIT_BENCH_JSON=1`,
//! one JSON object of the medians.

use serde_json::{Value, json};

use crate::{
    common::{median, proc_stats::mib},
    idle::{IdleRss, PHANTOM_PODS, PHANTOM_SERVICES},
};

/// The open-loop rates every path is measured at, in requests a second.
pub const RATES: [u32; 2] = [1_000, 10_000];

/// One path at one rate, a value per run.
#[derive(Default)]
pub struct AtRate {
    pub p50_us: Vec<f64>,
    pub p99_us: Vec<f64>,
    pub p999_us: Vec<f64>,
    pub achieved_per_s: Vec<f64>,
    pub send_lag_p99_us: Vec<f64>,
    /// User + system CPU seconds of both ztunnels per 1,000 requests — which is also
    /// the vCPU both use at 1,000 requests a second.
    pub ztunnel_cpu_per_1k: Vec<f64>,
    /// The share of the whole machine's CPU time that was busy (with anything).
    pub machine_busy: Vec<f64>,
}

/// One path, a value per run; a failed measurement is kept as a finding.
#[derive(Default)]
pub struct Figures {
    pub gbit: Vec<f64>,
    /// Closed-loop round trips, in µs.
    pub rtt_p50_us: Vec<f64>,
    pub rtt_p99_us: Vec<f64>,
    pub at_rate: [AtRate; RATES.len()],
    pub failures: Vec<String>,
}

/// A path's figures and those of the direct path it is compared with.
pub struct Row<'a> {
    pub name: &'a str,
    pub figures: &'a Figures,
    pub baseline: &'a Figures,
}

/// How the runs went: how many, and how loaded the machine was at their end.
pub struct Conditions {
    pub runs: usize,
    pub load_average: f64,
    pub cpus: usize,
}

/// What the ztunnels cost in memory, in the order of the nodes.
pub struct Memory<'a> {
    pub nodes: &'a [&'a str],
    pub peak_kib: &'a [u64],
    pub idle: &'a IdleRss,
}

pub fn print_table(rows: &[Row<'_>], memory: &Memory<'_>, conditions: &Conditions) {
    let Conditions {
        runs,
        load_average,
        cpus,
    } = conditions;
    println!("\nl4 benchmark: median of {runs} runs; (x) is the ratio to the direct path");
    println!("between the same nodes in the same run (local-mesh to local-direct)");
    println!("load average at the end: {load_average:.2} on {cpus} CPUs (this benchmark included)");
    println!("{}", crate::common::pinning::describe());
    println!("\nbulk throughput (one connection) and 64-byte round trips (closed loop)");
    println!(
        "{:<13} {:>17} {:>17} {:>17}",
        "path", "bulk Gbit/s", "rtt p50 µs", "rtt p99 µs"
    );
    for row in rows {
        let (own, base) = (row.figures, row.baseline);
        println!(
            "{:<13} {} {} {}",
            row.name,
            with_ratio(&own.gbit, &base.gbit, 2),
            with_ratio(&own.rtt_p50_us, &base.rtt_p50_us, 0),
            with_ratio(&own.rtt_p99_us, &base.rtt_p99_us, 0),
        );
    }
    println!("\nlatency of 64-byte requests at a fixed rate (open loop, timed from when due)");
    print!("{:<13}", "path");
    for rate in RATES {
        let p = |what| format!("{what} @{}k", rate / 1_000);
        print!(" {:>17} {:>17}", p("p50 µs"), p("p99 µs"));
    }
    println!();
    for row in rows {
        print!("{:<13}", row.name);
        for (at, base) in row.figures.at_rate.iter().zip(&row.baseline.at_rate) {
            print!(
                " {} {}",
                with_ratio(&at.p50_us, &base.p50_us, 0),
                with_ratio(&at.p99_us, &base.p99_us, 0)
            );
        }
        println!();
    }
    println!(
        "\nthe load itself, and what both ztunnels spent (user+system CPU s per 1,000 requests"
    );
    println!("= vCPU at 1,000 req/s; ~0 on the direct paths, which ztunnel never sees)");
    print!("{:<13}", "path");
    for rate in RATES {
        let k = rate / 1_000;
        print!(
            " {:>11} {:>9} {:>10} {:>11} {:>9}",
            format!("done/s @{k}k"),
            format!("p999 @{k}k"),
            format!("lag99 @{k}k"),
            format!("zt CPU @{k}k"),
            format!("busy @{k}k")
        );
    }
    println!();
    for row in rows {
        print!("{:<13}", row.name);
        for at in &row.figures.at_rate {
            print!(
                " {:>11.0} {:>9.0} {:>10.0} {:>11.4} {:>8.0}%",
                median(&at.achieved_per_s),
                median(&at.p999_us),
                median(&at.send_lag_p99_us),
                median(&at.ztunnel_cpu_per_1k),
                median(&at.machine_busy) * 100.0
            );
        }
        println!();
    }
    println!("(µs; lag99 is how late the client itself sent, p99: its own share of the latency;");
    println!(" busy is the share of all CPUs busy during the step, with anything on the machine)");
    print_memory(memory);
    for row in rows {
        for failure in &row.figures.failures {
            println!("{} failed: {failure}", row.name);
        }
    }
}

/// Each ztunnel's peak RSS (over the runs, or over the idle step alone with `--runs 0`)
/// and its idle RSS before and after learning the phantom workloads.
pub fn print_memory(memory: &Memory<'_>) {
    println!("\nztunnel memory");
    for (i, node) in memory.nodes.iter().enumerate() {
        let (before, after) = (memory.idle.before_kib[i], memory.idle.after_kib[i]);
        println!(
            "{node}: peak RSS {:.1} MiB; idle {:.1} MiB, {:.1} MiB ({:.2} MB, the targets' unit) holding {PHANTOM_PODS} more workloads and {PHANTOM_SERVICES} services ({:+.2} KiB per workload); of that, {:.1} MiB mapped from files",
            mib(memory.peak_kib[i]),
            mib(before),
            mib(after),
            megabytes(after),
            per_workload_kib(before, after),
            mib(memory.idle.after_file_kib[i]),
        );
    }
    println!(
        "anchors: Istio ztunnel ~12 MB and ~0.06 vCPU per 1,000 req/s; Ambit's targets ≤ 8 MB idle with 1,000 workloads, ≤ 0.03 vCPU per 1,000 req/s"
    );
}

/// `kib` in decimal megabytes, the unit of the targets and of Istio's figures.
fn megabytes(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// The same medians as one JSON object.
pub fn to_json(rows: &[Row<'_>], memory: &Memory<'_>, conditions: &Conditions) -> Value {
    let paths: serde_json::Map<String, Value> = rows
        .iter()
        .map(|row| {
            let rates: serde_json::Map<String, Value> = RATES
                .iter()
                .zip(&row.figures.at_rate)
                .map(|(rate, at)| {
                    (
                        rate.to_string(),
                        json!({
                            "p50_us": median(&at.p50_us),
                            "p99_us": median(&at.p99_us),
                            "p999_us": median(&at.p999_us),
                            "achieved_per_s": median(&at.achieved_per_s),
                            "send_lag_p99_us": median(&at.send_lag_p99_us),
                            "ztunnel_cpu_s_per_1k_requests": median(&at.ztunnel_cpu_per_1k),
                            "machine_busy_share": median(&at.machine_busy),
                        }),
                    )
                })
                .collect();
            (
                row.name.to_owned(),
                json!({
                    "bulk_gbit_per_s": median(&row.figures.gbit),
                    "bulk_ratio": median(&row.figures.gbit) / median(&row.baseline.gbit),
                    "rtt_p50_us": median(&row.figures.rtt_p50_us),
                    "rtt_p99_us": median(&row.figures.rtt_p99_us),
                    "rates": rates,
                    "failures": row.figures.failures,
                }),
            )
        })
        .collect();
    let ztunnels: serde_json::Map<String, Value> = memory
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let (before, after) = (memory.idle.before_kib[i], memory.idle.after_kib[i]);
            (
                (*node).to_owned(),
                json!({
                    "peak_rss_kib": memory.peak_kib[i],
                    "idle_rss_kib": before,
                    "idle_rss_kib_with_phantoms": after,
                    "idle_file_rss_kib_with_phantoms": memory.idle.after_file_kib[i],
                    "kib_per_phantom_workload": per_workload_kib(before, after),
                }),
            )
        })
        .collect();
    json!({
        "benchmark": "l4",
        "runs": conditions.runs,
        "load_average": conditions.load_average,
        "cpus": conditions.cpus,
        "pinning": crate::common::pinning::describe(),
        "paths": paths,
        "ztunnels": ztunnels,
        "phantom_pods": PHANTOM_PODS,
        "phantom_services": PHANTOM_SERVICES,
    })
}

/// `median (ratio)`, the ratio to `baseline`'s median, padded to 17 characters.
fn with_ratio(values: &[f64], baseline: &[f64], decimals: usize) -> String {
    let value = median(values);
    let text = format!("{value:.decimals$} ({:.2}x)", value / median(baseline));
    format!("{text:>17}")
}

#[expect(clippy::cast_precision_loss, reason = "a memory figure")]
fn per_workload_kib(before: u64, after: u64) -> f64 {
    (after as f64 - before as f64) / f64::from(PHANTOM_PODS)
}
