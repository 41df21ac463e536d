//! Faults, timeouts and retries, observed from the client and counted at backends.

use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test]
async fn a_fixed_delay_holds_every_request_for_at_least_the_delay() {
    let (port, backends) = start_backends(&[("127.0.0.11", "v1", Behaviour::Answer)]).await;
    let vs = virtual_service(
        "app",
        "
hosts: [app]
http:
- fault:
    delay: {fixedDelay: 200ms, percentage: {value: 100}}
  route:
  - destination: {host: app}
",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs],
        vec![],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    for _ in 0..3 {
        let started = Instant::now();
        let reply = client.get("app", "/").await;
        let took = started.elapsed();
        assert_eq!(
            reply.backend(),
            "v1",
            "the delayed request is still forwarded: {reply:?}"
        );
        assert!(
            took >= Duration::from_millis(200),
            "expected at least the 200ms delay, took {took:?}"
        );
        assert!(
            took < Duration::from_secs(2),
            "expected about 200ms, took {took:?}"
        );
    }
}

#[tokio::test]
async fn a_delay_without_percentage_delays_nothing() {
    let (port, backends) = start_backends(&[("127.0.0.11", "v1", Behaviour::Answer)]).await;
    let vs = virtual_service(
        "app",
        "{hosts: [app], http: [{fault: {delay: {fixedDelay: 5s}}, route: [{destination: {host: app}}]}]}",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs],
        vec![],
    ))
    .await;
    let started = Instant::now();
    let reply = TestClient::http1(&waypoint).get("app", "/").await;
    assert_eq!(reply.backend(), "v1");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "Istio injects no delay without a percentage"
    );
}

#[tokio::test]
async fn an_abort_at_50_percent_fails_about_half_the_requests_without_reaching_the_backend() {
    let (port, backends) = start_backends(&[("127.0.0.11", "v1", Behaviour::Answer)]).await;
    let vs = virtual_service(
        "app",
        "
hosts: [app]
http:
- fault:
    abort: {httpStatus: 503, percentage: {value: 50}}
  route:
  - destination: {host: app}
",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs],
        vec![],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    let (answered, statuses) = tally(&client, "app", 1_000, 8).await;
    let aborted = statuses.get(&503).copied().unwrap_or(0);
    assert_eq!(
        aborted + statuses.get(&200).copied().unwrap_or(0),
        1_000,
        "only 200 or 503: {statuses:?}"
    );
    assert!(
        (420..=580).contains(&aborted),
        "expected 500 ± 80 aborts, got {statuses:?}"
    );
    assert_eq!(
        answered.get("-"),
        Some(&aborted),
        "aborts are the waypoint's own answers"
    );
    assert_eq!(
        backends[0].hits(),
        1_000 - aborted as u64,
        "aborted requests never reach the backend"
    );

    let reply = loop {
        let reply = client.get("app", "/").await;
        if reply.status == 503 {
            break reply;
        }
    };
    assert_eq!(reply.body, "fault filter abort", "Envoy's abort body");
}

#[tokio::test]
async fn a_slow_backend_is_answered_with_504_at_the_route_timeout() {
    let (port, backends) =
        start_backends(&[("127.0.0.11", "v1", Behaviour::Slow(Duration::from_secs(3)))]).await;
    let vs = virtual_service(
        "app",
        "
hosts: [app]
http:
- timeout: 300ms
  route:
  - destination: {host: app}
",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs],
        vec![],
    ))
    .await;

    let started = Instant::now();
    let reply = TestClient::http1(&waypoint).get("app", "/").await;
    let took = started.elapsed();
    assert_eq!(reply.status, 504, "expected a gateway timeout: {reply:?}");
    assert_eq!(reply.body, "upstream request timeout");
    assert!(
        (Duration::from_millis(300)..Duration::from_millis(1_500)).contains(&took),
        "expected the 504 at about 300ms, after {took:?}"
    );
    assert_eq!(
        backends[0].hits(),
        1,
        "the slow backend got the request once"
    );
}

#[tokio::test]
async fn a_flaky_backend_succeeds_with_three_attempts_and_each_is_counted() {
    let (port, backends) =
        start_backends(&[("127.0.0.11", "v1", Behaviour::Flaky { fail: 2, every: 3 })]).await;
    let vs = virtual_service(
        "app",
        "
hosts: [app]
http:
- retries: {attempts: 3, retryOn: 5xx}
  route:
  - destination: {host: app}
",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs],
        vec![],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    for round in 1..=3 {
        let reply = client.get("app", "/").await;
        assert_eq!(
            reply.status, 200,
            "round {round}: the third try succeeds: {reply:?}"
        );
        assert_eq!(
            backends[0].hits(),
            3 * round,
            "round {round}: two 503s and one 200 reached the backend"
        );
    }
}

#[tokio::test]
async fn without_retries_istio_does_not_retry_an_application_503() {
    let (port, backends) =
        start_backends(&[("127.0.0.11", "v1", Behaviour::Flaky { fail: 1, every: 2 })]).await;
    let default_policy = virtual_service(
        "app",
        "{hosts: [app], http: [{route: [{destination: {host: app}}]}]}",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![default_policy],
        vec![],
    ))
    .await;

    let reply = TestClient::http1(&waypoint).get("app", "/").await;
    assert_eq!(
        reply.status, 503,
        "the backend's 503 is returned as is: {reply:?}"
    );
    assert_eq!(
        reply.backend(),
        "v1",
        "it is the backend's answer, not the waypoint's"
    );
    assert_eq!(
        backends[0].hits(),
        1,
        "the default policy retries connection failures only"
    );
}

#[tokio::test]
async fn retries_give_up_after_the_attempts_and_return_the_last_answer() {
    let (port, backends) = start_backends(&[(
        "127.0.0.11",
        "v1",
        Behaviour::Flaky {
            fail: 10,
            every: 10,
        },
    )])
    .await;
    let vs = virtual_service(
        "app",
        "{hosts: [app], http: [{retries: {attempts: 2, retryOn: gateway-error}, route: [{destination: {host: app}}]}]}",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs],
        vec![],
    ))
    .await;

    let reply = TestClient::http1(&waypoint).get("app", "/").await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(backends[0].hits(), 3, "one try and two retries");
}

#[tokio::test]
async fn a_per_try_timeout_moves_on_to_another_endpoint() {
    let (port, backends) = start_backends(&[
        (
            "127.0.0.11",
            "slow",
            Behaviour::Slow(Duration::from_secs(3)),
        ),
        ("127.0.0.12", "fast", Behaviour::Answer),
    ])
    .await;
    let vs = virtual_service(
        "app",
        "
hosts: [app]
http:
- timeout: 2s
  retries: {attempts: 1, perTryTimeout: 200ms, retryOn: reset}
  route:
  - destination: {host: app}
",
    );
    let round_robin = destination_rule(
        "app",
        "{host: app, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs],
        vec![round_robin],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    for _ in 0..2 {
        let started = Instant::now();
        let reply = client.get("app", "/").await;
        assert_eq!(
            reply.backend(),
            "fast",
            "the retry avoids the endpoint that timed out: {reply:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1_500),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn an_endpoint_nobody_listens_on_is_a_503_connect_failure() {
    let port = closed_port("127.0.0.13").await.expect("a free port");
    let dead = ambit_waypoint::Service {
        namespace: NAMESPACE.into(),
        name: "dead".into(),
        ports: vec![ambit_waypoint::ServicePort {
            name: "http".into(),
            port: SERVICE_PORT,
            target_port: port,
            app_protocol: String::new(),
        }],
        endpoints: vec![ambit_waypoint::Endpoint::new(
            "127.0.0.13".parse().unwrap(),
            [],
        )],
    };
    let empty = ambit_waypoint::Service {
        name: "empty".into(),
        endpoints: vec![],
        ..dead.clone()
    };
    let waypoint = Waypoint::start(&config(vec![dead, empty], vec![], vec![])).await;
    let client = TestClient::http1(&waypoint);

    let reply = client.get("dead", "/").await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(
        String::from_utf8_lossy(&reply.body).contains("reset reason: connection failure"),
        "{reply:?}"
    );

    let reply = client.get("empty", "/").await;
    assert_eq!(
        (reply.status.as_u16(), &reply.body[..]),
        (503, &b"no healthy upstream"[..])
    );
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish_then_stops_listening() {
    let (port, backends) = start_backends(&[(
        "127.0.0.11",
        "v1",
        Behaviour::Slow(Duration::from_millis(300)),
    )])
    .await;
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![],
        vec![],
    ))
    .await;
    let address = waypoint.address;
    let client = TestClient::http1(&waypoint);

    let in_flight = tokio::spawn(async move { client.get("app", "/").await });
    backends[0].wait_for_hits(1).await;
    waypoint.stop().await.expect("the waypoint stops cleanly");
    let reply = in_flight.await.expect("the client task does not panic");
    assert_eq!(
        reply.status, 200,
        "the request in flight is answered: {reply:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "the listener is closed after shutdown"
    );
}
