//! DestinationRule protections: `connectionPool` limits (circuit breaking) and
//! `outlierDetection` (ejecting a failing endpoint, then readmitting it).

use std::time::{Duration, Instant};

use crate::support::*;

#[tokio::test]
async fn one_connection_and_one_pending_request_turn_the_rest_away_with_503() {
    let (port, backends) = start_backends(&[(
        "127.0.0.11",
        "v1",
        Behaviour::Slow(Duration::from_millis(500)),
    )])
    .await;
    let breaker = destination_rule(
        "app",
        "
host: app
trafficPolicy:
  connectionPool:
    tcp: {maxConnections: 1}
    http: {http1MaxPendingRequests: 1}
",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![],
        vec![breaker],
    ))
    .await;
    let client = TestClient::http1(&waypoint);
    let clusters = ambit_waypoint::admin::clusters(&waypoint.engine.table());
    for breaker in [
        "max_connections::1\n",
        "max_pending_requests::1\n",
        "max_requests::4294967295\n",
    ] {
        assert!(
            clusters.contains(&format!(
                "outbound|{SERVICE_PORT}||app.shop.svc.cluster.local::default_priority::{breaker}"
            )),
            "/clusters shows the circuit breakers as Envoy does:\n{clusters}"
        );
    }

    let requests: Vec<_> = (0..5)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get("app", "/").await })
        })
        .collect();
    let mut answered = 0;
    let mut overflowed = 0;
    for request in requests {
        let reply = request.await.expect("the request task does not panic");
        match reply.status.as_u16() {
            200 => answered += 1,
            503 => {
                assert_eq!(
                    &reply.body[..],
                    b"upstream connect error or disconnect/reset before headers. reset reason: overflow",
                    "the overflow is the waypoint's own 503 (UO)"
                );
                overflowed += 1;
            }
            other => panic!("expected 200 or 503, got {other}: {reply:?}"),
        }
    }
    assert_eq!(
        (answered, overflowed),
        (2, 3),
        "one in flight and one pending are served; three overflow"
    );
    assert_eq!(
        backends[0].hits(),
        2,
        "overflowing requests never reach the backend"
    );
}

#[tokio::test]
async fn an_endpoint_failing_twice_in_a_row_is_ejected_then_readmitted() {
    let (port, backends) = start_backends(&[
        ("127.0.0.11", "bad", Behaviour::Flaky { fail: 1, every: 1 }),
        ("127.0.0.12", "good", Behaviour::Answer),
    ])
    .await;
    let outlier = destination_rule(
        "app",
        "
host: app
trafficPolicy:
  loadBalancer: {simple: ROUND_ROBIN}
  outlierDetection: {consecutive5xxErrors: 2, baseEjectionTime: 500ms, interval: 100ms, maxEjectionPercent: 100}
",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![],
        vec![outlier],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    let mut ejected_at = None;
    let mut failures = 0;
    for _ in 0..20 {
        let reply = client.get("app", "/").await;
        if reply.status == 503 {
            failures += 1;
            ejected_at = Some(Instant::now());
        }
    }
    assert_eq!(
        failures, 2,
        "after two 503s in a row the bad endpoint is ejected"
    );
    assert_eq!(
        backends[0].hits(),
        2,
        "no request reaches the ejected endpoint"
    );
    let ejected_at = ejected_at.expect("the bad endpoint failed");
    let health = |flags: &str| {
        format!(
            "outbound|{SERVICE_PORT}||app.shop.svc.cluster.local::127.0.0.11:{port}::health_flags::{flags}\n"
        )
    };
    let clusters = ambit_waypoint::admin::clusters(&waypoint.engine.table());
    assert!(
        clusters.contains(&health("/failed_outlier_check")),
        "/clusters shows the ejection as Envoy does:\n{clusters}"
    );

    let deadline = ejected_at + Duration::from_secs(5);
    while backends[0].hits() == 2 {
        assert!(
            Instant::now() < deadline,
            "the bad endpoint is readmitted within 5s"
        );
        let _ = client.get("app", "/").await;
    }
    let out_for = ejected_at.elapsed();
    assert!(
        out_for >= Duration::from_millis(400),
        "the endpoint stays out for baseEjectionTime (500ms), was out {out_for:?}"
    );
    let clusters = ambit_waypoint::admin::clusters(&waypoint.engine.table());
    assert!(
        clusters.contains(&health("healthy")),
        "/clusters shows the readmission:\n{clusters}"
    );
}

#[tokio::test]
async fn an_ejection_outlives_a_config_update_that_leaves_its_cluster_alone() {
    let (port, backends) = start_backends(&[
        ("127.0.0.11", "bad", Behaviour::Flaky { fail: 1, every: 1 }),
        ("127.0.0.12", "good", Behaviour::Answer),
    ])
    .await;
    let outlier = || {
        destination_rule(
            "app",
            "
host: app
trafficPolicy:
  loadBalancer: {simple: ROUND_ROBIN}
  outlierDetection: {consecutive5xxErrors: 1, baseEjectionTime: 1h, maxEjectionPercent: 100}
",
        )
    };
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![],
        vec![outlier()],
    ))
    .await;
    let client = TestClient::http1(&waypoint);
    for _ in 0..2 {
        let _ = client.get("app", "/").await;
    }
    assert_eq!(backends[0].hits(), 1, "one 503 ejects the bad endpoint");

    // A push that changes another service only: `app`'s cluster carries on.
    waypoint
        .engine
        .update(&config(
            vec![
                service("app", port, &backends),
                service("other", port, &backends),
            ],
            vec![],
            vec![outlier()],
        ))
        .expect("the update compiles");
    for _ in 0..10 {
        assert_eq!(client.get("app", "/").await.status, 200);
    }
    assert_eq!(
        backends[0].hits(),
        1,
        "the ejected endpoint stays out after the update"
    );
}

#[tokio::test]
async fn a_pooled_connection_idle_past_the_http_idle_timeout_is_closed() {
    let (waypoint, backends, _) = app_with_pool("127.0.0.11", "{http: {idleTimeout: 300ms}}").await;
    let client = TestClient::http1(&waypoint);
    let backend = &backends[0];

    for _ in 0..3 {
        assert_eq!(client.get("app", "/").await.status, 200);
    }
    assert_eq!(
        backend.connections(),
        1,
        "requests back to back share one pooled connection"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(client.get("app", "/").await.status, 200);
    assert_eq!(
        backend.connections(),
        2,
        "the connection idle past the 300 ms idleTimeout was closed and a new one opened"
    );
}

#[tokio::test]
async fn a_pooled_connection_is_closed_after_max_requests_per_connection() {
    let (waypoint, backends, _) =
        app_with_pool("127.0.0.11", "{http: {maxRequestsPerConnection: 2}}").await;
    let client = TestClient::http1(&waypoint);

    for _ in 0..5 {
        assert_eq!(client.get("app", "/").await.status, 200);
    }
    assert_eq!(
        backends[0].connections(),
        3,
        "five requests back to back, two per connection"
    );
}

#[tokio::test]
async fn tcp_keepalive_probes_the_endpoint_connection_at_the_rules_time() {
    let (waypoint, _backends, port) = app_with_pool(
        "127.0.0.12",
        "{tcp: {tcpKeepalive: {time: 7s, interval: 2s, probes: 4}}}",
    )
    .await;
    assert_eq!(
        TestClient::http1(&waypoint).get("app", "/").await.status,
        200
    );

    // The pooled connection to the endpoint, as the kernel shows it: its keepalive
    // timer runs from the rule's 7 s (the system's default would be 2 h, and no timer
    // at all without keepalive).
    let shown = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established", "dst"])
        .arg(format!("127.0.0.12:{port}"))
        .output()
        .expect("ss (iproute2) runs");
    let shown = String::from_utf8_lossy(&shown.stdout);
    let timer = shown
        .split("timer:(keepalive,")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| {
            panic!("no keepalive timer on the connection to the endpoint: {shown:?}")
        });
    let seconds = ss_seconds(timer).unwrap_or_else(|| panic!("a timer of {timer} in {shown:?}"));
    assert!(
        (2.0..=7.0).contains(&seconds),
        "the first probe is due in {seconds} s, expected at most the rule's 7 s"
    );
}

/// `ss`'s timer: `7sec`, `6.980ms` (6 s and 980 ms), `980ms`; `None` for longer ones.
fn ss_seconds(timer: &str) -> Option<f64> {
    if let Some(secs) = timer.strip_suffix("sec") {
        return secs.parse().ok();
    }
    let ms = timer.strip_suffix("ms")?;
    match ms.split_once('.') {
        Some((secs, millis)) => Some(secs.parse::<f64>().ok()? + millis.parse::<f64>().ok()? / 1e3),
        None => Some(ms.parse::<f64>().ok()? / 1e3),
    }
}

#[tokio::test]
async fn a_retry_past_max_retries_is_not_made_and_the_answer_is_flagged_uo() {
    let (port, backends) = start_backends(&[(
        "127.0.0.11",
        "v1",
        Behaviour::FailThenSlow(Duration::from_millis(700)),
    )])
    .await;
    let retries = virtual_service(
        "app",
        "{hosts: [app], http: [{retries: {attempts: 1, retryOn: 5xx}, route: [{destination: {host: app}}]}]}",
    );
    let budget = destination_rule(
        "app",
        "{host: app, trafficPolicy: {connectionPool: {http: {maxRetries: 1}}}}",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![retries],
        vec![budget],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    let retried = tokio::spawn({
        let client = client.clone();
        async move { client.get("app", "/").await }
    });
    backends[0].wait_for_hits(2).await;
    let refused = client.get("app", "/").await;
    assert_eq!(
        refused.status, 503,
        "the backend's 503 comes back while the only retry allowed is in flight: {refused:?}"
    );
    assert_eq!(backends[0].hits(), 3, "the second request is not retried");
    let retried = retried.await.expect("the request task does not panic");
    assert_eq!(
        retried.status, 200,
        "the retry in flight succeeds: {retried:?}"
    );
    wait_for_requests(
        &waypoint,
        &[("response_code", "503"), ("response_flags", "UO")],
        1.0,
    )
    .await;
}
