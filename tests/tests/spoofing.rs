//! A certificate the mesh CA really signed, used from the wrong pod, is refused: the
//! receiving ztunnel checks that the identity in the client certificate is the identity
//! of the workload at the client's address. Signing with the cluster's own CA key stands
//! in for a stolen certificate; everything else is the real data path.

use std::{net::SocketAddr, time::Duration};

use ambit_api::identity::Identity;
use ambit_controller::ca::{material::CaMaterial, sign::Signer};
use ambit_e2e::{ChildGuard, ControlPlane, Pod, PodSpec, TestNet, app};
use ambit_hbone::{ClientError, Connection, HBONE_PORT, WorkloadCertificate, tls};
use anyhow::{Context as _, Result, ensure};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
const BETA: &str = "spiffe://cluster.local/ns/shop/sa/beta";
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const PORT: u16 = 8080;

/// A certificate for `identity` signed by the cluster's CA, as a thief would hold it.
fn signed(control: &ControlPlane, identity: &Identity) -> Result<WorkloadCertificate> {
    let material = CaMaterial::load_or_create(control.ca_dir(), "cluster.local")?;
    let signer = Signer::new(material, "cluster.local");
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(identity.to_string().as_str().try_into()?)];
    let csr = params.serialize_request(&key)?.pem()?;
    let chain = signer.sign(&csr, identity, Duration::from_secs(600))?;
    let mut certs: Vec<CertificateDer<'static>> = Vec::new();
    for pem in &chain {
        for block in pem::parse_many(pem)? {
            certs.push(CertificateDer::from(block.into_contents()));
        }
    }
    let root = certs.pop().context("the chain ends with the root")?;
    Ok(WorkloadCertificate {
        chain: certs,
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        roots: vec![root],
    })
}

/// Opens one HBONE tunnel from inside `pod` to `server`'s app with `certificate`.
fn tunnel_from(
    pod: &Pod,
    certificate: &WorkloadCertificate,
    server: &Pod,
) -> Result<Result<(), ClientError>> {
    let config = certificate.client_config(BETA.parse()?)?;
    let destination = server.addr_v4(PORT);
    pod.run_in(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let hbone = SocketAddr::new(destination.ip(), HBONE_PORT);
            let stream = tokio::net::TcpStream::connect(hbone)
                .await
                .with_context(|| format!("TCP to {hbone}"))?;
            let tls = tls::connect(config, hbone.ip(), stream).await?;
            let connection = Connection::handshake(tls).await?;
            Ok(connection
                .open(destination, None, http::HeaderMap::new())
                .await
                .map(drop))
        })
    })?
}

#[test]
fn a_signed_certificate_for_another_identity_is_refused_from_a_pod_address() -> Result<()> {
    let Some(net) = TestNet::new("spoofing") else {
        return Ok(());
    };
    net.write_namespace("shop", [AMBIENT])?;
    let n1 = net.add_node("n1")?;
    let n2 = net.add_node("n2")?;
    let control = ControlPlane::new(&net, &n1)?;
    let meshes = control.install(&net, &[&n1, &n2])?;
    let client = n1.add_pod(PodSpec::new("shop", "client").service_account("alpha"))?;
    let server = n2.add_pod(PodSpec::new("shop", "server").service_account("beta"))?;
    let _app = app::serve(&server, SocketAddr::from(([0; 4], PORT)))?;
    let _control = control.start(&net)?;
    meshes[1].wait_certificate(BETA, READY_TIMEOUT)?;
    meshes[1].wait_peer(&client.ipv4().to_string(), None, READY_TIMEOUT)?;

    // The client pod's own identity: a tunnel opens (the harness itself works).
    let own = signed(
        &control,
        &"spiffe://cluster.local/ns/shop/sa/alpha".parse()?,
    )?;
    tunnel_from(&client, &own, &server)?.context("the client's own identity is accepted")?;

    // Another identity the CA signed, from the same address: refused, and said why.
    let forged = signed(
        &control,
        &"spiffe://cluster.local/ns/shop/sa/admin".parse()?,
    )?;
    let refused = tunnel_from(&client, &forged, &server)?;
    let status = refused.as_ref().err().and_then(ClientError::status);
    ensure!(
        status == Some(http::StatusCode::UNAUTHORIZED),
        "another identity from the client's address must be refused with 401, got {refused:?}"
    );
    let log = meshes[1].ztunnel().map(ChildGuard::stdout)?;
    ensure!(
        log.contains("identity does not match the source workload")
            && log.contains("sa/admin")
            && log.contains("shop/client"),
        "n2's ztunnel should log the mismatch with both identities:\n{log}"
    );
    Ok(())
}
