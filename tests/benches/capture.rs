//! `cargo xtask bench capture`: what capture costs on one simulated node.
//!
//! Four paths from a client pod to a server pod on the same node, measured in the same
//! run so the ratios hold even on a noisy machine:
//! - **direct**: neither pod in the mesh;
//! - **ebpf+sockmap**: the client enrolled, its connect captured by `cgroup/connect4`
//!   into ztunnel's 15001 listener, app ↔ ztunnel joined by sk_msg;
//! - **ebpf**: the same without sk_msg (app ↔ ztunnel over loopback TCP);
//! - **iptables**: the same ztunnel relay, reached through an iptables `REDIRECT` in
//!   the client pod's namespace (the client runs outside the node's cgroup, so eBPF
//!   leaves it alone) — the baseline eBPF must beat. These rules live only in the
//!   benchmark's own pod namespace and die with it.
//!
//! For each path: bulk throughput with 128 KiB and 4 KiB writes, and 64-byte
//! request/response latency (p50/p99). Each figure is the median of `AMBIT_BENCH_RUNS`
//! runs (default 3). The server pods stay outside the mesh, so each relayed path has
//! exactly one ztunnel hop.

mod common;

use std::{process::Command, time::Duration};

use ambit_e2e::{MeshNode, MeshOptions, Pod, PodSpec, app, pod_app};
use anyhow::{Context as _, Result};
use common::median;
use serde_json::Value;

const BULK_BYTES: &str = "1073741824";
const PING_COUNT: &str = "5000";
const PING_SIZE: &str = "64";
const SINK_PORT: u16 = 9000;
const ECHO_PORT: u16 = 8080;

/// How a path's client process is started.
#[derive(Clone, Copy)]
enum Launch {
    InPodCgroup,
    OutsideNodeCgroup,
}

struct Path<'a> {
    name: &'static str,
    client: &'a Pod,
    server: &'a Pod,
    launch: Launch,
}

#[derive(Default)]
struct Figures {
    bulk_128k: Vec<f64>,
    bulk_4k: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    failures: Vec<String>,
}

fn main() -> std::process::ExitCode {
    common::main("capture", run)
}

fn run() -> Result<()> {
    let runs = common::runs();
    let net = common::cluster("bench_capture")?;

    let fast = net.add_node("fast")?;
    let _fast_mesh = MeshNode::install(
        &net,
        &fast,
        MeshOptions {
            sockmap_acceleration: true,
            ..MeshOptions::default()
        },
    )?;
    let slow = net.add_node("slow")?;
    let _slow_mesh = MeshNode::install(&net, &slow, MeshOptions::default())?;

    let direct_client = fast.add_pod(PodSpec::new("plain", "direct"))?;
    let accel_client = fast.add_pod(PodSpec::new("shop", "accel"))?;
    let fast_server = fast.add_pod(PodSpec::new("plain", "server-f"))?;
    let relay_client = slow.add_pod(PodSpec::new("shop", "relay"))?;
    let iptables_client = slow.add_pod(PodSpec::new("shop", "iptables"))?;
    let slow_server = slow.add_pod(PodSpec::new("plain", "server-s"))?;
    let mut servers = Vec::new();
    for server in [&fast_server, &slow_server] {
        servers.push(app::serve(server, format!("0.0.0.0:{ECHO_PORT}").parse()?)?);
        servers.push(app::sink(server, format!("0.0.0.0:{SINK_PORT}").parse()?)?);
    }
    redirect_to_ztunnel(&iptables_client, &slow_server)?;

    let paths = [
        Path {
            name: "direct",
            client: &direct_client,
            server: &fast_server,
            launch: Launch::InPodCgroup,
        },
        Path {
            name: "ebpf+sockmap",
            client: &accel_client,
            server: &fast_server,
            launch: Launch::InPodCgroup,
        },
        Path {
            name: "ebpf",
            client: &relay_client,
            server: &slow_server,
            launch: Launch::InPodCgroup,
        },
        Path {
            name: "iptables",
            client: &iptables_client,
            server: &slow_server,
            launch: Launch::OutsideNodeCgroup,
        },
    ];
    let mut results: Vec<Figures> = paths.iter().map(|_| Figures::default()).collect();
    for run in 1..=runs {
        eprintln!("run {run}/{runs}");
        // Interleave the paths so drift on the machine hits them all alike. A failed
        // measurement is reported, not retried: it is a finding.
        for (path, figures) in paths.iter().zip(&mut results) {
            match bulk(path, "131072") {
                Ok(gbit) => figures.bulk_128k.push(gbit),
                Err(error) => figures.failures.push(format!("bulk 128K: {error:#}")),
            }
            match bulk(path, "4096") {
                Ok(gbit) => figures.bulk_4k.push(gbit),
                Err(error) => figures.failures.push(format!("bulk 4K: {error:#}")),
            }
            match ping_pong(path) {
                Ok((p50, p99)) => {
                    figures.p50.push(p50);
                    figures.p99.push(p99);
                }
                Err(error) => figures.failures.push(format!("ping-pong: {error:#}")),
            }
        }
    }
    print_table(&paths, &results, runs);
    Ok(())
}

/// The iptables baseline: the client pod's own OUTPUT nat chain sends its connections
/// to the server to ztunnel's 15001 listener; ztunnel's own (marked) sockets pass.
fn redirect_to_ztunnel(client: &Pod, server: &Pod) -> Result<()> {
    let server_ip = server.ipv4().to_string();
    for rule in [
        vec![
            "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-m", "mark", "--mark", "0x539", "-j",
            "RETURN",
        ],
        vec![
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            &server_ip,
            "-j",
            "REDIRECT",
            "--to-ports",
            "15001",
        ],
    ] {
        client
            .exec(
                Command::new("iptables").args(&rule),
                Duration::from_secs(10),
            )?
            .success()
            .context("installing the benchmark's iptables baseline")?;
    }
    Ok(())
}

fn client_run(path: &Path<'_>, args: &[&str]) -> Result<Value> {
    let mut command = Command::new(pod_app());
    command.args(args);
    let child = match path.launch {
        Launch::InPodCgroup => path.client.spawn(&mut command)?,
        Launch::OutsideNodeCgroup => path.client.spawn_uncaptured(&mut command)?,
    };
    common::report(path.name, child)
}

fn bulk(path: &Path<'_>, write_size: &str) -> Result<f64> {
    let to = path.server.addr_v4(SINK_PORT).to_string();
    let report = client_run(
        path,
        &[
            "bulk-send",
            "--to",
            &to,
            "--bytes",
            BULK_BYTES,
            "--write-size",
            write_size,
            "--timeout-ms",
            "120000",
        ],
    )?;
    report["gbit_per_s"].as_f64().context("gbit_per_s")
}

fn ping_pong(path: &Path<'_>) -> Result<(f64, f64)> {
    let to = path.server.addr_v4(ECHO_PORT).to_string();
    let report = client_run(
        path,
        &[
            "ping-pong",
            "--to",
            &to,
            "--count",
            PING_COUNT,
            "--size",
            PING_SIZE,
        ],
    )?;
    Ok((
        report["p50_us"].as_f64().context("p50_us")?,
        report["p99_us"].as_f64().context("p99_us")?,
    ))
}

fn print_table(paths: &[Path<'_>], results: &[Figures], runs: usize) {
    let direct = &results[0];
    let (d128, d4, d50, d99) = (
        median(&direct.bulk_128k),
        median(&direct.bulk_4k),
        median(&direct.p50),
        median(&direct.p99),
    );
    println!("\ncapture benchmark: one node, client pod -> server pod, median of {runs} runs");
    println!(
        "{:<14} {:>18} {:>18} {:>16} {:>16}",
        "path", "bulk 128K Gbit/s", "bulk 4K Gbit/s", "p50 µs", "p99 µs"
    );
    for (path, figures) in paths.iter().zip(results) {
        let (b128, b4, p50, p99) = (
            median(&figures.bulk_128k),
            median(&figures.bulk_4k),
            median(&figures.p50),
            median(&figures.p99),
        );
        println!(
            "{:<14} {:>8.2} ({:>5.2}x) {:>8.2} ({:>5.2}x) {:>6.0} ({:>5.2}x) {:>6.0} ({:>5.2}x)",
            path.name,
            b128,
            b128 / d128,
            b4,
            b4 / d4,
            p50,
            p50 / d50,
            p99,
            p99 / d99
        );
    }
    println!("(ratios are to direct, measured in the same run)");
    for (path, figures) in paths.iter().zip(results) {
        for failure in &figures.failures {
            println!("{} failed: {failure}", path.name);
        }
    }
}
