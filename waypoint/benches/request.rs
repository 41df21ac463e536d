//! `cargo bench -p ambit-waypoint --bench request`: what one HTTP/1.1 request costs in
//! the L7 engine's own code, in one process, so that `perf record` sees the engine
//! without the network between pods, TLS or the rest of the mesh (`cargo xtask bench
//! l7` measures all of that, on a noisy machine).
//!
//! A hyper client sends `GET`s on one keep-alive connection, closed loop, to three
//! hyper backends on loopback (127.0.0.11 to .13, answering with a small JSON echo of
//! the request): directly, or through the engine serving plain HTTP with bench l7's
//! routes (a VirtualService sending `/v1`, `/v2`, `/v3` to three DestinationRule
//! subsets). Everything runs on one current-thread runtime, so the process' CPU time is
//! the whole cost, and the engine's share is the difference to the direct path.
//!
//! Prints, for each path, p50 / p99 latency and CPU µs per request, then the engine's
//! CPU µs per request. `REQUESTS` requests follow a warm-up.

#[expect(
    dead_code,
    reason = "the tests' support module; the benchmark uses part of it"
)]
#[path = "../tests/proxy/support.rs"]
mod support;

#[path = "../../hbone/benches/common/closed_loop.rs"]
mod closed_loop;

use std::net::SocketAddr;

use bytes::Bytes;
use closed_loop::Figures;
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use support::{Behaviour, SERVICE_PORT, Waypoint};
use tokio::net::TcpStream;

const REQUESTS: usize = 20_000;
const WARM_UP: usize = 2_000;
const PATHS: [&str; 3] = ["/v1", "/v2", "/v3"];

fn main() {
    closed_loop::block_on(run());
}

async fn run() {
    let (port, backends) = support::start_backends(&[
        ("127.0.0.11", "v1", Behaviour::Answer),
        ("127.0.0.12", "v2", Behaviour::Answer),
        ("127.0.0.13", "v3", Behaviour::Answer),
    ])
    .await;
    let routes = support::virtual_service(
        "app",
        "
hosts: [app]
http:
- match: [{uri: {prefix: /v1}}]
  route: [{destination: {host: app, subset: v1}}]
- match: [{uri: {prefix: /v2}}]
  route: [{destination: {host: app, subset: v2}}]
- match: [{uri: {prefix: /v3}}]
  route: [{destination: {host: app, subset: v3}}]
",
    );
    let waypoint = Waypoint::start(&support::config(
        vec![support::service("app", port, &backends)],
        vec![routes],
        vec![support::app_subsets()],
    ))
    .await;

    let direct = requests(SocketAddr::new(backends[0].ip, port)).await;
    let engine = requests(waypoint.address).await;

    println!("HTTP/1.1 GETs on one connection, closed loop, {REQUESTS} after {WARM_UP} to warm up");
    closed_loop::print_table("request", &[("direct", &direct), ("engine", &engine)]);
    let own = engine
        .cpu_per_exchange
        .saturating_sub(direct.cpu_per_exchange);
    println!(
        "the engine's own CPU per request: {:.1} µs",
        closed_loop::micros(own)
    );
    assert_eq!(
        backends.iter().map(support::Backend::hits).sum::<u64>(),
        u64::try_from(2 * (WARM_UP + REQUESTS)).expect("fits"),
        "every request reached a backend"
    );
}

/// `WARM_UP` then `REQUESTS` `GET`s to `to`, each after the previous answer's body,
/// the paths of [`PATHS`] in turn.
async fn requests(to: SocketAddr) -> Figures {
    let mut sender = connect(to).await;
    let host = HeaderValue::from_str(&format!("app:{SERVICE_PORT}")).expect("a valid host");
    closed_loop::measure(WARM_UP, REQUESTS, async |i| {
        let request = Request::get(PATHS[i % PATHS.len()])
            .header(header::HOST, host.clone())
            .body(Empty::<Bytes>::new())
            .expect("a valid request");
        let response = sender.send_request(request).await.expect("an answer");
        assert!(response.status().is_success(), "{}", response.status());
        response
            .into_body()
            .collect()
            .await
            .expect("the whole body");
    })
    .await
}

/// A keep-alive HTTP/1.1 connection to `to`, driven by a task of its own.
async fn connect(to: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(to).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    sender
}
