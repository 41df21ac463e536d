//! Service VIPs and Istio's TCP telemetry end to end: a known transfer from an enrolled
//! client to a Service's cluster IP reaches one of its endpoints (ztunnel resolves the
//! VIP and targetPort itself), over HBONE, and both ztunnels count it exactly, with
//! Istio's standard labels (workloads, principals, app, version, canonical service,
//! destination service, security policy).

use std::{net::SocketAddr, time::Duration};

use ambit_e2e::{ControlPlane, MeshNode, PodSpec, TestNet, app, mesh::Metrics, wait_for};
use anyhow::{Context as _, Result, ensure};
use serde_json::json;

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
const ALPHA: &str = "spiffe://cluster.local/ns/shop/sa/alpha";
const BETA: &str = "spiffe://cluster.local/ns/shop/sa/beta";
const VIP: &str = "198.19.200.10";
const SERVICE: &str = "server.shop.svc.cluster.local";
const SERVICE_PORT: u16 = 80;
const SINK_PORT: u16 = 9000;
const BYTES: u64 = 3_000_000;
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The four counters for `labels`, in the order opened, closed, received, sent.
fn counters(metrics: &Metrics, labels: &[(&str, &str)]) -> [f64; 4] {
    [
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
        "istio_tcp_received_bytes_total",
        "istio_tcp_sent_bytes_total",
    ]
    .map(|name| metrics.sum(name, labels))
}

/// Waits until `mesh`'s counters for `labels` have grown by exactly `expected` from
/// `before`.
fn wait_growth(
    mesh: &MeshNode,
    labels: &[(&str, &str)],
    before: [f64; 4],
    expected: [f64; 4],
) -> Result<()> {
    let last = std::cell::RefCell::new(String::new());
    wait_for(
        &format!(
            "{} to count {expected:?} more for {labels:?}",
            mesh.node().name()
        ),
        Duration::from_secs(5),
        || -> Result<Option<()>> {
            let metrics = mesh.metrics()?;
            let now = counters(&metrics, labels);
            let growth: Vec<f64> = now.iter().zip(before).map(|(n, b)| n - b).collect();
            *last.borrow_mut() = format!("growth {growth:?}\n{}", metrics.0);
            Ok((growth == expected).then_some(()))
        },
    )
    .with_context(|| last.borrow().clone())
}

#[test]
fn a_transfer_to_a_service_vip_is_delivered_and_counted_with_istio_labels() -> Result<()> {
    let Some(net) = TestNet::new("telemetry") else {
        return Ok(());
    };
    net.write_namespace("shop", [AMBIENT])?;
    let n1 = net.add_node("n1")?;
    let n2 = net.add_node("n2")?;
    let control = ControlPlane::new(&net, &n1)?;
    let meshes = control.install(&net, &[&n1, &n2])?;
    let client = n1.add_pod(
        PodSpec::new("shop", "client")
            .service_account("alpha")
            .label("app", "client")
            .label("version", "v1"),
    )?;
    let server = n2.add_pod(
        PodSpec::new("shop", "server")
            .service_account("beta")
            .label("app", "server")
            .label("version", "v2"),
    )?;
    let sink = app::sink(&server, SocketAddr::from(([0; 4], SINK_PORT)))?;
    net.write_manifest(
        "service.yaml",
        &json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": "server", "namespace": "shop" },
            "spec": {
                "clusterIP": VIP,
                "selector": { "app": "server" },
                "ports": [{ "name": "tcp-sink", "port": SERVICE_PORT, "targetPort": SINK_PORT }],
            },
        }),
    )?;
    let _control = control.start(&net)?;
    meshes[0].wait_certificate(ALPHA, READY_TIMEOUT)?;
    meshes[1].wait_certificate(BETA, READY_TIMEOUT)?;
    meshes[1].wait_peer(&client.ipv4().to_string(), Some(ALPHA), READY_TIMEOUT)?;
    wait_for(
        "n1 to learn the service's endpoint",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            let dump = meshes[0].config_dump()?;
            let server_ip = server.ipv4().to_string();
            let known = dump["directory"]["services"].as_array().is_some_and(|all| {
                all.iter().any(|s| {
                    s["hostname"] == SERVICE
                        && s["endpoints"]
                            .as_array()
                            .is_some_and(|e| e.iter().any(|ip| *ip == server_ip.as_str()))
                })
            });
            Ok(known.then_some(()))
        },
    )?;

    let common = [
        ("connection_security_policy", "mutual_tls"),
        ("request_protocol", "tcp"),
        ("response_flags", "-"),
        ("source_workload", "client"),
        ("source_workload_namespace", "shop"),
        ("source_principal", ALPHA),
        ("source_app", "client"),
        ("source_version", "v1"),
        ("source_canonical_service", "client"),
        ("source_canonical_revision", "v1"),
        ("destination_workload", "server"),
        ("destination_workload_namespace", "shop"),
        ("destination_principal", BETA),
        ("destination_app", "server"),
        ("destination_version", "v2"),
        ("destination_canonical_service", "server"),
        ("destination_canonical_revision", "v2"),
        ("destination_service", SERVICE),
        ("destination_service_name", "server"),
        ("destination_service_namespace", "shop"),
        ("destination_cluster", "Kubernetes"),
    ];
    let with = |reporter| {
        let mut labels = common.to_vec();
        labels.push(("reporter", reporter));
        labels
    };
    let (source, destination) = (with("source"), with("destination"));
    let before_source = counters(&meshes[0].metrics()?, &source);
    let before_destination = counters(&meshes[1].metrics()?, &destination);

    let vip: SocketAddr = format!("{VIP}:{SERVICE_PORT}").parse()?;
    let sender = app::bulk_send(&client, vip, BYTES, 64 * 1024)?;
    let report = sender.finish(Duration::from_secs(60))?;
    ensure!(
        report.stdout.contains("\"ok\":true"),
        "the transfer to the VIP should complete: {report}"
    );
    ensure!(
        sink.stdout().contains(&format!("\"received\":{BYTES}")),
        "the endpoint behind the VIP should count every byte: {}",
        sink.stdout()
    );
    // The sink answers with its count and a newline.
    #[expect(clippy::cast_precision_loss, reason = "small exact integers")]
    let (sent, reply) = (BYTES as f64, (BYTES.to_string().len() + 1) as f64);
    wait_growth(&meshes[0], &source, before_source, [1.0, 1.0, sent, reply])?;
    wait_growth(
        &meshes[1],
        &destination,
        before_destination,
        [1.0, 1.0, sent, reply],
    )?;
    Ok(())
}
