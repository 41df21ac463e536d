//! `cargo xtask bench l4`: what the mesh costs on the data path, between two nodes and
//! on one.
//!
//! Two simulated nodes, the real CA and controller on node 1, the real agent and
//! ztunnel on both. Four paths, measured in the same run so the ratios hold on a noisy
//! machine:
//! - **direct**: a plain pod on node 1 → a plain pod on node 2;
//! - **mtls**: the same between two enrolled pods — captured by eBPF, carried over HBONE
//!   (HTTP/2 CONNECT, TLS 1.3) between the two ztunnels; compared with direct;
//! - **local-direct**: two plain pods on node 1;
//! - **local-mesh**: two enrolled pods on node 1 — ztunnel's same-node fast path (no
//!   TLS); compared with local-direct.
//!
//! For each path: single-connection bulk throughput (1 GiB, 128 KiB writes), 64-byte
//! round trips in a closed loop (5,000; the RTT TARGETS.md states), and the latency of
//! 64-byte requests sent open-loop at 1,000 and 10,000 a second (5 s each,
//! timed from when each was due, so queueing is not hidden), with the CPU seconds both
//! ztunnels spent per 1,000 requests. Then each ztunnel's peak RSS over all runs and —
//! measured first, before any traffic — how an idle ztunnel's RSS grows as it learns
//! 1,000 more workloads. Each figure is the median of `AMBIT_BENCH_RUNS` runs (default
//! 3); `AMBIT_BENCH_JSON=1` prints them as one JSON object instead of tables.
//! `AMBIT_BENCH_RUNS=0` (`--runs 0`) measures the memory step alone.
//!
//! # Layout
//! - `load`: the pod-app clients (bulk, round trips, fixed rate) and what they report;
//! - `idle`: the 1,000-workload idle step;
//! - `table`: the figures, printed as tables or JSON;
//! - shared with the other benches: `common::pinning` (clients on CPU 0, servers on
//!   CPU 1; why: see there) and `common::proc_stats` (CPU time and memory of a
//!   process, the machine's load, from /proc).

#[path = "../common/mod.rs"]
mod common;
mod idle;
mod load;
mod table;

use std::time::Duration;

use ambit_e2e::{ControlPlane, MeshNode, Pod, PodSpec};
use anyhow::{Result, bail};
use common::proc_stats;
use table::{Conditions, Figures, Memory, RATES, Row};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const CLIENT_IDENTITY: &str = "spiffe://cluster.local/ns/shop/sa/client";
const SERVER_IDENTITY: &str = "spiffe://cluster.local/ns/shop/sa/server";

/// A client pod, a server pod, and the path this one is compared with.
struct Path<'a> {
    name: &'static str,
    client: &'a Pod,
    server: &'a Pod,
    baseline: usize,
}

fn main() -> std::process::ExitCode {
    common::main("l4", run)
}

fn run() -> Result<()> {
    let runs = common::runs();
    let net = common::cluster("bench_l4")?;
    let n1 = net.add_node("n1")?;
    let n2 = net.add_node("n2")?;
    let control = ControlPlane::new(&net, &n1)?;
    let meshes = control.install(&net, &[&n1, &n2])?;
    let plain = |name| PodSpec::new("plain", name);
    let enrolled = |name, account| PodSpec::new("shop", name).service_account(account);
    let direct_client = n1.add_pod(plain("direct-c"))?;
    let direct_server = n2.add_pod(plain("direct-s"))?;
    let local_direct_server = n1.add_pod(plain("direct-s1"))?;
    let mesh_client = n1.add_pod(enrolled("mesh-c", "client"))?;
    let mesh_server = n2.add_pod(enrolled("mesh-s", "server"))?;
    let local_mesh_server = n1.add_pod(enrolled("mesh-s1", "server"))?;
    let paths = [
        Path {
            name: "direct",
            client: &direct_client,
            server: &direct_server,
            baseline: 0,
        },
        Path {
            name: "mtls",
            client: &mesh_client,
            server: &mesh_server,
            baseline: 0,
        },
        Path {
            name: "local-direct",
            client: &direct_client,
            server: &local_direct_server,
            baseline: 2,
        },
        Path {
            name: "local-mesh",
            client: &mesh_client,
            server: &local_mesh_server,
            baseline: 2,
        },
    ];
    let _servers = paths
        .iter()
        .map(|path| load::start_servers(path.server))
        .collect::<Result<Vec<_>>>()?;
    // The CA reads which pods run where when it starts: after the pods.
    let _control = control.start(&net)?;
    wait_ready(&meshes, &mesh_client, [&mesh_server, &local_mesh_server])?;

    // Before any traffic, so the ztunnels are as idle as they will ever be.
    eprintln!("idle: {} phantom workloads", idle::PHANTOM_PODS);
    let pids = meshes
        .iter()
        .map(|mesh| Ok(mesh.ztunnel()?.pid()))
        .collect::<Result<Vec<u32>>>()?;
    let idle = idle::measure(&net, &meshes, &pids)?;
    if runs == 0 {
        // `--runs 0`: the memory step alone, for work on ztunnel's footprint.
        table::print_memory(&Memory {
            nodes: &[n1.name(), n2.name()],
            peak_kib: &peak_rss_kib(&pids)?,
            idle: &idle,
        });
        return Ok(());
    }
    for &pid in &pids {
        proc_stats::reset_peak_rss(pid)?;
    }

    let mut figures: Vec<Figures> = paths.iter().map(|_| Figures::default()).collect();
    for run in 1..=runs {
        eprintln!("run {run}/{runs}");
        // Interleaved, so drift on the machine hits every path alike.
        for (path, figures) in paths.iter().zip(&mut figures) {
            measure(path, &pids, figures)?;
        }
    }
    check_paths(&meshes)?;
    let peak_kib = peak_rss_kib(&pids)?;

    let (load_average, cpus) = proc_stats::load_average()?;
    let conditions = Conditions {
        runs,
        load_average,
        cpus,
    };
    let rows: Vec<Row<'_>> = paths
        .iter()
        .zip(&figures)
        .map(|(path, own)| Row {
            name: path.name,
            figures: own,
            baseline: &figures[path.baseline],
        })
        .collect();
    let memory = Memory {
        nodes: &[n1.name(), n2.name()],
        peak_kib: &peak_kib,
        idle: &idle,
    };
    if common::json_output() {
        println!("{}", table::to_json(&rows, &memory, &conditions));
    } else {
        table::print_table(&rows, &memory, &conditions);
    }
    Ok(())
}

fn peak_rss_kib(pids: &[u32]) -> Result<Vec<u64>> {
    pids.iter()
        .map(|&pid| proc_stats::peak_rss_kib(pid))
        .collect()
}

/// Waits until both ztunnels hold the certificates they serve with and know the mesh
/// pods on the other end.
fn wait_ready(meshes: &[MeshNode], client: &Pod, servers: [&Pod; 2]) -> Result<()> {
    meshes[0].wait_certificate(CLIENT_IDENTITY, READY_TIMEOUT)?;
    meshes[0].wait_certificate(SERVER_IDENTITY, READY_TIMEOUT)?;
    meshes[1].wait_certificate(SERVER_IDENTITY, READY_TIMEOUT)?;
    for server in servers {
        meshes[0].wait_peer(
            &server.ipv4().to_string(),
            Some(SERVER_IDENTITY),
            READY_TIMEOUT,
        )?;
    }
    meshes[1].wait_peer(
        &client.ipv4().to_string(),
        Some(CLIENT_IDENTITY),
        READY_TIMEOUT,
    )
}

/// One run of one path: bulk, closed-loop round trips, then each rate with the ztunnels' and the machine's CPU
/// time around it. A
/// failed measurement is recorded, not retried: it is a finding.
fn measure(path: &Path<'_>, ztunnels: &[u32], figures: &mut Figures) -> Result<()> {
    match load::bulk(path.client, path.server) {
        Ok(gbit) => figures.gbit.push(gbit),
        Err(error) => figures.failures.push(format!("bulk: {error:#}")),
    }
    match load::round_trips(path.client, path.server) {
        Ok((p50, p99)) => {
            figures.rtt_p50_us.push(p50);
            figures.rtt_p99_us.push(p99);
        }
        Err(error) => figures.failures.push(format!("round trips: {error:#}")),
    }
    for (rate, at) in RATES.into_iter().zip(&mut figures.at_rate) {
        let cpu_before = proc_stats::cpu_seconds(ztunnels)?;
        let machine_before = proc_stats::uptime_and_idle()?;
        let report = match load::at_rate(path.client, path.server, rate) {
            Ok(report) => report,
            Err(error) => {
                figures.failures.push(format!("{rate} req/s: {error:#}"));
                continue;
            }
        };
        let cpu = proc_stats::cpu_seconds(ztunnels)? - cpu_before;
        let busy = proc_stats::busy_share(
            machine_before,
            proc_stats::uptime_and_idle()?,
            proc_stats::cpus(),
        );
        if report.errors > 0.0 {
            figures.failures.push(format!(
                "{rate} req/s: {} requests unanswered ({})",
                report.errors,
                report.first_error.as_deref().unwrap_or("no error given")
            ));
            continue;
        }
        at.p50_us.push(report.p50_us);
        at.p99_us.push(report.p99_us);
        at.p999_us.push(report.p999_us);
        at.achieved_per_s.push(report.achieved_per_s);
        at.send_lag_p99_us.push(report.send_lag_p99_us);
        at.ztunnel_cpu_per_1k.push(cpu / report.answered * 1_000.0);
        at.machine_busy.push(busy);
    }
    Ok(())
}

/// Fails unless the mesh paths went where the table says: over mutual TLS between the
/// nodes, and through the same-node fast path on node 1.
fn check_paths(meshes: &[MeshNode]) -> Result<()> {
    let hbone = meshes[1].metrics()?.sum(
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
        ],
    );
    if hbone < 1.0 {
        bail!("the mtls path did not go over mutual TLS: the benchmark measured the wrong thing");
    }
    meshes[0]
        .ztunnel()?
        .wait_for_log("same_node=true", Duration::from_secs(1))
        .map_err(|_| {
            anyhow::anyhow!(
                "node 1's ztunnel logged no same-node connection: local-mesh measured the wrong thing"
            )
        })?;
    Ok(())
}
