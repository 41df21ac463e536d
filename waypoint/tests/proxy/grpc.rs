//! gRPC through the waypoint, with a real tonic server and client (gRPC's health
//! service): a unary call, a server stream whose messages arrive as the server sends
//! them, and an error status carried in trailers.

use std::{net::SocketAddr, time::Duration};

use ambit_waypoint::{Endpoint, Service, ServicePort};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint as GrpcEndpoint, Server, server::TcpIncoming};
use tonic_health::{
    ServingStatus,
    pb::{
        HealthCheckRequest, HealthCheckResponse, health_check_response, health_client::HealthClient,
    },
    server::HealthReporter,
};

use crate::support::*;

const BACKEND: &str = "127.0.0.21";
const WATCHED: &str = "shop.Checkout";

/// A gRPC health server on [`BACKEND`]; its port and the reporter that changes what
/// it serves.
async fn grpc_backend() -> (u16, HealthReporter) {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(WATCHED, ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind((BACKEND, 0))
        .await
        .expect("binding the gRPC backend");
    let port = listener.local_addr().expect("a bound address").port();
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    (port, reporter)
}

/// The `grpc-app` service: one pod, a port named `grpc` (so HTTP/2 upstream).
fn grpc_service(target_port: u16) -> Service {
    Service {
        namespace: NAMESPACE.into(),
        name: "grpc-app".into(),
        ports: vec![ServicePort {
            name: "grpc".into(),
            port: SERVICE_PORT,
            target_port,
            app_protocol: String::new(),
        }],
        endpoints: vec![Endpoint::new(
            BACKEND.parse().expect("an IP"),
            [("app", "grpc-app")],
        )],
    }
}

/// A client of the health service through the waypoint, as `grpc-app`.
async fn client(waypoint: SocketAddr) -> HealthClient<Channel> {
    let channel = GrpcEndpoint::from_shared(format!("http://{waypoint}"))
        .expect("a URI")
        .origin("http://grpc-app".parse().expect("an origin"))
        .connect()
        .await
        .expect("connecting to the waypoint");
    HealthClient::new(channel)
}

/// The next status the stream delivers (within 5 s); `None` when it ended.
async fn next(
    stream: &mut tonic::Streaming<HealthCheckResponse>,
) -> Option<health_check_response::ServingStatus> {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("a message within 5 s")
        .expect("a message, not an error")
        .map(|message| message.status())
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

#[tokio::test]
async fn unary_calls_streams_and_error_statuses_go_through() {
    let (port, reporter) = grpc_backend().await;
    let waypoint = Waypoint::start(&config(vec![grpc_service(port)], vec![], vec![])).await;
    let mut client = client(waypoint.address).await;

    let reply = client
        .check(check(WATCHED))
        .await
        .expect("a unary call through the waypoint");
    assert_eq!(
        reply.into_inner().status(),
        health_check_response::ServingStatus::Serving
    );

    // gRPC's status travels in trailers (here a trailers-only response).
    let error = client
        .check(check("shop.Unknown"))
        .await
        .expect_err("an unknown service");
    assert_eq!(error.code(), tonic::Code::NotFound, "{error:?}");

    // Server streaming: each change is a message, delivered while the call is open.
    let mut stream = client
        .watch(check(WATCHED))
        .await
        .expect("a streaming call through the waypoint")
        .into_inner();
    assert_eq!(
        next(&mut stream).await,
        Some(health_check_response::ServingStatus::Serving)
    );
    reporter
        .set_service_status(WATCHED, ServingStatus::NotServing)
        .await;
    assert_eq!(
        next(&mut stream).await,
        Some(health_check_response::ServingStatus::NotServing)
    );
    let metrics = waypoint.metrics();
    assert!(
        metrics.contains("grpc_response_status=\"5\""),
        "the NotFound call is counted with its gRPC status:\n{metrics}"
    );
}

#[tokio::test]
async fn an_injected_grpc_abort_answers_the_status_as_grpc_does() {
    let (port, _reporter) = grpc_backend().await;
    let abort = virtual_service(
        "grpc-app",
        "
hosts: [grpc-app]
http:
- fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
  route: [{destination: {host: grpc-app}}]
",
    );
    let waypoint = Waypoint::start(&config(vec![grpc_service(port)], vec![abort], vec![])).await;
    let mut client = client(waypoint.address).await;

    let error = client
        .check(check(WATCHED))
        .await
        .expect_err("the call is aborted");
    assert_eq!(
        (error.code(), error.message()),
        (tonic::Code::Unavailable, "fault filter abort"),
        "{error:?}"
    );
    let metrics = waypoint.metrics();
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("istio_requests_total")
                && line.contains("response_code=\"200\"")
                && line.contains("grpc_response_status=\"14\"")
                && line.contains("response_flags=\"FI\"")),
        "counted as Envoy counts it: 200, gRPC status 14, FI:\n{metrics}"
    );
}
