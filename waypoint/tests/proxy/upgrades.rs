//! Protocol upgrades through the waypoint: a WebSocket handshake is forwarded with its
//! `Upgrade` header, the endpoint's `101` reaches the client, and the two connections
//! are spliced so bytes flow both ways.

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::support::*;

const V1: &str = "127.0.0.11";

/// Reads up to the end of an HTTP head (`\r\n\r\n`).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = stream.read_u8().await.expect("the response head");
        head.push(byte);
    }
    String::from_utf8(head).expect("a text head")
}

#[tokio::test]
async fn a_websocket_upgrade_is_spliced_through_the_waypoint() {
    let (port, backends) = start_backends(&[(V1, "v1", Behaviour::Echo)]).await;
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![],
        vec![],
    ))
    .await;
    let mut stream = TcpStream::connect(waypoint.address)
        .await
        .expect("connecting to the waypoint");
    stream
        .write_all(
            b"GET /chat HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .expect("the handshake");
    let head = read_head(&mut stream).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket\r\n"), "{head}");
    assert!(head.contains("connection: upgrade\r\n"), "{head}");

    for message in ["hello over the upgraded connection", "and a second frame"] {
        stream
            .write_all(message.as_bytes())
            .await
            .expect("writing after the switch");
        let mut echoed = vec![0; message.len()];
        stream
            .read_exact(&mut echoed)
            .await
            .expect("the echo after the switch");
        assert_eq!(String::from_utf8_lossy(&echoed), message);
    }
    backends[0].wait_for_hits(1).await;
}

#[tokio::test]
async fn a_plain_request_to_an_upgrading_backend_is_not_upgraded() {
    let (port, backends) = start_backends(&[(V1, "v1", Behaviour::Echo)]).await;
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![],
        vec![],
    ))
    .await;
    let reply = TestClient::http1(&waypoint).get("app", "/").await;
    assert_eq!(reply.status, http::StatusCode::OK, "{reply:?}");
}
