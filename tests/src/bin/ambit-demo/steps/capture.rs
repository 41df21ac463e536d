//! Traffic captured without the apps knowing: mutual TLS between the nodes, same-node
//! and cross-node relaying, a client outside the mesh captured on the way in, failing
//! closed while ztunnel is down, and PeerAuthentication STRICT.

use std::time::Duration;

use ambit_e2e::{app, wait_for};
use anyhow::{Context as _, Result, ensure};
use serde_json::json;

use super::{DEFAULT_IDENTITY, READY_TIMEOUT, Step, access_entry, enrolment::ECHO_PORT};
use crate::{cluster::Cluster, components::Component};

pub const MUTUAL_TLS: Step = Step {
    name: "traffic between the nodes is mutual TLS (HBONE)",
    component: Component::Ztunnel(1),
    run: mutual_tls,
};

pub const SAME_NODE: Step = Step {
    name: "client -> app-v1 on the same node is captured and relayed",
    component: Component::Ztunnel(0),
    run: |cluster| relayed(cluster, "app-v1", 0),
};

pub const CROSS_NODE: Step = Step {
    name: "client -> app-v2 on the other node is captured and relayed",
    component: Component::Ztunnel(1),
    run: |cluster| relayed(cluster, "app-v2", 1),
};

pub const FROM_OUTSIDE: Step = Step {
    name: "a client outside the mesh is captured on the way in",
    component: Component::Ztunnel(0),
    run: from_outside,
};

pub const FAIL_CLOSED: Step = Step {
    name: "with ztunnel down, enrolled pods fail closed, then recover",
    component: Component::Ztunnel(0),
    run: fail_closed,
};

pub const STRICT: Step = Step {
    name: "PeerAuthentication STRICT turns plaintext away",
    component: Component::Ztunnel(0),
    run: strict,
};

fn mutual_tls(cluster: &mut Cluster<'_>) -> Result<String> {
    let (client, app_v2) = (cluster.pod("client")?, cluster.pod("app-v2")?);
    cluster.nodes[0].wait_peer(&app_v2.ipv4().to_string(), None, READY_TIMEOUT)?;
    app::connect(client, app_v2.addr_v4(ECHO_PORT))?.expect_ok()?;
    let mtls = cluster.nodes[1].metrics()?.sum(
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
            ("source_principal", DEFAULT_IDENTITY),
            ("destination_workload", "app-v2"),
        ],
    );
    ensure!(
        mtls >= 1.0,
        "app-v2's ztunnel saw no mutual-TLS connection from {DEFAULT_IDENTITY}"
    );
    Ok(format!(
        "client -> app-v2 went over HTTP/2 CONNECT on 15008 with TLS 1.3; app-v2's ztunnel reports connection_security_policy=\"mutual_tls\", source_principal=\"{DEFAULT_IDENTITY}\" ({mtls} connection(s))"
    ))
}

/// client -> `target` (on node `node`), seen by both ztunnels and not by the app.
fn relayed(cluster: &mut Cluster<'_>, target: &str, node: usize) -> Result<String> {
    let to = cluster.pod(target)?.addr_v4(ECHO_PORT);
    let report = app::connect(cluster.pod("client")?, to)?.expect_ok()?;
    ensure!(
        report.peer == Some(to),
        "the app saw peer {:?}",
        report.peer
    );
    let relayed = cluster.nodes[0].metrics()?.sum(
        "istio_tcp_connections_opened_total",
        &[("reporter", "source"), ("source_workload", "client")],
    );
    let inbound = cluster.nodes[node].metrics()?.sum(
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", "destination"),
            ("destination_workload", target),
        ],
    );
    Ok(format!(
        "getpeername() shows {to} (the app sees no difference)\nclient's ztunnel: {relayed} outbound connections; {target}'s ztunnel: {inbound} inbound"
    ))
}

fn from_outside(cluster: &mut Cluster<'_>) -> Result<String> {
    let to = cluster.pod("app-v1")?.addr_v6(ECHO_PORT);
    app::connect(cluster.pod("outsider")?, to)?.expect_ok()?;
    let needle = format!("dst=Some({to})");
    let line = cluster.nodes[0]
        .ztunnel()?
        .wait_for_log_line(Duration::from_secs(5), |l| {
            l.contains("direction=Inbound") && l.contains(&needle)
        })
        .context("no inbound access-log line")?;
    Ok(format!("ztunnel access log: {}", access_entry(&line)))
}

fn fail_closed(cluster: &mut Cluster<'_>) -> Result<String> {
    let to = cluster.pod("app-v2")?.addr_v4(ECHO_PORT);
    cluster.nodes[0].stop_ztunnel()?;
    let down = app::connect_with(cluster.pod("client")?, to, "hello", Duration::from_secs(3))?;
    ensure!(!down.ok, "a connection worked with ztunnel down: {down:?}");
    cluster.nodes[0].start_ztunnel()?;
    app::connect(cluster.pod("client")?, to)?.expect_ok()?;
    Ok(format!(
        "while down: {}; after restart: connected",
        down.error_kind.unwrap_or_default()
    ))
}

fn strict(cluster: &mut Cluster<'_>) -> Result<String> {
    cluster
        .net
        .write_manifest("strict.yaml", &peer_authentication_strict())?;
    let to = cluster.pod("app-v1")?.addr_v4(ECHO_PORT);
    let outsider = cluster.pod("outsider")?;
    wait_for(
        "the STRICT policy to apply",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            let attempt = app::connect_with(outsider, to, "hello", Duration::from_secs(2))?;
            Ok((!attempt.ok).then_some(()))
        },
    )?;
    app::connect(cluster.pod("client")?, to)?.expect_ok()?;
    let denied = cluster.nodes[0].metrics()?.sum(
        "ambit_policy_denials_total",
        &[("reason", "plaintext_refused"), ("policy", "shop/strict")],
    );
    cluster.net.remove_manifest("strict.yaml")?;
    Ok(format!(
        "legacy/outsider (no mesh identity) is refused by app-v1's ztunnel ({denied} denial(s) counted for shop/strict); client (mutual TLS) still connects"
    ))
}

fn peer_authentication_strict() -> serde_json::Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": { "name": "strict", "namespace": "shop" },
        "spec": { "mtls": { "mode": "STRICT" } },
    })
}
