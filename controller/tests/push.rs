//! The config push end to end: a real config folder watched with notify, the gRPC server
//! on 127.0.0.1:0, and subscribers speaking `ambit.config.v1.ConfigService`, each
//! presenting its node's bootstrap token (a real token folder) or a waypoint's
//! service-account token, over TLS verified against the CA root (`ambit_api::channel`),
//! as the proxies connect.

use std::{
    collections::BTreeMap,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use ambit_api::{
    channel,
    config::{
        Ack, ConfigUpdate, Hello, Locality, Resource, SubscribeRequest, SubscriberKind,
        config_service_client::ConfigServiceClient, resource::Kind, subscribe_request::Request,
    },
    subscribe::{self, Subscription},
    update_parts::MAX_PART_BYTES,
};
use ambit_controller::{
    ca::{
        auth::{AuthError, Authenticator, Caller, TokenFiles},
        material::{CaMaterial, ROOT_CERT_FILE},
        sign::Signer,
    },
    mesh::RouteKind,
    monitoring,
    push::{self, ConfigServer},
    serving::{self, ServingCert},
    source::FolderSource,
};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

const NAMESPACES: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}\n";
const CART: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: cart, namespace: shop, labels: {app: cart}}\nspec: {nodeName: node-a, serviceAccountName: cart-sa}\nstatus: {podIP: 10.0.0.1}\n";
const CART_OPTED_OUT: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: cart, namespace: shop, labels: {app: cart, istio.io/dataplane-mode: none}}\nspec: {nodeName: node-a, serviceAccountName: cart-sa}\nstatus: {podIP: 10.0.0.1}\n";
const OTHERS: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop, labels: {app: web}}\nspec: {nodeName: node-b}\nstatus: {podIP: 10.0.1.1}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: cart-2, namespace: shop, labels: {app: cart}}\nspec: {nodeName: node-b, serviceAccountName: cart-sa}\nstatus: {podIPs: [{ip: 10.0.1.2}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: cart, namespace: shop}\nspec: {clusterIP: 10.96.0.10, selector: {app: cart}, ports: [{name: http, port: 80}]}\n";

fn virtual_service(name: &str, weights: (u32, u32)) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{hosts: [cart], http: [{{route: [{{destination: {{host: cart}}, weight: {}}}, {{destination: {{host: web}}, weight: {}}}]}}]}}\n",
        weights.0, weights.1
    )
}

/// The token of the waypoint pods' service account `shop/waypoint`.
const WAYPOINT_TOKEN: &str = "token-of-shop-waypoint";

/// Node tokens from a real token folder (`token-of-<node>`), and one service account's.
struct Tokens(TokenFiles);

impl Authenticator for Tokens {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        if token == WAYPOINT_TOKEN {
            return Ok(Caller::ServiceAccount {
                namespace: "shop".into(),
                name: "waypoint".into(),
                node: None,
            });
        }
        self.0.authenticate(token).await
    }
}

fn node_token(node: &str) -> String {
    format!("token-of-{node}")
}

/// How long a change may take to reach a subscriber.
const CHANGE_DEADLINE: Duration = Duration::from_secs(2);
/// The serving certificate's lifetime, unless a test renews it.
const SERVING_TTL: Duration = Duration::from_secs(3600);

/// Where the push listens, and the root its certificate chains to.
struct Push {
    addr: SocketAddr,
    root_file: PathBuf,
}

struct Controller {
    dir: tempfile::TempDir,
    _ca_dir: tempfile::TempDir,
    push: Push,
    cert: Arc<ServingCert>,
    server: ConfigServer,
    source: FolderSource,
    stop: tokio::sync::oneshot::Sender<()>,
    task: JoinHandle<Result<(), push::PushError>>,
}

impl Controller {
    async fn start() -> Self {
        Self::start_with(SERVING_TTL).await
    }

    /// A controller whose serving certificate lives `ttl` (renewed at half of it).
    async fn start_with(ttl: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "namespaces.yaml", NAMESPACES);
        write(dir.path(), "cart.yaml", CART);
        write(dir.path(), "others.yaml", OTHERS);
        let source = FolderSource::start(dir.path(), "cluster.local").unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tokens = tempfile::tempdir().unwrap();
        for node in ["node-a", "node-b"] {
            write(tokens.path(), node, &node_token(node));
        }
        let tokens = Tokens(TokenFiles::load(tokens.path()).unwrap());
        let server = ConfigServer::new(source.subscribe(), push::Gate::new(tokens));
        let ca_dir = tempfile::tempdir().unwrap();
        let material = CaMaterial::load_or_create(ca_dir.path(), "cluster.local").unwrap();
        let signer = Arc::new(Signer::new(material, "cluster.local"));
        let names = serving::server_names(&[], None, addr);
        let cert = ServingCert::issue(signer, &names, ttl).unwrap();
        tokio::spawn(Arc::clone(&cert).renew());
        let tls = cert.acceptor().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(push::serve(listener, server.clone(), tls, async {
            let _ = stopped.await;
        }));
        Self {
            dir,
            push: Push {
                addr,
                root_file: ca_dir.path().join(ROOT_CERT_FILE),
            },
            _ca_dir: ca_dir,
            cert,
            server,
            source,
            stop,
            task,
        }
    }

    fn write(&self, file: &str, text: &str) {
        write(self.dir.path(), file, text);
    }

    /// Starts the monitoring endpoint; returns its address.
    async fn monitoring(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(monitoring::serve_push(listener, self.server.clone()));
        addr
    }

    /// Waits until `condition` holds for the registry, or fails saying what it saw.
    async fn wait_for_subscribers(
        &self,
        what: &str,
        condition: impl Fn(&[push::SubscriberStatus]) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + CHANGE_DEADLINE;
        loop {
            let subscribers = self.server.subscribers();
            if condition(&subscribers) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {what}; subscribers are {subscribers:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn write(dir: &Path, file: &str, text: &str) {
    fs::write(dir.join(file), text).unwrap();
}

/// The whole HTTP/1.1 response to `GET path` (headers and body).
async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

struct Subscriber {
    requests: mpsc::Sender<SubscribeRequest>,
    updates: Streaming<ConfigUpdate>,
}

impl Subscriber {
    /// Subscribes with the node's own token.
    async fn connect(push: &Push, node: &str, kind: SubscriberKind) -> Self {
        Self::try_connect(push, Some(&node_token(node)), node, kind)
            .await
            .unwrap_or_else(|status| panic!("expected {node} to subscribe, got {status:?}"))
    }

    /// Subscribes presenting `token` (none when `None`).
    async fn try_connect(
        push: &Push,
        token: Option<&str>,
        node: &str,
        kind: SubscriberKind,
    ) -> Result<Self, Status> {
        let address = format!("https://{}", push.addr);
        let channel = channel::endpoint(&address, Some(&push.root_file), token.is_some())
            .unwrap()
            .connect()
            .await
            .unwrap_or_else(|error| panic!("connect to {address}: {}", channel::describe(&error)));
        let mut client = ConfigServiceClient::new(channel);
        let (requests, outgoing) = mpsc::channel(8);
        requests
            .send(SubscribeRequest {
                request: Some(Request::Hello(Hello {
                    node: node.to_owned(),
                    kind: kind.into(),
                })),
            })
            .await
            .unwrap();
        let mut request = tonic::Request::new(ReceiverStream::new(outgoing));
        if let Some(token) = token {
            let bearer = format!("Bearer {token}").parse().unwrap();
            request.metadata_mut().insert("authorization", bearer);
        }
        let updates = client.subscribe(request).await?.into_inner();
        Ok(Self { requests, updates })
    }

    async fn next(&mut self) -> ConfigUpdate {
        match tokio::time::timeout(CHANGE_DEADLINE, self.updates.message()).await {
            Ok(Ok(Some(update))) => update,
            other => panic!("expected a config update within {CHANGE_DEADLINE:?}, got {other:?}"),
        }
    }

    async fn ack(&self, version: u64, error: &str) {
        self.requests
            .send(SubscribeRequest {
                request: Some(Request::Ack(Ack {
                    version,
                    error: error.to_owned(),
                })),
            })
            .await
            .unwrap();
    }
}

/// The proxies' own client (`subscribe::run`) subscribed as `node`'s `kind` with the
/// node's token, applying every update by sending `seen(update)` to the receiver
/// returned.
struct RealClient {
    task: JoinHandle<()>,
    _tokens: tempfile::TempDir,
}

impl RealClient {
    fn start<T: Send + 'static>(
        push: &Push,
        node: &str,
        kind: SubscriberKind,
        seen: fn(&ConfigUpdate) -> T,
    ) -> (Self, mpsc::UnboundedReceiver<T>) {
        let tokens = tempfile::tempdir().unwrap();
        write(tokens.path(), node, &node_token(node));
        let subscription = Subscription {
            address: format!("https://{}", push.addr),
            root_file: Some(push.root_file.clone()),
            node: node.into(),
            kind,
            token_file: Some(tokens.path().join(node)),
        };
        let (applied, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            subscribe::run(subscription, &mut |update| {
                let _ = applied.send(seen(&update));
                Ok(String::new())
            })
            .await;
        });
        let client = Self {
            task,
            _tokens: tokens,
        };
        (client, receiver)
    }
}

impl Drop for RealClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn by_key(update: &ConfigUpdate) -> BTreeMap<&str, &Resource> {
    update
        .upserted
        .iter()
        .map(|r| (r.key.as_str(), r))
        .collect()
}

fn keys(update: &ConfigUpdate) -> Vec<&str> {
    by_key(update).into_keys().collect()
}

#[tokio::test]
async fn each_node_gets_a_full_state_of_what_it_needs() {
    let controller = Controller::start().await;

    let mut ztunnel =
        Subscriber::connect(&controller.push, "node-a", SubscriberKind::Ztunnel).await;
    let update = ztunnel.next().await;
    assert!(
        update.full,
        "the first update must be a full state: {update:?}"
    );
    assert_eq!(update.version, 1);
    assert_eq!(
        keys(&update),
        [
            "peer/shop/cart",
            "peer/shop/cart-2",
            "peer/shop/web",
            "service/shop/cart",
            "workload/shop/cart",
        ]
    );
    let resources = by_key(&update);
    let Some(Kind::Peer(web)) = &resources["peer/shop/web"].kind else {
        panic!("peer/shop/web: {:?}", resources["peer/shop/web"]);
    };
    assert_eq!(
        (web.ips.as_slice(), web.identity.as_str()),
        (
            &["10.0.1.1".to_owned()][..],
            "spiffe://cluster.local/ns/shop/sa/default"
        )
    );
    let Some(Kind::Service(service)) = &resources["service/shop/cart"].kind else {
        panic!("service/shop/cart: {:?}", resources["service/shop/cart"]);
    };
    assert_eq!(service.endpoints, ["10.0.0.1", "10.0.1.2"]);
    assert_eq!(service.cluster_ips, ["10.96.0.10"]);

    let mut agent = Subscriber::connect(&controller.push, "node-b", SubscriberKind::Agent).await;
    let update = agent.next().await;
    assert!(update.full);
    assert_eq!(keys(&update), ["workload/shop/cart-2", "workload/shop/web"]);
    let Some(Kind::Workload(web)) = &by_key(&update)["workload/shop/web"].kind else {
        panic!("workload/shop/web is not a workload: {update:?}");
    };
    assert!(web.enrolled, "{web:?}");
    assert_eq!(web.node, "node-b");
}

#[tokio::test]
async fn an_edited_pod_arrives_as_a_delta_with_a_higher_version() {
    let controller = Controller::start().await;
    let mut agent = Subscriber::connect(&controller.push, "node-a", SubscriberKind::Agent).await;
    let mut ztunnel =
        Subscriber::connect(&controller.push, "node-b", SubscriberKind::Ztunnel).await;
    let first = agent.next().await;
    let first_ztunnel = ztunnel.next().await;
    assert!(keys(&first_ztunnel).contains(&"peer/shop/cart"));

    controller.write("cart.yaml", CART_OPTED_OUT);

    let delta = agent.next().await;
    assert!(!delta.full && delta.version > first.version, "{delta:?}");
    assert_eq!(keys(&delta), ["workload/shop/cart"]);
    let Some(Kind::Workload(cart)) = &delta.upserted[0].kind else {
        panic!("not a workload: {delta:?}");
    };
    assert!(!cart.enrolled, "{cart:?}");
    assert!(
        cart.enrolment_reason.contains("dataplane-mode=none"),
        "{cart:?}"
    );

    // Out of the mesh: node-b's ztunnel drops its identity and its service endpoint.
    let delta = ztunnel.next().await;
    assert!(!delta.full, "{delta:?}");
    assert_eq!(delta.removed, ["peer/shop/cart"]);
    assert!(
        delta.upserted.is_empty(),
        "the service is unchanged (its endpoints stay: the pod still runs): {delta:?}"
    );
}

#[tokio::test]
async fn a_relabelled_node_pushes_the_new_locality_of_its_pods() {
    let controller = Controller::start().await;
    let mut waypoint =
        Subscriber::connect(&controller.push, "node-a", SubscriberKind::Waypoint).await;
    let first = waypoint.next().await;
    let Some(Kind::Peer(web)) = &by_key(&first)["peer/shop/web"].kind else {
        panic!("not peer/shop/web: {first:?}");
    };
    assert_eq!(web.locality, Some(Locality::default()), "no Node yet");

    controller.write(
        "nodes.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: node-b, labels: {topology.kubernetes.io/region: eu, topology.kubernetes.io/zone: eu-1b}}\n",
    );
    let delta = waypoint.next().await;
    assert!(!delta.full && delta.removed.is_empty(), "{delta:?}");
    assert_eq!(
        keys(&delta),
        ["peer/shop/cart-2", "peer/shop/web"],
        "the pods on node-b, and nothing of node-a's"
    );
    let expected = Locality {
        region: "eu".into(),
        zone: "eu-1b".into(),
        subzone: String::new(),
    };
    for resource in &delta.upserted {
        let Some(Kind::Peer(peer)) = &resource.kind else {
            panic!("not a peer: {resource:?}");
        };
        assert_eq!(peer.locality.as_ref(), Some(&expected), "{peer:?}");
    }
}

#[tokio::test]
async fn invalid_routes_never_reach_a_waypoint_and_the_last_good_version_stays() {
    let controller = Controller::start().await;
    let mut waypoint =
        Subscriber::connect(&controller.push, "node-a", SubscriberKind::Waypoint).await;
    let first = waypoint.next().await;
    assert_eq!(
        keys(&first),
        [
            "peer/shop/cart",
            "peer/shop/cart-2",
            "peer/shop/web",
            "service/shop/cart",
            "workload/shop/cart"
        ],
        "a waypoint starts with the services, the mesh workloads and its node's, no route yet"
    );

    let routes = format!(
        "{}---\n{}",
        virtual_service("good", (50, 50)),
        virtual_service("bad", (30, 30))
    );
    controller.write("routes.yaml", &routes);
    let delta = waypoint.next().await;
    assert_eq!(
        keys(&delta),
        ["virtualservice/shop/good"],
        "only the valid one is pushed"
    );

    // `good` turns invalid; a later valid change shows the folder was read since.
    let routes = format!(
        "{}---\n{}",
        virtual_service("good", (90, 90)),
        virtual_service("bad", (30, 30))
    );
    controller.write("routes.yaml", &routes);
    controller.write("later.yaml", &virtual_service("later", (100, 0)));
    let delta = waypoint.next().await;
    assert_eq!(keys(&delta), ["virtualservice/shop/later"], "{delta:?}");
    assert!(delta.removed.is_empty(), "{delta:?}");
    let snapshot = controller.source.subscribe().borrow().clone();
    let good = &snapshot.mesh.routes[&(
        RouteKind::VirtualService,
        ("shop".to_owned(), "good".to_owned()),
    )];
    assert_eq!(good.spec["http"][0]["route"][0]["weight"], 50, "{good:?}");
    assert!(!snapshot.mesh.routes.contains_key(&(
        RouteKind::VirtualService,
        ("shop".to_owned(), "bad".to_owned())
    )));

    // Node proxies never receive routes.
    let mut ztunnel =
        Subscriber::connect(&controller.push, "node-a", SubscriberKind::Ztunnel).await;
    assert!(
        keys(&ztunnel.next().await)
            .iter()
            .all(|k| !k.starts_with("virtualservice/"))
    );
}

#[tokio::test]
async fn a_nack_is_recorded_and_the_acked_version_stays() {
    let controller = Controller::start().await;
    let mut agent = Subscriber::connect(&controller.push, "node-a", SubscriberKind::Agent).await;
    let first = agent.next().await;
    agent.ack(first.version, "").await;
    controller
        .wait_for_subscribers("node-a to acknowledge version 1", |s| {
            s.len() == 1 && s[0].acked_version == Some(first.version)
        })
        .await;

    controller.write("cart.yaml", CART_OPTED_OUT);
    let delta = agent.next().await;
    assert!(!delta.full);
    agent
        .ack(delta.version, "cannot apply: test rejects it")
        .await;
    controller
        .wait_for_subscribers("a NACK recorded for node-a", |s| s[0].last_nack.is_some())
        .await;
    let status = &controller.server.subscribers()[0];
    assert_eq!(status.acked_version, Some(first.version), "{status:?}");
    assert_eq!(status.sent_version, delta.version, "{status:?}");
    let nack = status.last_nack.as_ref().unwrap();
    assert_eq!(
        (nack.version, nack.error.as_str()),
        (delta.version, "cannot apply: test rejects it")
    );
    assert_eq!((status.nacks, controller.server.counts().nacks), (1, 1));
    let monitoring = controller.monitoring().await;
    let metrics = http_get(monitoring, "/metrics").await;
    for expected in [
        "ambit_push_nacks_total 1",
        "ambit_push_acks_total 1",
        "ambit_push_subscribers{kind=\"agent\"} 1",
        "ambit_push_subscribers_behind{kind=\"agent\"} 1",
    ] {
        assert!(metrics.contains(expected), "no {expected:?} in {metrics}");
    }
    let syncz = http_get(monitoring, "/debug/syncz").await;
    assert!(
        syncz.contains(r#""last_nack":{"error":"cannot apply: test rejects it""#),
        "{syncz}"
    );

    // After a NACK the next change comes as a full state.
    controller.write("cart.yaml", CART);
    let update = agent.next().await;
    assert!(update.full && update.version > delta.version, "{update:?}");
    assert_eq!(keys(&update), ["workload/shop/cart"]);
}

#[tokio::test]
async fn a_reconnect_gets_a_full_state_and_shutdown_ends_the_streams() {
    let controller = Controller::start().await;
    let mut agent = Subscriber::connect(&controller.push, "node-a", SubscriberKind::Agent).await;
    agent.next().await;
    controller.write("cart.yaml", CART_OPTED_OUT);
    let delta = agent.next().await;
    assert!(!delta.full);
    drop(agent);
    controller
        .wait_for_subscribers("node-a's first stream to end", <[_]>::is_empty)
        .await;

    let mut agent = Subscriber::connect(&controller.push, "node-a", SubscriberKind::Agent).await;
    let update = agent.next().await;
    assert!(update.full, "{update:?}");
    assert_eq!(update.version, delta.version);
    assert_eq!(keys(&update), ["workload/shop/cart"]);

    controller.stop.send(()).unwrap();
    let end = tokio::time::timeout(CHANGE_DEADLINE, agent.updates.message()).await;
    assert!(
        matches!(end, Ok(Ok(None))),
        "expected the stream to end cleanly, got {end:?}"
    );
    let served = tokio::time::timeout(CHANGE_DEADLINE, controller.task).await;
    assert!(
        matches!(served, Ok(Ok(Ok(())))),
        "expected a clean stop, got {served:?}"
    );
}

/// The refusal of a subscription, or a failure saying it was accepted.
async fn refusal(
    controller: &Controller,
    token: Option<&str>,
    node: &str,
    kind: SubscriberKind,
) -> Status {
    match Subscriber::try_connect(&controller.push, token, node, kind).await {
        Ok(_) => panic!("expected {node}'s {kind:?} subscription with {token:?} to be refused"),
        Err(status) => status,
    }
}

#[tokio::test]
async fn subscribers_must_present_a_token_of_their_own_node() {
    let controller = Controller::start().await;

    let status = refusal(&controller, None, "node-a", SubscriberKind::Ztunnel).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status.message().contains("authorization: Bearer <token>"),
        "{status:?}"
    );
    let status = refusal(&controller, Some("guess"), "node-a", SubscriberKind::Agent).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    let token_a = node_token("node-a");
    for kind in [SubscriberKind::Agent, SubscriberKind::Ztunnel] {
        let status = refusal(&controller, Some(&token_a), "node-b", kind).await;
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            status
                .message()
                .contains("node node-a may not subscribe for node node-b"),
            "{status:?}"
        );
    }

    let mut ztunnel = Subscriber::try_connect(
        &controller.push,
        Some(&token_a),
        "node-a",
        SubscriberKind::Ztunnel,
    )
    .await
    .unwrap();
    let update = ztunnel.next().await;
    assert!(update.full, "{update:?}");
    assert!(
        keys(&update).contains(&"workload/shop/cart"),
        "expected node-a's pod, got {:?}",
        keys(&update)
    );

    let counts = controller.server.counts();
    assert_eq!(
        (counts.unauthenticated, counts.permission_denied),
        (2, 2),
        "{counts:?}"
    );
    let metrics = http_get(controller.monitoring().await, "/metrics").await;
    assert!(
        metrics.contains("ambit_push_subscriptions_refused_total{reason=\"permission_denied\"} 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_service_account_subscribes_as_a_waypoint_only() {
    let controller = Controller::start().await;
    for kind in [SubscriberKind::Ztunnel, SubscriberKind::Agent] {
        let status = refusal(&controller, Some(WAYPOINT_TOKEN), "node-a", kind).await;
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains(
                "service account shop/waypoint may subscribe only as WAYPOINT or GATEWAY"
            ),
            "{status:?}"
        );
    }
    let mut waypoint = Subscriber::try_connect(
        &controller.push,
        Some(WAYPOINT_TOKEN),
        "node-b",
        SubscriberKind::Waypoint,
    )
    .await
    .unwrap();
    assert!(waypoint.next().await.full);
    controller
        .wait_for_subscribers("the waypoint", |subscribers| {
            subscribers
                .iter()
                .any(|s| s.kind == SubscriberKind::Waypoint && s.node == "node-b")
        })
        .await;
}

#[tokio::test]
async fn only_tls_clients_that_trust_the_root_reach_the_push() {
    let controller = Controller::start().await;
    let address = format!("https://{}", controller.push.addr);

    // A client holding another mesh's root: the handshake fails, and says why.
    channel::testing::assert_refused_with_another_root(&address).await;

    // A plaintext HTTP/2 client on the TLS port: nothing is served.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", controller.push.addr))
        .unwrap();
    let outcome = match plain.connect().await {
        Err(error) => format!("connect: {}", channel::describe(&error)),
        Ok(plain) => {
            let (_requests, outgoing) = mpsc::channel::<SubscribeRequest>(1);
            let mut request = tonic::Request::new(ReceiverStream::new(outgoing));
            let bearer = format!("Bearer {}", node_token("node-a")).parse().unwrap();
            request.metadata_mut().insert("authorization", bearer);
            let status = ConfigServiceClient::new(plain)
                .subscribe(request)
                .await
                .expect_err("plaintext gRPC on the TLS port");
            format!("{status:?}")
        }
    };
    let counts = controller.server.counts();
    assert!(
        controller.server.subscribers().is_empty()
            && counts.unauthenticated + counts.permission_denied == 0,
        "no request should reach the push ({outcome}): {counts:?}"
    );
}

#[tokio::test]
async fn a_renewed_serving_certificate_keeps_subscriptions_working() {
    // Renewed every second; each certificate expires two seconds after it is issued.
    let controller = Controller::start_with(Duration::from_secs(2)).await;
    let (_client, mut versions) = RealClient::start(
        &controller.push,
        "node-a",
        SubscriberKind::Agent,
        |update| update.version,
    );
    let next_version = async |versions: &mut mpsc::UnboundedReceiver<u64>| {
        tokio::time::timeout(Duration::from_secs(5), versions.recv())
            .await
            .expect("the real client should apply an update within 5 s")
            .expect("the client runs")
    };
    let first_version = next_version(&mut versions).await;

    // Two renewals: the certificate the stream was opened with has expired.
    let mut served = controller.cert.current();
    let mut renewals = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while renewals < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected two renewals of a 2 s certificate within 5 s, saw {renewals}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        let current = controller.cert.current();
        if current.cert[0] != served.cert[0] {
            renewals += 1;
            served = current;
        }
    }
    controller.write("cart.yaml", CART_OPTED_OUT);
    let second_version = next_version(&mut versions).await;
    assert!(
        second_version > first_version,
        "the open stream carries the change: {first_version} then {second_version}"
    );
    // A new connection verifies: it was served the renewed certificate.
    let mut fresh = Subscriber::connect(&controller.push, "node-b", SubscriberKind::Agent).await;
    assert!(fresh.next().await.full);
}

/// `count` enrolled pods `crowd-<i>` on node-b: enough peers that a ztunnel's state no
/// longer fits one part.
fn crowd(count: u16) -> String {
    (0..count)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: crowd-{i}, namespace: shop, labels: {{app: crowd}}}}\nspec: {{nodeName: node-b, serviceAccountName: crowd}}\nstatus: {{podIP: 10.1.{}.{}}}\n",
                i / 250,
                i % 250 + 1
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

const CROWD: u16 = 600;

fn crowd_peers(update: &ConfigUpdate) -> usize {
    keys(update)
        .iter()
        .filter(|key| key.starts_with("peer/shop/crowd-"))
        .count()
}

#[tokio::test]
async fn a_large_update_travels_in_parts_and_is_applied_once() {
    let controller = Controller::start().await;
    controller.write("crowd.yaml", &crowd(CROWD));

    // On the wire: parts under the limit, one update between them.
    let mut ztunnel =
        Subscriber::connect(&controller.push, "node-a", SubscriberKind::Ztunnel).await;
    let parts = loop {
        let mut parts = vec![ztunnel.next().await];
        while parts[parts.len() - 1].more {
            parts.push(ztunnel.next().await);
        }
        if parts.iter().map(crowd_peers).sum::<usize>() > 0 {
            break parts;
        }
    };
    assert!(parts.len() >= 2, "{} parts", parts.len());
    let (version, full) = (parts[0].version, parts[0].full);
    for part in &parts {
        assert!(
            prost::Message::encoded_len(part) <= MAX_PART_BYTES + 16,
            "a part of {} bytes",
            prost::Message::encoded_len(part)
        );
        assert_eq!((part.version, part.full), (version, full));
    }
    assert_eq!(
        parts.iter().map(crowd_peers).sum::<usize>(),
        usize::from(CROWD)
    );

    // The real client applies them as one update, and acknowledges it.
    let (_client, mut applies) = RealClient::start(
        &controller.push,
        "node-b",
        SubscriberKind::Ztunnel,
        |update| (update.version, crowd_peers(update)),
    );
    let (version, peers) = loop {
        let (version, peers) = tokio::time::timeout(Duration::from_secs(5), applies.recv())
            .await
            .expect("the real client should apply the crowd within 5 s")
            .expect("the client runs");
        if peers > 0 {
            break (version, peers);
        }
    };
    assert_eq!(peers, usize::from(CROWD), "every part in one apply");
    controller
        .wait_for_subscribers(
            "node-b's ztunnel to acknowledge the update",
            |subscribers| {
                subscribers.iter().any(|s| {
                    s.node == "node-b"
                        && s.kind == SubscriberKind::Ztunnel
                        && s.acked_version == Some(version)
                })
            },
        )
        .await;
}
