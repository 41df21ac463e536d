//! The waypoint's resilience features end to end, on the shared two-node cluster (see
//! `common/waypoint_cluster.rs`): real pods answering HTTP, a captured client, every
//! request over HBONE through the real `ambit-waypoint`. Fault injection (a fixed delay,
//! an abort at 50%), a route timeout, retries of a flaky backend, connection-pool
//! overflow (`UO`), outlier ejection and re-admission, and a WebSocket echo.

use std::{net::SocketAddr, thread};

use ambit_e2e::{
    app::{self, HttpCall, HttpReport},
    wait_for,
};
use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

#[path = "common/waypoint_cluster.rs"]
mod waypoint_cluster;

use waypoint_cluster::{Cluster, READY_TIMEOUT, VIP};

fn vip() -> SocketAddr {
    SocketAddr::from(([198, 19, 200, 20], 80))
}

/// `count` requests for `path` from the client, through the waypoint.
fn call(cluster: &Cluster, path: &str, count: usize) -> Result<HttpReport> {
    let call = HttpCall {
        path,
        count,
        ..HttpCall::default()
    };
    app::http_call(&cluster.client, vip(), call)
}

/// Sets the routes and waits until a request for `probe` is answered with `status`.
fn route_until(cluster: &Cluster, http: Value, probe: &str, status: &str) -> Result<()> {
    cluster.set_routes(http)?;
    wait_for(
        &format!("{probe} answered {status}"),
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            Ok(call(cluster, probe, 1)?
                .statuses
                .contains_key(status)
                .then_some(()))
        },
    )
    .with_context(|| cluster.logs())
}

/// `clients` requests for `path` at once, each on its own connection.
fn burst(cluster: &Cluster, path: &str, clients: usize) -> Result<Vec<HttpReport>> {
    thread::scope(|scope| {
        let calls: Vec<_> = (0..clients)
            .map(|_| scope.spawn(|| call(cluster, path, 1)))
            .collect();
        calls
            .into_iter()
            .map(|call| call.join().expect("a client thread"))
            .collect()
    })
}

fn count(report: &HttpReport, status: &str) -> u64 {
    report.statuses.get(status).copied().unwrap_or(0)
}

#[test]
fn faults_timeouts_and_retries_follow_the_virtual_service() -> Result<()> {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    assert_eq!(VIP, vip().ip().to_string());
    let v1 = json!({ "destination": { "host": "app", "subset": "v1" } });

    // A fixed delay on every request, then an abort of half of them.
    route_until(
        &cluster,
        json!([{
            "match": [{ "uri": { "prefix": "/delayed" } }],
            "fault": { "delay": { "fixedDelay": "300ms", "percentage": { "value": 100 } } },
            "route": [v1],
        }, {
            "match": [{ "uri": { "prefix": "/aborted" } }],
            "fault": { "abort": { "httpStatus": 503, "percentage": { "value": 50 } } },
            "route": [v1],
        }, {
            "match": [{ "uri": { "prefix": "/delay" } }],
            "timeout": "500ms",
            "route": [v1],
        }, {
            "match": [{ "uri": { "prefix": "/flaky" } }],
            "retries": { "attempts": 3, "retryOn": "5xx" },
            "route": [v1],
        }]),
        "/aborted",
        "503",
    )?;
    let delayed = call(&cluster, "/delayed", 5)?;
    ensure!(
        count(&delayed, "200") == 5 && delayed.fastest_ms.unwrap_or(0) >= 300,
        "a 300 ms delay on every request: {delayed:?}"
    );
    let aborted = call(&cluster, "/aborted", 400)?;
    let (failed, passed) = (count(&aborted, "503"), count(&aborted, "200"));
    ensure!(
        failed + passed == 400 && (150..=250).contains(&failed),
        "about half of 400 requests aborted with 503: {aborted:?}"
    );

    // The pod answers after 2 s; the route gives up at 500 ms with 504.
    let late = call(&cluster, "/delay/2000", 1)?;
    let waited = late.slowest_ms.unwrap_or(0);
    ensure!(
        count(&late, "504") == 1 && (450..1_500).contains(&waited),
        "504 after the 500 ms timeout: {late:?}"
    );

    // Two of every three requests fail; three attempts make every request succeed.
    let flaky = call(&cluster, "/flaky/2/3", 10)?;
    ensure!(
        count(&flaky, "200") == 10,
        "retries hide a backend failing 2 of 3: {flaky:?}\n{}",
        cluster.logs()
    );
    let logged = cluster.waypoint.stdout();
    ensure!(
        logged.contains("path=\"/flaky/2/3\" authority=") && logged.contains("attempts=3"),
        "the access log counts the attempts:\n{logged}"
    );
    Ok(())
}

#[test]
fn connection_limits_overflow_and_outliers_are_ejected_then_readmitted() -> Result<()> {
    let Some(mut cluster) = Cluster::start()? else {
        return Ok(());
    };
    // A second v1 pod that answers every plain request 503.
    cluster.add_app_pod(1, "app-v1-broken", "v1", 503)?;
    cluster.apply(
        "destination-rule.yaml",
        "DestinationRule",
        "app",
        json!({
            "host": "app",
            "subsets": [
                { "name": "v1", "labels": { "version": "v1" } },
                { "name": "v2", "labels": { "version": "v2" } },
            ],
            "trafficPolicy": {
                "outlierDetection": {
                    "consecutive5xxErrors": 2,
                    "interval": "1s",
                    "baseEjectionTime": "3s",
                    "maxEjectionPercent": 100,
                },
            },
        }),
    )?;
    route_until(
        &cluster,
        json!([{ "route": [{ "destination": { "host": "app", "subset": "v1" } }] }]),
        "/",
        "503",
    )?;
    // After two 5xx in a row the broken pod is ejected: v1 answers alone.
    let ejected = wait_for("the broken pod's ejection", READY_TIMEOUT, || {
        let report = call(&cluster, "/", 20)?;
        Ok::<_, anyhow::Error>((count(&report, "200") == 20).then_some(report))
    })
    .with_context(|| cluster.logs())?;
    let clusters = cluster.waypoint_clusters()?;
    ensure!(
        clusters.lines().any(|line| line.starts_with("outbound|")
            && line.ends_with("::health_flags::/failed_outlier_check")),
        "the waypoint's /clusters shows the ejected pod:\n{clusters}"
    );
    // Once its ejection time is over it is tried again, and fails again. An ejection
    // lasts baseEjectionTime times the pod's ejections (3 s, 6 s, …), and a loaded
    // machine may readmit and eject it again while the probe above runs: wait for the
    // readmission rather than sleep once.
    wait_for("the broken pod's readmission", READY_TIMEOUT, || {
        let report = call(&cluster, "/", 20)?;
        Ok::<_, anyhow::Error>((count(&report, "503") >= 1).then_some(report))
    })
    .with_context(|| {
        format!("after baseEjectionTime the broken pod is tried again (while ejected: {ejected:?})")
    })?;

    // One connection and one pending request: a burst of slow requests overflows.
    cluster.apply(
        "destination-rule.yaml",
        "DestinationRule",
        "app",
        json!({
            "host": "app",
            "subsets": [{ "name": "v2", "labels": { "version": "v2" } }],
            "trafficPolicy": {
                "connectionPool": {
                    "tcp": { "maxConnections": 1 },
                    "http": { "http1MaxPendingRequests": 1, "maxRequestsPerConnection": 1 },
                },
            },
        }),
    )?;
    cluster
        .set_routes(json!([{ "route": [{ "destination": { "host": "app", "subset": "v2" } }] }]))?;
    // Until the route to v2 is in force, the broken v1 pod's 503s would pass for
    // overflows.
    cluster.wait_all_from(None, "v2", 3)?;
    let overflowed = wait_for("a burst to overflow", READY_TIMEOUT, || {
        let reports = burst(&cluster, "/delay/1000", 6)?;
        let refused = reports.iter().map(|r| count(r, "503")).sum::<u64>();
        Ok::<_, anyhow::Error>((refused >= 1).then_some(reports))
    })
    .with_context(|| cluster.logs())?;
    let logged = cluster.waypoint.stdout();
    ensure!(
        logged.contains("status=503 flags=UO"),
        "the overflow is flagged UO in the access log: {overflowed:?}\n{logged}"
    );
    Ok(())
}

#[test]
fn a_websocket_is_switched_and_echoed_through_the_waypoint() -> Result<()> {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    route_until(
        &cluster,
        json!([{ "route": [{ "destination": { "host": "app", "subset": "v2" } }] }]),
        "/",
        "200",
    )?;
    let report = app::upgrade(&cluster.client, vip(), "app", "hello over a websocket")?;
    ensure!(
        report.ok && report.echo.as_deref() == Some("hello over a websocket"),
        "the switched connection echoes: {report:?}\n{}",
        cluster.logs()
    );
    Ok(())
}
