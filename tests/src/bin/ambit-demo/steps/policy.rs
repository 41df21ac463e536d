//! L7 authorization at the waypoint: an AuthorizationPolicy denies POST, and the denial
//! shows in the waypoint's access log and in its Istio metrics.

use std::time::Duration;

use ambit_e2e::{
    app,
    mesh::{Metrics, loopback_get},
    wait_for,
};
use anyhow::{Context as _, Result, ensure};

use super::{
    DEFAULT_IDENTITY, READY_TIMEOUT, Step, WAYPOINT_METRICS_PORT, access_entry, routing::APP_VIP,
};
use crate::{cluster::Cluster, components::Component};

pub const DENY_POST: Step = Step {
    name: "an AuthorizationPolicy on the waypoint denies POST",
    component: Component::Waypoint,
    run: deny_post,
};

fn deny_post(cluster: &mut Cluster<'_>) -> Result<String> {
    cluster.apply("policy/deny-post.yaml", "authorization.yaml")?;
    let client = cluster.pod("client")?;
    let denied = wait_for(
        "POST to be denied by the waypoint",
        READY_TIMEOUT,
        || -> Result<Option<app::HttpReport>> {
            let report = app::http_request(client, "POST", APP_VIP, 5, None)?;
            Ok((report.statuses.get("403") == Some(&5)).then_some(report))
        },
    )?;
    let get = app::http_get(client, APP_VIP, 10, None)?;
    ensure!(
        get.statuses.get("200") == Some(&10),
        "GET should stay allowed: {get:?}"
    );
    let line = cluster
        .process(Component::Waypoint)?
        .wait_for_log_line(Duration::from_secs(5), |line| {
            line.contains("POST") && line.contains("status=403")
        })
        .context("the waypoint's access log has no denied POST")?;
    let metrics = Metrics(
        cluster
            .pod("waypoint-0")?
            .run_in(|| loopback_get(WAYPOINT_METRICS_PORT, "/metrics"))??,
    );
    let forbidden = metrics.sum(
        "istio_requests_total",
        &[
            ("reporter", "waypoint"),
            ("response_code", "403"),
            ("source_principal", DEFAULT_IDENTITY),
        ],
    );
    ensure!(
        forbidden >= 5.0,
        "the waypoint should count the denied requests, but istio_requests_total{{response_code=\"403\"}} is {forbidden}"
    );
    Ok(format!(
        "POST ×5: {:?}; GET ×10: {:?}\nwaypoint access log: {}\nwaypoint metrics (:{WAYPOINT_METRICS_PORT}/metrics): istio_requests_total{{response_code=\"403\",source_principal=\"{DEFAULT_IDENTITY}\"}} {forbidden}",
        denied.statuses,
        get.statuses,
        access_entry(&line)
    ))
}
