//! The Gateway API's HTTPRoute at the waypoint, end to end: on the waypoint cluster
//! (namespace `shop` behind its waypoint, pods `app-v1`/`-v2` on n2 and `-v3` on n1), a
//! route attached to the `app` Service (`parentRefs: [{kind: Service, name: app, port:
//! 80}]`) sends everyone to the `app-v1` Service and user jason to `app-v2` — listed
//! after the catch-all, so only the Gateway API's ranking of matches (a header match
//! before none) sends jason there.

use std::net::SocketAddr;

use ambit_e2e::{app, wait_for};
use anyhow::{Context as _, Result};
use serde_json::json;

#[path = "common/waypoint_cluster.rs"]
mod waypoint_cluster;

use waypoint_cluster::{APP_PORT, Cluster, READY_TIMEOUT};

#[test]
fn an_http_route_on_the_service_ranks_its_matches_and_routes_to_backend_services() -> Result<()> {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    for (version, vip) in [("v1", "198.19.200.21"), ("v2", "198.19.200.22")] {
        cluster.net.write_manifest(
            &format!("app-{version}.yaml"),
            &json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": { "name": format!("app-{version}"), "namespace": "shop" },
                "spec": {
                    "clusterIP": vip,
                    "selector": { "app": "app", "version": version },
                    "ports": [{ "name": "http", "port": 80, "targetPort": APP_PORT }],
                },
            }),
        )?;
    }
    cluster.net.write_manifest(
        "http-route.yaml",
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": { "name": "app", "namespace": "shop" },
            "spec": {
                "parentRefs": [{ "group": "", "kind": "Service", "name": "app", "port": 80 }],
                "rules": [
                    { "backendRefs": [{ "name": "app-v1", "port": 80 }] },
                    {
                        "matches": [{ "headers": [{ "name": "end-user", "value": "jason" }] }],
                        "backendRefs": [{ "name": "app-v2", "port": 80 }],
                    },
                ],
            },
        }),
    )?;
    cluster.wait_all_from(None, "v1", 40)?;
    cluster.wait_all_from(Some("end-user: jason"), "v2", 20)?;

    // A rule without backends answers 500, as the Gateway API requires.
    cluster.net.write_manifest(
        "http-route.yaml",
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": { "name": "app", "namespace": "shop" },
            "spec": {
                "parentRefs": [{ "group": "", "kind": "Service", "name": "app" }],
                "rules": [{ "matches": [{ "path": { "type": "PathPrefix", "value": "/" } }] }],
            },
        }),
    )?;
    let vip: SocketAddr = format!("{}:80", waypoint_cluster::VIP).parse()?;
    wait_for(
        "the route without backends to answer 500",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            let report = app::http_get(&cluster.client, vip, 5, None)?;
            Ok((report.statuses.get("500") == Some(&5)).then_some(()))
        },
    )
    .with_context(|| cluster.logs())?;
    Ok(())
}
