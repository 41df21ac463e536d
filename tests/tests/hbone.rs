//! HBONE end to end: two simulated nodes running the real agent and ztunnel, with the
//! real CA (`ambit-controller serve-ca`) and config push (`ambit-controller serve`) on
//! node n1's underlay address. A connection between enrolled pods on different nodes
//! goes over mutual TLS with SPIFFE identities — a capture on n2's underlay interface
//! never shows the payload — while a connection to a pod outside the mesh stays
//! plaintext.

use std::{path::Path, process::Command, time::Duration};

use ambit_e2e::{
    ChildGuard, ControlPlane, MeshNode, Node, PodSpec, TestNet, app, mesh::Metrics, wait_for,
};
use anyhow::{Context as _, Result, ensure};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
const APP_PORT: u16 = 8080;
const ALPHA: &str = "spiffe://cluster.local/ns/shop/sa/alpha";
const BETA: &str = "spiffe://cluster.local/ns/shop/sa/beta";
const OPENED: &str = "istio_tcp_connections_opened_total";
/// Sent across the mesh: must never be seen on the wire.
const SECRET: &str = "ambit-hbone-secret-payload-7f3a";
/// Sent to a pod outside the mesh: must be seen on the wire (proves the capture works).
const PLAIN: &str = "ambit-plaintext-payload-c41d";
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// `dumpcap` (from tshark) writing every frame on `node`'s underlay interface to `file`.
fn capture(node: &Node, file: &Path) -> Result<ChildGuard> {
    let dumpcap = node.spawn(
        Command::new("dumpcap")
            .args(["-i", "eth0", "-n", "-P", "-w"])
            .arg(file),
    )?;
    dumpcap
        .wait_for_log("File:", READY_TIMEOUT)
        .context("waiting for dumpcap (apt-get install -y tshark)")?;
    Ok(dumpcap)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// How many frames in `file` match the display filter `filter`.
fn frames(file: &Path, filter: &str) -> Result<usize> {
    let out = Command::new("tshark")
        .args(["-n", "-d", "tcp.port==15008,tls", "-r"])
        .arg(file)
        .args(["-Y", filter])
        .output()
        .context("running tshark -r")?;
    ensure!(
        out.status.success(),
        "tshark -r {} -Y {filter:?} failed: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).lines().count())
}

fn opened(metrics: &Metrics, labels: &[(&str, &str)]) -> f64 {
    metrics.sum(OPENED, labels)
}

#[test]
fn enrolled_pods_on_different_nodes_talk_over_mutual_tls() -> Result<()> {
    let Some(net) = TestNet::new("hbone") else {
        return Ok(());
    };
    net.write_namespace("shop", [AMBIENT])?;
    net.write_namespace("plain", Vec::<(String, String)>::new())?;
    let n1 = net.add_node("n1")?;
    let n2 = net.add_node("n2")?;
    let control = ControlPlane::new(&net, &n1)?;
    let meshes = control.install(&net, &[&n1, &n2])?;
    let client = n1.add_pod(PodSpec::new("shop", "client").service_account("alpha"))?;
    let near = n1.add_pod(PodSpec::new("shop", "near").service_account("alpha"))?;
    let server = n2.add_pod(PodSpec::new("shop", "server").service_account("beta"))?;
    let outsider = n2.add_pod(PodSpec::new("plain", "outsider"))?;
    let _server_app = app::serve(&server, "[::]:8080".parse()?)?;
    let _near_app = app::serve(&near, "[::]:8080".parse()?)?;
    let _outsider_app = app::serve(&outsider, "[::]:8080".parse()?)?;
    // The CA reads which pods run where when it starts: start it after the pods.
    let _control = control.start(&net)?;

    meshes[0].wait_certificate(ALPHA, READY_TIMEOUT)?;
    meshes[1].wait_certificate(BETA, READY_TIMEOUT)?;
    meshes[0].wait_peer(&server.ipv4().to_string(), Some(BETA), READY_TIMEOUT)?;

    let pcap = net.dir().join("n2-underlay.pcap");
    let dumpcap = capture(&n2, &pcap)?;

    // (a) Across the mesh: works, the app sees the client's own address.
    for to in [server.addr_v4(APP_PORT), server.addr_v6(APP_PORT)] {
        let report = app::connect_with(&client, to, SECRET, Duration::from_secs(5))?
            .expect_ok()
            .with_context(|| format!("client -> server at {to} over HBONE"))?;
        ensure!(
            report.echo.as_deref() == Some(SECRET),
            "the echo should come back: {report:?}"
        );
        let saw = report.server_saw.context("the server's greeting")?;
        ensure!(
            client.ips().contains(&saw.peer.ip()),
            "the server should see the client's address {:?}, it saw {}",
            client.ips(),
            saw.peer.ip()
        );
    }
    // On the same node too (the fast path: no TLS, same identities and telemetry).
    let report = app::connect_with(
        &client,
        near.addr_v4(APP_PORT),
        SECRET,
        Duration::from_secs(5),
    )?
    .expect_ok()
    .context("client -> near on the same node")?;
    ensure!(
        report.echo.as_deref() == Some(SECRET),
        "the echo should come back: {report:?}"
    );
    // Fail closed: nothing listens on the server's port 9, so the tunnel is refused (503,
    // after ztunnel's 5 s upstream connect timeout) and the app's connection fails
    // instead of going around it.
    let refused = app::connect_with(&client, server.addr_v4(9), SECRET, Duration::from_secs(8))?;
    ensure!(
        !refused.ok,
        "a refused tunnel should fail the app's connection: {refused:?}"
    );
    // (c) Outside the mesh: still plaintext, still works.
    app::connect_with(
        &client,
        outsider.addr_v4(APP_PORT),
        PLAIN,
        Duration::from_secs(5),
    )?
    .expect_ok()
    .context("client -> a pod outside the mesh, in plaintext")?;

    // Both ztunnels report the connections as mutual TLS between the two identities.
    let hbone_labels = |reporter| {
        [
            ("reporter", reporter),
            ("connection_security_policy", "mutual_tls"),
            ("source_principal", ALPHA),
            ("destination_principal", BETA),
        ]
    };
    let source = wait_for(
        "n1's ztunnel to report 2 mutual-TLS connections",
        Duration::from_secs(5),
        || -> Result<Option<Metrics>> {
            let metrics = meshes[0].metrics()?;
            Ok((opened(&metrics, &hbone_labels("source")) >= 2.0).then_some(metrics))
        },
    );
    let source = source.with_context(|| format!("{:?}", meshes[0].metrics().map(|m| m.0)))?;
    ensure!(
        opened(
            &source,
            &[("reporter", "source"), ("destination_workload", "server")]
        ) >= 2.0,
        "the destination workload should come from the directory:\n{}",
        source.0
    );
    let destination = wait_for(
        "n2's ztunnel to report 2 mutual-TLS connections",
        Duration::from_secs(5),
        || -> Result<Option<()>> {
            let metrics = meshes[1].metrics()?;
            Ok((opened(&metrics, &hbone_labels("destination")) >= 2.0).then_some(()))
        },
    );
    destination.with_context(|| format!("{:?}", meshes[1].metrics().map(|m| m.0)))?;
    wait_for(
        "n1's ztunnel to count the refused tunnel with response flag UF",
        Duration::from_secs(5),
        || -> Result<Option<()>> {
            let metrics = meshes[0].metrics()?;
            let labels = [
                ("reporter", "source"),
                ("connection_security_policy", "mutual_tls"),
                ("response_flags", "UF"),
            ];
            Ok((metrics.sum("istio_tcp_connections_closed_total", &labels) >= 1.0).then_some(()))
        },
    )
    .with_context(|| {
        let log = |mesh: &MeshNode| mesh.ztunnel().map(ChildGuard::stdout).unwrap_or_default();
        format!("n1:\n{}\nn2:\n{}", log(&meshes[0]), log(&meshes[1]))
    })?;
    let near_dst = format!("dst=Some({})", near.addr_v4(APP_PORT));
    meshes[0]
        .ztunnel()?
        .wait_for_log_line(Duration::from_secs(5), |line| {
            line.contains("same_node=true") && line.contains(&near_dst)
        })
        .context("an access-log line saying the same-node connection took the fast path")?;

    // (b) On the wire between the nodes: TLS to 15008, never the payload. dumpcap
    // writes in batches: once the plaintext sent last is in the file, so is the rest.
    wait_for(
        "the capture to show the plaintext sent outside the mesh",
        Duration::from_secs(5),
        || -> Result<Option<()>> {
            let bytes = std::fs::read(&pcap).unwrap_or_default();
            Ok(contains(&bytes, PLAIN).then_some(()))
        },
    )?;
    dumpcap.stop()?;
    let bytes = std::fs::read(&pcap).with_context(|| format!("reading {}", pcap.display()))?;
    ensure!(
        !contains(&bytes, SECRET),
        "the mesh payload crossed the nodes in plaintext: see {}",
        pcap.display()
    );
    let tls = frames(&pcap, "tcp.port == 15008 && tls.app_data")?;
    ensure!(
        tls > 0,
        "expected TLS application data on port 15008 in {}",
        pcap.display()
    );
    let handshakes = frames(
        &pcap,
        "tcp.port == 15008 && tls.handshake.type == 2 \
         && tls.handshake.extensions.supported_version == 0x0304",
    )?;
    ensure!(
        handshakes > 0,
        "expected a TLS 1.3 handshake on port 15008 in {}",
        pcap.display()
    );
    Ok(())
}
