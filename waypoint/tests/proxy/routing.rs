//! Which backend a request reaches: VirtualService hosts and matches, weights,
//! DestinationRule subsets, load balancing, and the default route of a service.

use crate::support::*;

const V1: &str = "127.0.0.11";
const V2: &str = "127.0.0.12";
const V3: &str = "127.0.0.13";

async fn three_versions() -> (u16, Vec<Backend>) {
    start_backends(&[
        (V1, "v1", Behaviour::Answer),
        (V2, "v2", Behaviour::Answer),
        (V3, "v3", Behaviour::Answer),
    ])
    .await
}

#[tokio::test]
async fn all_traffic_to_the_v2_subset_reaches_only_v2() {
    let (port, backends) = three_versions().await;
    let vs = virtual_service(
        "app",
        "
hosts: [app]
http:
- route:
  - destination: {host: app, subset: v2}
    weight: 100
",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs],
        vec![app_subsets()],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    let (answered, statuses) = tally(&client, "app", 200, 4).await;
    assert_eq!(
        answered.get("v2"),
        Some(&200),
        "every request goes to v2: {answered:?}, statuses {statuses:?}"
    );
    assert_eq!(
        (backends[0].hits(), backends[2].hits()),
        (0, 0),
        "v1 and v3 see nothing"
    );
}

#[tokio::test]
async fn a_50_50_split_holds_within_5_percent_over_2000_requests() {
    let (port, backends) = three_versions().await;
    let vs = virtual_service(
        "app",
        "
hosts: [app.shop.svc.cluster.local]
http:
- route:
  - destination: {host: app, subset: v1}
    weight: 50
  - destination: {host: app, subset: v2}
    weight: 50
",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs],
        vec![app_subsets()],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    let (answered, statuses) = tally(&client, "app", 2_000, 8).await;
    assert_eq!(
        statuses.get(&200),
        Some(&2_000),
        "every request is answered by a backend: {statuses:?}"
    );
    let v1 = answered.get("v1").copied().unwrap_or(0);
    let v2 = answered.get("v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 2_000, "only v1 and v2 answer: {answered:?}");
    assert!(
        (900..=1_100).contains(&v1),
        "expected 1000 ± 100 (5%) requests on v1, got {answered:?}"
    );
}

#[tokio::test]
async fn jason_goes_to_v3_and_everyone_else_to_v1() {
    let (port, backends) = three_versions().await;
    let vs = virtual_service(
        "app",
        "
hosts: [app]
http:
- match:
  - headers:
      end-user: {exact: jason}
  route:
  - destination: {host: app, subset: v3}
- route:
  - destination: {host: app, subset: v1}
",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs],
        vec![app_subsets()],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    for _ in 0..20 {
        let jason = client
            .send("app", "/productpage", &[("end-user", "jason")])
            .await;
        assert_eq!(jason.backend(), "v3", "jason is routed to v3: {jason:?}");
        let other = client
            .send("app", "/productpage", &[("end-user", "jasonette")])
            .await;
        assert_eq!(other.backend(), "v1", "another user goes to v1: {other:?}");
        let anonymous = client.get("app", "/productpage").await;
        assert_eq!(
            anonymous.backend(),
            "v1",
            "no end-user goes to v1: {anonymous:?}"
        );
    }
    assert_eq!(backends[1].hits(), 0, "v2 is never chosen");
}

#[tokio::test]
async fn uri_method_and_query_matches_pick_the_first_route_that_holds() {
    let (port, backends) = three_versions().await;
    let vs = virtual_service(
        "app",
        "
hosts: [app]
http:
- match:
  - {uri: {regex: '/api/v[0-9]+/items'}, method: {exact: GET}}
  - queryParams: {canary: {exact: 'yes'}}
  route:
  - destination: {host: app, subset: v2}
- match:
  - uri: {prefix: /api}
  route:
  - destination: {host: app, subset: v3}
- route:
  - destination: {host: app, subset: v1}
",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs],
        vec![app_subsets()],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    assert_eq!(client.get("app", "/api/v2/items").await.backend(), "v2");
    assert_eq!(
        client.get("app", "/api/v2/items/7").await.backend(),
        "v3",
        "the regex must match the whole path"
    );
    assert_eq!(client.get("app", "/api/other").await.backend(), "v3");
    assert_eq!(
        client.get("app", "/?canary=yes").await.backend(),
        "v2",
        "the second match entry holds"
    );
    assert_eq!(client.get("app", "/?canary=no").await.backend(), "v1");
}

#[tokio::test]
async fn the_host_is_found_by_short_name_fqdn_port_or_wildcard() {
    let (port, backends) = three_versions().await;
    let vs = virtual_service(
        "app",
        "
hosts: [app]
http:
- route:
  - destination: {host: app, subset: v2}
",
    );
    let wildcard = virtual_service(
        "shop-sites",
        "
hosts: ['*.example.com']
http:
- route:
  - destination: {host: app.shop.svc.cluster.local, subset: v3}
",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs, wildcard],
        vec![app_subsets()],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    for host in [
        "app",
        "app:80",
        "app.shop",
        "app.shop.svc",
        "App.Shop.Svc.Cluster.Local:80",
    ] {
        assert_eq!(
            client.get(host, "/").await.backend(),
            "v2",
            "Host `{host}` names the app service"
        );
    }
    assert_eq!(client.get("www.example.com", "/").await.backend(), "v3");
    let unknown = client.get("example.org", "/").await;
    assert_eq!(
        unknown.status, 404,
        "no route for an unknown host (NR): {unknown:?}"
    );
}

#[tokio::test]
async fn a_service_without_a_virtual_service_uses_all_its_endpoints() {
    let (port, backends) = start_backends(&[
        (V1, "v1", Behaviour::Answer),
        (V2, "v2", Behaviour::Answer),
        (V3, "v3", Behaviour::Answer),
    ])
    .await;
    let round_robin = destination_rule(
        "app",
        "{host: app, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![],
        vec![round_robin],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    let (answered, _) = tally(&client, "app", 30, 1).await;
    for backend in ["v1", "v2", "v3"] {
        assert_eq!(
            answered.get(backend),
            Some(&10),
            "ROUND_ROBIN gives each endpoint a third: {answered:?}"
        );
    }
}

#[tokio::test]
async fn http2_clients_are_routed_too() {
    let (port, backends) = three_versions().await;
    let vs = virtual_service(
        "app",
        "
hosts: [app]
http:
- route:
  - destination: {host: app, subset: v1}
",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs],
        vec![app_subsets()],
    ))
    .await;
    let reply = http2_get(&waypoint, "http://app.shop:80/h2").await;
    assert_eq!(
        reply.backend(),
        "v1",
        "the waypoint routes on `:authority`: {reply:?}"
    );
    assert_eq!(
        reply.echo()["version"],
        "HTTP/1.1",
        "the app port speaks HTTP/1.1 upstream"
    );
}

#[tokio::test]
async fn a_new_config_takes_effect_and_a_bad_one_is_refused_whole() {
    let (port, backends) = three_versions().await;
    let to = |subset: &str| {
        virtual_service(
            "app",
            &format!(
                "{{hosts: [app], http: [{{route: [{{destination: {{host: app, subset: {subset}}}}}]}}]}}"
            ),
        )
    };
    let services = vec![service("app", port, &backends)];
    let waypoint = Waypoint::start(&config(
        services.clone(),
        vec![to("v1")],
        vec![app_subsets()],
    ))
    .await;
    let client = TestClient::http1(&waypoint);
    assert_eq!(client.get("app", "/").await.backend(), "v1");

    waypoint
        .engine
        .update(&config(
            services.clone(),
            vec![to("v3")],
            vec![app_subsets()],
        ))
        .expect("the new config compiles");
    assert_eq!(
        client.get("app", "/").await.backend(),
        "v3",
        "the new table is in use"
    );

    let broken = virtual_service(
        "broken",
        "{hosts: [app], http: [{match: [{uri: {regex: '('}}], route: [{destination: {host: app}}]}]}",
    );
    let error = waypoint
        .engine
        .update(&config(services, vec![broken], vec![app_subsets()]))
        .expect_err("a bad regex is refused")
        .to_string();
    assert!(
        error.contains("VirtualService shop/broken: `http[0].match[0].uri` regex `(`"),
        "{error}"
    );
    assert_eq!(
        client.get("app", "/").await.backend(),
        "v3",
        "the previous table stays"
    );

    waypoint.stop().await.expect("the waypoint stops cleanly");
}

#[tokio::test]
async fn an_http2_service_port_is_spoken_to_in_http2() {
    let (port, backends) = start_backends(&[(V1, "v1", Behaviour::Answer)]).await;
    let mut grpc = service("grpc-app", port, &backends);
    grpc.ports[0].name = "grpc-api".into();
    let waypoint = Waypoint::start(&config(vec![grpc], vec![], vec![])).await;

    let reply = TestClient::http1(&waypoint)
        .get("grpc-app", "/pkg.Service/Method")
        .await;
    assert_eq!(
        reply.echo()["version"],
        "HTTP/2.0",
        "a `grpc-` port is HTTP/2 upstream: {reply:?}"
    );
    assert_eq!(
        reply.echo()["headers"].get("host"),
        None,
        "HTTP/2 carries the authority as `:authority`"
    );
}

#[tokio::test]
async fn h2_upgrade_policy_upgrade_speaks_http2_to_an_http_port() {
    let (waypoint, _backends, _) = app_with_pool(V1, "{http: {h2UpgradePolicy: UPGRADE}}").await;

    let reply = TestClient::http1(&waypoint).get("app", "/").await;
    assert_eq!(reply.echo()["version"], "HTTP/2.0", "{reply:?}");
}

#[tokio::test]
async fn use_client_protocol_sends_each_request_in_its_clients_version() {
    let (waypoint, _backends, _) = app_with_pool(V1, "{http: {useClientProtocol: true}}").await;

    let reply = http2_get(&waypoint, "http://app.shop:80/h2").await;
    assert_eq!(reply.echo()["version"], "HTTP/2.0", "{reply:?}");
    let reply = TestClient::http1(&waypoint).get("app", "/h1").await;
    assert_eq!(reply.echo()["version"], "HTTP/1.1", "{reply:?}");
}

#[tokio::test]
async fn a_subset_no_destination_rule_defines_is_a_503_no_cluster() {
    let (port, backends) = three_versions().await;
    let vs = virtual_service(
        "app",
        "{hosts: [app], http: [{route: [{destination: {host: app, subset: v9}}]}]}",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs],
        vec![app_subsets()],
    ))
    .await;

    let reply = TestClient::http1(&waypoint).get("app", "/").await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.backend(), "-", "answered by the waypoint");
}

#[tokio::test]
async fn a_mirror_gets_a_copy_of_every_request_with_a_shadow_host() {
    let (port, backends) = start_backends(&[(V1, "v1", Behaviour::Answer)]).await;
    let (shadow_port, shadows) =
        start_backends(&[(V3, "shadow", Behaviour::Flaky { fail: 1, every: 1 })]).await;
    let vs = virtual_service(
        "app",
        "
hosts: [app]
http:
- route:
  - destination: {host: app}
  mirror: {host: app-next}
  mirrorPercentage: {value: 100}
",
    );
    let services = vec![
        service("app", port, &backends),
        service("app-next", shadow_port, &shadows),
    ];
    let waypoint = Waypoint::start(&config(services, vec![vs], vec![])).await;
    let client = TestClient::http1(&waypoint);

    for _ in 0..10 {
        let reply = client.get("app:80", "/orders").await;
        assert_eq!(
            (reply.status.as_u16(), reply.backend()),
            (200, "v1"),
            "the client sees only the primary's answer: {reply:?}"
        );
    }
    shadows[0].wait_for_hits(10).await;
    assert_eq!(
        shadows[0].last_host(),
        "app-shadow",
        "Envoy appends -shadow to the host"
    );
    assert_eq!(backends[0].hits(), 10);
}
