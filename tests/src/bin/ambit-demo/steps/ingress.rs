//! The ingress gateway: `ambit-waypoint --ingress` in `istio-system/ingress-0` serves
//! the Istio Gateway of `deploy/examples/demo/ingress/gateway.yaml` to a client outside
//! the mesh, over HTTP and over HTTPS with a certificate from a Secret.

use ambit_e2e::{PodSpec, app, gateway_client::TestPki, wait_for};
use anyhow::{Context as _, Result, ensure};

use super::{READY_TIMEOUT, Step, routing::split};
use crate::{cluster::Cluster, components::Component};

/// The host the Gateway's HTTPS server answers for.
const HOST: &str = "shop.example.com";
/// The gateway pod's service account, as Istio's installation names it.
const GATEWAY_ACCOUNT: &str = "istio-ingressgateway";
/// The Secret the Gateway's `credentialName` names.
const SECRET: &str = "shop-cert";

pub const INGRESS: Step = Step {
    name: "the ingress gateway serves the app to a client outside the mesh",
    component: Component::IngressGateway,
    run: ingress,
};

fn ingress(cluster: &mut Cluster<'_>) -> Result<String> {
    cluster.add_pod(
        0,
        PodSpec::new("istio-system", "ingress-0")
            .service_account(GATEWAY_ACCOUNT)
            .label("istio", "ingressgateway"),
    )?;
    let pki = TestPki::generate(HOST).context("generating the gateway's certificate")?;
    cluster.net.write_manifest(
        &format!("{SECRET}.yaml"),
        &pki.secret("istio-system", SECRET),
    )?;
    cluster.apply("ingress/gateway.yaml", "gateway.yaml")?;
    let gateway =
        cluster
            .control
            .start_ingress(cluster.pod("ingress-0")?, GATEWAY_ACCOUNT, &[80, 443])?;
    cluster.keep(Component::IngressGateway, gateway);
    let gateway_pod = cluster.pod("ingress-0")?;
    let (outsider, http_to) = (cluster.pod("outsider")?, gateway_pod.addr_v4(80));
    let http = wait_for(
        "the ingress gateway to route",
        READY_TIMEOUT,
        || -> Result<Option<app::HttpReport>> {
            let report = app::http_get(outsider, http_to, 20, None)?;
            Ok((report.statuses.get("200") == Some(&20)).then_some(report))
        },
    )?;
    let https_to = gateway_pod.addr_v4(443);
    let response = pki.get(outsider, https_to, "/")?;
    ensure!(
        response.starts_with("HTTP/1.1 200 "),
        "HTTPS through the gateway answered: {response}"
    );
    Ok(format!(
        "legacy/outsider -> ingress-0 ({http_to}), HTTP ×20: all 200, {}; the gateway carries them over HBONE to the waypoint, so the canary applies\nHTTPS ({https_to}, {HOST}, certificate from Secret istio-system/{SECRET}, verified by the client): 200, answered by {}",
        split(&http),
        response.lines().last().unwrap_or_default()
    ))
}
