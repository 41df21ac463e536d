//! HBONE client ↔ server on loopback with a test CA: real TLS, real sockets.

#[expect(
    dead_code,
    reason = "support serves several test files; this one uses part of it"
)]
mod support;

use std::{net::IpAddr, sync::Arc, time::Duration};

use ambit_hbone::{ClientError, ConnectRequest, Pool, PoolKey, TlsError, Tunnel};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use rustls::{SignatureScheme, client::ResolvesClientCert, sign::CertifiedKey};
use support::{CLIENT, SERVER, TestCa};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    time::timeout,
};

const LIMIT: Duration = Duration::from_secs(30);

struct Setup {
    client: ambit_hbone::WorkloadCertificate,
    server: support::HboneServer,
    echo: std::net::SocketAddr,
}

async fn setup() -> Setup {
    let ca = TestCa::new();
    let server = support::hbone_server(&ca.leaf(SERVER)).await;
    Setup {
        client: ca.leaf(CLIENT),
        server,
        echo: support::echo_server().await,
    }
}

/// A TLS connection to the HBONE server, for speaking HTTP/2 over it by hand.
async fn tls_to_server(setup: &Setup) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = setup
        .client
        .client_config(support::identity(SERVER))
        .expect("client config");
    support::connect_tls(config, setup.server.addr)
        .await
        .expect("the TLS handshake succeeds")
}

/// Writes `data` and shuts down the write side while reading everything back.
async fn exchange(tunnel: Tunnel, data: &[u8]) -> Vec<u8> {
    let (mut read, mut write) = tokio::io::split(tunnel);
    let writer = async {
        write.write_all(data).await.expect("write into the tunnel");
        write.shutdown().await.expect("half-close the tunnel");
    };
    let reader = async {
        let mut echoed = Vec::with_capacity(data.len());
        read.read_to_end(&mut echoed)
            .await
            .expect("read the echo until end-of-stream");
        echoed
    };
    let ((), echoed) = tokio::join!(writer, reader);
    echoed
}

#[tokio::test]
async fn bytes_flow_both_ways_with_half_close_and_the_handler_sees_who_and_from_where() {
    let mut setup = setup().await;
    let connection = support::connect(&setup.client, setup.server.addr, SERVER)
        .await
        .expect("mutual TLS and h2 handshake with the right identity");
    let source: IpAddr = "10.1.2.3".parse().expect("test address");
    let mut headers = HeaderMap::new();
    headers.insert("baggage", HeaderValue::from_static("k8s.pod.name=client-0"));
    let mut tunnel = connection
        .open(setup.echo, Some(source), headers)
        .await
        .expect("CONNECT to the echo server");

    tunnel.write_all(b"ping").await.expect("write");
    let mut first = [0; 4];
    tunnel.read_exact(&mut first).await.expect("read the echo");
    assert_eq!(&first, b"ping", "the echo of the first write");

    tunnel.write_all(b" and the rest").await.expect("write");
    tunnel.shutdown().await.expect("half-close");
    let mut rest = Vec::new();
    timeout(LIMIT, tunnel.read_to_end(&mut rest))
        .await
        .expect("the echo ends after the half-close")
        .expect("read after half-close");
    assert_eq!(
        rest, b" and the rest",
        "everything written before the half-close comes back"
    );

    let ConnectRequest {
        authority,
        peer,
        forwarded_for,
        baggage,
        traceparent,
    } = setup
        .server
        .requests
        .recv()
        .await
        .expect("the handler was called");
    assert_eq!(authority, setup.echo, ":authority is the destination");
    assert_eq!(
        peer.to_string(),
        CLIENT,
        "the server sees the client's identity"
    );
    assert_eq!(
        forwarded_for,
        Some(source),
        "Forwarded: for carries the source"
    );
    assert_eq!(
        baggage,
        Some(HeaderValue::from_static("k8s.pod.name=client-0"))
    );
    assert_eq!(traceparent, None);
}

#[tokio::test]
async fn a_server_with_another_identity_fails_the_handshake_naming_both() {
    let setup = setup().await;
    let other = "spiffe://cluster.local/ns/shop/sa/other";
    let config = setup
        .client
        .client_config(support::identity(other))
        .expect("client config");
    let error = support::connect_tls(config, setup.server.addr)
        .await
        .expect_err("the server is sa/server, not sa/other");
    let message = error.to_string();
    assert!(
        matches!(error, TlsError::WrongIdentity { .. })
            && message.contains(other)
            && message.contains(SERVER),
        "expected a WrongIdentity error naming {other} and {SERVER}, got: {message}"
    );
}

#[derive(Debug)]
struct NoCertificate;

impl ResolvesClientCert for NoCertificate {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn a_client_without_a_certificate_is_rejected() {
    let mut setup = setup().await;
    let mut config = (*setup
        .client
        .client_config(support::identity(SERVER))
        .expect("client config"))
    .clone();
    config.client_auth_cert_resolver = Arc::new(NoCertificate);
    // In TLS 1.3 the client finishes first; the server's rejection shows as an alert on
    // the client's next read, so the h2 handshake (or the first CONNECT) fails.
    let client_side = async {
        let tls = support::connect_tls(Arc::new(config), setup.server.addr)
            .await
            .map_err(|e| e.to_string())?;
        let connection = ambit_hbone::Connection::handshake(tls)
            .await
            .map_err(|e| e.to_string())?;
        connection
            .open(setup.echo, None, HeaderMap::new())
            .await
            .map_err(|e| e.to_string())
            .map(drop)
    };
    let result: Result<(), String> = timeout(LIMIT, client_side)
        .await
        .expect("the client learns of the rejection");
    assert!(
        result.is_err(),
        "a client without a certificate got a tunnel"
    );
    let rejected = setup
        .server
        .rejected
        .recv()
        .await
        .expect("the server reports the rejected handshake");
    assert!(
        rejected.to_string().contains("certificate"),
        "the server's error should say a certificate was missing, got: {rejected}"
    );
    assert!(
        setup.server.requests.try_recv().is_err(),
        "the handler must not run for an unauthenticated client"
    );
}

#[tokio::test]
async fn a_handshake_hands_out_no_session_tickets() {
    let setup = setup().await;
    let mut tls = tls_to_server(&setup).await;
    // The HTTP/2 preface and an empty SETTINGS frame; the server answers with its
    // SETTINGS, after any ticket it sent once the handshake was done.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .expect("write the preface");
    let mut frame_header = [0_u8; 9];
    timeout(LIMIT, tls.read_exact(&mut frame_header))
        .await
        .expect("the server answers in time")
        .expect("read the server's first frame");
    assert_eq!(frame_header[3], 0x4, "the server's first frame is SETTINGS");
    assert_eq!(
        tls.get_ref().1.tls13_tickets_received(),
        0,
        "tickets no one can use, sent on every new HBONE connection"
    );
}

#[tokio::test]
async fn a_refused_upstream_is_a_503_for_the_client() {
    let setup = setup().await;
    let connection = support::connect(&setup.client, setup.server.addr, SERVER)
        .await
        .expect("handshake");
    let nowhere = support::closed_port().await;
    let error = connection
        .open(nowhere, None, HeaderMap::new())
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(
            error,
            ClientError::Refused {
                status: StatusCode::SERVICE_UNAVAILABLE,
                ..
            }
        ),
        "expected a 503 refusal, got: {error}"
    );
    // The connection stays usable after a refused stream.
    let tunnel = connection
        .open(setup.echo, None, HeaderMap::new())
        .await
        .expect("a second CONNECT on the same connection");
    assert_eq!(exchange(tunnel, b"still here").await, b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_tunnels_over_one_connection_each_carry_a_mebibyte() {
    let setup = setup().await;
    let connection = support::connect(&setup.client, setup.server.addr, SERVER)
        .await
        .expect("handshake");
    let mut tasks = Vec::new();
    for index in 0..10_u8 {
        let connection = connection.clone();
        let echo = setup.echo;
        tasks.push(tokio::spawn(async move {
            let data: Vec<u8> = (0..1024 * 1024_u32)
                .map(|i| (i % 251) as u8 ^ index)
                .collect();
            let tunnel = connection
                .open(echo, None, HeaderMap::new())
                .await
                .expect("CONNECT");
            let echoed = exchange(tunnel, &data).await;
            assert!(
                echoed == data,
                "tunnel {index}: sent {} bytes, got {} back{}",
                data.len(),
                echoed.len(),
                if echoed.len() == data.len() {
                    " (different content)"
                } else {
                    ""
                }
            );
        }));
    }
    for task in tasks {
        timeout(LIMIT, task)
            .await
            .expect("every tunnel finishes")
            .expect("the tunnel task panicked");
    }
}

#[tokio::test]
async fn anything_but_connect_gets_405_and_a_host_name_gets_400() {
    let setup = setup().await;
    let tls = tls_to_server(&setup).await;
    let (send, connection) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(connection);
    for (method, uri, expected) in [
        (
            Method::GET,
            "https://127.0.0.1/",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Method::POST,
            "https://127.0.0.1/x",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (Method::CONNECT, "example.com:80", StatusCode::BAD_REQUEST),
    ] {
        let request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .body(())
            .expect("request");
        let mut send = send.clone().ready().await.expect("h2 ready");
        let (response, _) = send.send_request(request, true).expect("send request");
        let status = response.await.expect("a response").status();
        assert_eq!(status, expected, "{method} {uri}");
    }
}

#[tokio::test]
async fn tunnel_relay_carries_a_plain_connection() {
    let setup = setup().await;
    let connection = support::connect(&setup.client, setup.server.addr, SERVER)
        .await
        .expect("handshake");
    // A plain TCP pair stands for the captured application connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut app = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
        .await
        .expect("connect");
    let (captured, _) = listener.accept().await.expect("accept");
    let tunnel = connection
        .open(setup.echo, None, HeaderMap::new())
        .await
        .expect("CONNECT");
    let relay = tokio::spawn(tunnel.relay(captured));

    let data = Bytes::from(vec![7_u8; 3 * 1024 * 1024 + 5]);
    let (mut read, mut write) = app.split();
    let writer = async {
        write.write_all(&data).await.expect("app write");
        write.shutdown().await.expect("app half-close");
    };
    let mut echoed = Vec::new();
    let reader = read.read_to_end(&mut echoed);
    let ((), read_result) = timeout(LIMIT, async { tokio::join!(writer, reader) })
        .await
        .expect("the echo completes");
    read_result.expect("app read");
    assert!(
        echoed == data,
        "echoed {} of {} bytes",
        echoed.len(),
        data.len()
    );
    let transferred = relay
        .await
        .expect("relay task")
        .expect("relay finishes cleanly");
    assert_eq!(transferred.into_tunnel, data.len() as u64);
    assert_eq!(transferred.from_tunnel, data.len() as u64);
}

#[tokio::test]
async fn the_pool_shares_one_connection_per_key() {
    let setup = setup().await;
    let pool = Pool::new();
    let key = |ip: &str| PoolKey {
        source: support::identity(CLIENT),
        destination: support::identity(SERVER),
        destination_ip: ip.parse().expect("test address"),
    };
    let dial = || support::connect(&setup.client, setup.server.addr, SERVER);
    let mut tunnels = Vec::new();
    for _ in 0..3 {
        let connection = pool
            .connection(&key("127.0.0.1"), dial)
            .await
            .expect("pooled connection");
        tunnels.push(
            connection
                .open(setup.echo, None, HeaderMap::new())
                .await
                .expect("CONNECT"),
        );
    }
    assert_eq!(
        setup.server.accepted(),
        1,
        "three tunnels, one key: one TLS connection"
    );
    pool.connection(&key("127.0.0.2"), dial)
        .await
        .expect("a second key dials");
    assert_eq!(
        setup.server.accepted(),
        2,
        "another destination IP: another connection"
    );
    for tunnel in tunnels {
        assert_eq!(exchange(tunnel, b"pooled").await, b"pooled");
    }
    pool.prune();
    assert_eq!(pool.len(), 2, "live connections survive pruning");
}
