//! JWT at the waypoint end to end, as Istio's "JWT authentication" task sets it up: a
//! RequestAuthentication attached to the waypoint with the issuer's key set inline, and
//! an AuthorizationPolicy allowing only requests that carry a principal from it. A
//! valid token is let through, a forged one is refused with 401, and no token with 403.

use std::net::SocketAddr;

use ambit_e2e::{
    app::{self, HttpCall, HttpReport},
    wait_for,
};
use anyhow::{Context as _, Result, ensure};
use serde_json::json;

#[path = "common/waypoint_cluster.rs"]
mod waypoint_cluster;

#[path = "../../waypoint/tests/proxy/issuer.rs"]
mod issuer;

use issuer::Issuer;
use waypoint_cluster::{Cluster, READY_TIMEOUT};

const ISSUER: &str = "testing@secure.istio.io";

fn targeting_waypoint() -> serde_json::Value {
    json!([{ "kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint" }])
}

fn get(cluster: &Cluster, header: Option<&str>) -> Result<HttpReport> {
    let call = HttpCall {
        header,
        ..HttpCall::default()
    };
    app::http_call(
        &cluster.client,
        SocketAddr::from(([198, 19, 200, 20], 80)),
        call,
    )
}

#[test]
fn only_requests_with_a_valid_token_reach_the_app() -> Result<()> {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    let issuer = Issuer::new(ISSUER);
    let forger = Issuer::new(ISSUER);
    cluster.net.write_manifest(
        "request-authentication.yaml",
        &json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "RequestAuthentication",
            "metadata": { "name": "jwt", "namespace": "shop" },
            "spec": {
                "targetRefs": targeting_waypoint(),
                "jwtRules": [{ "issuer": ISSUER, "jwks": issuer.jwks() }],
            },
        }),
    )?;
    cluster.net.write_manifest(
        "require-jwt.yaml",
        &json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": { "name": "require-jwt", "namespace": "shop" },
            "spec": {
                "targetRefs": targeting_waypoint(),
                "action": "ALLOW",
                "rules": [{ "from": [{ "source": {
                    "requestPrincipals": [format!("{ISSUER}/alice")],
                } }] }],
            },
        }),
    )?;
    let valid = format!(
        "authorization: Bearer {}",
        issuer.token("alice", &json!({}))
    );
    let forged = format!(
        "authorization: Bearer {}",
        forger.token("alice", &json!({}))
    );

    wait_for(
        "a request without a token to be refused",
        READY_TIMEOUT,
        || {
            Ok::<_, anyhow::Error>(
                get(&cluster, None)?
                    .statuses
                    .contains_key("403")
                    .then_some(()),
            )
        },
    )
    .with_context(|| cluster.logs())?;
    let allowed = get(&cluster, Some(&valid))?;
    ensure!(
        allowed.statuses.get("200") == Some(&1),
        "a valid token is let through: {allowed:?}\n{}",
        cluster.logs()
    );
    let refused = get(&cluster, Some(&forged))?;
    ensure!(
        refused.statuses.get("401") == Some(&1),
        "a token signed by another key gets 401: {refused:?}"
    );
    Ok(())
}
