//! ztunnel without a controller: `ambit-controller snapshot` writes what the push would
//! send each node, and `ambit-ztunnel --local-config FILE` reads it (and reads it again
//! when it changes). With certificates from the CA, mesh traffic between the nodes is
//! then carried over HBONE exactly as with the push.

use std::{path::Path, process::Command, time::Duration};

use ambit_e2e::{MeshNode, MeshOptions, Node, PodSpec, TestNet, app, bin_path, cmd};
use anyhow::{Result, ensure};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
const ALPHA: &str = "spiffe://cluster.local/ns/shop/sa/alpha";
const BETA: &str = "spiffe://cluster.local/ns/shop/sa/beta";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

fn snapshot(net: &TestNet, node: &Node, out: &Path) -> Result<()> {
    cmd::run_with_input(
        Command::new(bin_path("ambit-controller"))
            .arg("snapshot")
            .arg("--config-dir")
            .arg(net.config_dir())
            .args(["--node", node.name(), "--kind", "ztunnel", "--out"])
            .arg(out),
        b"",
        Duration::from_secs(30),
    )?
    .success()?;
    Ok(())
}

#[test]
fn ztunnel_reads_its_config_from_a_snapshot_file() -> Result<()> {
    let Some(net) = TestNet::new("local_config") else {
        return Ok(());
    };
    net.write_namespace("shop", [AMBIENT])?;
    let n1 = net.add_node("n1")?;
    let n2 = net.add_node("n2")?;
    let control = ambit_e2e::ControlPlane::new(&net, &n1)?;
    let mut meshes = Vec::new();
    for node in [&n1, &n2] {
        let mut options = control.client_options(node)?;
        options.controller_address = None;
        options.local_config = Some(net.dir().join(format!("{}.pb", node.name())));
        meshes.push(MeshNode::install_with_ca(
            &net,
            node,
            MeshOptions::default(),
            Some(options),
        )?);
    }
    let client = n1.add_pod(PodSpec::new("shop", "client").service_account("alpha"))?;
    let server = n2.add_pod(PodSpec::new("shop", "server").service_account("beta"))?;
    let _app = app::serve(&server, "[::]:8080".parse()?)?;
    let _ca = control.start_ca(&net)?;
    // The files appear after ztunnel started: it waits for them, then applies them.
    for node in [&n1, &n2] {
        snapshot(&net, node, &net.dir().join(format!("{}.pb", node.name())))?;
    }
    meshes[0].wait_certificate(ALPHA, READY_TIMEOUT)?;
    meshes[1].wait_certificate(BETA, READY_TIMEOUT)?;
    meshes[0].wait_peer(&server.ipv4().to_string(), Some(BETA), READY_TIMEOUT)?;

    app::connect(&client, server.addr_v4(8080))?.expect_ok()?;
    let mtls = meshes[1].metrics()?.sum(
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
            ("source_principal", ALPHA),
        ],
    );
    ensure!(
        mtls >= 1.0,
        "the connection should have arrived over HBONE, configured from the file:\n{}",
        meshes[1].metrics()?.0
    );
    Ok(())
}
