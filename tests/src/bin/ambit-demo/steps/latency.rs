//! What the mesh costs: the same echo server on node2 reached from node1 directly and
//! through the mesh (both ztunnels, mutual TLS over HBONE), in round-trip latency and
//! bulk throughput.

use std::{net::SocketAddr, process::Command, time::Duration};

use ambit_e2e::{
    ChildGuard, Pod, PodSpec,
    app::{self, Place},
};
use anyhow::{Context as _, Result};
use serde_json::Value;

use super::{READY_TIMEOUT, Step, enrolment::ECHO_PORT};
use crate::{cluster::Cluster, components::Component};

/// Where the bulk sinks listen.
const SINK_PORT: u16 = 9000;
const ROUND_TRIPS: u32 = 2_000;
const ROUND_TRIP_BYTES: usize = 64;
const BULK_BYTES: u64 = 64 << 20;
const BULK_WRITE_SIZE: usize = 128 * 1024;
/// How long one measurement may take (debug builds are slow).
const MEASURE_TIMEOUT: Duration = Duration::from_secs(60);

pub const DIRECT_VS_MESH: Step = Step {
    name: "direct vs through the mesh: latency and throughput",
    component: Component::Ztunnel(0),
    run: direct_vs_mesh,
};

/// One path's figures.
struct Figures {
    p50_us: f64,
    p99_us: f64,
    gbit_per_s: f64,
}

fn direct_vs_mesh(cluster: &mut Cluster<'_>) -> Result<String> {
    // A meshed server that no waypoint fronts, beside the unmeshed legacy/outsider.
    cluster.add_pod(1, PodSpec::new("shop", "echo"))?;
    for name in ["echo", "outsider"] {
        let pod = cluster.pod(name)?;
        let echo = app::serve(pod, SocketAddr::from(([0; 4], ECHO_PORT)))?;
        let sink = app::sink(pod, SocketAddr::from(([0; 4], SINK_PORT)))?;
        cluster.keep(Component::TestApps, echo);
        cluster.keep(Component::TestApps, sink);
    }
    let (client, echo) = (cluster.pod("client")?, cluster.pod("echo")?);
    cluster.nodes[0].wait_peer(&echo.ipv4().to_string(), None, READY_TIMEOUT)?;
    let direct = measure(&Uncaptured(client), cluster.pod("outsider")?)
        .context("measuring the direct path")?;
    let mesh = measure(client, echo).context("measuring the path through the mesh")?;
    Ok(format!(
        "client (node1) -> a server on node2; {ROUND_TRIPS} round trips of {ROUND_TRIP_BYTES} B, then {} MiB in one stream (debug build: figures for a feel, not a benchmark)\ndirect:       p50 {:>6.0} µs, p99 {:>6.0} µs, {:>5.2} Gbit/s\nthrough mesh: p50 {:>6.0} µs, p99 {:>6.0} µs, {:>5.2} Gbit/s\nthe mesh adds {:.0} µs at p50 ({:.1}× direct) and keeps {:.0}% of the throughput",
        BULK_BYTES >> 20,
        direct.p50_us,
        direct.p99_us,
        direct.gbit_per_s,
        mesh.p50_us,
        mesh.p99_us,
        mesh.gbit_per_s,
        mesh.p50_us - direct.p50_us,
        mesh.p50_us / direct.p50_us,
        mesh.gbit_per_s / direct.gbit_per_s * 100.0,
    ))
}

/// Round trips to `server`'s echo, then a bulk send to its sink, from `from`.
fn measure(from: &impl Place, server: &Pod) -> Result<Figures> {
    let pings = app::ping_pong(
        from,
        server.addr_v4(ECHO_PORT),
        ROUND_TRIPS,
        ROUND_TRIP_BYTES,
    )?;
    let pings = report(&pings)?;
    let bulk = app::bulk_send(from, server.addr_v4(SINK_PORT), BULK_BYTES, BULK_WRITE_SIZE)?;
    let bulk = report(&bulk)?;
    Ok(Figures {
        p50_us: number(&pings, "p50_us")?,
        p99_us: number(&pings, "p99_us")?,
        gbit_per_s: number(&bulk, "gbit_per_s")?,
    })
}

/// The JSON report a `pod-app` client prints, once it says `"ok": true`.
fn report(client: &ChildGuard) -> Result<Value> {
    let done = client.finish(MEASURE_TIMEOUT)?;
    let report: Value = serde_json::from_str(done.stdout.trim())
        .with_context(|| format!("expected one JSON report from {done}"))?;
    anyhow::ensure!(report["ok"] == true, "the client failed: {report}");
    Ok(report)
}

fn number(report: &Value, key: &str) -> Result<f64> {
    report[key]
        .as_f64()
        .with_context(|| format!("no number {key:?} in {report}"))
}

/// A pod whose processes Ambit does not capture (outside every node's cgroup): the
/// direct path.
struct Uncaptured<'a>(&'a Pod);

impl Place for Uncaptured<'_> {
    fn spawn(&self, command: &mut Command) -> Result<ChildGuard> {
        self.0.spawn_uncaptured(command)
    }
}
