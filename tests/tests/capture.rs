//! Traffic capture end to end: pods created through the real CNI plugins on simulated
//! nodes running Ambit's agent and ztunnel; real TCP between them.

use std::{net::SocketAddr, process::Command, time::Duration};

use ambit_e2e::{
    MeshNode, MeshOptions, Pod, PodSpec, TestNet,
    app::{self, ConnectReport},
    mesh::Metrics,
    wait_until,
};
use ambit_ztunnel::config::DRAIN_TIMEOUT_SECS;
use anyhow::{Context as _, Result, ensure};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
const OPENED: &str = "istio_tcp_connections_opened_total";
const APP_PORT: u16 = 8080;
/// How long an access-log line may take to appear after the connection ended.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// A test cluster: `nodes` nodes running Ambit, namespace `shop` labelled ambient and
/// namespace `plain` left alone.
fn cluster(
    test: &str,
    nodes: usize,
    options: MeshOptions,
) -> Result<Option<(TestNet, Vec<MeshNode>)>> {
    let Some(net) = TestNet::new(test) else {
        return Ok(None);
    };
    net.write_namespace("shop", [AMBIENT])?;
    net.write_namespace("plain", Vec::<(String, String)>::new())?;
    let mut meshes = Vec::new();
    for index in 1..=nodes {
        let node = net.add_node(&format!("n{index}"))?;
        meshes.push(MeshNode::install(&net, &node, options)?);
    }
    Ok(Some((net, meshes)))
}

/// Connects from `client` to `to` and checks the app saw nothing unusual: the
/// connection worked, `getpeername` shows `to`, and the server was reached on `to`.
fn expect_transparent(client: &Pod, to: SocketAddr) -> Result<ConnectReport> {
    let report = app::connect(client, to)?.expect_ok()?;
    ensure!(
        report.peer == Some(to),
        "getpeername should show {to}, got {:?}",
        report.peer
    );
    let saw = report.server_saw.clone().context("server greeting")?;
    ensure!(
        saw.local == to,
        "the server should be reached on {to}, it saw {saw:?}"
    );
    ensure!(report.echo.as_deref() == Some("hello"), "echo: {report:?}");
    Ok(report)
}

fn opened(metrics: &Metrics, reporter: &str, workload_label: &str, workload: &str) -> f64 {
    metrics.sum(
        OPENED,
        &[("reporter", reporter), (workload_label, workload)],
    )
}

#[test]
fn enrolled_pods_are_captured_on_the_same_node_and_across_nodes_ipv4_and_ipv6() -> Result<()> {
    let Some((_net, mesh)) = cluster("captured_pod_to_pod", 2, MeshOptions::default())? else {
        return Ok(());
    };
    let client = mesh[0].node().add_pod(PodSpec::new("shop", "client"))?;
    let near = mesh[0].node().add_pod(PodSpec::new("shop", "near"))?;
    let far = mesh[1].node().add_pod(PodSpec::new("shop", "far"))?;
    let _near_app = app::serve(&near, "[::]:8080".parse()?)?;
    let _far_app = app::serve(&far, "[::]:8080".parse()?)?;

    let targets = [
        near.addr_v4(APP_PORT),
        near.addr_v6(APP_PORT),
        far.addr_v4(APP_PORT),
        far.addr_v6(APP_PORT),
    ];
    for to in targets {
        let report = expect_transparent(&client, to).with_context(|| format!("client -> {to}"))?;
        // Delivered from the client's own address, not ztunnel's or the server pod's.
        let peer = report.server_saw.context("greeting")?.peer.ip();
        ensure!(
            client.ips().contains(&peer),
            "the server should see the client's address, it saw {peer}"
        );
    }

    // Every connection passed through the client's ztunnel once (no loop), and
    // through the server's ztunnel once on the way in.
    let n1 = mesh[0].metrics()?;
    let n2 = mesh[1].metrics()?;
    let outbound = opened(&n1, "source", "source_workload", "client");
    ensure!(
        outbound == 4.0,
        "client's ztunnel should report 4 outbound connections, got {outbound}\n{}",
        n1.0
    );
    let near_in = opened(&n1, "destination", "destination_workload", "near");
    let far_in = opened(&n2, "destination", "destination_workload", "far");
    ensure!(
        near_in == 2.0 && far_in == 2.0,
        "inbound: near {near_in}, far {far_in} (expected 2 each)"
    );

    // The access log names the original destinations (a line is written when the
    // connection ends, which may be just after the client saw its echo).
    for to in targets {
        let needle = format!("dst=Some({to})");
        mesh[0]
            .ztunnel()?
            .wait_for_log(&needle, LOG_TIMEOUT)
            .with_context(|| format!("an access-log line for {to}"))?;
    }
    Ok(())
}

#[test]
fn pods_outside_the_mesh_are_not_captured() -> Result<()> {
    let Some((_net, mesh)) = cluster("not_captured", 1, MeshOptions::default())? else {
        return Ok(());
    };
    let node = mesh[0].node();
    let plain = node.add_pod(PodSpec::new("plain", "plain-client"))?;
    let opted_out =
        node.add_pod(PodSpec::new("shop", "opted-out").label("istio.io/dataplane-mode", "none"))?;
    let server = node.add_pod(PodSpec::new("plain", "plain-server"))?;
    let _app = app::serve(&server, "[::]:8080".parse()?)?;

    for client in [&plain, &opted_out] {
        for to in [server.addr_v4(APP_PORT), server.addr_v6(APP_PORT)] {
            expect_transparent(client, to)?;
        }
    }
    let served = mesh[0].served_workloads()?;
    ensure!(
        served.is_empty(),
        "ztunnel should serve no pod, it serves {served:?}"
    );
    let metrics = mesh[0].metrics()?;
    ensure!(
        metrics.sum(OPENED, &[]) == 0.0,
        "ztunnel relayed something:\n{}",
        metrics.0
    );
    Ok(())
}

#[test]
fn inbound_from_outside_the_mesh_is_captured_with_its_original_destination() -> Result<()> {
    let Some((_net, mesh)) = cluster("inbound_captured", 2, MeshOptions::default())? else {
        return Ok(());
    };
    let outsider = mesh[1].node().add_pod(PodSpec::new("plain", "outsider"))?;
    let server = mesh[0].node().add_pod(PodSpec::new("shop", "server"))?;
    let _app = app::serve(&server, "[::]:8080".parse()?)?;

    for to in [server.addr_v4(APP_PORT), server.addr_v6(APP_PORT)] {
        let report = expect_transparent(&outsider, to)?;
        let peer = report.server_saw.context("greeting")?.peer.ip();
        ensure!(
            outsider.ips().contains(&peer),
            "the app should see the true client address, it saw {peer}"
        );
    }
    let metrics = mesh[0].metrics()?;
    let inbound = opened(&metrics, "destination", "destination_workload", "server");
    ensure!(
        inbound == 2.0,
        "server's ztunnel should report 2 inbound connections, got {inbound}"
    );
    for to in [server.addr_v4(APP_PORT), server.addr_v6(APP_PORT)] {
        let needle = format!("dst=Some({to})");
        mesh[0]
            .ztunnel()?
            .wait_for_log_line(LOG_TIMEOUT, |l| {
                l.contains("direction=Inbound") && l.contains(&needle)
            })
            .with_context(|| format!("ztunnel should log the inbound connection to {to}"))?;
    }
    Ok(())
}

#[test]
fn enrolled_pods_fail_closed_while_ztunnel_is_down_and_recover() -> Result<()> {
    let Some((_net, mut mesh)) = cluster("fail_closed", 1, MeshOptions::default())? else {
        return Ok(());
    };
    let node = mesh[0].node().clone();
    let client = node.add_pod(PodSpec::new("shop", "client"))?;
    let server = node.add_pod(PodSpec::new("shop", "server"))?;
    let outsider = node.add_pod(PodSpec::new("plain", "outsider"))?;
    let _app = app::serve(&server, "[::]:8080".parse()?)?;
    expect_transparent(&client, server.addr_v4(APP_PORT))?;

    mesh[0].stop_ztunnel()?;
    let short = Duration::from_secs(3);
    for (who, from) in [("outbound", &client), ("inbound", &outsider)] {
        let report = app::connect_with(from, server.addr_v4(APP_PORT), "hello", short)?;
        ensure!(
            !report.ok,
            "{who}: with ztunnel down the connection must fail, it worked: {report:?}"
        );
        ensure!(
            report.error_kind.as_deref() == Some("ConnectionRefused"),
            "{who}: expected a refused connection, got {report:?}"
        );
    }

    mesh[0].start_ztunnel()?;
    expect_transparent(&client, server.addr_v4(APP_PORT))
        .context("outbound after ztunnel returned")?;
    expect_transparent(&outsider, server.addr_v4(APP_PORT))
        .context("inbound after ztunnel returned")?;
    Ok(())
}

#[test]
fn capture_survives_an_agent_restart_and_uninstall_removes_everything() -> Result<()> {
    let Some((_net, mut mesh)) = cluster("agent_restart", 1, MeshOptions::default())? else {
        return Ok(());
    };
    let node = mesh[0].node().clone();
    let client = node.add_pod(PodSpec::new("shop", "client"))?;
    let server = node.add_pod(PodSpec::new("plain", "server"))?;
    let _app = app::serve(&server, "[::]:8080".parse()?)?;
    let to = server.addr_v4(APP_PORT);

    // A long transfer in flight across the restart.
    let _sink = app::sink(&server, "[::]:9000".parse()?)?;
    let transfer = app::bulk_send(&client, server.addr_v4(9000), 2_000_000_000, 65_536)?;

    mesh[0].stop_agent()?;
    expect_transparent(&client, to).context("with the agent stopped")?;
    let relayed = |mesh: &MeshNode| -> Result<f64> {
        Ok(opened(
            &mesh.metrics()?,
            "source",
            "source_workload",
            "client",
        ))
    };
    let before = relayed(&mesh[0])?;
    ensure!(
        before >= 1.0,
        "the connection should have been relayed while the agent was away"
    );

    mesh[0].start_agent()?;
    mesh[0].agent()?.wait_for_log(
        "adopting the pinned capture programs",
        Duration::from_secs(5),
    )?;
    wait_until("ztunnel to reconnect", Duration::from_secs(10), || {
        mesh[0]
            .agent()
            .is_ok_and(|a| a.stdout().contains("ztunnel connected"))
    })?;
    expect_transparent(&client, to).context("after the agent restarted")?;
    ensure!(
        relayed(&mesh[0])? > before,
        "the connection after the restart was not relayed"
    );
    ensure!(
        transfer.try_status()?.is_none(),
        "the transfer should still be running across the restart (make it longer)"
    );
    let done = transfer.finish(Duration::from_secs(90))?;
    ensure!(
        done.stdout.contains(r#""ok":true"#),
        "the transfer across the agent restart failed: {done}"
    );

    mesh[0].stop_agent()?;
    mesh[0].uninstall()?;
    ensure!(
        !mesh[0].bpffs_dir().exists(),
        "uninstall should remove {}",
        mesh[0].bpffs_dir().display()
    );
    let attached = std::process::Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(node.cgroup_path())
        .output()?;
    let attached = String::from_utf8_lossy(&attached.stdout);
    ensure!(
        !attached.contains("ambit_"),
        "programs still attached to the node cgroup after uninstall:\n{attached}"
    );
    // Uncaptured now: ztunnel (still running) relays nothing more.
    let relayed_before = relayed(&mesh[0])?;
    expect_transparent(&client, to)?;
    ensure!(
        relayed(&mesh[0])? == relayed_before,
        "a connection was still captured after uninstall"
    );
    Ok(())
}

#[test]
fn sockmap_acceleration_joins_app_and_ztunnel_and_keeps_every_byte() -> Result<()> {
    let options = MeshOptions {
        sockmap_acceleration: true,
        ..MeshOptions::default()
    };
    let Some((_net, mesh)) = cluster("sockmap", 1, options)? else {
        return Ok(());
    };
    let node = mesh[0].node().clone();
    let client = node.add_pod(PodSpec::new("shop", "client"))?;
    let server = node.add_pod(PodSpec::new("plain", "server"))?;
    let _app = app::serve(&server, "[::]:8080".parse()?)?;
    let sink = app::sink(&server, "[::]:9000".parse()?)?;

    let bytes: u64 = 3_000_000_000;
    let transfer = app::bulk_send(&client, server.addr_v4(9000), bytes, 4_096)?;
    // While it runs, the app's socket and ztunnel's accepted socket are in the SOCKHASH.
    let map = mesh[0].bpffs_dir().join("maps/AMBIT_LOCAL_SK");
    wait_until(
        "both ends of the connection in the SOCKHASH",
        Duration::from_secs(10),
        || sockhash_entries(&map).is_ok_and(|n| n >= 2),
    )?;
    // The server's own count proves every byte arrived in order of the stream.
    sink.wait_for_log(
        &format!(r#"{{"received":{bytes}}}"#),
        Duration::from_secs(60),
    )
    .context("the server should receive every byte sent through the accelerated pair")?;
    // The client's blocking read of the reply can fail with EAGAIN on this kernel: the
    // reason acceleration is off by default (docs/ARCHITECTURE.md, "Sockmap
    // acceleration"). Any other outcome than success or that is a failure.
    let done = transfer.finish(Duration::from_secs(60))?;
    ensure!(
        done.stdout.contains(r#""ok":true"#)
            || done.stdout.contains(r#""error_kind":"WouldBlock""#),
        "the accelerated transfer failed: {done}"
    );
    expect_transparent(&client, server.addr_v6(APP_PORT))?;
    Ok(())
}

/// The number of sockets in a pinned SOCKHASH (`bpftool map dump`).
fn sockhash_entries(map: &std::path::Path) -> Result<usize> {
    let out = Command::new("bpftool")
        .args(["--json", "map", "dump", "pinned"])
        .arg(map)
        .output()?;
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("bpftool map dump: {}", String::from_utf8_lossy(&out.stderr)))?;
    Ok(entries.as_array().map_or(0, Vec::len))
}

#[test]
fn ztunnel_lets_connections_in_flight_finish_when_it_stops() -> Result<()> {
    let Some((_net, mesh)) = cluster("ztunnel_drain", 1, MeshOptions::default())? else {
        return Ok(());
    };
    let node = mesh[0].node().clone();
    let client = node.add_pod(PodSpec::new("shop", "client"))?;
    let server = node.add_pod(PodSpec::new("plain", "server"))?;
    let _sink = app::sink(&server, "[::]:9000".parse()?)?;
    let transfer = app::bulk_send(&client, server.addr_v4(9000), 1_000_000_000, 65_536)?;
    wait_until(
        "the transfer to be relayed",
        Duration::from_secs(10),
        || {
            mesh[0]
                .metrics()
                .is_ok_and(|m| opened(&m, "source", "source_workload", "client") >= 1.0)
        },
    )?;
    ensure!(
        transfer.try_status()?.is_none(),
        "the transfer ended before ztunnel was stopped"
    );
    // Room for ztunnel's whole drain: the harness's usual grace is shorter, and its
    // SIGKILL would cut the transfer a busy host had not finished (a reset, not a drain).
    let grace = Duration::from_secs(DRAIN_TIMEOUT_SECS + 5);
    let status = mesh[0].ztunnel()?.stop_within(grace)?;
    let done = transfer.finish(Duration::from_secs(30))?;
    ensure!(
        done.stdout.contains(r#""ok":true"#),
        "the transfer in flight was cut: {done}"
    );
    ensure!(
        status.success(),
        "ztunnel should exit cleanly after draining: {status}"
    );
    Ok(())
}

#[test]
fn labelling_a_namespace_moves_its_running_pods_in_and_out_of_the_mesh() -> Result<()> {
    let Some((net, mesh)) = cluster("relabel", 1, MeshOptions::default())? else {
        return Ok(());
    };
    net.write_namespace("later", Vec::<(String, String)>::new())?;
    let node = mesh[0].node().clone();
    let client = node.add_pod(PodSpec::new("later", "client"))?;
    let server = node.add_pod(PodSpec::new("plain", "server"))?;
    let _app = app::serve(&server, "[::]:8080".parse()?)?;
    let to = server.addr_v4(APP_PORT);
    let relayed = || -> Result<f64> {
        Ok(opened(
            &mesh[0].metrics()?,
            "source",
            "source_workload",
            "client",
        ))
    };
    ensure!(
        mesh[0].served_workloads()?.is_empty(),
        "nothing is enrolled yet"
    );

    // kubectl label namespace later istio.io/dataplane-mode=ambient
    net.write_namespace("later", [AMBIENT])?;
    wait_until(
        "the running pod to join the mesh",
        Duration::from_secs(10),
        || mesh[0].served_workloads().is_ok_and(|w| w == ["client"]),
    )?;
    expect_transparent(&client, to)?;
    ensure!(
        relayed()? == 1.0,
        "the pod's connection should now be captured"
    );

    // kubectl label namespace later istio.io/dataplane-mode-
    net.write_namespace("later", Vec::<(String, String)>::new())?;
    wait_until("the pod to leave the mesh", Duration::from_secs(10), || {
        mesh[0].served_workloads().is_ok_and(|w| w.is_empty())
    })?;
    expect_transparent(&client, to)?;
    ensure!(
        relayed()? == 1.0,
        "after leaving, the pod's connections must not be captured"
    );
    Ok(())
}
