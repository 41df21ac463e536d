//! The waypoint end to end: namespace `shop` is labelled `istio.io/use-waypoint:
//! waypoint` and has a Gateway of class `istio-waypoint`, whose pod runs the real
//! `ambit-waypoint` on n1. A client's request to the `app` Service's VIP is captured by
//! its ztunnel, carried over HBONE to the waypoint (the VIP as the destination), routed
//! there by the VirtualService and DestinationRule, and carried over HBONE again to the
//! chosen pod's ztunnel — which accepts it only because it comes from the waypoint. An
//! AuthorizationPolicy attached to the waypoint (`targetRefs`) allows GET and denies
//! POST, and the waypoint counts requests with Istio's labels. A Telemetry object turns
//! its access log off and, once deleted, on again.

use std::{net::SocketAddr, time::Duration};

use ambit_e2e::{
    app::{self, HttpCall},
    wait_for,
};
use anyhow::{Context as _, Result, ensure};
use serde_json::json;

#[path = "common/waypoint_cluster.rs"]
mod waypoint_cluster;

use waypoint_cluster::{APP_PORT, Cluster, READY_TIMEOUT, VIP};

#[test]
fn requests_to_a_service_go_through_its_waypoint_and_follow_the_routes() -> Result<()> {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    // Everything to v2, except the requests of user jason, to v3.
    cluster.set_routes(json!([
        {
            "match": [{ "headers": { "end-user": { "exact": "jason" } } }],
            "route": [{ "destination": { "host": "app", "subset": "v3" } }],
        },
        { "route": [{ "destination": { "host": "app", "subset": "v2" } }] },
    ]))?;
    cluster.wait_all_from(None, "v2", 50)?;
    cluster.wait_all_from(Some("end-user: jason"), "v3", 20)?;

    // A 50/50 split between v1 and v2, within 5% over 2,000 requests.
    cluster.set_routes(json!([{
        "route": [
            { "destination": { "host": "app", "subset": "v1" }, "weight": 50 },
            { "destination": { "host": "app", "subset": "v2" }, "weight": 50 },
        ],
    }]))?;
    let vip: SocketAddr = format!("{VIP}:80").parse()?;
    wait_for(
        "the 50/50 split to apply",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            let report = app::http_get(&cluster.client, vip, 20, None)?;
            Ok(report.bodies.contains_key("v1").then_some(()))
        },
    )?;
    let report = app::http_get(&cluster.client, vip, 2_000, None)?;
    let v1 = report.bodies.get("v1").copied().unwrap_or(0);
    let v2 = report.bodies.get("v2").copied().unwrap_or(0);
    ensure!(
        v1 + v2 == 2_000 && (900..=1_100).contains(&v1),
        "expected 1,000 ± 100 of 2,000 on each of v1 and v2: {report:?}"
    );

    // L7 policy at the waypoint: GET allowed, POST denied with Istio's 403.
    cluster.net.write_manifest(
        "authorization.yaml",
        &json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": { "name": "get-only", "namespace": "shop" },
            "spec": {
                "targetRefs": [{
                    "kind": "Gateway",
                    "group": "gateway.networking.k8s.io",
                    "name": "waypoint",
                }],
                "action": "ALLOW",
                "rules": [{ "to": [{ "operation": { "methods": ["GET"] } }] }],
            },
        }),
    )?;
    wait_for(
        "POST to be denied by the waypoint",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            let report = app::http_request(&cluster.client, "POST", vip, 1, None)?;
            Ok(report.statuses.contains_key("403").then_some(()))
        },
    )
    .with_context(|| cluster.logs())?;
    let get = app::http_get(&cluster.client, vip, 10, None)?;
    ensure!(
        get.statuses.get("200") == Some(&10),
        "GET stays allowed: {get:?}"
    );
    let metrics = cluster.waypoint_metrics()?;
    let requests = |code: &str| {
        metrics.sum(
            "istio_requests_total",
            &[
                ("reporter", "waypoint"),
                ("response_code", code),
                ("destination_service", "app.shop.svc.cluster.local"),
                ("connection_security_policy", "mutual_tls"),
                (
                    "source_principal",
                    "spiffe://cluster.local/ns/shop/sa/default",
                ),
            ],
        )
    };
    ensure!(
        requests("200") >= 2_000.0 && requests("403") >= 1.0,
        "the waypoint should count the requests it answered, with Istio's labels:\n{}",
        metrics.0
    );

    // The pods behind the waypoint take mesh traffic only from it.
    let direct = app::http_get(&cluster.client, cluster.pods[0].addr_v4(APP_PORT), 1, None)?;
    ensure!(
        !direct.ok,
        "a request to an app pod's own address must not bypass the waypoint: {direct:?}"
    );
    cluster.meshes[1]
        .ztunnel()?
        .wait_for_log(
            "must go through the waypoint shop/waypoint",
            Duration::from_secs(5),
        )
        .context("n2's ztunnel should say why the bypass was refused")?;
    Ok(())
}

/// A Telemetry object reaches the waypoint through the controller's push, as Istio's
/// does: `accessLogging: [{disabled: true}]` for the namespace stops the waypoint's
/// access-log lines while it keeps serving, and deleting the object brings them back.
#[test]
fn a_telemetry_object_turns_the_waypoints_access_log_off_until_it_is_deleted() -> Result<()> {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    let vip: SocketAddr = format!("{VIP}:80").parse()?;
    let get = |path: &str| -> Result<()> {
        let call = HttpCall {
            path,
            ..HttpCall::default()
        };
        let report = app::http_call(&cluster.client, vip, call)?;
        ensure!(
            report.statuses.get("200") == Some(&1),
            "GET {path}: {report:?}"
        );
        Ok(())
    };
    let logged = |path: &str| {
        let field = format!("path=\"{path}\"");
        [cluster.waypoint.stdout(), cluster.waypoint.stderr()]
            .iter()
            .any(|log| log.lines().any(|line| line.contains(&field)))
    };

    // Logged by default, as with Istio's demo profile.
    wait_for(
        "a request through the waypoint",
        READY_TIMEOUT,
        || -> Result<Option<()>> { Ok(get("/before").is_ok().then_some(())) },
    )
    .with_context(|| cluster.logs())?;
    cluster
        .waypoint
        .wait_for_log("path=\"/before\"", Duration::from_secs(5))?;

    cluster.net.write_manifest(
        "telemetry.yaml",
        &json!({
            "apiVersion": "telemetry.istio.io/v1",
            "kind": "Telemetry",
            "metadata": { "name": "quiet", "namespace": "shop" },
            "spec": { "accessLogging": [{ "disabled": true }] },
        }),
    )?;
    cluster
        .waypoint
        .wait_for_log("1 Telemetry objects", READY_TIMEOUT)
        .context("the Telemetry object should be pushed to the waypoint")?;
    for _ in 0..3 {
        get("/while-quiet")?;
    }

    // Deleted: logged again. A line written after the quiet requests proves they were
    // not logged late.
    cluster.net.remove_manifest("telemetry.yaml")?;
    wait_for(
        "access-log lines again",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            get("/after")?;
            Ok(logged("/after").then_some(()))
        },
    )
    .with_context(|| cluster.logs())?;
    ensure!(
        !logged("/while-quiet"),
        "requests under accessLogging disabled must not be logged:\n{}",
        cluster.waypoint.stdout()
    );
    Ok(())
}
