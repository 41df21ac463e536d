//! The ingress gateway: `ambit-waypoint --ingress` in `istio-system/ingress-0` serves
//! the Istio Gateway of `deploy/examples/demo/ingress/gateway.yaml` to a client outside
//! the mesh, over HTTP and over HTTPS with a certificate from a Secret.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::Duration,
};

use ambit_e2e::{Pod, PodSpec, app, wait_for};
use anyhow::{Context as _, Result, ensure};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use serde_json::json;

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
    let pki = Pki::generate().context("generating the gateway's certificate")?;
    cluster
        .net
        .write_manifest(&format!("{SECRET}.yaml"), &pki.secret())?;
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
    let response = pki.get(outsider, https_to)?;
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

/// A CA made for this run and a certificate for [`HOST`] signed by it, PEM.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    fn generate() -> Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec![HOST.to_owned()])?.signed_by(&key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The `kubernetes.io/tls` Secret holding the certificate, in `istio-system`.
    fn secret(&self) -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": SECRET, "namespace": "istio-system" },
            "type": "kubernetes.io/tls",
            "stringData": { "tls.crt": self.cert_pem, "tls.key": self.key_pem },
        })
    }

    /// `GET /` for [`HOST`] over TLS from `pod` to `to`, trusting only this CA: the
    /// whole response.
    fn get(&self, pod: &Pod, to: SocketAddr) -> Result<String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes())?)?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let request = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
        pod.run_in(move || -> Result<String> {
            let tcp = TcpStream::connect_timeout(&to, Duration::from_secs(5))
                .with_context(|| format!("connecting to {to}"))?;
            tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
            let connection =
                rustls::ClientConnection::new(Arc::new(config), ServerName::try_from(HOST)?)?;
            let mut stream = rustls::StreamOwned::new(connection, tcp);
            stream.write_all(request.as_bytes())?;
            let mut response = String::new();
            stream
                .read_to_string(&mut response)
                .context("reading the answer over TLS")?;
            Ok(response)
        })?
    }
}
