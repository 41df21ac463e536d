//! L7 routing at the waypoint: the `app` service's traffic goes through it, and its
//! VirtualService chooses the version.

use std::net::SocketAddr;

use ambit_e2e::{app, wait_for};
use anyhow::{Context as _, Result, ensure};

use super::{READY_TIMEOUT, Step};
use crate::cluster::Cluster;

/// The `app` Service's cluster IP and port (`deploy/examples/demo/waypoint/app.yaml`).
pub const APP_VIP: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 19, 200, 30)),
    80,
);

pub const WAYPOINT: Step = Step {
    name: "a waypoint applies the VirtualService: v2 for everyone, v1 for jason",
    run: waypoint,
};

fn waypoint(cluster: &mut Cluster<'_>) -> Result<String> {
    cluster.apply("waypoint/app.yaml", "app.yaml")?;
    let waypoint = cluster
        .control
        .start_waypoint(cluster.pod("waypoint-0")?, "waypoint")?;
    cluster.keep(waypoint);
    let client = cluster.pod("client")?;
    let everyone = wait_for(
        "the waypoint to route",
        READY_TIMEOUT,
        || -> Result<Option<app::HttpReport>> {
            let report = app::http_get(client, APP_VIP, 20, None)?;
            Ok((report.bodies.get("v2") == Some(&20)).then_some(report))
        },
    )
    .context("waiting for the VirtualService")?;
    let jason = app::http_get(client, APP_VIP, 20, Some("end-user: jason"))?;
    ensure!(
        jason.bodies.get("v1") == Some(&20),
        "jason's requests: {jason:?}"
    );
    Ok(format!(
        "client -> app ({APP_VIP}) goes over HBONE to ambit-waypoint, which routes by the VirtualService: 20/20 answered by {:?}; with end-user: jason, 20/20 by {:?}",
        everyone.bodies.keys().collect::<Vec<_>>(),
        jason.bodies.keys().collect::<Vec<_>>()
    ))
}
