use std::net::Ipv4Addr;

use ambit_api::locality::Locality;

use super::*;
use crate::config::{Endpoint, ServicePort};

fn named<T: serde::de::DeserializeOwned>(name: &str, yaml: &str) -> Named<T> {
    Named {
        namespace: "shop".into(),
        name: name.into(),
        spec: serde_yaml_ng::from_str(yaml).expect("test object is YAML"),
    }
}

fn service(name: &str) -> Service {
    Service {
        namespace: "shop".into(),
        name: name.into(),
        ports: vec![ServicePort {
            name: "http".into(),
            port: 9080,
            target_port: 0,
            app_protocol: String::new(),
        }],
        endpoints: vec![
            Endpoint::new(Ipv4Addr::new(10, 0, 0, 1).into(), [("version", "v1")]),
            Endpoint::new(Ipv4Addr::new(10, 0, 0, 2).into(), [("version", "v2")]),
        ],
    }
}

/// The name of the first route for `host` on `port`, if any.
fn first_route(table: &RouteTable, host: &str, port: u16) -> Option<String> {
    table
        .routes(host, port)
        .map(|routes| routes[0].name.clone())
}

fn route_names(table: &RouteTable, authority: &str) -> Vec<String> {
    table
        .routes(authority, 80)
        .unwrap_or_else(|| panic!("expected routes for `{authority}`"))
        .iter()
        .map(|r| r.name.clone())
        .collect()
}

#[test]
fn an_exact_host_beats_a_wildcard_which_beats_the_service_default() {
    let config = Config {
        namespace: "shop".into(),
        services: vec![service("reviews"), service("ratings")],
        virtual_services: vec![
            named(
                "all-shop",
                "{hosts: ['*.shop.svc.cluster.local'], http: [{name: wild, route: [{destination: {host: reviews}}]}]}",
            ),
            named(
                "reviews",
                "{hosts: [reviews], http: [{name: exact, route: [{destination: {host: reviews}}]}]}",
            ),
        ],
        destination_rules: vec![],
        ..Config::default()
    };
    let table = RouteTable::compile(&config).expect("compiles");
    assert_eq!(route_names(&table, "reviews:9080"), ["shop/reviews#exact"]);
    assert_eq!(route_names(&table, "ratings"), ["shop/all-shop#wild"]);
    assert!(table.routes("unknown.example.com", 80).is_none());
}

#[test]
fn subsets_select_endpoints_by_label() {
    let config = Config {
        namespace: "shop".into(),
        services: vec![service("reviews")],
        destination_rules: vec![named(
            "reviews",
            "{host: reviews, subsets: [{name: v2, labels: {version: v2}}]}",
        )],
        ..Config::default()
    };
    let clusters = build_clusters(&config, None);
    let host = "reviews.shop.svc.cluster.local";
    let (port, v2) = &clusters.get(host, "v2")[0];
    assert_eq!(*port, 9080);
    assert_eq!(v2.name, "outbound|9080|v2|reviews.shop.svc.cluster.local");
    let picked = v2.pick(None, &[]).expect("v2 has an endpoint").address;
    assert_eq!(picked, (Ipv4Addr::new(10, 0, 0, 2), 9080).into());
    assert!(
        clusters.get(host, "v3").is_empty(),
        "an undefined subset has no cluster"
    );
}

#[test]
fn every_problem_in_every_object_is_reported() {
    let config = Config {
        namespace: "shop".into(),
        services: vec![service("reviews")],
        virtual_services: vec![named(
            "reviews",
            "
hosts: [reviews]
http:
- route:
  - {destination: {host: reviews}, weight: 0}
  - {destination: {host: reviews}, weight: 0}
- redirect: {uri: /x, redirectCode: 200}
- retries: {attempts: 2, retryOn: 'sometimes'}
  route: [{destination: {host: reviews}}]
- fault: {abort: {httpStatus: 503, grpcStatus: UNAVAILABLE}}
  route: [{destination: {host: reviews}}]
- directResponse: {status: 200, body: {bytes: 'not base64!'}}
",
        )],
        destination_rules: vec![named(
            "reviews",
            "{host: reviews, trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: 'x user'}}}}",
        )],
        ..Config::default()
    };
    let errors = RouteTable::compile(&config)
        .expect_err("six problems")
        .to_string();
    for expected in [
        "6 problem(s)",
        "VirtualService shop/reviews: `http[4].directResponse.body.bytes` is not base64",
        "VirtualService shop/reviews: `http[3].fault.abort` sets both `httpStatus` and `grpcStatus`: keep one",
        "DestinationRule shop/reviews: `trafficPolicy.loadBalancer.consistentHash.httpHeaderName`: `x user` is not a valid header name",
        "VirtualService shop/reviews: `http[0]`: the weights add up to 0",
        "VirtualService shop/reviews: `http[1].redirect.redirectCode: 200` is not a redirect code",
        "VirtualService shop/reviews: `http[2].retries.retryOn`: `sometimes`",
    ] {
        assert!(
            errors.contains(expected),
            "expected {expected:?} in:\n{errors}"
        );
    }
}

#[test]
fn an_http_route_with_a_filter_the_waypoint_cannot_serve_is_refused_by_field() {
    let config = Config {
        namespace: "shop".into(),
        services: vec![service("reviews")],
        http_routes: vec![named(
            "ext",
            "
parentRefs: [{group: '', kind: Service, name: reviews}]
rules:
- filters: [{type: ExtensionRef, extensionRef: {group: example.com, kind: Thing, name: x}}]
  backendRefs: [{name: reviews, port: 9080}]
- filters: [{type: RequestRedirect}]
",
        )],
        ..Config::default()
    };
    let errors = RouteTable::compile(&config)
        .expect_err("two problems")
        .to_string();
    for expected in [
        "HTTPRoute shop/ext: `rules[0].filters[0].ExtensionRef` is not supported",
        "HTTPRoute shop/ext: `rules[1].filters[0]` has no `requestRedirect`",
    ] {
        assert!(
            errors.contains(expected),
            "expected {expected:?} in:\n{errors}"
        );
    }
}

#[test]
fn an_http_route_on_an_ingress_takes_its_listener_and_hostnames() {
    let gateway = Named {
        namespace: "shop".into(),
        name: "edge".into(),
        spec: serde_yaml_ng::from_str(
            "
servers:
- {name: http, port: {number: 80, name: http, protocol: HTTP}, hosts: ['./*']}
- {name: admin, port: {number: 8080, name: admin, protocol: HTTP}, hosts: ['./*']}
",
        )
        .expect("a Gateway"),
    };
    let config = Config {
        namespace: "shop".into(),
        services: vec![service("reviews")],
        http_routes: vec![
            named(
                "admin",
                "{parentRefs: [{name: edge, sectionName: admin}], rules: [{name: admin, backendRefs: [{name: reviews, port: 9080}]}]}",
            ),
            named(
                "site",
                "{parentRefs: [{name: edge}], hostnames: [site.example.com], rules: [{name: site, backendRefs: [{name: reviews, port: 9080}]}]}",
            ),
        ],
        role: Role::Ingress(vec![gateway]),
        ..Config::default()
    };
    let table = RouteTable::compile(&config).expect("compiles");
    let route = |host: &str, port| first_route(&table, host, port);
    assert_eq!(
        route("anything", 8080).as_deref(),
        Some("shop/admin#admin.0")
    );
    assert_eq!(route("anything", 80), None, "the admin listener only");
    assert_eq!(
        route("site.example.com", 80).as_deref(),
        Some("shop/site#site.0")
    );
    assert_eq!(route("other.example.com", 80), None, "its hostnames only");
}

#[test]
fn tuning_fields_not_implemented_are_listed_as_ignored() {
    let config = Config {
        namespace: "shop".into(),
        services: vec![service("reviews")],
        virtual_services: vec![named(
            "reviews",
            "{hosts: [reviews], http: [{route: [{destination: {host: reviews}}]}]}",
        )],
        destination_rules: vec![named(
            "reviews",
            "{host: reviews, trafficPolicy: {connectionPool: {http: {maxConcurrentStreams: 10}}, outlierDetection: {interval: 5s}}}",
        )],
        ..Config::default()
    };
    let table = RouteTable::compile(&config).expect("compiles");
    assert_eq!(
        table.ignored(),
        ["DestinationRule shop/reviews: `trafficPolicy.connectionPool.http.maxConcurrentStreams`",]
    );
}

#[test]
fn a_subsets_policy_overrides_the_rules_and_port_settings_override_both() {
    let config = Config {
        namespace: "shop".into(),
        services: vec![service("reviews")],
        destination_rules: vec![named(
            "reviews",
            "
host: reviews
trafficPolicy:
  loadBalancer: {simple: RANDOM}
subsets:
- name: v1
  labels: {version: v1}
  trafficPolicy:
    portLevelSettings:
    - port: {number: 9080}
      loadBalancer: {simple: ROUND_ROBIN}
",
        )],
        ..Config::default()
    };
    let rule = &config.destination_rules[0].spec;
    let policies = [
        rule.subsets[0].traffic_policy.as_ref(),
        rule.traffic_policy.as_ref(),
    ];
    let simple =
        |port| effective(policies, port, PolicyScope::load_balancer).and_then(|lb| lb.simple);
    assert_eq!(simple(9080), Some(SimpleLb::RoundRobin));
    assert_eq!(
        simple(9081),
        Some(SimpleLb::Random),
        "other ports fall back to the rule's"
    );
    let rule_only = [None, rule.traffic_policy.as_ref()];
    assert_eq!(
        effective(rule_only, 9080, PolicyScope::load_balancer).and_then(|lb| lb.simple),
        Some(SimpleLb::Random)
    );
}

#[test]
fn a_virtual_service_routes_where_it_is_bound_mesh_or_gateway() {
    let mut config = Config {
        namespace: "shop".into(),
        services: vec![service("reviews")],
        virtual_services: vec![
            named(
                "ingress",
                "{hosts: [reviews], gateways: [shop/public], http: [{name: gw, route: [{destination: {host: reviews}}]}]}",
            ),
            named(
                "both",
                "{hosts: [ratings], gateways: [public, mesh], http: [{name: mesh, route: [{destination: {host: reviews}}]}]}",
            ),
        ],
        destination_rules: vec![],
        ..Config::default()
    };
    let table = RouteTable::compile(&config).expect("compiles");
    assert_eq!(
        route_names(&table, "reviews"),
        ["reviews.shop.svc.cluster.local#default"]
    );
    assert_eq!(route_names(&table, "ratings"), ["shop/both#mesh"]);
    assert!(table.ignored().is_empty(), "{:?}", table.ignored());

    config.role = Role::Ingress(vec![Named {
        namespace: "shop".into(),
        name: "public".into(),
        spec: serde_yaml_ng::from_str(
            "servers: [{port: {number: 80, protocol: HTTP}, hosts: ['*']}]",
        )
        .expect("a Gateway"),
    }]);
    let table = RouteTable::compile(&config).expect("compiles");
    assert_eq!(route_names(&table, "reviews"), ["shop/ingress#gw"]);
    assert_eq!(route_names(&table, "ratings"), ["shop/both#mesh"]);
    assert!(
        table.routes("details", 80).is_none(),
        "an ingress gateway has no default routes"
    );
}

#[test]
fn on_an_ingress_gateway_each_port_takes_the_virtual_services_of_its_own_gateways() {
    let gateway = |name: &str, ports: &str| Named {
        namespace: "istio-system".into(),
        name: name.into(),
        spec: serde_yaml_ng::from_str(&format!("servers: {ports}")).expect("a Gateway"),
    };
    let config = Config {
        namespace: "shop".into(),
        services: vec![service("reviews"), service("ratings")],
        virtual_services: vec![
            named(
                "public",
                "{hosts: ['*'], gateways: [istio-system/public], http: [{name: public, route: [{destination: {host: reviews}}]}]}",
            ),
            named(
                "admin",
                "{hosts: ['*'], gateways: [istio-system/admin], http: [{name: admin, route: [{destination: {host: ratings}}]}]}",
            ),
            named(
                "both",
                "{hosts: [both.example.com], gateways: [istio-system/admin, istio-system/public], http: [{name: both, route: [{destination: {host: ratings}}]}]}",
            ),
        ],
        role: Role::Ingress(vec![
            gateway(
                "public",
                "[{port: {number: 80, protocol: HTTP}, hosts: ['*']}, {port: {number: 8000, protocol: HTTP}, hosts: ['*']}]",
            ),
            gateway(
                "admin",
                "[{port: {number: 8080, protocol: HTTP}, hosts: ['*']}, {port: {number: 8000, protocol: HTTP}, hosts: ['*']}]",
            ),
        ]),
        ..Config::default()
    };
    let table = RouteTable::compile(&config).expect("compiles");
    let route = |host: &str, port| first_route(&table, host, port);
    assert_eq!(
        route("shop.example.com", 80).as_deref(),
        Some("shop/public#public")
    );
    assert_eq!(
        route("shop.example.com", 8080).as_deref(),
        Some("shop/admin#admin")
    );
    assert_eq!(
        route("shop.example.com", 8000).as_deref(),
        Some("shop/public#public"),
        "a port both Gateways share: the first VirtualService in order"
    );
    for port in [80, 8080] {
        assert_eq!(
            route("both.example.com", port).as_deref(),
            Some("shop/both#both")
        );
    }
    assert_eq!(
        route("shop.example.com", 9999),
        None,
        "no Gateway listens there"
    );
}

#[test]
fn a_consistent_hash_follows_subset_and_port_level_policies() {
    let config = Config {
        namespace: "shop".into(),
        services: vec![service("reviews")],
        destination_rules: vec![named(
            "reviews",
            "
host: reviews
trafficPolicy:
  loadBalancer: {simple: ROUND_ROBIN}
  portLevelSettings:
  - port: {number: 9080}
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
subsets:
- name: v1
  labels: {version: v1}
  trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true}}}
- name: v2
  labels: {version: v2}
",
        )],
        ..Config::default()
    };
    RouteTable::compile(&config).expect("consistentHash compiles");
    let clusters = build_clusters(&config, None);
    let host = "reviews.shop.svc.cluster.local";
    let mut headers = http::HeaderMap::new();
    headers.insert("x-user", http::HeaderValue::from_static("ana"));
    let keys = RequestKeys {
        headers: &headers,
        query: None,
        source: Ipv4Addr::new(198, 18, 0, 9).into(),
    };
    let hash_of = |value: &str| Some(hashing::hash64(&[value.as_bytes()]));
    let hashed = |subset: &str| clusters.get(host, subset)[0].1.hash(keys).hash;
    assert_eq!(hashed(""), hash_of("ana"), "the rule's port-level setting");
    assert_eq!(
        hashed("v1"),
        hash_of("198.18.0.9"),
        "the subset's own policy"
    );
    assert_eq!(
        hashed("v2"),
        hash_of("ana"),
        "a subset without one inherits"
    );
}

/// Service `echo`: port 9000 named `tcp-echo`, port 9001 with `appProtocol: tcp`, port
/// 9080 named `http`; subsets v1 and v2.
fn echo_config(virtual_service: &str) -> Config {
    let port = |name: &str, port: u16, app_protocol: &str| ServicePort {
        name: name.into(),
        port,
        target_port: 0,
        app_protocol: app_protocol.into(),
    };
    Config {
        namespace: "shop".into(),
        services: vec![Service {
            ports: vec![
                port("tcp-echo", 9000, ""),
                port("db", 9001, "tcp"),
                port("http", 9080, ""),
            ],
            ..service("echo")
        }],
        virtual_services: vec![named("echo", virtual_service)],
        destination_rules: vec![named(
            "echo",
            "{host: echo, subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]}",
        )],
        ..Config::default()
    }
}

const ECHO: &str = "echo.shop.svc.cluster.local";

fn connection(port: u16) -> ConnectionView<'static> {
    ConnectionView {
        destination: Ipv4Addr::new(10, 96, 0, 9).into(),
        port,
        source: None,
        gateways: &[],
        sni: None,
    }
}

/// The route and the cluster a connection on `port` goes to, chosen once.
fn tcp_choice(table: &RouteTable, port: u16) -> (String, String) {
    let route = table
        .tcp_route(ECHO, &connection(port))
        .unwrap_or_else(|| panic!("expected a TCP route for port {port}"));
    let cluster = route
        .targets
        .choose()
        .cluster(port)
        .unwrap_or_else(|| panic!("expected a cluster on port {port}"));
    (route.name.clone(), cluster.name.clone())
}

#[test]
fn ports_declared_tcp_are_relayed_and_others_served_as_http() {
    let table = RouteTable::compile(&echo_config("{hosts: [echo]}")).expect("compiles");
    assert!(table.relays_tcp(ECHO, 9000), "named tcp-echo");
    assert!(table.relays_tcp(ECHO, 9001), "appProtocol: tcp");
    assert!(!table.relays_tcp(ECHO, 9080), "named http");
    assert!(!table.relays_tcp("other.shop.svc.cluster.local", 9000));
}

#[test]
fn tcp_routes_split_connections_by_weight() {
    let table = RouteTable::compile(&echo_config(
        "
hosts: [echo]
tcp:
- route:
  - {destination: {host: echo, subset: v1}, weight: 80}
  - {destination: {host: echo, subset: v2}, weight: 20}
",
    ))
    .expect("compiles");
    let draws = 10_000;
    let to_v1 = (0..draws)
        .filter(|_| {
            let (route, cluster) = tcp_choice(&table, 9000);
            assert_eq!(route, "shop/echo#tcp.0");
            cluster == format!("outbound|9000|v1|{ECHO}")
        })
        .count();
    // 8,000 expected; the standard deviation is 40.
    assert!(
        (7_700..=8_300).contains(&to_v1),
        "{to_v1} of {draws} connections went to v1, expected about 8,000"
    );
}

#[test]
fn a_tcp_route_takes_the_connections_it_matches_and_the_service_the_rest() {
    let table = RouteTable::compile(&echo_config(
        "
hosts: [echo]
http: [{route: [{destination: {host: echo, subset: v1}}]}]
tcp:
- match: [{port: 9001}]
  route: [{destination: {host: echo, subset: v2, port: {number: 9001}}}]
",
    ))
    .expect("compiles");
    assert_eq!(
        tcp_choice(&table, 9001),
        (
            "shop/echo#tcp.0".to_owned(),
            format!("outbound|9001|v2|{ECHO}")
        )
    );
    let (route, cluster) = tcp_choice(&table, 9000);
    assert_eq!(
        route,
        format!("{ECHO}#default"),
        "no tcp route matches 9000"
    );
    assert_eq!(cluster, format!("outbound|9000||{ECHO}"));
    assert!(
        table
            .tcp_route("other.shop.svc.cluster.local", &connection(9000))
            .is_none()
    );
}

#[test]
fn tls_routes_take_connections_by_sni_before_tcp_routes() {
    let table = RouteTable::compile(&echo_config(
        "
hosts: [echo]
tls:
- match: [{sniHosts: [v1.example.com]}]
  route: [{destination: {host: echo, subset: v1}}]
- match: [{sniHosts: ['*.example.com'], port: 9000}]
  route: [{destination: {host: echo, subset: v2}}]
tcp:
- route: [{destination: {host: echo}}]
",
    ))
    .expect("compiles");
    assert!(table.routes_by_sni(ECHO, 9000));
    let route_for = |sni: Option<&str>, port| {
        let view = ConnectionView {
            sni,
            ..connection(port)
        };
        table.tcp_route(ECHO, &view).map(|route| route.name.clone())
    };
    assert_eq!(
        route_for(Some("v1.example.com"), 9000).as_deref(),
        Some("shop/echo#tls.0")
    );
    assert_eq!(
        route_for(Some("v2.example.com"), 9000).as_deref(),
        Some("shop/echo#tls.1")
    );
    assert_eq!(
        route_for(Some("v2.example.com"), 9001).as_deref(),
        Some("shop/echo#tcp.0")
    );
    assert_eq!(route_for(None, 9000).as_deref(), Some("shop/echo#tcp.0"));
    let plain = RouteTable::compile(&echo_config("{hosts: [echo]}")).expect("compiles");
    assert!(
        !plain.routes_by_sni(ECHO, 9000),
        "no tls routes: nothing is read first"
    );
}

#[test]
fn an_ingress_tcp_server_takes_the_first_bound_tcp_route_whose_hosts_it_accepts() {
    let mut config = echo_config("{hosts: [echo]}");
    config.virtual_services = vec![
        named(
            "echo",
            "{hosts: ['*'], gateways: [public], tcp: [{match: [{port: 31400}], route: [{destination: {host: echo, subset: v1}}]}]}",
        ),
        named(
            "other",
            "{hosts: [other.example.com], gateways: [public], tcp: [{route: [{destination: {host: echo}}]}]}",
        ),
        named(
            "db",
            "{hosts: [db.example.com], gateways: [public], tcp: [{route: [{destination: {host: echo, subset: v2}}]}]}",
        ),
    ];
    config.role = Role::Ingress(vec![named(
        "public",
        "servers:
- {port: {number: 31400, protocol: TCP}, hosts: ['*']}
- {port: {number: 31401, protocol: MONGO}, hosts: [db.example.com]}
- {port: {number: 80, protocol: HTTP}, hosts: ['*']}",
    )]);
    let table = RouteTable::compile(&config).expect("compiles");
    let route_on = |port| {
        table
            .gateway_tcp_route(port, &connection(port))
            .map(|route| route.name.clone())
    };
    assert_eq!(route_on(31400).as_deref(), Some("shop/echo#tcp.0"));
    assert_eq!(
        route_on(31401).as_deref(),
        Some("shop/db#tcp.0"),
        "`other` is not for a host the server accepts"
    );
    assert_eq!(route_on(80), None, "an HTTP server relays nothing");
    config.role = Role::Waypoint;
    let waypoint = RouteTable::compile(&config).expect("compiles");
    assert!(
        waypoint
            .gateway_tcp_route(31400, &connection(31400))
            .is_none()
    );
}

#[test]
fn bad_tcp_routes_are_reported_with_their_paths() {
    let errors = RouteTable::compile(&echo_config(
        "
hosts: [echo]
tcp:
- route: []
- match: [{destinationSubnets: [10.0.0.0/33]}]
  route:
  - {destination: {host: echo, subset: v1}, weight: -5}
  - {destination: {host: echo, subset: v2}, weight: 0}
",
    ))
    .expect_err("three problems")
    .to_string();
    for expected in [
        "VirtualService shop/echo: `tcp[0].route` is empty",
        "VirtualService shop/echo: `tcp[1].match[0].destinationSubnets[0]`",
        "VirtualService shop/echo: `tcp[1].route[0].weight: -5` is negative",
    ] {
        assert!(
            errors.contains(expected),
            "expected {expected:?} in:\n{errors}"
        );
    }
}

#[test]
fn locality_ranks_every_subsets_cluster_and_a_port_may_turn_it_off() {
    let at = |zone: &str| Locality {
        region: "r1".into(),
        zone: zone.into(),
        subzone: String::new(),
    };
    let endpoint = |last: u8, version: &str, zone: &str| {
        Endpoint::new(Ipv4Addr::new(10, 0, 0, last).into(), [("version", version)])
            .in_locality(at(zone))
    };
    let mut reviews = service("reviews");
    reviews.ports.push(ServicePort {
        name: "http-admin".into(),
        port: 9081,
        target_port: 0,
        app_protocol: String::new(),
    });
    reviews.endpoints = vec![
        endpoint(1, "v1", "a"),
        endpoint(2, "v1", "b"),
        endpoint(3, "v2", "b"),
    ];
    let config = Config {
        namespace: "shop".into(),
        locality: at("a"),
        services: vec![reviews],
        destination_rules: vec![named(
            "reviews",
            "
host: reviews
trafficPolicy:
  outlierDetection: {consecutive5xxErrors: 3}
  portLevelSettings:
  - port: {number: 9081}
    loadBalancer: {localityLbSetting: {enabled: false}}
subsets:
- {name: v1, labels: {version: v1}}
- {name: v2, labels: {version: v2}}
",
        )],
        ..Config::default()
    };
    RouteTable::compile(&config).expect("compiles");
    let clusters = build_clusters(&config, None);
    let picked = |subset: &str, port: u16| {
        let (_, cluster) = clusters
            .get("reviews.shop.svc.cluster.local", subset)
            .into_iter()
            .find(|(p, _)| *p == port)
            .expect("a cluster per subset and port");
        let mut seen: Vec<u8> = (0..60)
            .map(
                |_| match cluster.pick(None, &[]).expect("an endpoint").address.ip() {
                    std::net::IpAddr::V4(ip) => ip.octets()[3],
                    std::net::IpAddr::V6(_) => unreachable!("test endpoints are IPv4"),
                },
            )
            .collect();
        seen.sort_unstable();
        seen.dedup();
        seen
    };
    assert_eq!(
        picked("", 9080),
        [1],
        "all endpoints: the waypoint's zone only"
    );
    assert_eq!(picked("v1", 9080), [1], "subset v1: its zone-a endpoint");
    assert_eq!(picked("v2", 9080), [3], "subset v2 has only zone b");
    assert_eq!(picked("", 9081), [1, 2, 3], "port 9081 turns locality off");
}

#[test]
fn bad_localities_are_refused() {
    let config = Config {
        namespace: "shop".into(),
        services: vec![service("reviews")],
        destination_rules: vec![named(
            "reviews",
            "{host: reviews, subsets: [{name: v1, labels: {version: v1}, trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: 'r1/*/x', to: {'r1/*': 100}}]}}}}]}",
        )],
        ..Config::default()
    };
    let errors = RouteTable::compile(&config)
        .expect_err("refused")
        .to_string();
    let expected = "DestinationRule shop/reviews: `subsets[0].trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from` `r1/*/x`: `*` stands for a whole part";
    assert!(
        errors.contains(expected),
        "expected {expected:?} in:\n{errors}"
    );
}

#[test]
fn an_http_route_and_a_tcp_route_on_one_service_each_take_their_own_ports() {
    let mut config = echo_config("{hosts: [other]}");
    config.services.push(Service {
        name: "echo-v2".into(),
        ..config.services[0].clone()
    });
    config.http_routes.push(named(
        "echo-http",
        "{parentRefs: [{group: '', kind: Service, name: echo}], rules: [{backendRefs: [{name: echo, port: 9080}]}]}",
    ));
    config.tcp_routes.push(named(
        "echo-tcp",
        "{parentRefs: [{group: '', kind: Service, name: echo, port: 9000}], rules: [{backendRefs: [{name: echo-v2, port: 9000}]}]}",
    ));
    let table = RouteTable::compile(&config).expect("compiles");
    assert_eq!(
        tcp_choice(&table, 9000),
        (
            "shop/echo-tcp#tcp.0".to_owned(),
            "outbound|9000||echo-v2.shop.svc.cluster.local".to_owned()
        ),
        "the TCPRoute takes its parent's port"
    );
    assert_eq!(
        tcp_choice(&table, 9001).0,
        format!("{ECHO}#default"),
        "another TCP port goes to the service"
    );
    assert!(
        first_route(&table, ECHO, 9080).is_some_and(|name| name.starts_with("shop/echo-http")),
        "the HTTPRoute still takes HTTP: {:?}",
        first_route(&table, ECHO, 9080)
    );
}

#[test]
fn a_tcp_route_without_rules_is_refused_by_name() {
    let mut config = echo_config("{hosts: [other]}");
    config.tcp_routes.push(named(
        "empty",
        "{parentRefs: [{group: '', kind: Service, name: echo}]}",
    ));
    let errors = RouteTable::compile(&config)
        .expect_err("a route with no rule sends connections nowhere")
        .to_string();
    assert!(errors.contains("TCPRoute shop/empty"), "{errors}");
    assert!(errors.contains("rules"), "{errors}");
}

#[test]
fn an_ingress_tcp_listener_takes_the_tcp_routes_attached_to_its_gateway() {
    let mut config = echo_config("{hosts: [other]}");
    config.role = Role::Ingress(vec![named(
        "public",
        "servers:
- {name: tcp, port: {number: 31400, protocol: TCP}, hosts: ['*']}
- {name: web, port: {number: 80, protocol: HTTP}, hosts: ['*']}",
    )]);
    config.tcp_routes.push(named(
        "echo-tcp",
        "{parentRefs: [{name: public}], rules: [{backendRefs: [{name: echo, port: 9000}]}]}",
    ));
    config.http_routes.push(named(
        "echo-http",
        "{parentRefs: [{name: public}], rules: [{backendRefs: [{name: echo, port: 9080}]}]}",
    ));
    let table = RouteTable::compile(&config).expect("compiles");
    let route_on = |port| {
        table
            .gateway_tcp_route(port, &connection(port))
            .map(|route| route.name.clone())
    };
    assert_eq!(route_on(31400).as_deref(), Some("shop/echo-tcp#tcp.0"));
    assert_eq!(route_on(80), None, "a TCPRoute does not attach to HTTP");
    assert!(first_route(&table, "anything.example.com", 80).is_some());
    assert!(
        table
            .routes("anything.example.com", 31400)
            .is_none_or(<[_]>::is_empty),
        "an HTTPRoute does not attach to TCP"
    );
}

/// The route `table` picks for a connection to `host` on `port` with server name `sni`.
fn route_by_sni(table: &RouteTable, host: &str, port: u16, sni: &str) -> Option<String> {
    let view = ConnectionView {
        sni: Some(sni),
        ..connection(port)
    };
    table.tcp_route(host, &view).map(|route| route.name.clone())
}

#[test]
fn a_tls_route_on_the_service_takes_the_server_names_it_lists() {
    let mut config = echo_config("{hosts: [other]}");
    config.tls_routes.push(named(
        "echo-tls",
        "{parentRefs: [{group: '', kind: Service, name: echo, port: 9000}], hostnames: ['*.example.com'], rules: [{backendRefs: [{name: echo, port: 9001}]}]}",
    ));
    let table = RouteTable::compile(&config).expect("compiles");
    assert!(table.routes_by_sni(ECHO, 9000), "its port is routed by SNI");
    assert_eq!(
        route_by_sni(&table, ECHO, 9000, "v1.example.com").as_deref(),
        Some("shop/echo-tls#tls.0")
    );
    assert_eq!(
        route_by_sni(&table, ECHO, 9000, "example.org"),
        Some(format!("{ECHO}#default")),
        "another name goes to the service"
    );
}

#[test]
fn an_ingress_passthrough_listener_takes_the_tls_routes_for_its_server_names() {
    let mut config = echo_config("{hosts: [other]}");
    config.role = Role::Ingress(vec![named(
        "public",
        "servers:
- {name: tls, port: {number: 443, protocol: TLS}, hosts: ['*'], tls: {mode: PASSTHROUGH}}
- {name: tcp, port: {number: 31400, protocol: TCP}, hosts: ['*']}",
    )]);
    config.tls_routes.push(named(
        "secure",
        "{parentRefs: [{name: public}], hostnames: [secure.example.com], rules: [{backendRefs: [{name: echo, port: 9000}]}]}",
    ));
    let table = RouteTable::compile(&config).expect("compiles");
    assert_eq!(
        route_by_sni(&table, "secure.example.com", 443, "secure.example.com").as_deref(),
        Some("shop/secure#tls.0")
    );
    assert_eq!(
        route_by_sni(&table, "other.example.com", 443, "other.example.com"),
        None,
        "a name no route lists is not routed"
    );
    assert_eq!(
        table
            .gateway_tcp_route(31400, &connection(31400))
            .map(|route| route.name.clone()),
        None,
        "a TLSRoute does not attach to TCP"
    );
}
