use std::{
    collections::BTreeMap,
    io,
    sync::{Arc, Mutex},
};

use ambit_api::identity::Identity;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Full};

use super::*;
use crate::config::{Endpoint, MeshWorkload, Service};

fn services() -> Vec<Service> {
    vec![Service {
        namespace: "shop".into(),
        name: "cart".into(),
        endpoints: vec![Endpoint {
            workload: "cart-v2".into(),
            ..Endpoint::new(
                "10.0.0.9".parse().unwrap(),
                [
                    ("app", "cart"),
                    ("version", "v2"),
                    ("service.istio.io/canonical-name", "carts"),
                ],
            )
        }],
        ..Service::default()
    }]
}

/// A mesh pod of workload `web` (label `app: web`) in `shop`, no service's endpoint.
fn web_pod() -> MeshWorkload {
    MeshWorkload {
        ip: "10.0.0.20".parse().unwrap(),
        namespace: "shop".into(),
        name: "web".into(),
        labels: [("app".to_owned(), "web".to_owned())].into(),
    }
}

#[test]
fn parties_are_named_from_the_endpoints_labels_and_the_peers_identity() {
    let client = web_pod();
    let workloads = Workloads::new(&services(), std::slice::from_ref(&client));
    let caller = workloads.source(&Peer {
        ip: client.ip,
        identity: None,
    });
    assert_eq!(
        (caller.workload.as_str(), caller.app.as_str()),
        ("web", "web"),
        "a mesh workload that is no service's endpoint is still known"
    );
    let pod = Peer {
        ip: "10.0.0.9".parse().unwrap(),
        identity: None,
    };
    let source = workloads.source(&pod);
    assert_eq!(
        (
            source.workload.as_str(),
            source.namespace.as_str(),
            source.app.as_str()
        ),
        ("cart-v2", "shop", "cart")
    );
    assert_eq!(
        source.canonical_service, "carts",
        "the canonical-name label wins over app"
    );
    assert_eq!(source.principal, "unknown");

    let stranger = Peer {
        ip: "10.9.9.9".parse().unwrap(),
        identity: Some(Identity::new("cluster.local", "web", "frontend").unwrap()),
    };
    let source = workloads.source(&stranger);
    assert_eq!(
        source.principal,
        "spiffe://cluster.local/ns/web/sa/frontend"
    );
    assert_eq!(source.namespace, "web", "the identity's namespace");
    assert_eq!(source.workload, "unknown");

    let destination = workloads.destination(Some("10.0.0.9:8080".parse().unwrap()));
    assert_eq!(
        (destination.workload.as_str(), destination.version.as_str()),
        ("cart-v2", "v2")
    );
    assert_eq!(*workloads.destination(None), Party::unknown());
}

#[test]
fn a_connection_names_its_source_once_per_route_table() {
    let pod = web_pod();
    let peer = Peer {
        ip: pod.ip,
        identity: Some(Identity::new("cluster.local", "shop", "web").unwrap()),
    };
    let table = |workloads: Vec<MeshWorkload>| {
        let config = crate::config::Config {
            workloads,
            ..Default::default()
        };
        Arc::new(RouteTable::compile(&config).expect("the config compiles"))
    };
    let source = ConnectionSource::default();

    let first = table(vec![pod.clone()]);
    let named = source.party(&first, &peer);
    assert_eq!(
        (named.workload.as_str(), named.principal.as_str()),
        ("web", "spiffe://cluster.local/ns/shop/sa/web")
    );
    assert!(
        Arc::ptr_eq(&named, &source.party(&first, &peer)),
        "the next request on the connection reuses the name"
    );

    let relabelled = MeshWorkload {
        labels: [("app".to_owned(), "web2".to_owned())].into(),
        ..pod
    };
    let second = table(vec![relabelled]);
    assert_eq!(
        source.party(&second, &peer).app,
        "web2",
        "a new route table names the source again"
    );
}

/// What a test's `tracing` output says.
#[derive(Debug, Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl tracing_subscriber::fmt::MakeWriter<'_> for Captured {
    type Writer = Self;

    fn make_writer(&self) -> Self {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn a_grpc_exchange_is_recorded_once_in_metrics_and_the_access_log() {
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(log.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    let _logging = tracing::subscriber::set_default(subscriber);
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let request = Request::post("/shop.Cart/Add")
        .header(header::CONTENT_TYPE, "application/grpc")
        .body(Full::new(bytes::Bytes::from_static(b"12345")))
        .unwrap();
    let mut exchange = Exchange::start(Instant::now(), &request, Some("cart"), "id-1".into());
    exchange.service = Some("cart.shop.svc.cluster.local".into());
    exchange.endpoint = Some("10.0.0.9:8080".parse().unwrap());
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "14".parse().unwrap());
    let body = Full::new(bytes::Bytes::from_static(b"reply"))
        .with_trailers(async move { Some(Ok(trailers)) })
        .map_err(|never| match never {})
        .boxed_unsync();
    let response = metrics.observe(exchange, Response::new(body));

    let encoded = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    };
    assert!(
        !encoded().contains("istio_requests_total{"),
        "nothing is recorded before the body ends: {}",
        encoded()
    );
    let collected = response
        .into_body()
        .collect()
        .await
        .expect("the body reads");
    assert_eq!(
        collected.trailers().map(|t| &t["grpc-status"]),
        Some(&"14".parse().unwrap())
    );
    let text = encoded();
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{"))
        .unwrap_or_else(|| panic!("one request is recorded: {text}"));
    for label in [
        "request_protocol=\"grpc\"",
        "grpc_response_status=\"14\"",
        "response_code=\"200\"",
        "destination_service_name=\"cart\"",
        "destination_service_namespace=\"shop\"",
    ] {
        assert!(line.contains(label), "expected {label} in {line}");
    }
    assert!(line.ends_with(" 1"), "counted once: {line}");
    let sizes: BTreeMap<&str, &str> = text
        .lines()
        .filter(|l| l.contains("_bytes_sum{"))
        .filter_map(|l| Some((l.split('{').next()?, l.rsplit(' ').next()?)))
        .collect();
    assert_eq!(
        sizes,
        BTreeMap::from([
            ("istio_request_bytes_sum", "5.0"),
            ("istio_response_bytes_sum", "5.0")
        ]),
        "{text}"
    );
    let log = log.text();
    let line = log
        .lines()
        .find(|l| l.contains(" access: "))
        .unwrap_or_else(|| panic!("one access-log line: {log}"));
    for field in [
        "method=\"POST\"",
        "path=\"/shop.Cart/Add\"",
        "authority=\"cart\"",
        "status=200",
        "flags=-",
        "upstream=\"10.0.0.9:8080\"",
        "duration_ms=",
        "bytes_received=5",
        "bytes_sent=5",
        "request_id=\"id-1\"",
    ] {
        assert!(
            line.contains(field),
            "expected `{field}` in the access log: {line}"
        );
    }
}
