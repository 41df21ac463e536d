//! Ambit never writes iptables or nftables rules: not on the host, not on a node, not
//! in a pod, even with pods enrolled and traffic flowing.

use std::{process::Command, time::Duration};

use ambit_e2e::{MeshNode, MeshOptions, PodSpec, TestNet, app};
use anyhow::{Result, ensure};

/// The rules in the current or given network namespace's iptables and nftables.
fn rules(output_of: impl Fn(&mut Command) -> Result<String>) -> Result<Vec<String>> {
    let iptables = output_of(&mut Command::new("iptables-save"))?;
    let ip6tables = output_of(&mut Command::new("ip6tables-save"))?;
    let nft = output_of(Command::new("nft").args(["list", "ruleset"]))?;
    Ok(iptables
        .lines()
        .chain(ip6tables.lines())
        .filter(|line| line.starts_with("-A"))
        .chain(nft.lines().filter(|line| !line.trim().is_empty()))
        .map(str::to_owned)
        .collect())
}

#[test]
fn no_rule_exists_anywhere_with_the_mesh_running() -> Result<()> {
    let Some(net) = TestNet::new("no_firewall_rules") else {
        return Ok(());
    };
    net.write_namespace("shop", [("istio.io/dataplane-mode", "ambient")])?;
    let node = net.add_node("n1")?;
    let _mesh = MeshNode::install(&net, &node, MeshOptions::default())?;
    let client = node.add_pod(PodSpec::new("shop", "client"))?;
    let server = node.add_pod(PodSpec::new("shop", "server"))?;
    let _app = app::serve(&server, "[::]:8080".parse()?)?;
    app::connect(&client, server.addr_v4(8080))?.expect_ok()?;

    let timeout = Duration::from_secs(10);
    let host = rules(|c| Ok(String::from_utf8_lossy(&c.output()?.stdout).into_owned()))?;
    ensure!(host.is_empty(), "the host has firewall rules: {host:#?}");
    let on_node = rules(|c| Ok(node.exec(c, timeout)?.success()?.stdout))?;
    ensure!(
        on_node.is_empty(),
        "node n1 has firewall rules: {on_node:#?}"
    );
    for pod in [&client, &server] {
        let in_pod = rules(|c| Ok(pod.exec(c, timeout)?.success()?.stdout))?;
        ensure!(
            in_pod.is_empty(),
            "pod {} has firewall rules: {in_pod:#?}",
            pod.name()
        );
    }
    Ok(())
}
