//! `cargo xtask bench l7`: what an HTTP request costs through Ambit's L7 proxy — the
//! ingress gateway and the waypoint — against no proxy and against nginx with the same
//! routes, measured in the same run so the ratios hold on a noisy machine.
//!
//! Two simulated nodes with the real CA, controller, agents and ztunnels; clients and
//! proxies on n1, HTTP servers (`pod-app http`) on n2 (see `cluster`). Four paths:
//! - **direct**: a plain client pod → a plain app pod;
//! - **nginx**: the client → nginx in a pod (Debian's, one worker, three `location`s to
//!   three keep-alive upstreams) → three plain app pods;
//! - **ingress-plain**: the client → `ambit-waypoint --ingress` (an Istio Gateway on
//!   port 80, a VirtualService with the same three routes) → the plain pods in plain
//!   TCP: nginx's own path, so Ambit's L7 engine alone against nginx;
//! - **ingress**: the client → another such gateway (routes to `app-edge`) → HBONE →
//!   the pods' ztunnel → three enrolled app pods: the previous path plus the mutual TLS
//!   to the pods;
//! - **waypoint**: an enrolled client → its ztunnel → HBONE → `ambit-waypoint` (the same
//!   routes) → HBONE → the pods' ztunnel → the app pods: the whole ambient L7 path.
//!
//! Each path takes HTTP/1.1 and HTTP/2 (prior knowledge) at 1,000 and then 10,000
//! requests a second for 5 s, `/v1`, `/v2`, `/v3` in turn (see `load` for how each is
//! timed). For each: the achieved rate, p50 and p99, errors, the CPU seconds per 1,000
//! requests of the L7 proxy (nginx's master and worker, or the Ambit proxy's process)
//! and of both ztunnels, and the proxy's peak RSS during the step. Every proxy speaks
//! HTTP/1.1 to the pods (`pod-app http`, whose minimal HTTP/2 answers the direct path's
//! h2load). Each figure is the median of `AMBIT_BENCH_RUNS` runs (default 3), but the
//! RSS per step, which is the first run's: only then has a proxy at 1,000 req/s never
//! served more (memory it took for 10,000 req/s stays with it). `AMBIT_BENCH_JSON=1`
//! prints one JSON object instead of tables.
//!
//! # Layout
//! - `cluster`: the nodes, pods, Services and Istio config, Ambit's proxies started;
//! - `nginx`: nginx's config and process;
//! - `load`: the HTTP/1.1 (`pod-app rate --http`) and HTTP/2 (h2load) loads;
//! - `table`: the figures, printed as tables or JSON;
//! - shared with the other benches: `common::pinning` (clients on CPU 0, servers on
//!   CPU 1, proxies free) and `common::proc_stats` (CPU time and RSS from /proc).

#[path = "../common/mod.rs"]
mod common;

mod cluster;
mod load;
mod nginx;
mod table;

use std::net::SocketAddr;

use ambit_e2e::Pod;
use anyhow::Result;
use cluster::{APP_PORT, APP_VIP, Cluster, INGRESS_PORT, SERVICE_PORT, VERSIONS};
use common::proc_stats;
use load::Protocol;
use nginx::Nginx;
use table::{Conditions, Figures, PROTOCOLS, RATES, Row};

/// Measures only these paths (comma-separated names, with direct always): for
/// looking into one.
const ONLY_PATHS: &str = "AMBIT_BENCH_PATHS";

/// A client, where it sends each protocol (`None`: not spoken there), and whose CPU
/// time counts.
struct Path<'a> {
    name: &'static str,
    client: &'a Pod,
    http1: SocketAddr,
    http2: Option<SocketAddr>,
    /// The L7 proxy's processes (none on the direct path), and what they are called.
    proxy: Vec<u32>,
    proxy_name: &'static str,
    /// Which version answers each of `cluster::PATHS`.
    expect: [&'static str; 3],
}

impl Path<'_> {
    fn to(&self, protocol: Protocol) -> Option<SocketAddr> {
        match protocol {
            Protocol::Http1 => Some(self.http1),
            Protocol::Http2 => self.http2,
        }
    }
}

fn main() -> std::process::ExitCode {
    common::main("l7", run)
}

fn run() -> Result<()> {
    let runs = common::runs();
    let cluster = Cluster::start()?;
    let upstreams: Vec<SocketAddr> = cluster.web.iter().map(|p| p.addr_v4(APP_PORT)).collect();
    let nginx = Nginx::start(&cluster.net, &cluster.nginx_pod, &upstreams)?;
    let ztunnels = cluster.ztunnels()?;
    let ingress_at = cluster.ingress_pod.addr_v4(INGRESS_PORT);
    let ingress_plain_at = cluster.ingress_plain_pod.addr_v4(INGRESS_PORT);
    let vip = SocketAddr::from((APP_VIP, SERVICE_PORT));
    let paths = [
        Path {
            name: "direct",
            client: &cluster.client,
            http1: upstreams[0],
            http2: Some(upstreams[0]),
            proxy: Vec::new(),
            proxy_name: "",
            expect: [VERSIONS[0]; 3],
        },
        Path {
            name: "nginx",
            client: &cluster.client,
            http1: cluster.nginx_pod.addr_v4(nginx::HTTP1_PORT),
            http2: Some(cluster.nginx_pod.addr_v4(nginx::HTTP2_PORT)),
            proxy: nginx.pids().to_vec(),
            proxy_name: "nginx master + worker",
            expect: VERSIONS,
        },
        Path {
            name: "ingress-plain",
            client: &cluster.client,
            http1: ingress_plain_at,
            http2: Some(ingress_plain_at),
            proxy: vec![cluster.ingress_plain.pid()],
            proxy_name: "ambit-waypoint --ingress",
            expect: VERSIONS,
        },
        Path {
            name: "ingress",
            client: &cluster.client,
            http1: ingress_at,
            http2: Some(ingress_at),
            proxy: vec![cluster.ingress.pid()],
            proxy_name: "ambit-waypoint --ingress",
            expect: VERSIONS,
        },
        Path {
            name: "waypoint",
            client: &cluster.mesh_client,
            http1: vip,
            http2: Some(vip),
            proxy: vec![cluster.waypoint.pid()],
            proxy_name: "ambit-waypoint",
            expect: VERSIONS,
        },
    ];
    let only = std::env::var(ONLY_PATHS).unwrap_or_default();
    // The direct path always: it is the baseline.
    let paths: Vec<Path<'_>> = paths
        .into_iter()
        .filter(|path| {
            path.name == "direct"
                || only.is_empty()
                || only.split(',').any(|name| name == path.name)
        })
        .collect();
    for path in &paths {
        cluster.wait_routes(path.client, path.http1, path.expect)?;
    }
    let mut figures: Vec<Figures> = paths.iter().map(|_| Figures::default()).collect();
    for run in 1..=runs {
        eprintln!("run {run}/{runs}");
        // Interleaved, so drift on the machine hits every path alike.
        for (path, figures) in paths.iter().zip(&mut figures) {
            measure(&cluster, path, &ztunnels, figures)?;
        }
    }

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
            baseline: &figures[0],
            proxy_name: path.proxy_name,
        })
        .collect();
    if common::json_output() {
        println!("{}", table::to_json(&rows, &conditions));
    } else {
        table::print_table(&rows, &conditions);
    }
    Ok(())
}

/// One run of one path: each protocol it speaks at each rate, the slower rate first
/// (so the first run's 1,000 req/s steps see a proxy that has served no more), with
/// the proxies' and the machine's CPU time around each step and the proxy's peak RSS
/// in it. A failed measurement is recorded, not retried: it is a finding.
fn measure(
    cluster: &Cluster,
    path: &Path<'_>,
    ztunnels: &[u32],
    figures: &mut Figures,
) -> Result<()> {
    for (r, rate) in RATES.into_iter().enumerate() {
        for (p, protocol) in PROTOCOLS.into_iter().enumerate() {
            let Some(to) = path.to(protocol) else {
                continue;
            };
            let at = &mut figures.steps[p][r];
            for &pid in &path.proxy {
                proc_stats::reset_peak_rss(pid)?;
            }
            let proxy_before = proc_stats::cpu_seconds(&path.proxy)?;
            let ztunnels_before = proc_stats::cpu_seconds(ztunnels)?;
            let machine_before = proc_stats::uptime_and_idle()?;
            let answered = load::run(protocol, path.client, to, rate, cluster.net.dir());
            if !path.proxy.is_empty() {
                at.proxy_peak_rss_kib.push(
                    path.proxy
                        .iter()
                        .map(|&pid| proc_stats::peak_rss_kib(pid))
                        .sum::<Result<u64>>()?,
                );
            }
            let answered = match answered {
                Ok(answered) => answered,
                Err(error) => {
                    figures
                        .failures
                        .push(format!("{protocol} {rate} req/s: {error:#}"));
                    continue;
                }
            };
            let proxy = proc_stats::cpu_seconds(&path.proxy)? - proxy_before;
            let zt = proc_stats::cpu_seconds(ztunnels)? - ztunnels_before;
            let busy = proc_stats::busy_share(
                machine_before,
                proc_stats::uptime_and_idle()?,
                proc_stats::cpus(),
            );
            if answered.errors > 0.0 {
                figures.failures.push(format!(
                    "{protocol} {rate} req/s: {} errors ({})",
                    answered.errors,
                    answered.first_error.as_deref().unwrap_or("no error given")
                ));
            }
            at.achieved_per_s.push(answered.achieved_per_s);
            at.p50_us.push(answered.p50_us);
            at.p99_us.push(answered.p99_us);
            at.errors.push(answered.errors);
            at.proxy_cpu_per_1k
                .push(proxy / answered.answered * 1_000.0);
            at.ztunnel_cpu_per_1k.push(zt / answered.answered * 1_000.0);
            at.machine_busy.push(busy);
        }
    }
    Ok(())
}
