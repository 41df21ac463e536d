//! External authorization end to end, as Istio's "External Authorization" task sets it
//! up: the mesh config (ConfigMap `istio` in `istio-system`, key `mesh`) defines an
//! `envoyExtAuthzHttp` provider whose service is an enrolled pod, and a CUSTOM
//! AuthorizationPolicy attached to the waypoint sends every request but `/public*` to
//! it. The controller reads the ConfigMap from the config folder and pushes it to the
//! waypoint, which asks the authorizer over the mesh (HBONE) and follows its answer.
//!
//! The authorizer is `pod-app http` answering 403 with its name, except `/status/N`
//! with N: so a request for `/status/200` is allowed and one for `/` refused with the
//! authorizer's own answer.

use std::net::SocketAddr;

use ambit_e2e::{
    PodSpec,
    app::{self, HttpCall, HttpReport},
    wait_for,
};
use anyhow::{Context as _, Result, ensure};
use serde_json::json;

#[path = "common/waypoint_cluster.rs"]
mod waypoint_cluster;

use waypoint_cluster::{Cluster, READY_TIMEOUT, VIP};

const AUTHZ_PORT: u16 = 9000;

fn get(cluster: &Cluster, path: &str) -> Result<HttpReport> {
    let call = HttpCall {
        path,
        ..HttpCall::default()
    };
    app::http_call(&cluster.client, format!("{VIP}:80").parse()?, call)
}

#[test]
fn the_authorizer_of_a_custom_policy_decides_at_the_waypoint() -> Result<()> {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    let authz_pod = cluster.meshes[1]
        .node()
        .add_pod(PodSpec::new("shop", "authz").label("app", "authz"))?;
    let _authorizer = app::http_serve_status(
        &authz_pod,
        SocketAddr::from(([0; 4], AUTHZ_PORT)),
        "authz",
        403,
    )?;
    cluster.net.write_manifest(
        "authz.yaml",
        &json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": "authz", "namespace": "shop" },
            "spec": {
                "clusterIP": "198.19.200.30",
                "selector": { "app": "authz" },
                "ports": [{ "name": "http", "port": AUTHZ_PORT, "targetPort": AUTHZ_PORT }],
            },
        }),
    )?;
    cluster.net.write_manifest(
        "mesh-config.yaml",
        &json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": "istio", "namespace": "istio-system" },
            "data": { "mesh": format!(
                "extensionProviders:\n- name: sample-ext-authz\n  envoyExtAuthzHttp:\n    service: authz.shop.svc.cluster.local\n    port: {AUTHZ_PORT}\n"
            ) },
        }),
    )?;
    cluster.net.write_manifest(
        "ext-authz.yaml",
        &json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": { "name": "ext-authz", "namespace": "shop" },
            "spec": {
                "targetRefs": [{
                    "kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint",
                }],
                "action": "CUSTOM",
                "provider": { "name": "sample-ext-authz" },
                "rules": [{ "to": [{ "operation": { "notPaths": ["/public*"] } }] }],
            },
        }),
    )?;

    // Until the provider's service, its pod and the policy have all reached the waypoint
    // and the authorizer's ztunnel, the waypoint fails closed: a 403 of its own (no
    // body). Then the client gets the authorizer's own 403.
    let refused = wait_for(
        "a request the authorizer refuses to get its answer",
        READY_TIMEOUT,
        || {
            let report = get(&cluster, "/")?;
            Ok::<_, anyhow::Error>((report.bodies.get("authz") == Some(&1)).then_some(report))
        },
    )
    .with_context(|| cluster.logs())?;
    ensure!(
        refused.statuses.get("403") == Some(&1),
        "the authorizer's refusal reaches the client with its status: {refused:?}"
    );
    let allowed = get(&cluster, "/status/200")?;
    ensure!(
        allowed.statuses.get("200") == Some(&1) && !allowed.bodies.contains_key("authz"),
        "a request the authorizer allows reaches the app: {allowed:?}\n{}",
        cluster.logs()
    );
    let public = get(&cluster, "/public")?;
    ensure!(
        public.statuses.get("200") == Some(&1),
        "a path the policy leaves out is not checked: {public:?}"
    );
    Ok(())
}
