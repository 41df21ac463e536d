//! The pod-app clients and servers the benchmark runs (pinned: see `pinning`), and the
//! figures they report.

use std::time::Duration;

use ambit_e2e::{ChildGuard, Pod, app};
use anyhow::Result;

use crate::common::{
    self,
    pinning::Pinned,
    rate::{RateReport, number},
};

/// Where `pod-app serve` (greeting, then echo) listens in a server pod.
const ECHO_PORT: u16 = 8080;
/// Where `pod-app sink` listens.
const SINK_PORT: u16 = 9000;
const BULK_BYTES: u64 = 1 << 30;
const BULK_WRITE_SIZE: usize = 128 * 1024;
/// Closed-loop round trips: as many, of the same size as the open-loop requests.
const ROUND_TRIPS: u32 = 5_000;
/// The open-loop requests: 64 bytes, for 5 s at each rate.
const REQUEST_SIZE: usize = 64;
const RATE_DURATION: Duration = Duration::from_secs(5);
/// Each connection of the open-loop load carries at most this many requests a second,
/// so the client's sender threads keep to the schedule.
const PER_SEC_PER_CONNECTION: u32 = 2_500;

/// Starts the echo and sink servers in `pod`; they stop when the guards drop.
pub fn start_servers(pod: &Pod) -> Result<[ChildGuard; 2]> {
    Ok([
        app::serve(&Pinned::server(pod), ([0, 0, 0, 0], ECHO_PORT).into())?,
        app::sink(&Pinned::server(pod), ([0, 0, 0, 0], SINK_PORT).into())?,
    ])
}

/// Single-connection bulk throughput from `client` to `server`'s sink, in Gbit/s.
pub fn bulk(client: &Pod, server: &Pod) -> Result<f64> {
    let child = app::bulk_send(
        &Pinned::client(client),
        server.addr_v4(SINK_PORT),
        BULK_BYTES,
        BULK_WRITE_SIZE,
    )?;
    number(&common::report(client.name(), child)?, "gbit_per_s")
}

/// Closed-loop 64-byte round trips from `client` to `server`'s echo (the figure
/// TARGETS.md's RTT is stated in): p50 and p99 in µs.
pub fn round_trips(client: &Pod, server: &Pod) -> Result<(f64, f64)> {
    let child = app::ping_pong(
        &Pinned::client(client),
        server.addr_v4(ECHO_PORT),
        ROUND_TRIPS,
        REQUEST_SIZE,
    )?;
    let report = common::report(client.name(), child)?;
    Ok((number(&report, "p50_us")?, number(&report, "p99_us")?))
}

/// `per_sec` 64-byte requests a second for 5 s from `client` to `server`'s echo.
pub fn at_rate(client: &Pod, server: &Pod, per_sec: u32) -> Result<RateReport> {
    let load = app::RateLoad {
        per_sec,
        duration: RATE_DURATION,
        size: REQUEST_SIZE,
        connections: per_sec.div_ceil(PER_SEC_PER_CONNECTION),
    };
    let child = app::rate(&Pinned::client(client), server.addr_v4(ECHO_PORT), &load)?;
    RateReport::from_json(&common::report(client.name(), child)?)
}
