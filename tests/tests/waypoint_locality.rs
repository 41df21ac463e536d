//! Locality load balancing at the waypoint end to end, on the shared two-node cluster
//! (see `common/waypoint_cluster.rs`): the Nodes are labelled with a region and zone (n1
//! in `zone-a`, with the waypoint and `app-v3`; n2 in `zone-b`, with `app-v1` and
//! `app-v2`), the controller pushes each pod's locality, and the real `ambit-waypoint`
//! finds its own from its pod. With `outlierDetection`, every request goes to the
//! waypoint's zone until its endpoint fails and is ejected, then to the other zone;
//! `failoverPriority` prefers the endpoints agreeing on its labels; a `distribute` rule
//! splits requests between the zones by weight.

use std::net::SocketAddr;

use ambit_e2e::{app, wait_for};
use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

#[path = "common/waypoint_cluster.rs"]
mod waypoint_cluster;

use waypoint_cluster::{Cluster, READY_TIMEOUT, VIP};

const REGION: &str = "topology.kubernetes.io/region";
const ZONE: &str = "topology.kubernetes.io/zone";
/// `app-v3`, the app pod on n1.
const LOCAL_POD: usize = 2;

fn vip() -> SocketAddr {
    SocketAddr::from(([198, 19, 200, 20], 80))
}

/// The shared cluster with n1 in zone `r1/zone-a` and n2 in `r1/zone-b`; `None` where
/// end-to-end tests cannot run.
fn zoned_cluster() -> Result<Option<Cluster>> {
    let Some(cluster) = Cluster::start()? else {
        return Ok(None);
    };
    assert_eq!(VIP, vip().ip().to_string());
    label_node(&cluster, 0, "zone-a")?;
    label_node(&cluster, 1, "zone-b")?;
    Ok(Some(cluster))
}

/// Labels node `index` (0: n1, 1: n2) with region `r1` and `zone`.
fn label_node(cluster: &Cluster, index: usize, zone: &str) -> Result<()> {
    let name = cluster.meshes[index].node().name();
    cluster.net.write_manifest(
        &format!("node-{name}.yaml"),
        &json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": { "name": name, "labels": { REGION: "r1", ZONE: zone } },
        }),
    )?;
    Ok(())
}

/// How many of `count` requests each pod answered, failing on any other status
/// than 200.
fn answered(cluster: &Cluster, count: usize) -> Result<std::collections::BTreeMap<String, u64>> {
    let report = app::http_get(&cluster.client, vip(), count, None)?;
    ensure!(
        report.statuses.get("200") == Some(&(count as u64)),
        "all {count} requests answered 200: {report:?}"
    );
    Ok(report.bodies)
}

#[test]
fn requests_stay_in_the_waypoints_zone_until_its_endpoint_is_ejected() -> Result<()> {
    let Some(mut cluster) = zoned_cluster()? else {
        return Ok(());
    };
    cluster.set_traffic_policy(json!({
        "loadBalancer": { "simple": "ROUND_ROBIN", "localityLbSetting": { "enabled": true } },
        "outlierDetection": {
            "consecutive5xxErrors": 2,
            "baseEjectionTime": "5m",
            "maxEjectionPercent": 100,
        },
    }))?;
    // Round robin over three pods would send two of every three requests to zone B.
    cluster.wait_all_from(None, "v3", 30)?;

    // The zone-A pod breaks: once ejected, zone B takes everything, spread over both.
    cluster.restart_app(LOCAL_POD, "v3", 503)?;
    let last = std::cell::RefCell::new(None);
    wait_for(
        "every request answered 200 from zone B",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            let report = app::http_get(&cluster.client, vip(), 10, None)?;
            let done = report.statuses.get("200") == Some(&10);
            *last.borrow_mut() = Some(report);
            Ok(done.then_some(()))
        },
    )
    .with_context(|| format!("last report: {:?}\n{}", last.borrow(), cluster.logs()))?;
    let bodies = answered(&cluster, 40)?;
    ensure!(
        bodies.get("v1") == Some(&20) && bodies.get("v2") == Some(&20),
        "after the failover, zone B's two pods take turns: {bodies:?}"
    );
    let metrics = cluster.waypoint_metrics()?;
    ensure!(
        metrics.sum("istio_requests_total", &[("response_code", "503")]) > 0.0,
        "the zone-A pod's 503s were seen before it was ejected:\n{}",
        metrics.0
    );
    Ok(())
}

#[test]
fn failover_priority_prefers_endpoints_that_agree_on_its_labels() -> Result<()> {
    let Some(cluster) = zoned_cluster()? else {
        return Ok(());
    };
    let priority = |keys: Value| {
        json!({
            "loadBalancer": { "localityLbSetting": { "failoverPriority": keys } },
            "outlierDetection": { "consecutive5xxErrors": 5 },
        })
    };
    // The zone key reads the localities: the waypoint's pod and app-v3 are in zone A.
    cluster.set_traffic_policy(priority(json!([ZONE])))?;
    cluster.wait_all_from(None, "v3", 30)?;
    // `key=value` compares with the value given, not the waypoint's own.
    cluster.set_traffic_policy(priority(json!(["version=v2"])))?;
    cluster.wait_all_from(None, "v2", 30)?;
    Ok(())
}

#[test]
fn distribute_splits_requests_between_zones_by_weight() -> Result<()> {
    let Some(cluster) = zoned_cluster()? else {
        return Ok(());
    };
    // First all to zone A, to know the waypoint has its locality and the pods theirs.
    let distribute = |to: Value| {
        json!({
            "loadBalancer": {
                "localityLbSetting": { "distribute": [{ "from": "r1/zone-a/*", "to": to }] },
            },
        })
    };
    cluster.set_traffic_policy(distribute(json!({ "r1/zone-a/*": 100 })))?;
    cluster.wait_all_from(None, "v3", 30)?;
    cluster.set_traffic_policy(distribute(json!({ "r1/zone-a/*": 20, "r1/zone-b/*": 80 })))?;
    let last = std::cell::RefCell::new(None);
    wait_for(
        "zone B answering",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            let bodies = answered(&cluster, 20)?;
            let done = bodies.contains_key("v1") || bodies.contains_key("v2");
            *last.borrow_mut() = Some(bodies);
            Ok(done.then_some(()))
        },
    )
    .with_context(|| format!("last answers: {:?}\n{}", last.borrow(), cluster.logs()))?;

    // 20% of 500 is 100 (σ ≈ 9); an even split over three pods would give zone A 167.
    let bodies = answered(&cluster, 500)?;
    let count = |version: &str| bodies.get(version).copied().unwrap_or(0);
    ensure!(
        (64..=136).contains(&count("v3")),
        "zone A takes about 20% of 500 requests: {bodies:?}"
    );
    ensure!(
        (150..=250).contains(&count("v1")) && (150..=250).contains(&count("v2")),
        "zone B's 80% is shared by its two pods: {bodies:?}"
    );
    eprintln!("distribute 20/80 over 500 requests: {bodies:?}");
    Ok(())
}
