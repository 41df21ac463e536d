//! The figures each path collects over the runs, and how they are printed: tables
//! (ratios to the direct path) or, with `AMBIT_BENCH_JSON=1`, one JSON object of the
//! medians.

use serde_json::{Value, json};

use crate::{
    common::{median, pinning, proc_stats::mib},
    load::Protocol,
};

/// The fixed rates every path is measured at, in requests a second, and the protocols.
pub const RATES: [u32; 2] = [1_000, 10_000];
pub const PROTOCOLS: [Protocol; 2] = [Protocol::Http1, Protocol::Http2];

/// One path, one protocol, one rate: a value per run.
#[derive(Default)]
pub struct Step {
    pub achieved_per_s: Vec<f64>,
    pub p50_us: Vec<f64>,
    pub p99_us: Vec<f64>,
    pub errors: Vec<f64>,
    /// User + system CPU seconds per 1,000 requests (= vCPU at 1,000 req/s) of the L7
    /// proxy, and of both ztunnels.
    pub proxy_cpu_per_1k: Vec<f64>,
    pub ztunnel_cpu_per_1k: Vec<f64>,
    /// The share of the whole machine's CPU time that was busy (with anything).
    pub machine_busy: Vec<f64>,
    /// The L7 proxy's peak RSS during the step, in KiB (none on the direct path).
    pub proxy_peak_rss_kib: Vec<u64>,
}

impl Step {
    /// The proxy's peak RSS in the first run's step, which no faster step preceded.
    fn first_run_peak_rss_kib(&self) -> Option<u64> {
        self.proxy_peak_rss_kib.first().copied()
    }
}

/// One path, a value per run; `steps[protocol][rate]`, in the order of [`PROTOCOLS`]
/// and [`RATES`]. A failed measurement is kept as a finding.
#[derive(Default)]
pub struct Figures {
    pub steps: [[Step; RATES.len()]; PROTOCOLS.len()],
    pub failures: Vec<String>,
}

impl Figures {
    /// The proxy's peak RSS over every step of every run, in KiB.
    fn peak_rss_kib(&self) -> Option<u64> {
        self.steps
            .iter()
            .flatten()
            .flat_map(|step| step.proxy_peak_rss_kib.iter().copied())
            .max()
    }
}

/// A path's figures, the direct path's, and which processes its L7 proxy is.
pub struct Row<'a> {
    pub name: &'a str,
    pub figures: &'a Figures,
    pub baseline: &'a Figures,
    pub proxy_name: &'a str,
}

/// How the runs went: how many, and how loaded the machine was at their end.
pub struct Conditions {
    pub runs: usize,
    pub load_average: f64,
    pub cpus: usize,
}

const PATHS_TEXT: &str = "\
direct:        client → app pod (no mesh, no proxy)
nginx:         client → nginx (1 worker) → app pods; plaintext, no mTLS anywhere
ingress-plain: client → ambit-waypoint --ingress → app pods; plaintext, as nginx
ingress:       client → ambit-waypoint --ingress → HBONE (mTLS) → ztunnel → app pods
waypoint:      enrolled client → ztunnel → HBONE → ambit-waypoint → HBONE → ztunnel → app pods
every proxy routes /v1, /v2, /v3 (prefixes) to three pods; access logs off in all";

const ANCHORS: &str = "anchors: Istio's Envoy waypoint ~0.25 vCPU and ~60 MB per 1,000 req/s; \
Ambit's targets ≤ 0.1 vCPU and ≤ 25 MB per 1,000 req/s, p99 no worse than nginx";

pub fn print_table(rows: &[Row<'_>], conditions: &Conditions) {
    let Conditions {
        runs,
        load_average,
        cpus,
    } = conditions;
    println!("\nl7 benchmark: median of {runs} runs; (x) is the ratio to the direct path");
    println!("in the same run");
    println!("load average at the end: {load_average:.2} on {cpus} CPUs (this benchmark included)");
    println!("{}", pinning::describe());
    println!("{PATHS_TEXT}");
    for (p, protocol) in PROTOCOLS.iter().enumerate() {
        println!("\n{protocol}: {}", how_timed(*protocol));
        print!("{:<13}", "path");
        for rate in RATES {
            let k = |what| format!("{what} @{}k", rate / 1_000);
            print!(
                " {:>10} {:>17} {:>17} {:>7}",
                k("done/s"),
                k("p50 µs"),
                k("p99 µs"),
                k("err")
            );
        }
        println!();
        for row in rows {
            print!("{:<13}", row.name);
            for (at, base) in row.figures.steps[p].iter().zip(&row.baseline.steps[p]) {
                print!(
                    " {:>10.0} {} {} {:>7.0}",
                    median(&at.achieved_per_s),
                    with_ratio(&at.p50_us, &base.p50_us),
                    with_ratio(&at.p99_us, &base.p99_us),
                    median(&at.errors),
                );
            }
            println!();
        }
    }
    println!("\nCPU s per 1,000 requests (= vCPU at 1,000 req/s): the L7 proxy / both ztunnels");
    print!("{:<13}", "path");
    for protocol in PROTOCOLS {
        for rate in RATES {
            print!(" {:>17}", format!("{protocol} @{}k", rate / 1_000));
        }
    }
    println!();
    for row in rows {
        print!("{:<13}", row.name);
        for steps in &row.figures.steps {
            for at in steps {
                let cpu = format!(
                    "{:.3} / {:.3}",
                    median(&at.proxy_cpu_per_1k),
                    median(&at.ztunnel_cpu_per_1k)
                );
                print!(" {cpu:>17}");
            }
        }
        println!();
    }
    print_rss_table(rows);
    println!("{ANCHORS}");
    for row in rows {
        for failure in &row.figures.failures {
            println!("{} failed: {failure}", row.name);
        }
    }
}

/// The L7 proxy's peak RSS in each step of the first run, in the order they ran, and
/// over all runs.
fn print_rss_table(rows: &[Row<'_>]) {
    println!(
        "\npeak RSS of the L7 proxy (MiB): in each step of the first run, in the order they ran \
         (at 1,000 req/s it had served no more), and over all runs"
    );
    print!("{:<13}", "path");
    for rate in RATES {
        for protocol in PROTOCOLS {
            print!(" {:>13}", format!("{protocol} @{}k", rate / 1_000));
        }
    }
    println!(" {:>9}", "all runs");
    for row in rows {
        let Some(peak) = row.figures.peak_rss_kib() else {
            continue;
        };
        print!("{:<13}", row.name);
        for r in 0..RATES.len() {
            for steps in &row.figures.steps {
                let rss = steps[r]
                    .first_run_peak_rss_kib()
                    .map_or_else(|| "-".to_owned(), |kib| format!("{:.1}", mib(kib)));
                print!(" {rss:>13}");
            }
        }
        println!(" {:>9.1}  ({})", mib(peak), row.proxy_name);
    }
}

/// The same medians as one JSON object.
pub fn to_json(rows: &[Row<'_>], conditions: &Conditions) -> Value {
    let paths: serde_json::Map<String, Value> = rows
        .iter()
        .map(|row| {
            let protocols: serde_json::Map<String, Value> = PROTOCOLS
                .iter()
                .zip(&row.figures.steps)
                .map(|(protocol, steps)| {
                    let rates: serde_json::Map<String, Value> = RATES
                        .iter()
                        .zip(steps)
                        .map(|(rate, at)| (rate.to_string(), step_json(at)))
                        .collect();
                    (protocol.to_string(), Value::Object(rates))
                })
                .collect();
            let peak_rss_kib = row.figures.peak_rss_kib();
            (
                row.name.to_owned(),
                json!({
                    "protocols": protocols,
                    "peak_rss_kib": peak_rss_kib,
                    "peak_rss_of": peak_rss_kib.map(|_| row.proxy_name),
                    "failures": row.figures.failures,
                }),
            )
        })
        .collect();
    json!({
        "benchmark": "l7",
        "runs": conditions.runs,
        "load_average": conditions.load_average,
        "cpus": conditions.cpus,
        "pinning": pinning::describe(),
        "http1_timing": how_timed(Protocol::Http1),
        "http2_timing": how_timed(Protocol::Http2),
        "paths": paths,
    })
}

fn step_json(at: &Step) -> Value {
    json!({
        "achieved_per_s": median(&at.achieved_per_s),
        "p50_us": median(&at.p50_us),
        "p99_us": median(&at.p99_us),
        "errors": median(&at.errors),
        "proxy_cpu_s_per_1k_requests": median(&at.proxy_cpu_per_1k),
        "ztunnel_cpu_s_per_1k_requests": median(&at.ztunnel_cpu_per_1k),
        "machine_busy_share": median(&at.machine_busy),
        "proxy_peak_rss_kib_first_run": at.first_run_peak_rss_kib(),
    })
}

fn how_timed(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Http1 => {
            "pod-app rate --http: pipelined GETs, open loop, timed from when each was due"
        }
        Protocol::Http2 => {
            "h2load -p h2c --rps: bursts of rate/100 requests every 10 ms, each timed from when sent"
        }
    }
}

/// `median (ratio)` padded to 17 characters; without a ratio when there is no
/// baseline, `-` when there is no value.
fn with_ratio(values: &[f64], baseline: &[f64]) -> String {
    let value = median(values);
    let ratio = value / median(baseline);
    let text = if value.is_nan() {
        "-".to_owned()
    } else if ratio.is_finite() {
        format!("{value:.0} ({ratio:.2}x)")
    } else {
        format!("{value:.0}")
    };
    format!("{text:>17}")
}
