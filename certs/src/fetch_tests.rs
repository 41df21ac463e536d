//! In-process tests against a fake CA on loopback: it serves TLS, checks the bearer
//! token and the `ImpersonatedIdentity` metadata and signs the CSR, as
//! `ambit-controller serve-ca` does.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use ambit_api::{
    ca::{
        IMPERSONATED_IDENTITY_KEY, IstioCertificateRequest, IstioCertificateResponse,
        istio_certificate_service_server::{
            IstioCertificateService, IstioCertificateServiceServer,
        },
    },
    channel::testing::TestTls,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, IsCa, Issuer, KeyPair,
    SanType,
};
use tonic::{
    Request, Response, Status,
    transport::{Identity as TlsIdentity, ServerTlsConfig, server::TcpIncoming},
};

use super::*;
use crate::{CertError, CertificateStore};

const TOKEN: &str = "token-of-node-a";

struct FakeCa {
    issuer: Issuer<'static, KeyPair>,
    root_pem: String,
    issued: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl IstioCertificateService for FakeCa {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let bearer = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        if bearer != Some(&format!("Bearer {TOKEN}")) {
            return Err(Status::unauthenticated("unknown token"));
        }
        let request = request.into_inner();
        let impersonated = request
            .metadata
            .as_ref()
            .and_then(|metadata| metadata.fields.get(IMPERSONATED_IDENTITY_KEY))
            .and_then(|value| match &value.kind {
                Some(prost_types::value::Kind::StringValue(uri)) => Some(uri.clone()),
                _ => None,
            })
            .ok_or_else(|| Status::invalid_argument("no ImpersonatedIdentity"))?;
        let mut csr = CertificateSigningRequestParams::from_pem(&request.csr)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let asked: Vec<&str> = csr
            .params
            .subject_alt_names
            .iter()
            .filter_map(|san| match san {
                SanType::URI(uri) => Some(uri.as_str()),
                _ => None,
            })
            .collect();
        if asked != [impersonated.as_str()] {
            return Err(Status::invalid_argument(format!("CSR SANs {asked:?}")));
        }
        let now = time::OffsetDateTime::now_utc();
        let ttl = time::Duration::seconds(request.validity_duration.max(1));
        csr.params.not_before = now - time::Duration::seconds(60);
        csr.params.not_after = now + ttl;
        let leaf = csr
            .signed_by(&self.issuer)
            .map_err(|e| Status::internal(e.to_string()))?;
        self.issued.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: vec![leaf.pem(), self.root_pem.clone()],
        }))
    }
}

/// A fake CA on loopback, over TLS with a certificate from its own root.
struct Served {
    address: String,
    issued: Arc<AtomicUsize>,
    /// Holds `root-cert.pem`, the CA's root, for `--ca-root-file`.
    dir: tempfile::TempDir,
}

impl Served {
    fn root_file(&self) -> PathBuf {
        self.dir.path().join("root-cert.pem")
    }

    /// A client presenting `token`, asking for `ttl`, verifying the CA with its root.
    fn client(&self, token: PathBuf, ttl: Option<Duration>) -> CaClient {
        CaClient::new(&self.address, token, ttl, Some(&self.root_file())).expect("a client")
    }
}

async fn fake_ca() -> Served {
    let tls = TestTls::new();
    let dir = tempfile::tempdir().expect("a scratch folder");
    let _ = tls.write_root(dir.path());
    let issued = Arc::new(AtomicUsize::new(0));
    let server_tls = ServerTlsConfig::new().identity(TlsIdentity::from_pem(
        &tls.server_cert_pem,
        &tls.server_key_pem,
    ));
    let ca = FakeCa {
        issuer: tls.issuer,
        root_pem: tls.root_pem,
        issued: Arc::clone(&issued),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = format!("https://{}", listener.local_addr().expect("local addr"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(server_tls)
            .expect("a TLS config")
            .add_service(IstioCertificateServiceServer::new(ca))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    Served {
        address,
        issued,
        dir,
    }
}

fn token_file(token: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("a scratch folder");
    let path = dir.path().join("token");
    std::fs::write(&path, format!("{token}\n")).expect("write the token");
    (dir, path)
}

fn alpha() -> Identity {
    Identity::new("cluster.local", "shop", "alpha").expect("a valid identity")
}

#[tokio::test]
async fn fetches_a_usable_certificate_for_the_identity() {
    let ca = fake_ca().await;
    let (_dir, token) = token_file(TOKEN);
    let client = ca.client(token, Some(Duration::from_secs(60)));
    let got = client.fetch(&alpha()).await.expect("a certificate");
    assert_eq!(ca.issued.load(Ordering::SeqCst), 1);
    assert_eq!(got.certificate.identity().expect("an identity"), alpha());
    assert_eq!(
        got.certificate.chain.len(),
        1,
        "the root is split off the chain"
    );
    assert_eq!(
        got.certificate.roots,
        [got_root(&ca)],
        "the mesh root is --ca-root-file's"
    );
    let (serial, not_before, not_after) = leaf_facts(&got.certificate.chain[0]).expect("facts");
    assert_eq!(got.serial, serial);
    assert!(!serial.is_empty() && serial.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(not_after.duration_since(not_before).expect("ordered") >= Duration::from_secs(60));
    // The key fits the certificate: HBONE can build its TLS configs from it.
    got.certificate.server_config().expect("a server config");
    got.certificate
        .client_config(alpha())
        .expect("a client config");
}

#[tokio::test]
async fn refusals_and_outages_say_what_happened() {
    let ca = fake_ca().await;
    let (_dir, wrong) = token_file("not-the-token");
    let client = ca.client(wrong, None);
    let error = client
        .fetch(&alpha())
        .await
        .expect_err("a wrong token is refused");
    assert!(
        matches!(
            error,
            CertError::Refused {
                code: tonic::Code::Unauthenticated,
                ..
            }
        ),
        "{error}"
    );

    let (_dir, token) = token_file(TOKEN);
    // Bind and drop: nothing listens on the port any more.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    let client = CaClient::new(
        &format!("https://{closed}"),
        token,
        None,
        Some(&ca.root_file()),
    )
    .expect("a client");
    let error = client.fetch(&alpha()).await.expect_err("nobody listens");
    assert!(matches!(error, CertError::Unreachable { .. }), "{error}");
    assert!(error.to_string().contains("--ca-address"), "{error}");

    let error = CaClient::new("not a url", PathBuf::from("/nonexistent"), None, None)
        .expect_err("a bad address");
    assert!(error.to_string().contains("--ca-address"), "{error}");
}

#[tokio::test]
async fn the_store_renews_at_half_life_and_stops_with_the_last_pod() {
    let ca = fake_ca().await;
    let (_dir, token) = token_file(TOKEN);
    // X.509 times have whole seconds: a 1 s certificate may be cut to a few milliseconds
    // and expire while its renewal is in flight. Two seconds always leave one.
    let client = ca.client(token, Some(Duration::from_secs(2)));
    let issued = Arc::clone(&ca.issued);
    let store = Arc::new(CertificateStore::new(client));
    let first = store.acquire(alpha());
    let second = store.acquire(alpha());
    let serial = |store: &CertificateStore| store.get(&alpha()).map(|issued| issued.serial.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let mut seen = Vec::new();
    while seen.len() < 2 && tokio::time::Instant::now() < deadline {
        if let Some(current) = serial(&store)
            && seen.last() != Some(&current)
        {
            seen.push(current);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen.len(),
        2,
        "a 2 s certificate should be renewed within 8 s: {seen:?}"
    );
    assert_eq!(store.dump()[0]["state"], "valid");
    assert_eq!(store.dump()[0]["pods"], 2, "two pods, one certificate");

    drop(first);
    assert!(serial(&store).is_some(), "the other pod keeps it");
    drop(second);
    assert!(serial(&store).is_none(), "dropped with the last pod");
    // A fetch already in flight when the last pod left may still land; let it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = issued.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        issued.load(Ordering::SeqCst),
        after,
        "no renewal after the last pod left"
    );
}

#[tokio::test]
async fn the_root_file_is_the_mesh_root_and_is_read_at_each_request() {
    let ca = fake_ca().await;
    let (dir, token) = token_file(TOKEN);
    // Not mounted yet when the client starts: the request fails, saying which file.
    let root_file = dir.path().join("root-cert.pem");
    let client = CaClient::new(&ca.address, token, None, Some(&root_file)).expect("a client");
    let error = client.fetch(&alpha()).await.expect_err("no root yet");
    assert!(
        matches!(error, CertError::RootFile { .. }) && error.to_string().contains("--ca-root-file"),
        "{error}"
    );
    std::fs::write(&root_file, "not a certificate\n").expect("write");
    let error = client
        .fetch(&alpha())
        .await
        .expect_err("no certificate in the file");
    assert!(error.to_string().contains("--ca-root-file"), "{error}");

    // During a root rotation the file holds the new root and the old one.
    let other_key = KeyPair::generate().expect("a key");
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let next_root = params.self_signed(&other_key).expect("a root");
    let current_root = std::fs::read_to_string(ca.root_file()).expect("the CA's root");
    std::fs::write(&root_file, format!("{}{current_root}", next_root.pem())).expect("write");
    let got = client.fetch(&alpha()).await.expect("a certificate");
    assert_eq!(
        got.certificate.roots,
        [next_root.der().clone(), got_root(&ca)],
        "the workloads trust every root of the file, not the chain's last certificate"
    );
}

#[tokio::test]
async fn a_caller_can_wait_for_a_certificate_still_being_fetched() {
    let ca = fake_ca().await;
    let (_dir, token) = token_file(TOKEN);
    let client = ca.client(token, None);
    let store = Arc::new(CertificateStore::new(client));
    let _lease = store.acquire(alpha());
    let issued = store
        .wait_for(&alpha(), Duration::from_secs(5))
        .await
        .expect("the certificate, once the CA answers");
    assert_eq!(
        store.get(&alpha()).map(|held| held.serial.clone()),
        Some(issued.serial.clone())
    );
    let never =
        ambit_api::identity::Identity::new("cluster.local", "shop", "nobody").expect("an identity");
    assert!(
        store
            .wait_for(&never, Duration::from_millis(100))
            .await
            .is_none(),
        "an identity no pod holds gets no certificate"
    );
}

#[tokio::test]
async fn a_rotated_token_file_is_read_again_at_the_next_request() {
    let ca = fake_ca().await;
    let (dir, token) = token_file("an-expired-token");
    let client = ca.client(token.clone(), None);
    let error = client
        .fetch(&alpha())
        .await
        .expect_err("the old token is refused");
    assert!(
        matches!(
            error,
            CertError::Refused {
                code: tonic::Code::Unauthenticated,
                ..
            }
        ),
        "{error}"
    );
    // As the kubelet rotates a projected token: a new file renamed over the old one.
    let rotated = dir.path().join("token.new");
    std::fs::write(&rotated, TOKEN).expect("write the new token");
    std::fs::rename(&rotated, &token).expect("swap the token file");
    client
        .fetch(&alpha())
        .await
        .expect("the rotated token is used");
    assert_eq!(ca.issued.load(Ordering::SeqCst), 1);
}

/// The fake CA's root, DER.
fn got_root(ca: &Served) -> rustls_pki_types::CertificateDer<'static> {
    let pem = std::fs::read_to_string(ca.root_file()).expect("the root file");
    CertificateDer::from(pem::parse(pem).expect("PEM").into_contents())
}

#[tokio::test]
async fn a_ca_whose_certificate_the_root_does_not_verify_is_refused() {
    let ca = fake_ca().await;
    let (dir, token) = token_file(TOKEN);
    let other = TestTls::new().write_root(dir.path());
    let client = CaClient::new(&ca.address, token, None, Some(&other)).expect("a client");
    let error = client
        .fetch(&alpha())
        .await
        .expect_err("a server the root does not verify");
    assert!(matches!(error, CertError::Unreachable { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("certificate") && message.contains("--ca-root-file"),
        "the error should say the certificate does not verify and name the flag: {message}"
    );
    assert_eq!(
        ca.issued.load(Ordering::SeqCst),
        0,
        "no request reached the CA"
    );
}

#[tokio::test]
async fn a_token_is_never_sent_in_clear_nor_without_a_root() {
    let ca = fake_ca().await;
    let (_dir, token) = token_file(TOKEN);
    let plaintext = ca.address.replacen("https://", "http://", 1);
    let error = CaClient::new(&plaintext, token.clone(), None, Some(&ca.root_file()))
        .expect_err("http:// with a token is refused");
    let message = error.to_string();
    assert!(
        message.contains("in clear") && message.contains(&ca.address),
        "the error should say to use the https:// address: {message}"
    );
    let error = CaClient::new(&ca.address, token, None, None).expect_err("https:// needs a root");
    assert!(error.to_string().contains("--ca-root-file"), "{error}");
}
