//! L7 routing at the waypoint, as Istio's traffic-management guides show it: requests
//! to the `app` service balanced over v1 and v2, then a VirtualService sending them all
//! to v2, then the same VirtualService edited into a 90/10 canary, measured, then the
//! canary written as a Gateway API HTTPRoute instead.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ambit_e2e::{app, wait_for};
use anyhow::{Result, ensure};

use super::{READY_TIMEOUT, Step};
use crate::{cluster::Cluster, components::Component};

/// The `app` Service's cluster IP and port (`deploy/examples/demo/waypoint/app.yaml`).
pub const APP_VIP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 19, 200, 30)), 80);
/// The file the VirtualService is written to in the config folder.
const ROUTES_FILE: &str = "virtual-service.yaml";
/// The file the HTTPRoute is written to.
const HTTP_ROUTE_FILE: &str = "http-route.yaml";
/// How many requests the canary split is measured over.
const CANARY_REQUESTS: u64 = 200;

pub const LOAD_BALANCING: Step = Step {
    name: "a waypoint balances app's requests over v1 and v2",
    component: Component::Waypoint,
    run: load_balancing,
};

pub const ALL_TO_V2: Step = Step {
    name: "a VirtualService sends everything to v2 (jason still gets v1)",
    component: Component::Waypoint,
    run: all_to_v2,
};

pub const CANARY: Step = Step {
    name: "the VirtualService edited into a 90/10 canary split",
    component: Component::Waypoint,
    run: canary,
};

pub const HTTP_ROUTE: Step = Step {
    name: "the canary as a Gateway API HTTPRoute instead of the VirtualService",
    component: Component::Waypoint,
    run: http_route,
};

fn load_balancing(cluster: &mut Cluster<'_>) -> Result<String> {
    cluster.apply("waypoint/app.yaml", "app.yaml")?;
    let waypoint = cluster
        .control
        .start_waypoint(cluster.pod("waypoint-0")?, "waypoint")?;
    cluster.keep(Component::Waypoint, waypoint);
    let client = cluster.pod("client")?;
    wait_for(
        "the waypoint to route to both versions",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            let report = app::http_get(client, APP_VIP, 10, None)?;
            Ok((report.bodies.len() == 2).then_some(()))
        },
    )?;
    let mut turns = Vec::new();
    for _ in 0..6 {
        let report = app::http_get(client, APP_VIP, 1, None)?;
        turns.extend(report.bodies.into_keys());
    }
    ensure!(
        turns.len() == 6 && turns.windows(2).all(|pair| pair[0] != pair[1]),
        "round robin should alternate v1 and v2, but six requests were answered by {turns:?}"
    );
    let report = app::http_get(client, APP_VIP, 20, None)?;
    Ok(format!(
        "client -> app ({APP_VIP}) goes over HBONE to ambit-waypoint, which balances each request (DestinationRule: ROUND_ROBIN)\nsix requests one by one: {}; 20 on one connection: {}",
        turns.join(" "),
        split(&report)
    ))
}

fn all_to_v2(cluster: &mut Cluster<'_>) -> Result<String> {
    cluster.apply("routes/all-v2.yaml", ROUTES_FILE)?;
    let client = cluster.pod("client")?;
    let everyone = wait_for(
        "the VirtualService to apply",
        READY_TIMEOUT,
        || -> Result<Option<app::HttpReport>> {
            let report = app::http_get(client, APP_VIP, 20, None)?;
            Ok((report.bodies.get("v2") == Some(&20)).then_some(report))
        },
    )?;
    let jason = app::http_get(client, APP_VIP, 20, Some("end-user: jason"))?;
    ensure!(
        jason.bodies.get("v1") == Some(&20),
        "jason's requests should all go to v1: {jason:?}"
    );
    Ok(format!(
        "routes/all-v2.yaml copied in as {ROUTES_FILE}: {}; with end-user: jason, {}",
        split(&everyone),
        split(&jason)
    ))
}

fn canary(cluster: &mut Cluster<'_>) -> Result<String> {
    cluster.apply("routes/canary.yaml", ROUTES_FILE)?;
    let client = cluster.pod("client")?;
    // Everything went to v2 before: v1 answering means the canary applies.
    wait_for(
        "the canary split to apply",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            let report = app::http_get(client, APP_VIP, 20, None)?;
            Ok(report.bodies.contains_key("v1").then_some(()))
        },
    )?;
    let report = measured_canary(client)?;
    Ok(format!(
        "routes/canary.yaml copied over {ROUTES_FILE} (weights 90/10), over {CANARY_REQUESTS} requests: {}",
        split(&report)
    ))
}

fn http_route(cluster: &mut Cluster<'_>) -> Result<String> {
    cluster.remove(ROUTES_FILE)?;
    cluster.apply("routes/http-route.yaml", HTTP_ROUTE_FILE)?;
    let client = cluster.pod("client")?;
    // The VirtualService split jason's requests too: all of them on v2 means the
    // HTTPRoute applies.
    wait_for(
        "the HTTPRoute to apply",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            let report = app::http_get(client, APP_VIP, 20, Some("end-user: jason"))?;
            Ok((report.bodies.get("v2") == Some(&20)).then_some(()))
        },
    )?;
    let report = measured_canary(client)?;
    Ok(format!(
        "{ROUTES_FILE} removed, routes/http-route.yaml copied in as {HTTP_ROUTE_FILE} (parent: Service app; backends app-v1 90, app-v2 10; jason to app-v2): over {CANARY_REQUESTS} requests: {}; jason: all v2",
        split(&report)
    ))
}

/// [`CANARY_REQUESTS`] requests to `app`, split about 90/10 between v1 and v2.
fn measured_canary(client: &ambit_e2e::Pod) -> Result<app::HttpReport> {
    let report = app::http_get(client, APP_VIP, usize::try_from(CANARY_REQUESTS)?, None)?;
    let v1 = report.bodies.get("v1").copied().unwrap_or(0);
    let v2 = report.bodies.get("v2").copied().unwrap_or(0);
    // 10% of 200 is 20 ± 4.2 (one standard deviation): 5 to 40 is far outside chance.
    ensure!(
        v1 + v2 == CANARY_REQUESTS && (5..=40).contains(&v2),
        "expected about 180 v1 and 20 v2 of {CANARY_REQUESTS}: {report:?}"
    );
    Ok(report)
}

/// How many answers each version gave, with percentages: `v1 182 (91%), v2 18 (9%)`.
pub fn split(report: &app::HttpReport) -> String {
    let total: u64 = report.bodies.values().sum();
    if total == 0 {
        return format!("no answer ({report:?})");
    }
    report
        .bodies
        .iter()
        .map(|(version, count)| format!("{version} {count} ({}%)", count * 100 / total))
        .collect::<Vec<_>>()
        .join(", ")
}
