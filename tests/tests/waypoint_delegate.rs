//! VirtualService `delegate` end to end, on the shared two-node cluster (see
//! `common/waypoint_cluster.rs`): the root VirtualService of `app` hands the requests of
//! user jason to a delegate VirtualService (no hosts), whose routes the controller
//! merges into the root before pushing it to the real `ambit-waypoint`. Editing the
//! delegate alone re-routes those requests; the root's own routes are unaffected.

use anyhow::Result;
use serde_json::json;

#[path = "common/waypoint_cluster.rs"]
mod waypoint_cluster;

use waypoint_cluster::Cluster;

const JASON: &str = "end-user: jason";

/// The delegate `app-jason`: every request it gets goes to `subset`.
fn delegate_to(cluster: &Cluster, subset: &str) -> Result<()> {
    cluster.apply(
        "delegate.yaml",
        "VirtualService",
        "app-jason",
        json!({
            "http": [{
                "name": "jason",
                "route": [{ "destination": { "host": "app", "subset": subset } }],
            }],
        }),
    )
}

#[test]
fn a_delegates_routes_serve_the_roots_requests_and_follow_its_edits() -> Result<()> {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    delegate_to(&cluster, "v3")?;
    cluster.set_routes(json!([
        {
            "match": [{ "headers": { "end-user": { "exact": "jason" } } }],
            "delegate": { "name": "app-jason" },
        },
        { "route": [{ "destination": { "host": "app", "subset": "v1" } }] },
    ]))?;
    cluster.wait_all_from(Some(JASON), "v3", 20)?;
    cluster.wait_all_from(None, "v1", 20)?;

    delegate_to(&cluster, "v2")?;
    cluster.wait_all_from(Some(JASON), "v2", 20)?;
    cluster.wait_all_from(None, "v1", 20)?;
    Ok(())
}
