use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ambit_api::identity::Identity;

use super::*;
use crate::config::Service;

const SERVICE: &str = "cart.shop.svc.cluster.local";

fn config(policies: &[&str]) -> Config {
    Config {
        namespace: "shop".into(),
        name: "waypoint".into(),
        services: vec![Service {
            namespace: "shop".into(),
            name: "cart".into(),
            ..Service::default()
        }],
        authorization_policies: policies
            .iter()
            .enumerate()
            .map(|(i, yaml)| Named {
                namespace: "shop".into(),
                name: format!("p{i}"),
                spec: serde_yaml_ng::from_str(yaml).expect("the test policy is YAML"),
            })
            .collect(),
        ..Config::default()
    }
}

fn authorization(policies: &[&str]) -> Authorization {
    let mut errors = Vec::new();
    let compiled = Authorization::compile(&config(policies), &ClusterIndex::default(), &mut errors);
    assert!(errors.is_empty(), "the test policies compile: {errors:#?}");
    compiled
}

/// Where probes go: `cart`'s VIP, port 80.
const DESTINATION: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 0, 12)), 80);

/// A request from a plaintext peer at 10.0.0.7 to `cart` ([`DESTINATION`]).
struct Probe {
    peer: Peer,
    method: &'static str,
    path: &'static str,
    headers: HeaderMap,
    sni: Option<&'static str>,
}

impl Probe {
    fn new(method: &'static str, path: &'static str) -> Self {
        Self {
            peer: Peer {
                ip: "10.0.0.7".parse::<IpAddr>().unwrap(),
                identity: None,
            },
            method,
            path,
            headers: HeaderMap::new(),
            sni: None,
        }
    }

    fn decide(&self, authorization: &Authorization) -> Verdict {
        let attributes = Attributes {
            peer: &self.peer,
            method: self.method,
            authority: "Cart:80",
            path: self.path,
            headers: &self.headers,
            destination: DESTINATION,
            claims: None,
            sni: self.sni,
        };
        authorization.decide(&attributes, Some(SERVICE))
    }
}

const TO_WAYPOINT: &str =
    "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]";

#[test]
fn deny_wins_and_any_allow_policy_makes_the_rest_denied() {
    let authorization = authorization(&[
        &format!(
            "{TO_WAYPOINT}\nrules: [{{to: [{{operation: {{methods: [GET], paths: ['/api/*']}}}}]}}]"
        ),
        &format!(
            "{TO_WAYPOINT}\naction: DENY\nrules: [{{to: [{{operation: {{paths: ['/api/admin*']}}}}]}}]"
        ),
    ]);
    assert_eq!(
        Probe::new("GET", "/api/items").decide(&authorization),
        Verdict::Allowed
    );
    assert_eq!(
        Probe::new("POST", "/api/items").decide(&authorization),
        Verdict::Denied { policy: None },
        "no ALLOW rule takes POST"
    );
    assert_eq!(
        Probe::new("GET", "/api/admin/users").decide(&authorization),
        Verdict::Denied {
            policy: Some("shop/p1".into())
        },
        "the DENY policy wins over the ALLOW one"
    );
}

#[test]
fn no_policy_allows_and_an_allow_policy_without_rules_denies() {
    assert_eq!(
        Probe::new("GET", "/").decide(&authorization(&[])),
        Verdict::Allowed
    );
    assert_eq!(
        Probe::new("GET", "/").decide(&authorization(&[TO_WAYPOINT])),
        Verdict::Denied { policy: None }
    );
    let deny_nothing = format!("{TO_WAYPOINT}\naction: DENY");
    assert_eq!(
        Probe::new("GET", "/").decide(&authorization(&[&deny_nothing])),
        Verdict::Allowed
    );
    let audit_all = format!("{TO_WAYPOINT}\naction: AUDIT\nrules: [{{}}]");
    assert_eq!(
        Probe::new("GET", "/").decide(&authorization(&[&audit_all])),
        Verdict::Allowed,
        "AUDIT decides nothing"
    );
}

#[test]
fn sources_hosts_ports_and_conditions() {
    let allow = |rule: &str| authorization(&[&format!("{TO_WAYPOINT}\nrules: [{rule}]")]);
    let get = Probe::new("GET", "/");
    let cases = [
        ("{from: [{source: {ipBlocks: [10.0.0.0/24]}}]}", true),
        ("{from: [{source: {notIpBlocks: [10.0.0.7]}}]}", false),
        ("{from: [{source: {remoteIpBlocks: [10.0.0.0/8]}}]}", true),
        ("{from: [{source: {principals: ['*']}}]}", false),
        (
            "{from: [{source: {notPrincipals: ['cluster.local/ns/shop/sa/web']}}]}",
            true,
        ),
        ("{from: [{source: {requestPrincipals: ['*']}}]}", false),
        ("{to: [{operation: {hosts: ['cart']}}]}", true),
        ("{to: [{operation: {hosts: ['CART:80']}}]}", true),
        ("{to: [{operation: {notHosts: ['cart*']}}]}", false),
        ("{to: [{operation: {ports: ['80']}}]}", true),
        ("{to: [{operation: {notPorts: ['80']}}]}", false),
        ("{when: [{key: destination.port, values: ['80']}]}", true),
        (
            "{when: [{key: destination.ip, values: [10.96.0.0/16]}]}",
            true,
        ),
        ("{when: [{key: destination.ip, values: [10.0.0.7]}]}", false),
        (
            "{when: [{key: destination.ip, notValues: [10.96.0.12]}]}",
            false,
        ),
        ("{when: [{key: source.ip, notValues: [10.0.0.0/8]}]}", false),
        (
            "{when: [{key: 'request.headers[x-user]', values: ['*']}]}",
            false,
        ),
        (
            "{when: [{key: 'request.auth.claims[groups]', values: [admin]}]}",
            false,
        ),
    ];
    for (rule, allowed) in cases {
        let verdict = get.decide(&allow(rule));
        assert_eq!(
            verdict == Verdict::Allowed,
            allowed,
            "rule {rule}: {verdict:?}"
        );
    }

    let mut over_tls = Probe::new("GET", "/");
    over_tls.sni = Some("shop.example.com");
    for (probe, rule, allowed) in [
        (
            &over_tls,
            "{when: [{key: connection.sni, values: ['*.example.com']}]}",
            true,
        ),
        (
            &over_tls,
            "{when: [{key: connection.sni, notValues: [shop.example.com]}]}",
            false,
        ),
        (
            &get,
            "{when: [{key: connection.sni, values: ['*']}]}",
            false,
        ),
    ] {
        let verdict = probe.decide(&allow(rule));
        assert_eq!(
            verdict == Verdict::Allowed,
            allowed,
            "rule {rule}: {verdict:?}"
        );
    }

    let mut from_web = Probe::new("GET", "/");
    from_web.peer.identity = Some(Identity::new("cluster.local", "shop", "web").unwrap());
    from_web.headers.insert("x-user", "alice".parse().unwrap());
    for (rule, allowed) in [
        (
            "{from: [{source: {principals: ['cluster.local/ns/shop/sa/web']}}]}",
            true,
        ),
        (
            "{from: [{source: {namespaces: [shop], notPrincipals: ['*/sa/web']}}]}",
            false,
        ),
        (
            "{when: [{key: source.namespace, values: [shop]}, {key: 'request.headers[x-user]', values: ['al*']}]}",
            true,
        ),
        (
            "{when: [{key: source.principal, values: ['*/sa/db']}]}",
            false,
        ),
    ] {
        let verdict = from_web.decide(&allow(rule));
        assert_eq!(
            verdict == Verdict::Allowed,
            allowed,
            "rule {rule}: {verdict:?}"
        );
    }
}

#[test]
fn a_service_policy_covers_only_requests_for_that_service() {
    let authorization =
        authorization(&["targetRefs: [{kind: Service, name: cart}]\naction: DENY\nrules: [{}]"]);
    let probe = Probe::new("GET", "/");
    let attributes = Attributes {
        peer: &probe.peer,
        method: "GET",
        authority: "web",
        path: "/",
        headers: &probe.headers,
        destination: DESTINATION,
        claims: None,
        sni: None,
    };
    assert_eq!(
        authorization.decide(&attributes, Some("web.shop.svc.cluster.local")),
        Verdict::Allowed
    );
    assert_eq!(authorization.decide(&attributes, None), Verdict::Allowed);
    assert!(matches!(
        probe.decide(&authorization),
        Verdict::Denied { .. }
    ));
}

#[test]
fn policies_for_others_are_skipped_and_bad_ones_all_reported() {
    let skipped = authorization(&[
        "selector: {matchLabels: {app: cart}}\nrules: [{to: [{operation: {methods: [GET]}}]}]",
        "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: ingress}]",
    ]);
    assert_eq!(
        Probe::new("POST", "/").decide(&skipped),
        Verdict::Allowed,
        "ztunnel's and another gateway's"
    );

    let mut errors = Vec::new();
    Authorization::compile(
        &config(&[&format!(
            "{TO_WAYPOINT}
action: CUSTOM
rules:
- from: [{{source: {{ipBlocks: [nowhere]}}}}]
  to: [{{operation: {{ports: ['http']}}}}]
  when:
  - {{key: request.colour, values: [red]}}
  - {{key: 'experimental.envoy.filters.network.a[b]', values: [a]}}
  - {{key: 'request.headers[bad name]', values: [a]}}"
        )]),
        &ClusterIndex::default(),
        &mut errors,
    );
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let expected = [
        "`provider.name` is empty",
        "`rules[0].from[0].source.ipBlocks`",
        "`rules[0].to[0].operation.ports: http`",
        "unknown key `request.colour`",
        "cannot check `experimental.envoy.filters.network.a[b]`",
        "`bad name` is not a valid header name",
    ];
    assert_eq!(messages.len(), expected.len(), "{messages:#?}");
    for (message, part) in messages.iter().zip(expected) {
        assert!(
            message.starts_with("AuthorizationPolicy shop/p0: "),
            "{message}"
        );
        assert!(message.contains(part), "expected `{part}` in: {message}");
    }
}

#[test]
fn a_custom_policy_needs_an_authorizer_of_the_mesh_config_for_a_known_service() {
    let mut config = config(&[]);
    config.mesh = serde_yaml_ng::from_str(
        "extensionProviders:
- {name: opa, envoyExtAuthzGrpc: {service: opa.opa.svc.cluster.local, port: 9191}}
- {name: elsewhere, envoyExtAuthzHttp: {service: authz.other.svc.cluster.local, port: 80}}
- {name: short, envoyExtAuthzHttp: {service: authz, port: 80}}
- {name: body, envoyExtAuthzHttp: {service: authz, port: 80, includeRequestBodyInCheck: {allowPartialMessage: true}}}
- {name: tracer, zipkin: {service: zipkin.istio-system.svc.cluster.local, port: 9411}}",
    )
    .expect("the test mesh config is YAML");
    let custom = |provider: &str| Named {
        namespace: "shop".into(),
        name: provider.into(),
        spec: serde_yaml_ng::from_str(&format!(
            "{TO_WAYPOINT}\naction: CUSTOM\nprovider: {{name: {provider}}}"
        ))
        .expect("the test policy is YAML"),
    };
    config.authorization_policies = ["missing", "opa", "elsewhere", "short", "body", "tracer"]
        .into_iter()
        .map(custom)
        .collect();
    let mut errors = Vec::new();
    Authorization::compile(&config, &ClusterIndex::default(), &mut errors);
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let expected = [
        "`provider.name: missing`: the mesh config (`extensionProviders`) has no provider",
        "`provider.name: opa`: `service: opa.opa.svc.cluster.local` is no service the mesh knows",
        "`service: authz.other.svc.cluster.local` is no service the mesh knows",
        "`service: authz`: write the service's full name",
        "`includeRequestBodyInCheck.maxRequestBytes` is 0",
        "`provider.name: tracer`: it is no external authorizer",
    ];
    assert_eq!(messages.len(), expected.len(), "{messages:#?}");
    for (message, part) in messages.iter().zip(expected) {
        assert!(message.contains(part), "expected `{part}` in: {message}");
    }
}
