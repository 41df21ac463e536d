//! DestinationRule `consistentHash` end to end, on the shared two-node cluster (see
//! `common/waypoint_cluster.rs`): every request goes from the captured client over
//! HBONE through the real `ambit-waypoint` to pods `app-v1`–`app-v3`. Hashing on the
//! `x-user` header, each user keeps landing on one pod while the users spread over all
//! three.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
};

use ambit_e2e::{
    app::{self, HttpCall, HttpReport},
    wait_for,
};
use anyhow::{Context as _, Result, ensure};
use serde_json::json;

#[path = "common/waypoint_cluster.rs"]
mod waypoint_cluster;

use waypoint_cluster::{Cluster, READY_TIMEOUT, VIP};

const REQUESTS_PER_USER: usize = 10;

/// `count` requests from the client as `user`, through the waypoint.
fn as_user(cluster: &Cluster, user: &str, count: usize) -> Result<HttpReport> {
    let header = format!("x-user: {user}");
    let call = HttpCall {
        header: Some(&header),
        count,
        ..HttpCall::default()
    };
    app::http_call(&cluster.client, SocketAddr::new(VIP.parse()?, 80), call)
}

/// The one pod that answered all of `report`'s requests, if one did.
fn single_pod(report: &HttpReport, count: usize) -> Option<String> {
    match report.bodies.iter().collect::<Vec<_>>().as_slice() {
        [(pod, answered)] if **answered == count as u64 => Some((*pod).clone()),
        _ => None,
    }
}

#[test]
fn requests_of_one_user_stick_to_one_pod_and_users_spread() -> Result<()> {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    cluster.set_traffic_policy(
        json!({ "loadBalancer": { "consistentHash": { "httpHeaderName": "x-user" } } }),
    )?;
    // Balanced by least request, 20 requests of one user all reach one pod of three
    // once in 3^19 times: when they do, the waypoint hashes.
    wait_for(
        "the waypoint hashing on x-user",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            Ok(single_pod(&as_user(&cluster, "probe", 20)?, 20).map(|_| ()))
        },
    )
    .with_context(|| cluster.logs())?;

    let mut users_by_pod: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for round in 0..2 {
        for number in 0..30 {
            let user = format!("user-{number}");
            let report = as_user(&cluster, &user, REQUESTS_PER_USER)?;
            let pod = single_pod(&report, REQUESTS_PER_USER).with_context(|| {
                format!("round {round}: {user}'s requests went to several pods: {report:?}")
            })?;
            users_by_pod.entry(pod).or_default().insert(user);
        }
    }
    let users_placed: usize = users_by_pod.values().map(BTreeSet::len).sum();
    ensure!(
        users_placed == 30,
        "a user changed pod between rounds: {users_by_pod:?}"
    );
    ensure!(
        users_by_pod.len() == 3,
        "30 users reached only {:?}",
        users_by_pod.keys().collect::<Vec<_>>()
    );
    Ok(())
}
