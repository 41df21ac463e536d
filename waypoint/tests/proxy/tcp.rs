//! The L4 relay: connections to a service port named `tcp-echo`, handed to the engine
//! as the HBONE server hands them (an in-memory pipe, the VIP as destination), relayed
//! to raw TCP servers that speak first — no HTTP could pass — split by a `tcp:` route's
//! weights, and reported with Istio's TCP metrics.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc};

use ambit_waypoint::{Downstream, Endpoint, Engine, Peer, Service, ServicePort, relay_connection};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream},
    net::TcpListener,
};

use crate::support::*;

const VIP: &str = "10.96.0.9";
const ECHO: &str = "echo.shop.svc.cluster.local";
/// Connections sent to see a split.
const CONNECTIONS: u32 = 400;

/// Greets each connection with `name` and a newline, then echoes what it receives.
async fn serve_line_echo(listener: TcpListener, name: &'static str) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let (mut reader, mut writer) = stream.split();
            writer.write_all(format!("{name}\n").as_bytes()).await?;
            tokio::io::copy(&mut reader, &mut writer).await?;
            writer.shutdown().await
        });
    }
}

/// Servers `v1` on 127.0.0.11 and `v2` on 127.0.0.12, and service `echo` on them.
async fn echo_service() -> Service {
    let pods = [("127.0.0.11", "v1"), ("127.0.0.12", "v2")];
    let ips: Vec<_> = pods.iter().map(|(ip, _)| ip.parse().expect("IP")).collect();
    let (port, listeners) = bind_same_port(&ips).await;
    for (listener, (_, name)) in listeners.into_iter().zip(pods) {
        tokio::spawn(serve_line_echo(listener, name));
    }
    Service {
        namespace: NAMESPACE.into(),
        name: "echo".into(),
        ports: vec![ServicePort {
            name: "tcp-echo".into(),
            port: SERVICE_PORT,
            target_port: port,
            app_protocol: String::new(),
        }],
        endpoints: ips
            .iter()
            .zip(pods)
            .map(|(ip, (_, version))| Endpoint {
                workload: format!("echo-{version}"),
                ..Endpoint::new(*ip, [("app", "echo"), ("version", version)])
            })
            .collect(),
    }
}

/// Service `name` (port named `tcp`) with one endpoint, `ip:port`.
fn one_endpoint_service(name: &str, ip: &str, port: u16) -> Service {
    Service {
        namespace: NAMESPACE.into(),
        name: name.into(),
        ports: vec![ServicePort {
            name: "tcp".into(),
            port: SERVICE_PORT,
            target_port: port,
            app_protocol: String::new(),
        }],
        endpoints: vec![Endpoint::new(ip.parse().expect("IP"), [])],
    }
}

/// The client's connection was closed with nothing sent, and the one connection is
/// counted closed with `UF`.
async fn closed_and_counted_uf(client: &mut DuplexStream, waypoint: &Waypoint) {
    let mut rest = Vec::new();
    let read = client.read_to_end(&mut rest).await.expect("reading");
    assert_eq!(read, 0, "the client's connection is closed, nothing sent");
    let metrics = waypoint.metrics();
    assert_eq!(
        sample(
            &metrics,
            "istio_tcp_connections_closed_total",
            &[("response_flags", "UF"), ("destination_service", ECHO)]
        ),
        1.0,
        "{metrics}"
    );
}

/// A connection to the VIP of `echo` on its port, as the HBONE server describes it.
fn to_echo() -> Downstream {
    Downstream::new(
        SocketAddr::new(VIP.parse().expect("IP"), SERVICE_PORT),
        Some(ECHO.to_owned()),
        Peer {
            ip: "127.0.0.1".parse().expect("IP"),
            identity: None,
        },
    )
}

/// One connection through the relay: the greeting line, then `text` echoed.
async fn exchange(engine: &Arc<Engine>, text: &str) -> String {
    let (client, relayed): (DuplexStream, DuplexStream) = tokio::io::duplex(64 * 1024);
    let relaying = tokio::spawn(relay_connection(relayed, Arc::clone(engine), to_echo()));
    let mut client = BufReader::new(client);
    let mut greeting = String::new();
    client
        .read_line(&mut greeting)
        .await
        .expect("the server's greeting");
    client
        .get_mut()
        .write_all(text.as_bytes())
        .await
        .expect("sending");
    let mut echo = vec![0; text.len()];
    client.read_exact(&mut echo).await.expect("the echo");
    assert_eq!(echo, text.as_bytes(), "the bytes come back unchanged");
    drop(client);
    relaying.await.expect("the relay does not panic");
    greeting.trim_end().to_owned()
}

/// Connections through the relay: checks that about three in four were answered by
/// `v1` and the rest by `v2`; returns how many `v1` answered.
async fn three_in_four_on_v1(engine: &Arc<Engine>) -> u32 {
    let mut answered: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..CONNECTIONS {
        *answered
            .entry(exchange(engine, "ping\n").await)
            .or_default() += 1;
    }
    let v1 = answered.get("v1").copied().unwrap_or(0);
    // 300 of 400 expected; the standard deviation is under 9.
    assert!(
        (260..=340).contains(&v1) && v1 + answered.get("v2").copied().unwrap_or(0) == CONNECTIONS,
        "expected about 300 of {CONNECTIONS} connections on v1, the rest on v2: {answered:?}"
    );
    v1
}

#[tokio::test]
async fn a_tcp_route_splits_connections_by_weight_and_the_relay_counts_them() {
    let waypoint = Waypoint::start(&config(
        vec![echo_service().await],
        vec![virtual_service(
            "echo",
            "
hosts: [echo]
tcp:
- route:
  - {destination: {host: echo, subset: v1}, weight: 75}
  - {destination: {host: echo, subset: v2}, weight: 25}
",
        )],
        vec![destination_rule(
            "echo",
            "{host: echo, subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]}",
        )],
    ))
    .await;
    let v1 = three_in_four_on_v1(&waypoint.engine).await;
    let metrics = waypoint.metrics();
    let to_echo = [("reporter", "waypoint"), ("destination_service", ECHO)];
    assert_eq!(
        sample(&metrics, "istio_tcp_connections_closed_total", &to_echo),
        f64::from(CONNECTIONS),
        "{metrics}"
    );
    let v1_labels = [
        ("destination_service", ECHO),
        ("destination_version", "v1"),
        ("destination_workload", "echo-v1"),
        ("request_protocol", "tcp"),
    ];
    assert_eq!(
        sample(&metrics, "istio_tcp_connections_opened_total", &v1_labels),
        f64::from(v1),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "istio_tcp_received_bytes_total", &to_echo),
        f64::from(CONNECTIONS * 5),
        "each client sent `ping\\n`: {metrics}"
    );
    assert_eq!(
        sample(&metrics, "istio_tcp_sent_bytes_total", &to_echo),
        f64::from(CONNECTIONS * (3 + 5)),
        "each server sent its greeting and the echo: {metrics}"
    );
}

#[tokio::test]
async fn a_tcp_route_on_the_service_splits_its_connections_over_backend_services_by_weight() {
    let echo = echo_service().await;
    let port = echo.ports[0].target_port;
    let mut config = config(
        vec![
            echo,
            one_endpoint_service("echo-v1", "127.0.0.11", port),
            one_endpoint_service("echo-v2", "127.0.0.12", port),
        ],
        vec![],
        vec![],
    );
    config.tcp_routes.push(named(
        "echo-split",
        "
parentRefs: [{group: '', kind: Service, name: echo, port: 80}]
rules:
- backendRefs:
  - {name: echo-v1, port: 80, weight: 3}
  - {name: echo-v2, port: 80}
",
    ));
    let waypoint = Waypoint::start(&config).await;
    three_in_four_on_v1(&waypoint.engine).await;
}

#[tokio::test]
async fn a_connection_to_an_endpoint_that_refuses_is_closed_and_counted_uf() {
    let port = closed_port("127.0.0.13").await.expect("a free port");
    let dead = one_endpoint_service("echo", "127.0.0.13", port);
    let waypoint = Waypoint::start(&config(vec![dead], vec![], vec![])).await;
    let (mut client, relayed) = tokio::io::duplex(1024);
    relay_connection(relayed, Arc::clone(&waypoint.engine), to_echo()).await;
    closed_and_counted_uf(&mut client, &waypoint).await;
}

/// A listener on `ip` that never accepts, its one-place queue filled: a connection to
/// it gets no answer (the kernel drops the SYN), as to an endpoint that is gone.
async fn unanswering(ip: &str) -> (u16, Vec<tokio::net::TcpStream>, tokio::net::TcpListener) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::new(ip.parse().expect("IP"), 0))
        .expect("binding");
    let listener = socket.listen(0).expect("listening");
    let address = listener.local_addr().expect("bound");
    let mut queued = Vec::new();
    // A backlog of 0 holds one connection; a few more make sure it is full.
    for _ in 0..3 {
        match tokio::time::timeout(
            std::time::Duration::from_millis(200),
            tokio::net::TcpStream::connect(address),
        )
        .await
        {
            Ok(Ok(stream)) => queued.push(stream),
            _ => break,
        }
    }
    (address.port(), queued, listener)
}

#[tokio::test]
async fn a_connection_not_answered_in_the_connect_timeout_is_closed_and_counted_uf() {
    let (port, _queued, _listener) = unanswering("127.0.0.14").await;
    let silent = one_endpoint_service("echo", "127.0.0.14", port);
    let rule = destination_rule(
        "echo",
        "{host: echo, trafficPolicy: {connectionPool: {tcp: {connectTimeout: 300ms}}}}",
    );
    let waypoint = Waypoint::start(&config(vec![silent], vec![], vec![rule])).await;
    let (mut client, relayed) = tokio::io::duplex(1024);
    let started = std::time::Instant::now();
    relay_connection(relayed, Arc::clone(&waypoint.engine), to_echo()).await;
    let waited = started.elapsed();
    assert!(
        (std::time::Duration::from_millis(300)..std::time::Duration::from_secs(3))
            .contains(&waited),
        "gave up after {waited:?}, expected the 300 ms connectTimeout (not Istio's 10 s)"
    );
    closed_and_counted_uf(&mut client, &waypoint).await;
}

#[tokio::test]
async fn a_busy_connection_is_closed_at_its_max_connection_duration_and_counted_dt() {
    let rule = destination_rule(
        "echo",
        "{host: echo, trafficPolicy: {connectionPool: {tcp: {maxConnectionDuration: 400ms}}}}",
    );
    let waypoint = Waypoint::start(&config(vec![echo_service().await], vec![], vec![rule])).await;
    let (client, relayed) = tokio::io::duplex(64 * 1024);
    let started = std::time::Instant::now();
    let relaying = tokio::spawn(relay_connection(
        relayed,
        Arc::clone(&waypoint.engine),
        to_echo(),
    ));
    let mut client = BufReader::new(client);
    let mut line = String::new();
    client.read_line(&mut line).await.expect("the greeting");
    // Busy all along, so no idle timeout could be what closes it.
    let closed_after = loop {
        line.clear();
        let sent = client.get_mut().write_all(b"tick\n").await;
        let echoed = client.read_line(&mut line).await;
        if sent.is_err() || matches!(echoed, Ok(0) | Err(_)) {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "the connection outlived its 400 ms maxConnectionDuration"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    relaying.await.expect("the relay does not panic");
    assert!(
        closed_after >= std::time::Duration::from_millis(400),
        "closed after {closed_after:?}, before its maxConnectionDuration"
    );
    let metrics = waypoint.metrics();
    assert_eq!(
        sample(
            &metrics,
            "istio_tcp_connections_closed_total",
            &[("response_flags", "DT"), ("destination_service", ECHO)]
        ),
        1.0,
        "{metrics}"
    );
}
