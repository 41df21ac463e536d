//! The Gateway API's HTTPRoutes attached to a Service: ranked matches across rules and
//! routes, whole-path-element prefixes, weighted backend Services, filters, and a
//! VirtualService for the same Service taking precedence; a GRPCRoute, as the HTTPRoute
//! it amounts to.

use ambit_api::gateway_api::{GrpcRouteSpec, HttpRouteSpec};
use ambit_waypoint::{Config, Named, Service};
use http::Method;
use serde_json::json;

use crate::support::*;

const V1: &str = "127.0.0.11";
const V2: &str = "127.0.0.12";
const V3: &str = "127.0.0.13";

/// Service `app` over all three backends, and `app-v1`, `app-v2`, `app-v3` over one
/// each (the Gateway API splits traffic between Services, not subsets).
async fn app_and_versions() -> (Vec<Service>, Vec<Backend>) {
    let (port, backends) = start_backends(&[
        (V1, "v1", Behaviour::Answer),
        (V2, "v2", Behaviour::Answer),
        (V3, "v3", Behaviour::Answer),
    ])
    .await;
    let mut services = vec![service("app", port, &backends)];
    for backend in &backends {
        let name = format!("app-{}", backend.name);
        services.push(service(&name, port, std::slice::from_ref(backend)));
    }
    (services, backends)
}

fn routes_config(services: Vec<Service>, http_routes: Vec<Named<HttpRouteSpec>>) -> Config {
    Config {
        http_routes,
        ..config(services, vec![], vec![])
    }
}

#[tokio::test]
async fn matches_are_ranked_across_rules_and_routes_not_taken_in_order() {
    let (services, _backends) = app_and_versions().await;
    // Listed least specific first: in order, the catch-all would take everything.
    let everyone = named(
        "a-everyone",
        "
parentRefs: [{group: '', kind: Service, name: app}]
rules:
- backendRefs: [{name: app-v1, port: 80}]
- matches: [{headers: [{name: End-User, value: jason}]}]
  backendRefs: [{name: app-v2, port: 80}]
",
    );
    let api = named(
        "b-api",
        "
parentRefs: [{group: '', kind: Service, name: app}]
rules:
- matches: [{path: {type: PathPrefix, value: /api/}}]
  backendRefs: [{name: app-v3, port: 80}]
- matches: [{path: {type: Exact, value: /login}, method: POST}]
  backendRefs: [{name: app-v2, port: 80}]
",
    );
    let waypoint = Waypoint::start(&routes_config(services, vec![everyone, api])).await;
    let client = TestClient::http1(&waypoint);

    for (path, headers, want) in [
        ("/", &[][..], "v1"),
        ("/api", &[], "v3"),
        ("/api/", &[], "v3"),
        ("/api/items/7", &[], "v3"),
        ("/apix", &[], "v1"),
        ("/", &[("end-user", "jason")][..], "v2"),
        ("/api/items", &[("end-user", "jason")], "v3"),
    ] {
        let reply = client.send("app", path, headers).await;
        assert_eq!(reply.backend(), want, "{path} {headers:?}: {reply:?}");
    }
    let login = client.send_method(Method::POST, "app", "/login", &[]).await;
    assert_eq!(
        login.backend(),
        "v2",
        "an exact path ranks first: {login:?}"
    );
    let get_login = client.get("app", "/login").await;
    assert_eq!(get_login.backend(), "v1", "POST only: {get_login:?}");
}

#[tokio::test]
async fn backend_weights_split_requests_as_shares_of_their_sum() {
    let (services, backends) = app_and_versions().await;
    let split = named(
        "split",
        "
parentRefs: [{group: '', kind: Service, name: app}]
rules:
- backendRefs:
  - {name: app-v1, port: 80, weight: 1}
  - {name: app-v2, port: 80, weight: 3}
  - {name: app-v3, port: 80, weight: 0}
",
    );
    let waypoint = Waypoint::start(&routes_config(services, vec![split])).await;
    let client = TestClient::http1(&waypoint);

    let (answered, statuses) = tally(&client, "app", 800, 8).await;
    assert_eq!(statuses.get(&200), Some(&800), "{statuses:?}");
    let v2 = answered.get("v2").copied().unwrap_or(0);
    assert!(
        (540..=660).contains(&v2),
        "expected 600 ± 60 of 800 on v2 (weight 3 of 4): {answered:?}"
    );
    assert_eq!(backends[2].hits(), 0, "weight 0 takes nothing");
}

#[tokio::test]
async fn filters_rewrite_redirect_and_edit_headers() {
    let (services, backends) = app_and_versions().await;
    let filters = named(
        "filters",
        "
parentRefs: [{group: '', kind: Service, name: app}]
rules:
- matches: [{path: {value: /strip}}]
  filters:
  - type: URLRewrite
    urlRewrite: {hostname: app-internal, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
  - type: RequestHeaderModifier
    requestHeaderModifier:
      set: [{name: X-Set, value: one}]
      add: [{name: X-Added, value: two}]
      remove: [x-secret]
  - type: ResponseHeaderModifier
    responseHeaderModifier: {add: [{name: X-Via-Route, value: filters}]}
  backendRefs: [{name: app-v1, port: 80}]
- matches: [{path: {value: /old}}]
  filters:
  - type: RequestRedirect
    requestRedirect: {scheme: https, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
- matches: [{path: {type: Exact, value: /full}}]
  filters:
  - type: URLRewrite
    urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /elsewhere}}
  backendRefs: [{name: app-v1, port: 80}]
- matches: [{path: {value: /nowhere}}]
",
    );
    let waypoint = Waypoint::start(&routes_config(services, vec![filters])).await;
    let client = TestClient::http1(&waypoint);

    let reply = client
        .send(
            "app",
            "/strip/three?x=1",
            &[("x-secret", "s"), ("x-added", "zero")],
        )
        .await;
    assert_eq!(reply.header_values("x-via-route"), ["filters"], "{reply:?}");
    let echo = reply.echo();
    assert_eq!(
        echo["path"], "/three?x=1",
        "the prefix and its `/` replaced by `/`"
    );
    assert_eq!(echo["headers"]["host"], json!(["app-internal"]));
    assert_eq!(echo["headers"]["x-set"], json!(["one"]));
    assert_eq!(echo["headers"]["x-added"], json!(["zero", "two"]));
    assert!(echo["headers"].get("x-secret").is_none(), "{echo}");
    assert_eq!(client.get("app", "/strip").await.echo()["path"], "/");

    let redirect = client.get("app", "/old/x?y=2").await;
    assert_eq!(
        redirect.status, 302,
        "the Gateway API's default: {redirect:?}"
    );
    assert_eq!(
        redirect.header_values("location"),
        ["https://app/new/x?y=2"]
    );

    assert_eq!(
        client.get("app", "/full").await.echo()["path"],
        "/elsewhere"
    );
    let nowhere = client.get("app", "/nowhere").await;
    assert_eq!(nowhere.status, 500, "a rule without backends: {nowhere:?}");
    assert_eq!(
        client.get("app", "/other").await.status,
        404,
        "no rule matches"
    );
    assert_eq!(
        backends[0].hits(),
        3,
        "the redirect, the 500 and the 404 reach no backend"
    );
}

#[tokio::test]
async fn a_virtual_service_for_the_same_service_takes_its_requests() {
    let (services, _backends) = app_and_versions().await;
    let route = named(
        "to-v3",
        "
parentRefs: [{group: '', kind: Service, name: app}]
rules: [{backendRefs: [{name: app-v3, port: 80}]}]
",
    );
    let consumer = Named {
        namespace: "elsewhere".into(),
        ..named::<HttpRouteSpec>(
            "consumer",
            "
parentRefs: [{group: '', kind: Service, name: app-v1, namespace: shop}]
rules: [{backendRefs: [{name: app-v2, namespace: shop, port: 80}]}]
",
        )
    };
    let vs = virtual_service(
        "app-v2",
        "{hosts: [app-v2], http: [{route: [{destination: {host: app-v1}}]}]}",
    );
    let waypoint = Waypoint::start(&Config {
        http_routes: vec![route, consumer],
        ..config(services.clone(), vec![vs], vec![])
    })
    .await;
    let client = TestClient::http1(&waypoint);

    assert_eq!(client.get("app", "/").await.backend(), "v3");
    assert_eq!(
        client.get("app-v1", "/").await.backend(),
        "v1",
        "a route from another namespace (a consumer route) does not apply"
    );
    let vs_over_route = named::<HttpRouteSpec>(
        "app-v2",
        "
parentRefs: [{group: '', kind: Service, name: app-v2}]
rules: [{backendRefs: [{name: app-v3, port: 80}]}]
",
    );
    let waypoint = Waypoint::start(&Config {
        http_routes: vec![vs_over_route],
        ..config(
            services,
            vec![virtual_service(
                "app-v2",
                "{hosts: [app-v2], http: [{route: [{destination: {host: app-v1}}]}]}",
            )],
            vec![],
        )
    })
    .await;
    let client = TestClient::http1(&waypoint);
    assert_eq!(client.get("app-v2", "/").await.backend(), "v1");
}

#[tokio::test]
async fn a_grpc_route_routes_calls_by_service_and_method() {
    let (services, _backends) = app_and_versions().await;
    let grpc = named::<GrpcRouteSpec>(
        "calls",
        "
parentRefs: [{group: '', kind: Service, name: app}]
rules:
- matches: [{method: {type: RegularExpression, method: 'Get.*'}}]
  backendRefs: [{name: app-v1, port: 80}]
- matches: [{method: {service: shop.Cart}}]
  backendRefs: [{name: app-v3, port: 80}]
- matches: [{method: {service: shop.Cart, method: Add}}]
  backendRefs: [{name: app-v2, port: 80}]
",
    );
    let route = Named {
        namespace: grpc.namespace,
        name: grpc.name,
        spec: grpc.spec.to_http_route(),
    };
    let waypoint = Waypoint::start(&routes_config(services, vec![route])).await;
    let client = TestClient::http1(&waypoint);

    for (path, want) in [
        ("/shop.Cart/Add", "v2"),
        ("/shop.Cart/Remove", "v3"),
        ("/shop.Catalog/GetItem", "v1"),
    ] {
        let reply = client.send_method(Method::POST, "app", path, &[]).await;
        assert_eq!(reply.backend(), want, "{path}: {reply:?}");
    }
    let other = client
        .send_method(Method::POST, "app", "/shop.Catalog/Put", &[])
        .await;
    assert_eq!(other.status, 404, "no rule takes it: {other:?}");
}

#[tokio::test]
async fn a_cors_filter_answers_preflights_of_the_origins_it_allows() {
    let (services, _backends) = app_and_versions().await;
    let cors = named(
        "cors",
        "
parentRefs: [{group: '', kind: Service, name: app}]
rules:
- filters:
  - type: CORS
    cors:
      allowOrigins: ['https://*.shop.example']
      allowMethods: [GET, PUT]
      maxAge: 60
  backendRefs: [{name: app-v1, port: 80}]
",
    );
    let waypoint = Waypoint::start(&routes_config(services, vec![cors])).await;
    let client = TestClient::http1(&waypoint);
    let preflight = |origin: &'static str| {
        let client = client.clone();
        async move {
            let headers = [("origin", origin), ("access-control-request-method", "PUT")];
            client
                .send_method(Method::OPTIONS, "app", "/items", &headers)
                .await
        }
    };

    let answered = preflight("https://eu.shop.example").await;
    assert_eq!(
        (answered.status.as_u16(), answered.backend()),
        (200, "-"),
        "{answered:?}"
    );
    assert_eq!(
        answered.header_values("access-control-allow-origin"),
        ["https://eu.shop.example"]
    );
    assert_eq!(answered.header_values("access-control-max-age"), ["60"]);
    let other = preflight("https://shop.example.evil").await;
    assert_eq!(other.backend(), "v1", "not an allowed origin: forwarded");
    assert!(
        other
            .header_values("access-control-allow-origin")
            .is_empty()
    );
}
