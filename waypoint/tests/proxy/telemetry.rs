//! Telemetry: Istio's request metrics scraped from the registry the waypoint was given,
//! and trace context reaching the backend.

use ambit_api::istio::TelemetrySpec;
use ambit_waypoint::{Config, Named, telemetry::spans::SpanReporter};

use crate::{support::*, zipkin_collector::ZipkinCollector};

#[tokio::test]
async fn the_four_istio_metrics_count_requests_with_istios_labels() {
    let (port, backends) = start_backends(&[
        ("127.0.0.11", "v1", Behaviour::Answer),
        ("127.0.0.12", "v2", Behaviour::Flaky { fail: 1, every: 1 }),
    ])
    .await;
    let waypoint = Waypoint::start(&config(
        vec![
            service("app", port, &backends[..1]),
            service("broken", port, &backends[1..]),
        ],
        vec![],
        vec![],
    ))
    .await;
    let client = TestClient::http1(&waypoint);
    for _ in 0..5 {
        assert_eq!(client.get("app", "/").await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(client.get("broken", "/").await.status, 503);
    }

    let ok = [
        ("reporter", "waypoint"),
        ("source_workload", "unknown"),
        ("source_principal", "unknown"),
        ("destination_workload", "app-v1"),
        ("destination_workload_namespace", "shop"),
        ("destination_app", "app"),
        ("destination_version", "v1"),
        ("destination_service", "app.shop.svc.cluster.local"),
        ("destination_service_name", "app"),
        ("destination_service_namespace", "shop"),
        ("destination_canonical_service", "app"),
        ("destination_canonical_revision", "v1"),
        ("destination_cluster", "Kubernetes"),
        ("source_cluster", "Kubernetes"),
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("response_flags", "-"),
        ("connection_security_policy", "none"),
    ];
    let failed = [
        ("destination_workload", "broken-v2"),
        ("destination_service", "broken.shop.svc.cluster.local"),
        ("response_code", "503"),
    ];
    wait_for_requests(&waypoint, &ok, 5.0).await;
    let text = wait_for_requests(&waypoint, &failed, 2.0).await;

    assert_eq!(sample(&text, "istio_requests_total", &ok), 5.0, "{text}");
    assert_eq!(
        sample(&text, "istio_requests_total", &failed),
        2.0,
        "{text}"
    );
    for histogram in [
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
    ] {
        let count = |labels: &[(&str, &str)]| sample(&text, &format!("{histogram}_count"), labels);
        assert_eq!(
            (count(&ok), count(&failed)),
            (5.0, 2.0),
            "{histogram}: {text}"
        );
        let mut inf = ok.to_vec();
        inf.push(("le", "+Inf"));
        assert_eq!(
            sample(&text, &format!("{histogram}_bucket"), &inf),
            5.0,
            "{histogram}'s +Inf bucket holds every sample: {text}"
        );
    }
    assert!(
        text.contains("istio_request_duration_milliseconds_bucket{le=\"0.5\","),
        "Istio's first duration bucket is 0.5 ms: {text}"
    );
    assert!(
        text.contains("le=\"3600000.0\""),
        "Istio's last duration bucket is one hour: {text}"
    );
    assert!(
        sample(&text, "istio_response_bytes_sum", &ok) > 0.0,
        "the backends' bodies are counted: {text}"
    );
}

#[tokio::test]
async fn a_request_without_trace_context_gets_one_and_one_with_it_keeps_it() {
    let (port, backends) = start_backends(&[("127.0.0.11", "v1", Behaviour::Answer)]).await;
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![],
        vec![],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    let echo = client.get("app", "/").await.echo();
    let traceparent = echo["headers"]["traceparent"][0]
        .as_str()
        .unwrap_or_else(|| panic!("the backend sees a traceparent: {echo}"))
        .to_owned();
    let fields: Vec<&str> = traceparent.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    assert!(
        fields.len() == 4
            && fields[0] == "00"
            && hex(fields[1], 32)
            && hex(fields[2], 16)
            && fields[3] == "01",
        "a valid, sampled W3C traceparent: `{traceparent}`"
    );
    assert!(
        echo["headers"]["x-request-id"][0]
            .as_str()
            .is_some_and(|id| id.len() == 36),
        "a generated x-request-id: {echo}"
    );

    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let sent = [
        ("traceparent", parent),
        ("tracestate", "congo=t61rcWkgMzE"),
        ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("x-b3-spanid", "00f067aa0ba902b7"),
        ("x-b3-sampled", "1"),
        ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
        ("x-request-id", "req-1"),
    ];
    let echo = client.send("app", "/", &sent).await.echo();
    for (name, value) in sent {
        assert_eq!(
            echo["headers"][name][0], value,
            "`{name}` reaches the backend unchanged: {echo}"
        );
    }
}

#[tokio::test]
async fn a_sampled_request_is_reported_to_zipkin_as_a_span_under_the_clients() {
    let collector = ZipkinCollector::start().await;
    let (port, backends) = start_backends(&[("127.0.0.11", "v1", Behaviour::Answer)]).await;
    let reporter = SpanReporter::start(collector.address.clone(), "waypoint.shop".to_owned());
    let waypoint = Waypoint::start_with(
        &config(vec![service("app", port, &backends)], vec![], vec![]),
        |engine| engine.reporting_spans(reporter),
    )
    .await;
    let client = TestClient::http1(&waypoint);

    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    let echo = client
        .send("app", "/", &[("traceparent", unsampled)])
        .await
        .echo();
    assert_eq!(
        echo["headers"]["traceparent"][0], unsampled,
        "an unsampled trace passes unchanged: {echo}"
    );
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let echo = client
        .send(
            "app",
            "/cart?x=1",
            &[
                ("traceparent", parent),
                ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
                ("x-b3-spanid", "00f067aa0ba902b7"),
                ("x-b3-sampled", "1"),
            ],
        )
        .await
        .echo();
    let sent_on = echo["headers"]["traceparent"][0]
        .as_str()
        .unwrap_or_default();
    let span_id = &sent_on[36..52];

    let spans = collector.wait_for(1).await;
    assert_eq!(spans.len(), 1, "only the sampled request: {spans:#?}");
    let span = &spans[0];
    assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        span["parentId"], "00f067aa0ba902b7",
        "under the client's span"
    );
    assert_eq!(
        span["id"], span_id,
        "the backend's parent is the waypoint's span: {echo}"
    );
    assert_eq!(
        (
            &echo["headers"]["x-b3-spanid"][0],
            &echo["headers"]["x-b3-parentspanid"][0]
        ),
        (&span["id"], &span["parentId"]),
        "B3 says the same: {echo}"
    );
    assert_eq!(span["kind"], "SERVER");
    assert_eq!(
        span["name"],
        format!("app.shop.svc.cluster.local:{}/*", waypoint.address.port()),
        "the service and the port the client dialled"
    );
    assert_eq!(span["localEndpoint"]["serviceName"], "waypoint.shop");
    assert_eq!(span["tags"]["http.status_code"], "200");
    assert_eq!(span["tags"]["http.method"], "GET");
    assert_eq!(span["tags"]["http.url"], "http://app/cart");
    assert!(span["duration"].as_u64().is_some_and(|d| d > 0), "{span}");
}

#[tokio::test]
async fn a_telemetry_object_sets_the_share_of_new_traces_sampled() {
    let (port, backends) = start_backends(&[("127.0.0.11", "v1", Behaviour::Answer)]).await;
    let sampled_flags = |telemetries: Vec<Named<TelemetrySpec>>| {
        let services = vec![service("app", port, &backends)];
        async move {
            let waypoint = Waypoint::start(&Config {
                // The flag would sample every new trace.
                trace_sampling_percent: Some(100.0),
                telemetries,
                ..config(services, vec![], vec![])
            })
            .await;
            let client = TestClient::http1(&waypoint);
            let mut flags = Vec::new();
            for _ in 0..5 {
                let echo = client.get("app", "/").await.echo();
                let traceparent = echo["headers"]["traceparent"][0].as_str().unwrap_or("");
                flags.push(traceparent.rsplit('-').next().unwrap_or("").to_owned());
            }
            flags
        }
    };
    assert_eq!(
        sampled_flags(Vec::new()).await,
        ["01"; 5],
        "the flag's 100%"
    );
    let mesh_default = Named {
        namespace: "istio-system".into(),
        ..named("mesh-default", "tracing: [{randomSamplingPercentage: 0}]")
    };
    assert_eq!(
        sampled_flags(vec![mesh_default]).await,
        ["00"; 5],
        "the mesh's Telemetry samples none"
    );
}
