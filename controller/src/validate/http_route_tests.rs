//! HTTPRoutes (and GRPCRoutes, TCPRoutes, TLSRoutes): Istio's ambient traffic-shifting route is
//! valid; parents Ambit does not serve are warned about; what the Gateway API forbids,
//! and filters the waypoint does not serve, reject the route by field path while its
//! valid siblings are kept.

use super::*;

/// The names of `accepted` objects, in order.
fn names<T: kube::Resource>(accepted: &[crate::model::Accepted<T>]) -> Vec<String> {
    accepted
        .iter()
        .map(|a| a.object.meta().name.clone().unwrap_or_default())
        .collect()
}

fn diagnostics(yaml: &str) -> (Vec<String>, Report) {
    validate_file("routes.yaml", yaml)
}

#[test]
fn the_ambient_traffic_shifting_route_is_valid() {
    let (lines, report) = diagnostics(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: default}
spec:
  parentRefs:
  - group: ''
    kind: Service
    name: reviews
    port: 9080
  rules:
  - matches: [{path: {type: PathPrefix, value: /reviews}, headers: [{name: end-user, value: jason}]}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    backendRefs:
    - {name: reviews-v2, port: 9080}
    timeouts: {request: 10s, backendRequest: 2s}
    retry: {attempts: 3, codes: [503]}
  - backendRefs:
    - {name: reviews-v1, port: 9080, weight: 90}
    - {name: reviews-v2, port: 9080, weight: 10}
",
    );
    assert_eq!(lines, Vec::<String>::new());
    assert_eq!(report.model.http_routes.len(), 1);
}

#[test]
fn parents_ambit_does_not_serve_are_warned_about_and_the_route_kept() {
    let (lines, report) = diagnostics(
        "apiVersion: gateway.networking.k8s.io/v1beta1
kind: HTTPRoute
metadata: {name: mixed, namespace: shop}
spec:
  parentRefs:
  - {group: networking.istio.io, kind: ServiceEntry, name: external}
  - {group: '', kind: Service, name: cart, namespace: other}
  - {name: ingress}
  - {group: '', kind: Service, name: cart}
  rules:
  - backendRefs: [{name: cart, port: 80}]
",
    );
    let expected = [
        "warning: shop/mixed (HTTPRoute) in routes.yaml document 1: spec.parentRefs[0]: Ambit serves routes attached to Services (by their waypoints) and Gateways (of class istio); a networking.istio.io/ServiceEntry parent is ignored",
        "warning: shop/mixed (HTTPRoute) in routes.yaml document 1: spec.parentRefs[1]: a route for a Service in another namespace (a consumer route) is not applied by waypoints yet",
    ];
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for (line, expected) in lines.iter().zip(expected) {
        assert!(line.starts_with(expected), "{line}\nexpected: {expected}");
    }
    assert_eq!(report.model.http_routes.len(), 1, "warnings keep the route");
}

#[test]
fn a_route_is_rejected_by_field_and_its_valid_sibling_kept() {
    let (lines, report) = diagnostics(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: cart}]
  rules:
  - matches:
    - {path: {type: RegularExpression, value: '/items/(['}, method: FETCH}
    - {path: {value: /b}}
    filters:
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /x}}}
    - {type: RequestRedirect, requestRedirect: {statusCode: 200}}
    - {type: ExtensionRef, extensionRef: {group: example.com, kind: Filter, name: f}}
    backendRefs:
    - {name: cart.shop, port: 80}
    - {kind: ServiceImport, name: cart}
    - {name: cart}
    timeouts: {request: 1s, backendRequest: 2s}
    retry: {codes: [200]}
  - filters: [{type: RequestMirror}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: fine, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: cart}]
  rules: [{backendRefs: [{name: cart, port: 80}]}]
",
    );
    let expected = [
        "spec.rules[0].matches[0].path.value: `/items/([` is not a valid regular expression",
        "spec.rules[0].matches[0].method: `FETCH` is not a method the Gateway API matches",
        "spec.rules[0].filters: `RequestRedirect` cannot be combined with `URLRewrite`",
        "spec.rules[0].filters[0].urlRewrite.path.type: ReplacePrefixMatch replaces the matched prefix: the rule must have exactly one match, of type PathPrefix",
        "spec.rules[0].filters[1].requestRedirect.statusCode: 200 is not a redirect status",
        "spec.rules[0].filters[2].type: not served by Ambit's waypoint",
        "spec.rules[0].backendRefs[0].name: `cart.shop` is not a Service name",
        "spec.rules[0].backendRefs[1].kind: Ambit routes to Services only",
        "spec.rules[0].backendRefs[2].port: required: a Service backend needs the Service port",
        "spec.rules[0].timeouts.backendRequest: is longer than `request`",
        "spec.rules[0].retry.codes[0]: 200 is not an HTTP error status",
        "spec.rules[1].filters[0].requestMirror: required: the filter's `type` names these settings",
    ];
    assert_errors_of(&lines, "shop/broken (HTTPRoute)", &expected);
    let kept = names(&report.model.http_routes);
    assert_eq!(kept, ["fine"]);
}

#[test]
fn a_grpc_route_is_checked_by_its_method_matches_and_as_the_http_route_it_serves_as() {
    let (lines, report) = diagnostics(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: cart, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: cart}]
  rules:
  - matches: [{method: {service: shop.Cart, method: Add}}]
    backendRefs: [{name: cart-v2, port: 9000}]
  - backendRefs: [{name: cart, port: 9000}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: GRPCRoute
metadata: {name: broken, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: cart}]
  rules:
  - matches:
    - {method: {type: RegularExpression, service: 'shop.(['}}
    - {method: {}}
    filters: [{type: URLRewrite, urlRewrite: {hostname: x}}]
    backendRefs: [{name: cart}]
",
    );
    let expected = [
        "spec.rules[0].matches[0].method.service: `shop.([` is not a valid regular expression",
        "spec.rules[0].matches[1].method: required: name a `service`, a `method`, or both",
        "spec.rules[0].filters[0].type: a GRPCRoute's filters edit headers or mirror calls",
        "spec.rules[0].backendRefs[0].port: required: a Service backend needs the Service port",
    ];
    assert_errors_of(&lines, "shop/broken (GRPCRoute)", &expected);
    let kept = names(&report.model.grpc_routes);
    assert_eq!(kept, ["cart"]);
}

#[test]
fn a_route_on_a_gateway_needs_a_reference_grant_to_reach_another_namespace() {
    let route = |name: &str, namespace: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  parentRefs: [{{name: edge, namespace: infra}}]
  rules: [{{backendRefs: [{{name: cart, namespace: shop, port: 80}}]}}]
"
        )
    };
    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-web, namespace: shop}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]
  to: [{group: '', kind: Service, name: cart}]
";
    let mesh_route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mesh, namespace: web}
spec:
  parentRefs: [{group: '', kind: Service, name: front}]
  rules: [{backendRefs: [{name: cart, namespace: shop, port: 80}]}]
";
    let (lines, report) = diagnostics(&format!(
        "{}---\n{}---\n{grant}---\n{mesh_route}",
        route("granted", "web"),
        route("ungranted", "intruder")
    ));
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].starts_with(
            "error: intruder/ungranted (HTTPRoute) in routes.yaml document 2: spec.rules[0].backendRefs[0].namespace: Service shop/cart is in another namespace, and no ReferenceGrant in shop lets HTTPRoutes of intruder send to it"
        ),
        "{}",
        lines[0]
    );
    let mut kept = names(&report.model.http_routes);
    kept.sort();
    assert_eq!(
        kept,
        ["granted", "mesh"],
        "a mesh route needs no grant (GAMMA)"
    );
}

#[test]
fn a_route_for_a_service_a_virtual_service_routes_is_warned_about() {
    let (lines, report) = diagnostics(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart-vs, namespace: shop}
spec:
  hosts: [cart]
  http: [{route: [{destination: {host: cart}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ingress-only, namespace: shop}
spec:
  hosts: [web.shop.svc.cluster.local]
  gateways: [public]
  http: [{route: [{destination: {host: web}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: both, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: cart}, {group: '', kind: Service, name: web}]
  rules: [{backendRefs: [{name: cart, port: 80}]}]
",
    );
    let warnings: Vec<&String> = lines.iter().filter(|l| l.contains("(HTTPRoute)")).collect();
    assert_eq!(
        warnings,
        [
            "warning: shop/both (HTTPRoute) in routes.yaml document 3: spec.parentRefs[0]: VirtualService shop/cart-vs also routes cart.shop.svc.cluster.local: its waypoint follows the VirtualService, not this route (Istio calls mixing them undefined) — keep one"
        ],
        "a VirtualService bound to a gateway only does not take the route's place: {lines:#?}"
    );
    assert_eq!(report.model.http_routes.len(), 1, "a warning keeps it");
}

#[test]
fn a_tcp_route_needs_service_backends_with_ports_and_its_siblings_stay() {
    let (lines, report) = diagnostics(
        "apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: db, port: 5432}]
  rules:
  - backendRefs:
    - {name: db-v1, port: 5432, weight: 90}
    - {name: db-v2, port: 5432, weight: 10}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: broken, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: db}]
  rules:
  - backendRefs:
    - {name: db-v1, port: 5432}
    - {name: db-v2}
    - {kind: ServiceImport, name: db}
    - {name: db-v3, port: 5432, weight: 2000000}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: refusing, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: db}]
  rules: [{}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: ruleless, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: db}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: web}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
",
    );
    let expected = [
        "error: shop/broken (TCPRoute) in routes.yaml document 2: spec.rules[0].backendRefs[1].port: required: a Service backend needs the Service port to send to: add `port`",
        "error: shop/broken (TCPRoute) in routes.yaml document 2: spec.rules[0].backendRefs[2].kind: Ambit routes to Services only",
        "error: shop/broken (TCPRoute) in routes.yaml document 2: spec.rules[0].backendRefs[3].weight: 2000000 is not a weight from 0 to 1000000",
        "error: shop/refusing (TCPRoute) in routes.yaml document 3: spec.rules[0].backendRefs: required: a rule without backends refuses its connections",
        "error: shop/ruleless (TCPRoute) in routes.yaml document 4: spec.rules: required: without a rule every connection is refused",
    ];
    assert_lines(&lines, &expected);
    assert_eq!(names(&report.model.tcp_routes), ["db"]);
    assert_eq!(names(&report.model.http_routes), ["web"]);
}

#[test]
fn a_tcp_route_s_later_rules_are_warned_about_and_a_gateway_parent_needs_grants() {
    let (lines, report) = diagnostics(
        "apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: db}, {name: edge, namespace: infra}]
  rules:
  - backendRefs: [{name: db, port: 5432}]
  - backendRefs: [{name: db-v2, namespace: data, port: 5432}]
",
    );
    let warning = "warning: shop/db (TCPRoute) in routes.yaml document 1";
    let expected = [
        format!(
            "{warning}: spec.rules[1]: a TCPRoute's rules have no matches, so spec.rules[0] takes every connection and this rule none"
        ),
        "error: shop/db (TCPRoute) in routes.yaml document 1: spec.rules[1].backendRefs[0].namespace: Service data/db-v2 is in another namespace, and no ReferenceGrant in data lets TCPRoutes of shop send to it".to_owned(),
    ];
    assert_lines(&lines, &expected);
    assert!(
        report.model.tcp_routes.is_empty(),
        "a Gateway parent still needs its grants"
    );
}

#[test]
fn a_tls_route_needs_host_names_and_backend_ports_and_its_siblings_stay() {
    let (lines, report) = diagnostics(
        "apiVersion: gateway.networking.k8s.io/v1alpha3
kind: TLSRoute
metadata: {name: secure, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: secure, port: 443}]
  hostnames: [secure.example.com, '*.example.com']
  rules:
  - backendRefs:
    - {name: secure-v1, port: 443, weight: 90}
    - {name: secure-v2, port: 443, weight: 10}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: broken, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: secure}]
  hostnames: [10.0.0.1, 'secure.example.com:443', '']
  rules: [{backendRefs: [{name: secure-v2}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: late, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: secure}]
  rules:
  - backendRefs: [{name: secure-v1, port: 443}]
  - backendRefs: [{name: secure-v2, port: 443}]
",
    );
    let broken = "error: shop/broken (TLSRoute) in routes.yaml document 2";
    let expected = [
        format!("{broken}: spec.hostnames[0]: `10.0.0.1` is not a host name"),
        format!("{broken}: spec.hostnames[1]: `secure.example.com:443` is not a host name"),
        format!("{broken}: spec.hostnames[2]: `` is not a host name"),
        format!(
            "{broken}: spec.rules[0].backendRefs[0].port: required: a Service backend needs the Service port"
        ),
        "warning: shop/late (TLSRoute) in routes.yaml document 3: spec.rules[1]: a TLSRoute's rules have no matches".to_owned(),
    ];
    assert_lines(&lines, &expected);
    assert_eq!(names(&report.model.tls_routes), ["secure", "late"]);
}
