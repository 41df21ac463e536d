//! The certificate authority over real gRPC on loopback: a config folder with pods on
//! two nodes, a token per node (or, in Kubernetes mode, a fake API server answering
//! TokenReviews with recorded responses), and Istio's generated client over TLS, as
//! ztunnel connects (`ambit_api::channel`).

#[path = "kube/fake_api.rs"]
#[allow(dead_code, reason = "this test uses the fake API's POSTs only")]
mod fake_api;

use std::{
    collections::BTreeMap,
    fmt::Debug,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use ambit_api::{
    ca::{
        IMPERSONATED_IDENTITY_KEY, IstioCertificateRequest,
        istio_certificate_service_client::IstioCertificateServiceClient,
    },
    channel,
};
use ambit_controller::{
    ca::{
        self, CaConfig,
        auth::{Authenticator, TokenFiles},
        material::ROOT_CERT_FILE,
        service::{CaCounts, CaMetrics},
        sign::{DEFAULT_CERT_TTL_SECS, MAX_CERT_TTL_SECS},
        token_review::TokenReviewer,
    },
    monitoring,
    serving::{self, ServingCert},
};
use hyper::StatusCode;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, Request, transport::Channel};
use x509_parser::extensions::GeneralName;

use self::fake_api::{FakeApi, recorded};

const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";
const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const WAYPOINT: &str = "spiffe://cluster.local/ns/shop/sa/waypoint";

const CONFIG: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Pod
metadata:
  name: cart-7d4f
  namespace: shop
spec:
  nodeName: node-a
  serviceAccountName: cart
---
apiVersion: v1
kind: Pod
metadata:
  name: web-5c8b
  namespace: shop
spec:
  nodeName: node-b
  serviceAccountName: web
";

struct Folders {
    _dir: TempDir,
    config: CaConfig,
    tokens_dir: PathBuf,
}

impl Folders {
    fn tokens(&self) -> TokenFiles {
        TokenFiles::load(&self.tokens_dir).expect("the token files")
    }
}

fn folders() -> Folders {
    let dir = tempfile::tempdir().expect("temp dir");
    let config_dir = dir.path().join("config");
    let tokens_dir = dir.path().join("tokens");
    fs::create_dir_all(&config_dir).unwrap();
    fs::create_dir_all(&tokens_dir).unwrap();
    fs::write(config_dir.join("shop.yaml"), CONFIG).unwrap();
    fs::write(tokens_dir.join("node-a"), "token-a\n").unwrap();
    fs::write(tokens_dir.join("node-b"), "token-b\n").unwrap();
    let config = CaConfig {
        ca_dir: dir.path().join("cacerts"),
        config_dir: Some(config_dir),
        trust_domain: "cluster.local".into(),
    };
    Folders {
        _dir: dir,
        config,
        tokens_dir,
    }
}

/// The serving certificate's lifetime in these tests.
const SERVING_TTL: Duration = Duration::from_secs(3600);

/// A CA server running in this process.
struct Server {
    addr: SocketAddr,
    client: IstioCertificateServiceClient<Channel>,
    metrics: std::sync::Arc<CaMetrics>,
    root_pem: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ca::service::ServeError>>,
}

impl Server {
    async fn start(config: &CaConfig, authenticator: impl Authenticator + Debug) -> Self {
        let service = ca::build(config, authenticator).expect("the CA starts");
        let metrics = service.metrics();
        let root_pem = service.signer().material().root_pem().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let names = serving::server_names(&[], None, addr);
        let tls = ServingCert::issue(Arc::clone(service.signer()), &names, SERVING_TTL)
            .expect("a serving certificate")
            .acceptor()
            .expect("a TLS acceptor");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ca::service::serve(listener, service, tls, async {
            let _ = stopped.await;
        }));
        // The client as ztunnel's: TLS, verified against the CA folder's root.
        let root_file = config.ca_dir.join(ROOT_CERT_FILE);
        let channel = channel::endpoint(&format!("https://{addr}"), Some(&root_file), true)
            .expect("an endpoint")
            .connect()
            .await
            .expect("connect to the CA");
        let client = IstioCertificateServiceClient::new(channel);
        Self {
            addr,
            client,
            metrics,
            root_pem,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        drop(self.client);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
            .await
            .expect("the server task")
            .expect("the server stops cleanly");
    }

    async fn create(
        &mut self,
        token: Option<&str>,
        csr: String,
        ttl_secs: i64,
        impersonate: Option<&str>,
    ) -> Result<Vec<String>, tonic::Status> {
        let metadata = impersonate.map(|identity| prost_types::Struct {
            fields: BTreeMap::from([(
                IMPERSONATED_IDENTITY_KEY.to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(identity.to_owned())),
                },
            )]),
        });
        let mut request = Request::new(IstioCertificateRequest {
            csr,
            validity_duration: ttl_secs,
            metadata,
        });
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        self.client
            .create_certificate(request)
            .await
            .map(|response| response.into_inner().cert_chain)
    }
}

fn csr(uri: &str) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from(pem::parse(pem).expect("PEM").into_contents())
}

/// Checks `chain` with webpki against `root_pem` for both TLS usages, and returns the
/// leaf's URI SANs and its remaining lifetime.
fn verify(chain: &[String], root_pem: &str) -> (Vec<String>, Duration) {
    assert!(chain.len() >= 2, "expected leaf + root, got {chain:?}");
    assert_eq!(chain.last().unwrap(), root_pem, "the root comes last");
    let root = der(root_pem);
    let anchors = [webpki::anchor_from_trusted_cert(&root)
        .expect("root parses")
        .to_owned()];
    let leaf = der(&chain[0]);
    let intermediates: Vec<_> = chain[1..chain.len() - 1].iter().map(|c| der(c)).collect();
    let end_entity = webpki::EndEntityCert::try_from(&leaf).expect("leaf parses");
    for usage in [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ] {
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &anchors,
                &intermediates,
                UnixTime::now(),
                usage,
                None,
                None,
            )
            .expect("the leaf verifies against the root");
    }
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let uris = parsed
        .subject_alternative_name()
        .unwrap()
        .expect("a SAN")
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::URI(uri) => (*uri).to_owned(),
            other => panic!("only a URI SAN expected, found {other:?}"),
        })
        .collect();
    let remaining = parsed.validity().time_to_expiration().expect("not expired");
    (
        uris,
        Duration::from_secs(remaining.whole_seconds().unsigned_abs()),
    )
}

fn about(actual: Duration, expected_secs: u64) {
    let expected = Duration::from_secs(expected_secs);
    assert!(
        actual <= expected && expected - actual < Duration::from_secs(10),
        "lifetime {actual:?}, expected about {expected:?}"
    );
}

fn expect_code(result: Result<Vec<String>, tonic::Status>, code: Code, says: &[&str]) {
    let status = result.expect_err("the request should be refused");
    assert_eq!(status.code(), code, "{status:?}");
    for word in says {
        assert!(
            status.message().contains(word),
            "{word:?} not in {:?}",
            status.message()
        );
    }
}

#[tokio::test]
async fn issues_verifiable_certificates_only_for_workloads_on_the_callers_node() {
    let folders = folders();
    let mut server = Server::start(&folders.config, folders.tokens()).await;

    // (a) node-a asks for its own pod's identity.
    let chain = server
        .create(Some("token-a"), csr(CART), 3600, None)
        .await
        .expect("node-a obtains cart's certificate");
    let (uris, lifetime) = verify(&chain, &server.root_pem);
    assert_eq!(uris, [CART]);
    about(lifetime, 3600);

    // The same, on a workload's behalf (Istio's ztunnel), and with the default lifetime.
    let chain = server
        .create(Some("token-a"), csr(CART), 0, Some(CART))
        .await
        .expect("node-a impersonates cart");
    let (uris, lifetime) = verify(&chain, &server.root_pem);
    assert_eq!(uris, [CART]);
    about(lifetime, DEFAULT_CERT_TTL_SECS);

    // (b) node-a asks for a pod on node-b, directly or by impersonation.
    expect_code(
        server.create(Some("token-a"), csr(WEB), 3600, None).await,
        Code::PermissionDenied,
        &["node-a", WEB],
    );
    expect_code(
        server
            .create(Some("token-a"), csr(WEB), 3600, Some(WEB))
            .await,
        Code::PermissionDenied,
        &["node-a", WEB],
    );
    // ...or names one identity and puts another in the CSR.
    expect_code(
        server
            .create(Some("token-a"), csr(WEB), 3600, Some(CART))
            .await,
        Code::InvalidArgument,
        &[WEB, CART],
    );

    // (c) a bad or missing token.
    expect_code(
        server.create(Some("token-x"), csr(CART), 3600, None).await,
        Code::Unauthenticated,
        &["unknown token"],
    );
    expect_code(
        server.create(None, csr(CART), 3600, None).await,
        Code::Unauthenticated,
        &["Bearer"],
    );

    // (d) a CSR that is not one.
    expect_code(
        server
            .create(
                Some("token-a"),
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                    .into(),
                3600,
                None,
            )
            .await,
        Code::InvalidArgument,
        &["CSR"],
    );
    expect_code(
        server
            .create(Some("token-a"), "garbage".into(), 3600, None)
            .await,
        Code::InvalidArgument,
        &["CSR"],
    );

    // (e) absurd lifetimes. 0 is proto3's "unset" and means the default, as in Istio.
    let too_long = i64::try_from(MAX_CERT_TTL_SECS + 1).unwrap();
    expect_code(
        server
            .create(Some("token-a"), csr(CART), too_long, None)
            .await,
        Code::InvalidArgument,
        &["maximum"],
    );
    expect_code(
        server.create(Some("token-a"), csr(CART), -1, None).await,
        Code::InvalidArgument,
        &["negative"],
    );

    assert_eq!(
        server.metrics.snapshot(),
        CaCounts {
            issued: 2,
            unauthenticated: 2,
            permission_denied: 2,
            invalid_argument: 5,
            internal: 0,
        }
    );
    let mut scraped = String::new();
    prometheus_client::encoding::text::encode(
        &mut scraped,
        &monitoring::ca_registry(std::sync::Arc::clone(&server.metrics)),
    )
    .unwrap();
    for expected in [
        "ambit_ca_certificates_issued_total 2",
        "ambit_ca_requests_refused_total{reason=\"unauthenticated\"} 2",
        "ambit_ca_requests_refused_total{reason=\"invalid_argument\"} 5",
    ] {
        assert!(scraped.contains(expected), "no {expected:?} in {scraped}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_restart_on_the_same_folder_keeps_the_root() {
    let folders = folders();
    let mut first = Server::start(&folders.config, folders.tokens()).await;
    let before = first
        .create(Some("token-b"), csr(WEB), 600, None)
        .await
        .expect("node-b obtains web's certificate");
    let root = first.root_pem.clone();
    first.stop().await;
    assert!(
        Path::new(&folders.config.ca_dir)
            .join("ca-key.pem")
            .is_file(),
        "the generated key is persisted"
    );

    let mut second = Server::start(&folders.config, folders.tokens()).await;
    assert_eq!(
        second.root_pem, root,
        "the trust root changed across a restart"
    );
    let after = second
        .create(Some("token-b"), csr(WEB), 600, None)
        .await
        .expect("node-b obtains web's certificate again");
    // Certificates from before and after the restart verify against the same root.
    for chain in [&before, &after] {
        let (uris, _) = verify(chain, &root);
        assert_eq!(uris, [WEB]);
    }
    second.stop().await;
}

const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// The recorded review of each test token; any other token is not authenticated.
fn review_of(token: &str) -> Value {
    recorded(match token {
        "pod-token-node-a" => "tokenreview-node-a.json",
        "pod-token-of-cart" => "tokenreview-other-account.json",
        "pod-token-of-waypoint" => "tokenreview-waypoint.json",
        "legacy-token" => "tokenreview-no-node-name.json",
        _ => "tokenreview-unauthenticated.json",
    })
}

/// A reviewer through `api` for the CA's audience, node proxies being
/// `ambit-system/ambit-node`.
fn node_reviewer(api: &FakeApi) -> TokenReviewer {
    TokenReviewer::new(
        api.client(),
        "ambit-ca",
        &["ambit-system/ambit-node".into()],
    )
    .expect("a reviewer")
}

/// Makes `api` answer each TokenReview with the recorded review of its token.
fn answer_reviews(api: &FakeApi) {
    api.answer_posts(TOKEN_REVIEWS, |review| {
        let token = review["spec"]["token"].as_str().unwrap_or_default();
        (StatusCode::CREATED, review_of(token))
    });
}

#[tokio::test]
async fn in_kubernetes_mode_the_token_review_names_the_callers_node() {
    let folders = folders();
    let api = FakeApi::start([]).await;
    answer_reviews(&api);
    let reviewer = node_reviewer(&api);
    let mut server = Server::start(&folders.config, reviewer).await;

    // The node proxy's pod token, bound to a pod on node-a: node-a's rule applies.
    let chain = server
        .create(Some("pod-token-node-a"), csr(CART), 600, Some(CART))
        .await
        .expect("node-a's proxy obtains cart's certificate");
    assert_eq!(verify(&chain, &server.root_pem).0, [CART]);
    expect_code(
        server
            .create(Some("pod-token-node-a"), csr(WEB), 600, Some(WEB))
            .await,
        Code::PermissionDenied,
        &["node-a", WEB],
    );
    let reviews = api.posts_to(TOKEN_REVIEWS, 2).await;
    assert_eq!(
        reviews[0]["spec"],
        json!({"token": "pod-token-node-a", "audiences": ["ambit-ca"]}),
        "the review asks for the CA's audience"
    );

    expect_code(
        server.create(Some("expired"), csr(CART), 600, None).await,
        Code::Unauthenticated,
        &[
            "does not authenticate",
            "invalid for the target audiences",
            "`ambit-ca`",
        ],
    );
    // Not a node proxy's account: cart's pod may obtain its own identity only.
    expect_code(
        server
            .create(Some("pod-token-of-cart"), csr(WEB), 600, Some(WEB))
            .await,
        Code::PermissionDenied,
        &[
            "service account shop/cart",
            &format!("only its own identity {CART}, not {WEB}"),
        ],
    );
    expect_code(
        server
            .create(Some("legacy-token"), csr(CART), 600, None)
            .await,
        Code::Unauthenticated,
        &["authentication.kubernetes.io/node-name", "1.30"],
    );
    assert_eq!(
        server.metrics.snapshot(),
        CaCounts {
            issued: 1,
            unauthenticated: 2,
            permission_denied: 2,
            invalid_argument: 0,
            internal: 0,
        }
    );
    server.stop().await;
}

#[tokio::test]
async fn in_kubernetes_mode_a_waypoints_own_token_obtains_its_own_identity_only() {
    let folders = folders();
    let api = FakeApi::start([]).await;
    answer_reviews(&api);
    let reviewer = node_reviewer(&api);
    // The config folder places no waypoint pod anywhere: its own token is enough.
    let mut server = Server::start(&folders.config, reviewer).await;

    // As the waypoint's certificate client asks: its identity, impersonated.
    let chain = server
        .create(
            Some("pod-token-of-waypoint"),
            csr(WAYPOINT),
            600,
            Some(WAYPOINT),
        )
        .await
        .expect("the waypoint obtains its own certificate");
    assert_eq!(verify(&chain, &server.root_pem).0, [WAYPOINT]);
    let chain = server
        .create(Some("pod-token-of-waypoint"), csr(WAYPOINT), 600, None)
        .await
        .expect("the waypoint obtains its own certificate from the CSR's URI alone");
    assert_eq!(verify(&chain, &server.root_pem).0, [WAYPOINT]);

    // Cart runs on node-a, as does the waypoint's pod; still not the waypoint's to have.
    for (csr_uri, impersonate) in [(CART, Some(CART)), (CART, None)] {
        expect_code(
            server
                .create(
                    Some("pod-token-of-waypoint"),
                    csr(csr_uri),
                    600,
                    impersonate,
                )
                .await,
            Code::PermissionDenied,
            &[
                "service account shop/waypoint",
                &format!("only its own identity {WAYPOINT}, not {CART}"),
            ],
        );
    }
    assert_eq!(
        server.metrics.snapshot(),
        CaCounts {
            issued: 2,
            permission_denied: 2,
            ..CaCounts::default()
        }
    );
    server.stop().await;
}

#[tokio::test]
async fn a_token_review_that_fails_is_unavailable_not_a_refusal_of_the_caller() {
    let folders = folders();
    // An API server that does not serve TokenReviews (404).
    let api = FakeApi::start([]).await;
    let reviewer = node_reviewer(&api);
    let mut server = Server::start(&folders.config, reviewer).await;
    expect_code(
        server
            .create(Some("pod-token-node-a"), csr(CART), 600, None)
            .await,
        Code::Unavailable,
        &["TokenReview", "system:auth-delegator"],
    );
    assert_eq!(server.metrics.snapshot().internal, 1);
    server.stop().await;
}

#[test]
fn node_service_accounts_must_be_namespace_slash_name() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let _entered = runtime.enter();
    let client = kube::Client::try_from(kube::Config::new(
        "http://127.0.0.1:1".parse().expect("a URL"),
    ))
    .expect("a client");
    for bad in ["ambit-node", "/ambit-node", "ambit-system/", "a/b/c"] {
        let error = TokenReviewer::new(client.clone(), "ambit-ca", &[bad.to_owned()])
            .expect_err("not namespace/name")
            .to_string();
        assert!(
            error.contains(bad) && error.contains("namespace/name"),
            "{error}"
        );
    }
    assert!(TokenReviewer::new(client.clone(), "ambit-ca", &[]).is_err());
    assert!(TokenReviewer::new(client, " ", &["ambit-system/ambit-node".into()]).is_err());
}

#[tokio::test]
async fn the_ca_serves_only_tls_to_clients_that_trust_its_root() {
    let folders = folders();
    let server = Server::start(&folders.config, folders.tokens()).await;
    let address = format!("https://{}", server.addr);

    // A client holding another mesh's root: the handshake fails, and says why.
    channel::testing::assert_refused_with_another_root(&address).await;

    // A plaintext client on the TLS port gets no answer.
    let plain = Channel::from_shared(format!("http://{}", server.addr)).unwrap();
    let refused = match plain.connect().await {
        Err(error) => format!("connect: {error}"),
        Ok(channel) => {
            let mut client = IstioCertificateServiceClient::new(channel);
            let mut request = Request::new(IstioCertificateRequest {
                csr: csr(CART),
                validity_duration: 0,
                metadata: None,
            });
            request
                .metadata_mut()
                .insert("authorization", "Bearer token-a".parse().unwrap());
            let status = client
                .create_certificate(request)
                .await
                .expect_err("plaintext gRPC on the TLS port");
            format!("{status:?}")
        }
    };
    assert_eq!(
        server.metrics.snapshot(),
        CaCounts::default(),
        "no request reached the CA ({refused})"
    );
    server.stop().await;
}
