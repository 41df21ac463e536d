//! `--keep`: once every step passed, the mesh stays up with a list of commands to poke
//! at it, until the person presses Enter.

use std::io::BufRead as _;

use ambit_e2e::mesh::{ADMIN_PORT as ZTUNNEL_ADMIN_PORT, METRICS_PORT as ZTUNNEL_METRICS_PORT};
use anyhow::{Context as _, Result};

use crate::{cluster::Cluster, steps::WAYPOINT_METRICS_PORT};

/// Prints how to poke at the running mesh, then waits for Enter (or the end of stdin).
pub fn until_enter(cluster: &Cluster<'_>) -> Result<()> {
    println!("\n{}", poke_commands(cluster)?);
    std::io::stdin()
        .lock()
        .lines()
        .next()
        .transpose()
        .context("reading stdin")?;
    println!("removing everything…");
    Ok(())
}

fn poke_commands(cluster: &Cluster<'_>) -> Result<String> {
    let outsider = cluster.pod("outsider")?.netns_name();
    let gateway = cluster.pod("ingress-0")?.ipv4();
    let waypoint = cluster.pod("waypoint-0")?.netns_name();
    let node1 = cluster.nodes[0].node().netns_name();
    let config = cluster.net.config_dir();
    Ok(format!(
        "The mesh keeps running. Poke at it (as root):
  the app through the ingress gateway, from legacy/outsider (outside the mesh):
    ip netns exec {outsider} curl -s http://{gateway}/
    ip netns exec {outsider} curl -sk --resolve shop.example.com:443:{gateway} https://shop.example.com/
  the waypoint's Istio metrics:
    ip netns exec {waypoint} curl -s localhost:{WAYPOINT_METRICS_PORT}/metrics | grep istio_requests_total
  node1's ztunnel: config dump and metrics:
    ip netns exec {node1} curl -s localhost:{ZTUNNEL_ADMIN_PORT}/config_dump
    ip netns exec {node1} curl -s localhost:{ZTUNNEL_METRICS_PORT}/metrics | grep istio_tcp
  change the canary live (say, the backends' weights 50/50), then curl through the
  gateway again:
    $EDITOR {config}/http-route.yaml
  the components' logs:
    ls {logs}
Press Enter to remove everything. After Ctrl-C or a crash, `cargo xtask demo --down` does it.",
        config = config.display(),
        logs = cluster.net.logs_dir().display(),
    ))
}
