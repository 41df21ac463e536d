//! A TCP service behind a waypoint, end to end, on the shared two-node cluster (see
//! `common/waypoint_cluster.rs`): service `echo` (port named `tcp-echo`) selects pods
//! `app-v1` and `app-v2` (on n2) running `pod-app serve`, which speaks first (a greeting
//! line, then echo) — bytes no HTTP server could carry. The captured client on n1 reaches
//! it over HBONE through the real `ambit-waypoint`, which relays each connection as L4,
//! split 80/20 between subsets v1 and v2 by a VirtualService `tcp:` route; the waypoint's
//! `istio_tcp_*` metrics show the bytes went through it. Then a DestinationRule's
//! `connectionPool.tcp.maxConnections: 1` lets one connection through at a time, and
//! `idleTimeout: 1s` closes a silent one. The same split comes from a Gateway API
//! TCPRoute on the service, to services `echo-v1` and `echo-v2`, as in Istio's TCP
//! traffic-shifting task.
//!
//! And a TLS service (port named `tls-secure`) whose pods terminate TLS themselves
//! (`openssl s_server`, each with its own certificate): the waypoint reads the server
//! name of each client's ClientHello and routes it by the VirtualService's `tls:`
//! routes (`sniHosts`), passing the handshake through untouched — the client
//! (`openssl s_client`) sees the certificate of the pod its SNI was routed to. The
//! same by the Gateway API's TLSRoutes on the service.

use std::{collections::BTreeMap, net::SocketAddr, process::Command, time::Duration};

use ambit_e2e::{
    app::{self, ConnectReport},
    openssl, wait_for,
};
use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

#[path = "common/waypoint_cluster.rs"]
mod waypoint_cluster;

use waypoint_cluster::{Cluster, READY_TIMEOUT, istio};

const ECHO_VIP: &str = "198.19.200.21";
const ECHO_PORT: u16 = 9000;
const ECHO: &str = "echo.shop.svc.cluster.local";
const CONNECTIONS: usize = 300;
/// A client's connect and read timeout: short, as a connection the route does not
/// take yet fails at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// One connection from the client to the echo service; the pod that answered (by
/// the address the server saw itself on), or `None` when it failed.
fn connect(cluster: &Cluster) -> Result<(Option<String>, ConnectReport)> {
    let vip = SocketAddr::new(ECHO_VIP.parse()?, ECHO_PORT);
    let report = app::connect_with(&cluster.client, vip, "hello\n", CONNECT_TIMEOUT)?;
    if !report.ok {
        return Ok((None, report));
    }
    let answered_by = report.server_saw.as_ref().and_then(|saw| {
        cluster
            .pods
            .iter()
            .find(|pod| pod.ipv4() == saw.local.ip())
            .map(|pod| pod.name().to_owned())
    });
    Ok((answered_by, report))
}

/// A DestinationRule for `host` with subsets `v1` and `v2` (by `version`) and, if
/// given, `trafficPolicy`.
fn subsets_rule(cluster: &Cluster, host: &str, traffic_policy: Option<Value>) -> Result<()> {
    let mut spec = json!({
        "host": host,
        "subsets": [
            { "name": "v1", "labels": { "version": "v1" } },
            { "name": "v2", "labels": { "version": "v2" } },
        ],
    });
    if let Some(policy) = traffic_policy {
        spec["trafficPolicy"] = policy;
    }
    cluster.apply(
        &format!("{host}-destination-rule.yaml"),
        "DestinationRule",
        host,
        spec,
    )
}

/// Starts the echo servers on `app-v1` and `app-v2` and declares service `echo` over
/// all three app pods. `app-v3` runs no echo server: a connection the service's
/// default route sends there fails, so only a route to v1 and v2 lets every
/// connection through.
fn echo_on_v1_and_v2(cluster: &Cluster) -> Result<Vec<ambit_e2e::ChildGuard>> {
    let servers = cluster.pods[..2]
        .iter()
        .map(|pod| app::serve(pod, SocketAddr::from(([0; 4], ECHO_PORT))))
        .collect::<Result<Vec<_>>>()?;
    echo_service(cluster, "echo", ECHO_VIP, json!({ "app": "app" }))?;
    Ok(servers)
}

/// Service `name` at `vip` on the echo port, over the pods `selector` selects.
fn echo_service(cluster: &Cluster, name: &str, vip: &str, selector: Value) -> Result<()> {
    cluster.net.write_manifest(
        &format!("{name}.yaml"),
        &json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": name, "namespace": "shop" },
            "spec": {
                "clusterIP": vip,
                "selector": selector,
                "ports": [{ "name": "tcp-echo", "port": ECHO_PORT }],
            },
        }),
    )?;
    Ok(())
}

/// Waits until a route sends every connection to v1 or v2: the service's default
/// would fail a third of them, so 30 in a row get through only once in 10^5 times
/// before the route applies.
fn wait_until_routed(cluster: &Cluster) -> Result<()> {
    let last = std::cell::RefCell::new(None);
    wait_for(
        "30 connections in a row through the waypoint's tcp route",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            for _ in 0..30 {
                let (answered_by, report) = connect(cluster)?;
                if answered_by.is_none() {
                    *last.borrow_mut() = Some(report);
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .with_context(|| format!("last failure: {:?}\n{}", last.borrow(), cluster.logs()))
}

/// Sends [`CONNECTIONS`] connections and checks about 80% were answered by `app-v1`
/// and the rest by `app-v2`; returns how many `app-v1` answered.
fn split_80_20(cluster: &Cluster) -> Result<usize> {
    let mut answered: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..CONNECTIONS {
        let (answered_by, report) = connect(cluster)?;
        let pod = answered_by
            .with_context(|| format!("a connection failed: {report:?}\n{}", cluster.logs()))?;
        ensure!(
            report.echo.as_deref() == Some("hello\n"),
            "the echo came back changed: {report:?}"
        );
        *answered.entry(pod).or_default() += 1;
    }
    let v1 = answered.get("app-v1").copied().unwrap_or(0);
    let v2 = answered.get("app-v2").copied().unwrap_or(0);
    // 240 expected on v1; the standard deviation is under 7.
    ensure!(
        v1 + v2 == CONNECTIONS && (210..=270).contains(&v1),
        "expected about 80% of {CONNECTIONS} connections on app-v1 and the rest on app-v2, got {answered:?}"
    );
    Ok(v1)
}

#[test]
fn tcp_routes_split_raw_tcp_connections_through_the_waypoint_by_weight() -> Result<()> {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    let _servers = echo_on_v1_and_v2(&cluster)?;
    subsets_rule(&cluster, "echo", None)?;
    cluster.net.write_manifest(
        "echo-virtual-service.yaml",
        &istio(
            "VirtualService",
            "echo",
            json!({
                "hosts": ["echo"],
                "tcp": [{ "route": [
                    { "destination": { "host": "echo", "subset": "v1" }, "weight": 80 },
                    { "destination": { "host": "echo", "subset": "v2" }, "weight": 20 },
                ]}],
            }),
        ),
    )?;
    wait_until_routed(&cluster)?;
    let before = cluster.waypoint_metrics()?;
    let v1 = split_80_20(&cluster)?;

    let to_echo = [("reporter", "waypoint"), ("destination_service", ECHO)];
    let counted = |metrics: &ambit_e2e::mesh::Metrics, name: &str| metrics.sum(name, &to_echo);
    let (closed, received) = (
        "istio_tcp_connections_closed_total",
        "istio_tcp_received_bytes_total",
    );
    wait_for(
        "the waypoint to count every connection closed",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            let after = cluster.waypoint_metrics()?;
            let done = counted(&after, closed) - counted(&before, closed);
            Ok((done >= CONNECTIONS as f64).then_some(()))
        },
    )
    .with_context(|| {
        format!(
            "waypoint metrics:\n{}",
            cluster.waypoint_metrics().map(|m| m.0).unwrap_or_default()
        )
    })?;
    let after = cluster.waypoint_metrics()?;
    let bytes = counted(&after, received) - counted(&before, received);
    ensure!(
        bytes >= (CONNECTIONS * "hello\n".len()) as f64,
        "the waypoint received {bytes} bytes from clients, expected at least {}",
        CONNECTIONS * "hello\n".len()
    );
    let on_v1 = after.sum(
        "istio_tcp_connections_opened_total",
        &[("reporter", "waypoint"), ("destination_version", "v1")],
    );
    ensure!(
        on_v1 >= v1 as f64,
        "the waypoint counted {on_v1} connections opened to v1, the client saw {v1}"
    );
    at_most_one_connection_to_v1(&cluster)
}

/// Istio's TCP traffic shifting with the Gateway API: a TCPRoute on service `echo`
/// sends 80% of its connections to service `echo-v1` and 20% to `echo-v2`.
#[test]
fn a_tcp_route_on_the_service_shifts_connections_between_backend_services() -> Result<()> {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    let _servers = echo_on_v1_and_v2(&cluster)?;
    for (version, vip) in [("v1", "198.19.200.24"), ("v2", "198.19.200.25")] {
        let selector = json!({ "app": "app", "version": version });
        echo_service(&cluster, &format!("echo-{version}"), vip, selector)?;
    }
    cluster.net.write_manifest(
        "echo-tcp-route.yaml",
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1alpha2",
            "kind": "TCPRoute",
            "metadata": { "name": "echo", "namespace": "shop" },
            "spec": {
                "parentRefs": [{ "group": "", "kind": "Service", "name": "echo", "port": ECHO_PORT }],
                "rules": [{ "backendRefs": [
                    { "name": "echo-v1", "port": ECHO_PORT, "weight": 80 },
                    { "name": "echo-v2", "port": ECHO_PORT, "weight": 20 },
                ]}],
            },
        }),
    )?;
    wait_until_routed(&cluster)?;
    split_80_20(&cluster)?;
    Ok(())
}

/// `connectionPool.tcp.maxConnections: 1` with every connection routed to v1: while one
/// is held open, the next is closed at once and counted with the `UO` flag; once it
/// closes, connections get through again.
fn at_most_one_connection_to_v1(cluster: &Cluster) -> Result<()> {
    let v1_only = json!({
        "hosts": ["echo"],
        "tcp": [{ "route": [{ "destination": { "host": "echo", "subset": "v1" } }] }],
    });
    cluster.apply(
        "echo-virtual-service.yaml",
        "VirtualService",
        "echo",
        v1_only,
    )?;
    subsets_rule(
        cluster,
        "echo",
        Some(json!({ "connectionPool": { "tcp": { "maxConnections": 1 } } })),
    )?;
    wait_for(
        "10 connections in a row to v1 alone",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            for _ in 0..10 {
                if connect(cluster)?.0.as_deref() != Some("app-v1") {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )
    .with_context(|| cluster.logs())?;
    let vip = SocketAddr::new(ECHO_VIP.parse()?, ECHO_PORT);
    // The waypoint may still be closing the last of those connections, which counts
    // against the limit of one until it has: the first holds may be turned away.
    let refused = std::cell::RefCell::new(None);
    let held = wait_for(
        "one connection held to v1",
        READY_TIMEOUT,
        || -> Result<_> {
            match app::hold(&cluster.client, vip, Duration::from_secs(60)) {
                Ok(held) => Ok(Some(held)),
                Err(error) => {
                    *refused.borrow_mut() = Some(error);
                    Ok(None)
                }
            }
        },
    )
    .with_context(|| format!("last refusal: {:?}\n{}", refused.borrow(), cluster.logs()))?;
    wait_for(
        "a second connection refused while one is held",
        READY_TIMEOUT,
        || -> Result<Option<()>> { Ok(connect(cluster)?.0.is_none().then_some(())) },
    )
    .with_context(|| cluster.logs())?;
    let overflowed = cluster.waypoint_metrics()?.sum(
        "istio_tcp_connections_opened_total",
        &[("reporter", "waypoint"), ("response_flags", "UO")],
    );
    ensure!(
        overflowed >= 1.0,
        "no connection counted with the UO flag:\n{}",
        cluster.waypoint_metrics()?.0
    );
    drop(held);
    wait_for(
        "connections through again once the held one closed",
        READY_TIMEOUT,
        || -> Result<Option<()>> { Ok(connect(cluster)?.0.map(drop)) },
    )
    .with_context(|| cluster.logs())?;
    silent_connections_are_closed(cluster)
}

/// `connectionPool.tcp.idleTimeout: 1s`: a connection held open without a byte after
/// the server's greeting is closed by the waypoint (and counted closed) within seconds,
/// not after Istio's default hour.
fn silent_connections_are_closed(cluster: &Cluster) -> Result<()> {
    subsets_rule(
        cluster,
        "echo",
        Some(json!({ "connectionPool": { "tcp": { "idleTimeout": "1s" } } })),
    )?;
    let vip = SocketAddr::new(ECHO_VIP.parse()?, ECHO_PORT);
    let closed = || -> Result<f64> {
        Ok(cluster.waypoint_metrics()?.sum(
            "istio_tcp_connections_closed_total",
            &[("reporter", "waypoint"), ("destination_service", ECHO)],
        ))
    };
    // Until the rule is applied a held connection keeps the default hour: hold a new
    // one each round and look for any to be closed.
    let mut holders = Vec::new();
    wait_for(
        "a silent connection closed after its 1 s idle timeout",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            let before = closed()?;
            // Connects, takes the greeting into its socket buffer, and sends nothing.
            holders.push(cluster.client.spawn(Command::new("bash").args([
                "-c",
                &format!("exec 3<>/dev/tcp/{}/{}; sleep 60", vip.ip(), vip.port()),
            ]))?);
            std::thread::sleep(Duration::from_millis(2_500));
            Ok((closed()? > before).then_some(()))
        },
    )
    .with_context(|| cluster.logs())?;
    Ok(())
}

const SECURE_VIP: &str = "198.19.200.22";
const SECURE_PORT: u16 = 9443;

/// The certificate the server presented to a TLS client asking for `server_name`.
fn presented_to(cluster: &Cluster, server_name: &str) -> Result<Option<String>> {
    let vip = SocketAddr::new(SECURE_VIP.parse()?, SECURE_PORT);
    openssl::presented_to(&cluster.client, vip, server_name, CONNECT_TIMEOUT * 2)
}

/// Starts `openssl s_server` on `app-v1` and `app-v2`, each presenting a certificate
/// for its own name (`v1.example.com`, `v2.example.com`), and declares service `secure`
/// over them on a port named `tls-secure`.
fn secure_servers(cluster: &Cluster) -> Result<Vec<ambit_e2e::ChildGuard>> {
    let servers = cluster.pods[..2]
        .iter()
        .zip(["v1.example.com", "v2.example.com"])
        .map(|(pod, name)| openssl::serve(pod, SECURE_PORT, name, cluster.net.dir()))
        .collect::<Result<Vec<_>>>()?;
    secure_service(cluster, "secure", SECURE_VIP, json!({ "app": "app" }))?;
    Ok(servers)
}

/// Service `name` at `vip` on the TLS port, over the pods `selector` selects.
fn secure_service(cluster: &Cluster, name: &str, vip: &str, selector: Value) -> Result<()> {
    cluster.net.write_manifest(
        &format!("{name}.yaml"),
        &json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": name, "namespace": "shop" },
            "spec": {
                "clusterIP": vip,
                "selector": selector,
                "ports": [{ "name": "tls-secure", "port": SECURE_PORT }],
            },
        }),
    )?;
    Ok(())
}

/// Waits until `v1.example.com` reaches v1, then checks each `(server name, the
/// certificate expected)` three times.
fn presented_by_sni(cluster: &Cluster, expected: &[(&str, &str)]) -> Result<()> {
    wait_for(
        "v1.example.com routed to v1 through the waypoint's tls route",
        READY_TIMEOUT,
        || -> Result<Option<()>> {
            Ok(
                (presented_to(cluster, "v1.example.com")?.as_deref() == Some("v1.example.com"))
                    .then_some(()),
            )
        },
    )
    .with_context(|| cluster.logs())?;
    for (server_name, expected) in expected {
        for _ in 0..3 {
            let presented = presented_to(cluster, server_name)?;
            ensure!(
                presented.as_deref() == Some(*expected),
                "SNI {server_name}: expected the certificate of {expected}, got {presented:?}\n{}",
                cluster.logs()
            );
        }
    }
    Ok(())
}

#[test]
fn tls_routes_pass_tls_through_by_sni() -> Result<()> {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    let _servers = secure_servers(&cluster)?;
    subsets_rule(&cluster, "secure", None)?;
    cluster.net.write_manifest(
        "secure-virtual-service.yaml",
        &istio(
            "VirtualService",
            "secure",
            json!({
                "hosts": ["secure"],
                "tls": [
                    {
                        "match": [{ "sniHosts": ["v2.example.com"], "port": SECURE_PORT }],
                        "route": [{ "destination": { "host": "secure", "subset": "v2" } }],
                    },
                    {
                        "match": [{ "sniHosts": ["*.example.com"] }],
                        "route": [{ "destination": { "host": "secure", "subset": "v1" } }],
                    },
                ],
                // Without SNI (or one no tls route takes): v2.
                "tcp": [{ "route": [{ "destination": { "host": "secure", "subset": "v2" } }] }],
            }),
        ),
    )?;
    presented_by_sni(
        &cluster,
        &[
            ("v2.example.com", "v2.example.com"),
            ("login.example.com", "v1.example.com"),
            ("V1.Example.COM", "v1.example.com"),
            ("other.test", "v2.example.com"),
        ],
    )
}

/// The same with the Gateway API: TLSRoutes on service `secure`, by server name, to
/// services `secure-v1` and `secure-v2`; the exact name's route comes first by name.
#[test]
fn tls_routes_of_the_gateway_api_pass_tls_through_by_sni() -> Result<()> {
    let Some(cluster) = Cluster::start()? else {
        return Ok(());
    };
    let _servers = secure_servers(&cluster)?;
    for (version, vip) in [("v1", "198.19.200.26"), ("v2", "198.19.200.27")] {
        let selector = json!({ "app": "app", "version": version });
        secure_service(&cluster, &format!("secure-{version}"), vip, selector)?;
    }
    for (name, hostname, backend) in [
        ("secure-exact", "v2.example.com", "secure-v2"),
        ("secure-wildcard", "*.example.com", "secure-v1"),
    ] {
        cluster.net.write_manifest(
            &format!("{name}.yaml"),
            &json!({
                "apiVersion": "gateway.networking.k8s.io/v1alpha2",
                "kind": "TLSRoute",
                "metadata": { "name": name, "namespace": "shop" },
                "spec": {
                    "parentRefs": [{ "group": "", "kind": "Service", "name": "secure", "port": SECURE_PORT }],
                    "hostnames": [hostname],
                    "rules": [{ "backendRefs": [{ "name": backend, "port": SECURE_PORT }] }],
                },
            }),
        )?;
    }
    presented_by_sni(
        &cluster,
        &[
            ("v2.example.com", "v2.example.com"),
            ("login.example.com", "v1.example.com"),
        ],
    )
}
