//! `cargo xtask bench l4`: what mutual TLS between nodes costs.
//!
//! Two simulated nodes, the real CA and controller on node 1, the real agent and
//! ztunnel on both. Two paths from a client pod on node 1 to a server pod on node 2,
//! measured in the same run:
//! - **direct**: both pods outside the mesh;
//! - **mtls**: both enrolled — captured by eBPF, carried over HBONE (HTTP/2 CONNECT,
//!   TLS 1.3) between the two ztunnels, delivered to the app.
//!
//! For each: single-connection bulk throughput (1 GiB, 128 KiB writes) and 64-byte
//! request/response latency p50/p99 (closed loop, 5,000 round trips); for the mesh also
//! the CPU seconds both ztunnels spent per 1,000 round trips and their peak RSS. Each
//! figure is the median of `AMBIT_BENCH_RUNS` runs (default 3).

mod common;

use std::{fs, process::Command, time::Duration};

use ambit_e2e::{ControlPlane, Pod, PodSpec, app, pod_app};
use anyhow::{Context as _, Result, bail};
use common::median;

const ECHO_PORT: u16 = 8080;
const SINK_PORT: u16 = 9000;
const PING_COUNT: u32 = 5_000;
const READY_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Figures {
    gbit: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    cpu_per_1k: Vec<f64>,
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
    let direct_client = n1.add_pod(PodSpec::new("plain", "direct-c"))?;
    let direct_server = n2.add_pod(PodSpec::new("plain", "direct-s"))?;
    let mesh_client = n1.add_pod(PodSpec::new("shop", "mesh-c").service_account("client"))?;
    let mesh_server = n2.add_pod(PodSpec::new("shop", "mesh-s").service_account("server"))?;
    let mut servers = Vec::new();
    for server in [&direct_server, &mesh_server] {
        servers.push(app::serve(server, format!("0.0.0.0:{ECHO_PORT}").parse()?)?);
        servers.push(app::sink(server, format!("0.0.0.0:{SINK_PORT}").parse()?)?);
    }
    // The CA reads which pods run where when it starts: after the pods.
    let _control = control.start(&net)?;
    meshes[0].wait_certificate("spiffe://cluster.local/ns/shop/sa/client", READY_TIMEOUT)?;
    meshes[1].wait_certificate("spiffe://cluster.local/ns/shop/sa/server", READY_TIMEOUT)?;
    meshes[0].wait_peer(&mesh_server.ipv4().to_string(), None, READY_TIMEOUT)?;

    let ztunnel_pids = [meshes[0].ztunnel()?.pid(), meshes[1].ztunnel()?.pid()];
    let (mut direct, mut mtls) = (Figures::default(), Figures::default());
    for run in 1..=runs {
        eprintln!("run {run}/{runs}");
        for (figures, client, server, mesh) in [
            (&mut direct, &direct_client, &direct_server, false),
            (&mut mtls, &mesh_client, &mesh_server, true),
        ] {
            figures.gbit.push(bulk(client, server)?);
            let cpu_before = cpu_seconds(&ztunnel_pids)?;
            let (p50, p99) = ping_pong(client, server)?;
            let cpu = cpu_seconds(&ztunnel_pids)? - cpu_before;
            figures.p50.push(p50);
            figures.p99.push(p99);
            if mesh {
                figures
                    .cpu_per_1k
                    .push(cpu / f64::from(PING_COUNT) * 1_000.0);
            }
        }
    }
    let hbone = meshes[1].metrics()?.sum(
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
        ],
    );
    if hbone < 1.0 {
        bail!(
            "the mesh path did not go over mutual TLS: the benchmark would measure the wrong thing"
        );
    }
    let rss: Vec<String> = ztunnel_pids
        .iter()
        .map(|pid| peak_rss_mib(*pid).map(|mib| format!("{mib:.1} MiB")))
        .collect::<Result<_>>()?;

    let ratio = |a: &[f64], b: &[f64]| median(a) / median(b);
    println!("\nl4 benchmark: pod on node 1 -> pod on node 2, median of {runs} runs");
    println!(
        "{:<8} {:>20} {:>18} {:>18}",
        "path", "bulk Gbit/s", "p50 µs", "p99 µs"
    );
    for (name, figures) in [("direct", &direct), ("mtls", &mtls)] {
        println!(
            "{name:<8} {:>10.2} ({:>5.2}x) {:>8.0} ({:>5.2}x) {:>8.0} ({:>5.2}x)",
            median(&figures.gbit),
            ratio(&figures.gbit, &direct.gbit),
            median(&figures.p50),
            ratio(&figures.p50, &direct.p50),
            median(&figures.p99),
            ratio(&figures.p99, &direct.p99),
        );
    }
    println!(
        "mtls: both ztunnels together {:.3} CPU s per 1,000 round trips; peak RSS n1 {}, n2 {}",
        median(&mtls.cpu_per_1k),
        rss[0],
        rss[1]
    );
    println!("(ratios are to direct, measured in the same run; latency is closed-loop)");
    Ok(())
}

fn bulk(client: &Pod, server: &Pod) -> Result<f64> {
    let child = app::bulk_send(client, server.addr_v4(SINK_PORT), 1 << 30, 128 * 1024)?;
    common::report(client.name(), child)?["gbit_per_s"]
        .as_f64()
        .context("gbit_per_s")
}

fn ping_pong(client: &Pod, server: &Pod) -> Result<(f64, f64)> {
    let to = server.addr_v4(ECHO_PORT).to_string();
    let count = PING_COUNT.to_string();
    let child = client.spawn(Command::new(pod_app()).args([
        "ping-pong",
        "--to",
        &to,
        "--count",
        &count,
        "--size",
        "64",
    ]))?;
    let report = common::report(client.name(), child)?;
    Ok((
        report["p50_us"].as_f64().context("p50_us")?,
        report["p99_us"].as_f64().context("p99_us")?,
    ))
}

/// User + system CPU seconds of the processes, from `/proc/<pid>/stat`.
fn cpu_seconds(pids: &[u32]) -> Result<f64> {
    // USER_HZ, the unit of /proc/<pid>/stat times, is 100 on Linux.
    const CLOCK_TICKS_PER_SEC: f64 = 100.0;
    let mut ticks = 0u64;
    for pid in pids {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) start after ") ".
        let after = stat
            .rsplit_once(") ")
            .context("malformed /proc/pid/stat")?
            .1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
        ticks += fields.get(11).context("utime")?.parse::<u64>()?;
        ticks += fields.get(12).context("stime")?.parse::<u64>()?;
    }
    #[expect(clippy::cast_precision_loss, reason = "a CPU-time figure")]
    Ok(ticks as f64 / CLOCK_TICKS_PER_SEC)
}

/// Peak resident set size (`VmHWM`) in MiB.
fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .context("VmHWM")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kib / 1024.0)
}
