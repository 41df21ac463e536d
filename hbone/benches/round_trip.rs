//! `cargo bench -p ambit-hbone --bench round_trip`: what one HBONE hop costs per
//! message, in one process, so `perf record` can see it without the whole mesh.
//!
//! A client application writes 64-byte requests on a TCP connection that the client
//! side relays into an HBONE tunnel (HTTP/2 CONNECT over mutual TLS 1.3 on loopback, as
//! ztunnel's outbound does); the server side terminates it and relays to an echo server
//! (as ztunnel's inbound does). The direct path is the same application talking to the
//! echo server itself. Everything runs on one current-thread runtime, so the process'
//! CPU time is the whole cost and no cross-thread wake-up hides in it.
//!
//! Prints, for each path: round-trip latency p50/p99 (closed loop) and CPU µs per round
//! trip; then bulk echo throughput through one tunnel. `ROUND_TRIPS` round trips follow
//! a warm-up; ratios are to the direct path in the same run.

#[expect(
    dead_code,
    reason = "the tests' support module; the benchmark uses part of it"
)]
#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/closed_loop.rs"]
mod closed_loop;

use std::{net::SocketAddr, time::Instant};

use closed_loop::Figures;
use http::HeaderMap;
use support::{CLIENT, SERVER, TestCa};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

const ROUND_TRIPS: usize = 20_000;
const WARM_UP: usize = 2_000;
const MESSAGE: usize = 64;
const BULK_BYTES: usize = 256 * 1024 * 1024;
const BULK_WRITE: usize = 128 * 1024;

fn main() {
    closed_loop::block_on(run());
}

async fn run() {
    let ca = TestCa::new();
    let server = support::hbone_server(&ca.leaf(SERVER)).await;
    let echo = support::echo_server().await;
    let client = ca.leaf(CLIENT);

    let direct = round_trips(TcpStream::connect(echo).await.expect("connect to echo")).await;
    let app = through_hbone(&client, server.addr, echo).await;
    let hbone = round_trips(app).await;

    println!("64-byte round trips, closed loop, {ROUND_TRIPS} after {WARM_UP} to warm up");
    closed_loop::print_table("round trip", &[("direct", &direct), ("hbone", &hbone)]);

    let direct_bulk = bulk(TcpStream::connect(echo).await.expect("connect to echo")).await;
    let hbone_bulk = bulk(through_hbone(&client, server.addr, echo).await).await;
    println!(
        "\nbulk echo through one connection ({} MiB each way, {} KiB writes)",
        BULK_BYTES >> 20,
        BULK_WRITE >> 10
    );
    println!("direct    {direct_bulk:6.2} Gbit/s");
    println!(
        "hbone     {hbone_bulk:6.2} Gbit/s ({:.2}x)",
        hbone_bulk / direct_bulk
    );
}

/// An application connection whose other end is relayed into an HBONE tunnel to `echo`.
async fn through_hbone(
    client: &ambit_hbone::WorkloadCertificate,
    server: SocketAddr,
    echo: SocketAddr,
) -> TcpStream {
    let connection = support::connect(client, server, SERVER)
        .await
        .expect("HBONE handshake");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = TcpStream::connect(listener.local_addr().expect("an address"))
        .await
        .expect("connect");
    let (captured, _) = listener.accept().await.expect("accept");
    let tunnel = connection
        .open(echo, None, HeaderMap::new())
        .await
        .expect("CONNECT");
    tokio::spawn(async move {
        let _connection = connection;
        if let Err(error) = tunnel.relay(captured).await {
            eprintln!("relay failed: {error}");
        }
    });
    app
}

async fn round_trips(mut stream: TcpStream) -> Figures {
    stream.set_nodelay(true).expect("nodelay");
    let request = [7_u8; MESSAGE];
    let mut reply = [0_u8; MESSAGE];
    closed_loop::measure(WARM_UP, ROUND_TRIPS, async |_| {
        stream.write_all(&request).await.expect("write");
        stream.read_exact(&mut reply).await.expect("read the echo");
    })
    .await
}

/// Writes `BULK_BYTES` while reading the echo; Gbit/s each way.
async fn bulk(stream: TcpStream) -> f64 {
    let (mut read, mut write) = stream.into_split();
    let start = Instant::now();
    let writer = async move {
        let block = vec![1_u8; BULK_WRITE];
        for _ in 0..BULK_BYTES / BULK_WRITE {
            write.write_all(&block).await.expect("bulk write");
        }
        write.shutdown().await.expect("half-close");
    };
    let reader = async move {
        let mut buffer = vec![0_u8; BULK_WRITE];
        let mut total = 0;
        loop {
            match read.read(&mut buffer).await.expect("bulk read") {
                0 => break total,
                n => total += n,
            }
        }
    };
    let ((), echoed) = tokio::join!(writer, reader);
    assert_eq!(echoed, BULK_BYTES, "the whole transfer comes back");
    (BULK_BYTES * 8) as f64 / start.elapsed().as_secs_f64() / 1e9
}
