//! In-process tests against a fake config push on loopback, over TLS with a test root:
//! it lets in only the node's token, records what the subscriber sends (`Hello`, then one `Ack` per version) and
//! streams preset updates.

use std::{net::IpAddr, pin::Pin, time::Duration};

use ambit_api::{
    channel::testing::TestTls,
    config::{
        ConfigUpdate, PeerIdentity, Resource, SubscribeRequest,
        config_service_server::{ConfigService, ConfigServiceServer},
        resource::Kind,
        subscribe_request::Request,
    },
};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Response, Status, Streaming,
    transport::{Identity, ServerTlsConfig, server::TcpIncoming},
};

use super::*;

/// The only token the fake lets in.
const TOKEN: &str = "token-of-n1";

type Updates = Pin<Box<dyn tokio_stream::Stream<Item = Result<ConfigUpdate, Status>> + Send>>;

struct FakePush {
    updates: Vec<ConfigUpdate>,
    seen: mpsc::Sender<SubscribeRequest>,
    /// Held so the update stream stays open after the preset updates.
    keep_open: Mutex<Vec<mpsc::Sender<Result<ConfigUpdate, Status>>>>,
}

#[tonic::async_trait]
impl ConfigService for FakePush {
    type SubscribeStream = Updates;

    async fn subscribe(
        &self,
        request: tonic::Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<Updates>, Status> {
        let authorization = request.metadata().get("authorization");
        if authorization.and_then(|value| value.to_str().ok()) != Some(&format!("Bearer {TOKEN}")) {
            return Err(Status::unauthenticated(format!(
                "expected the node's token, got {authorization:?}"
            )));
        }
        let mut requests = request.into_inner();
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                if seen.send(request).await.is_err() {
                    break;
                }
            }
        });
        let (send, receive) = mpsc::channel(16);
        for update in &self.updates {
            send.send(Ok(update.clone()))
                .await
                .map_err(|_| Status::internal("closed"))?;
        }
        self.keep_open.lock().await.push(send);
        Ok(Response::new(Box::pin(ReceiverStream::new(receive))))
    }
}

fn peer(name: &str, ip: &str) -> Resource {
    Resource {
        key: format!("peer/shop/{name}"),
        kind: Some(Kind::Peer(PeerIdentity {
            namespace: "shop".into(),
            name: name.into(),
            node: "n2".into(),
            ips: vec![ip.into()],
            identity: format!("spiffe://cluster.local/ns/shop/sa/{name}"),
            locality: None,
            labels: std::collections::HashMap::new(),
        })),
    }
}

async fn next(seen: &mut mpsc::Receiver<SubscribeRequest>) -> Request {
    tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .expect("the subscriber should send within 5 s")
        .expect("the fake's channel is open")
        .request
        .expect("a request")
}

#[tokio::test]
async fn applies_and_acks_each_version_and_nacks_a_bad_one() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let address = format!("https://{}", listener.local_addr().expect("local address"));
    let tls = TestTls::new();
    let (seen_send, mut seen) = mpsc::channel(16);
    let fake = FakePush {
        updates: vec![
            ConfigUpdate {
                version: 1,
                full: true,
                upserted: vec![peer("server", "10.0.2.2")],
                removed: vec![],
                more: false,
            },
            ConfigUpdate {
                version: 2,
                full: false,
                upserted: vec![peer("broken", "not-an-ip")],
                removed: vec![],
                more: false,
            },
        ],
        seen: seen_send,
        keep_open: Mutex::new(Vec::new()),
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(
                &tls.server_cert_pem,
                &tls.server_key_pem,
            )))
            .expect("a TLS config")
            .add_service(ConfigServiceServer::new(fake))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let directory = Arc::new(Directory::new());
    let targets = Targets {
        directory: Arc::clone(&directory),
        policies: Arc::new(Policies::new()),
    };
    let dir = tempfile::tempdir().expect("a temporary folder");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("write the token");
    let root_file = tls.write_root(dir.path());
    let subscriber = tokio::spawn(run(
        address,
        "n1".into(),
        Some(token_file),
        Some(root_file),
        targets,
    ));

    match next(&mut seen).await {
        Request::Hello(hello) => {
            assert_eq!(hello.node, "n1");
            assert_eq!(hello.kind(), SubscriberKind::Ztunnel);
        }
        other @ Request::Ack(_) => panic!("expected Hello first, got {other:?}"),
    }
    match next(&mut seen).await {
        Request::Ack(ack) => assert_eq!((ack.version, ack.error.as_str()), (1, "")),
        other @ Request::Hello(_) => panic!("expected the ACK of version 1, got {other:?}"),
    }
    match next(&mut seen).await {
        Request::Ack(ack) => {
            assert_eq!(ack.version, 2);
            assert!(
                ack.error.contains("not-an-ip"),
                "a NACK says why: {:?}",
                ack.error
            );
        }
        other @ Request::Hello(_) => panic!("expected the NACK of version 2, got {other:?}"),
    }
    let server: IpAddr = "10.0.2.2".parse().expect("ip");
    let known = directory.lookup(server).expect("version 1 is applied");
    assert_eq!(
        known.identity.to_string(),
        "spiffe://cluster.local/ns/shop/sa/server"
    );
    assert_eq!(
        directory.version(),
        Some(1),
        "the rejected version changes nothing"
    );
    subscriber.abort();
}

#[tokio::test]
async fn a_bad_address_stops_subscribing() {
    let targets = Targets {
        directory: Arc::new(Directory::new()),
        policies: Arc::new(Policies::new()),
    };
    tokio::time::timeout(
        Duration::from_secs(5),
        run("not a url".into(), "n1".into(), None, None, targets),
    )
    .await
    .expect("an address that can never work ends the subscription");
}
