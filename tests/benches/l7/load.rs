//! The two loads, both at a fixed rate from a client pod (pinned to the clients' CPU):
//! - HTTP/1.1: `pod-app rate --http`, `GET`s of [`PATHS`] in turn, pipelined, open
//!   loop, each timed from when it was *due* (a queue anywhere shows in the latency);
//! - HTTP/2: h2load with prior knowledge (`-p h2c`) and `--rps`, each request timed
//!   from when h2load *sent* it, from its `--log-file`. h2load sends on a timer, but a
//!   request it holds back (more than `-m` in flight) is not timed while it waits:
//!   [`H2_STREAMS`] is set high enough that this does not happen at these rates, and
//!   the achieved rate shows if it did. h2load's rate timer ticks every 10 ms (checked
//!   with its `--log-file` on loopback: ~10 requests started within 50 µs, then a
//!   ~10 ms gap, at 1,000 req/s, whatever `-c`), so every proxy gets bursts of
//!   rate/100 requests and serves them in turn: its HTTP/2 latencies hold that queueing
//!   and its CPU per request the batching, unlike the evenly spaced HTTP/1.1 load.

use std::{
    collections::BTreeMap, fmt, net::SocketAddr, path::Path, process::Command, time::Duration,
};

use ambit_e2e::{
    Pod,
    app::{self, Place as _},
};
use anyhow::{Context as _, Result, bail};

use crate::{
    cluster::PATHS,
    common::{self, pinning::Pinned, rate::RateReport},
};

/// How long each rate is held.
pub const RATE_DURATION: Duration = Duration::from_secs(5);
/// Requests a second each HTTP/1.1 connection carries (pipelined), and each h2load
/// client (multiplexed).
const HTTP1_PER_CONNECTION: u32 = 1_000;
const HTTP2_PER_CLIENT: u32 = 2_500;
/// h2load's most streams in flight per connection.
const H2_STREAMS: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http1 => "HTTP/1.1",
            Self::Http2 => "HTTP/2",
        })
    }
}

/// What one run at one rate measured (latencies in µs).
pub struct Answered {
    pub achieved_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub answered: f64,
    /// Requests unanswered or answered with a status other than 2xx.
    pub errors: f64,
    pub first_error: Option<String>,
}

/// `per_sec` requests a second for [`RATE_DURATION`] from `client` to `to`.
/// `scratch` is where h2load's log goes.
pub fn run(
    protocol: Protocol,
    client: &Pod,
    to: SocketAddr,
    per_sec: u32,
    scratch: &Path,
) -> Result<Answered> {
    match protocol {
        Protocol::Http1 => http1(client, to, per_sec),
        Protocol::Http2 => http2(client, to, per_sec, scratch),
    }
}

fn http1(client: &Pod, to: SocketAddr, per_sec: u32) -> Result<Answered> {
    let load = app::HttpRateLoad {
        per_sec,
        duration: RATE_DURATION,
        connections: per_sec.div_ceil(HTTP1_PER_CONNECTION),
        paths: &PATHS,
    };
    let child = app::http_rate(&Pinned::client(client), to, &load)?;
    let report = RateReport::from_json(&common::report(client.name(), child)?)?;
    Ok(Answered {
        achieved_per_s: report.achieved_per_s,
        p50_us: report.p50_us,
        p99_us: report.p99_us,
        answered: report.answered,
        errors: report.errors,
        first_error: report.first_error,
    })
}

fn http2(client: &Pod, to: SocketAddr, per_sec: u32, scratch: &Path) -> Result<Answered> {
    let clients = per_sec.div_ceil(HTTP2_PER_CLIENT);
    let log = scratch.join(format!("h2load-{}-{to}-{per_sec}.log", client.name()));
    let mut command = Command::new("h2load");
    command
        .args(["-p", "h2c", "-t", "1"])
        .args(["-c", &clients.to_string()])
        .args(["-m", &H2_STREAMS.to_string()])
        .args(["--rps", &(per_sec / clients).to_string()])
        .args(["-D", &RATE_DURATION.as_secs().to_string()])
        .arg("--log-file")
        .arg(&log)
        .args(PATHS.map(|path| format!("http://{to}{path}")));
    let done = Pinned::client(client)
        .spawn(&mut command)
        .context("starting h2load (Debian package nghttp2-client)")?
        .finish(common::RUN_TIMEOUT)?;
    let summary = H2Summary::parse(&done.stdout).with_context(|| format!("h2load: {done}"))?;
    let text =
        std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let (mut micros, bad_statuses) = parse_log(&text)?;
    let bad_status: u64 = bad_statuses.values().sum();
    if micros.is_empty() {
        bail!("h2load answered nothing: {done}");
    }
    micros.sort_unstable();
    let percentile = |p: usize| micros[(micros.len() * p / 100).min(micros.len() - 1)] as f64;
    let errors = summary.failed.max(bad_status) + summary.timeout;
    Ok(Answered {
        achieved_per_s: summary.per_sec,
        p50_us: percentile(50),
        p99_us: percentile(99),
        answered: micros.len() as f64,
        errors: errors as f64,
        first_error: (errors > 0).then(|| {
            format!(
                "statuses {bad_statuses:?}; h2load's {}",
                summary.requests_line
            )
        }),
    })
}

/// The figures of h2load's summary on stdout.
struct H2Summary {
    per_sec: f64,
    failed: u64,
    timeout: u64,
    requests_line: String,
}

impl H2Summary {
    /// From `finished in 5.00s, 1000.20 req/s, …` and `requests: 5000 total, …, 0
    /// failed, 0 errored, 0 timeout`.
    fn parse(stdout: &str) -> Result<Self> {
        let finished = stdout
            .lines()
            .find_map(|line| line.strip_prefix("finished in "))
            .context("no `finished in` line")?;
        let per_sec = finished
            .split(", ")
            .find_map(|part| part.strip_suffix(" req/s"))
            .context("no req/s")?
            .parse()?;
        let requests_line = stdout
            .lines()
            .find(|line| line.starts_with("requests: "))
            .context("no `requests:` line")?;
        let count = |what: &str| -> Result<u64> {
            requests_line
                .split(", ")
                .find_map(|part| part.trim_start_matches("requests: ").strip_suffix(what))
                .with_context(|| format!("no{what} in {requests_line:?}"))?
                .trim()
                .parse()
                .with_context(|| format!("{what} in {requests_line:?}"))
        };
        Ok(Self {
            per_sec,
            failed: count(" failed")?,
            timeout: count(" timeout")?,
            requests_line: requests_line.to_owned(),
        })
    }
}

/// h2load's log: a line per request, `start µs since epoch \t status \t µs to the end
/// of the response`. Returns the durations and how many answers had each status
/// other than 2xx.
fn parse_log(text: &str) -> Result<(Vec<u64>, BTreeMap<String, u64>)> {
    let mut micros = Vec::new();
    let mut bad_status = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [_, status, duration, ..] = fields.as_slice() else {
            bail!("a malformed h2load log line: {line:?}");
        };
        if !status.starts_with('2') {
            *bad_status.entry((*status).to_owned()).or_default() += 1;
        }
        micros.push(
            duration
                .parse()
                .with_context(|| format!("h2load log line {line:?}"))?,
        );
    }
    Ok((micros, bad_status))
}
