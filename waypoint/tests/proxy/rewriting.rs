//! What the backend and the client see: rewrites, redirects, header edits, direct
//! responses, CORS.

use serde_json::json;

use crate::support::*;

async fn one_backend() -> (u16, Vec<Backend>) {
    start_backends(&[("127.0.0.11", "v1", Behaviour::Answer)]).await
}

#[tokio::test]
async fn a_prefix_rewrite_replaces_only_the_matched_prefix() {
    let (port, backends) = one_backend().await;
    let vs = virtual_service(
        "app",
        "
hosts: [app]
http:
- match:
  - uri: {prefix: /old}
  rewrite: {uri: /new, authority: app-internal}
  route:
  - destination: {host: app}
- match:
  - uri: {exact: /login}
  rewrite: {uri: /auth/login}
  route:
  - destination: {host: app}
- route:
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

    let echo = client.get("app", "/old/items/7?page=2").await.echo();
    assert_eq!(
        echo["path"], "/new/items/7?page=2",
        "the prefix is replaced, the rest and the query kept"
    );
    assert_eq!(
        echo["headers"]["host"],
        json!(["app-internal"]),
        "the authority is rewritten"
    );

    let echo = client.get("app", "/login").await.echo();
    assert_eq!(echo["path"], "/auth/login");

    let echo = client.get("app", "/untouched").await.echo();
    assert_eq!(echo["path"], "/untouched");
    assert_eq!(
        echo["headers"]["host"],
        json!(["app"]),
        "the Host header is preserved"
    );
}

#[tokio::test]
async fn a_redirect_answers_301_with_the_new_location() {
    let (port, backends) = one_backend().await;
    let vs = virtual_service(
        "app",
        "
hosts: [app]
http:
- match:
  - uri: {exact: /v1/getProductRatings}
  redirect: {uri: /v1/bookRatings, authority: newratings.default.svc.cluster.local}
- match:
  - uri: {prefix: /moved}
  redirect: {uri: /here, redirectCode: 308}
",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs],
        vec![],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    let reply = client.get("app", "/v1/getProductRatings?id=3").await;
    assert_eq!(reply.status, 301, "{reply:?}");
    assert_eq!(
        reply.header_values("location"),
        ["http://newratings.default.svc.cluster.local/v1/bookRatings?id=3"]
    );
    let reply = client.get("app:80", "/moved/x").await;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header_values("location"), ["http://app:80/here"]);
    assert_eq!(backends[0].hits(), 0, "redirects never reach the backend");
}

#[tokio::test]
async fn request_and_response_headers_are_set_added_and_removed() {
    let (port, backends) = one_backend().await;
    let vs = virtual_service(
        "app",
        "
hosts: [app]
http:
- headers:
    request:
      set: {x-env: prod}
      add: {x-trace: waypoint}
      remove: [x-debug]
    response:
      set: {x-app-version: '2'}
      add: {x-served-by: waypoint}
      remove: [x-remove-me]
  route:
  - destination: {host: app}
    headers:
      request:
        set: {x-env: destination, x-subset: all}
      response:
        add: {x-destination: app}
",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs],
        vec![],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    let reply = client
        .send(
            "app",
            "/",
            &[("x-env", "dev"), ("x-trace", "client"), ("x-debug", "1")],
        )
        .await;
    let seen = &reply.echo()["headers"];
    assert_eq!(
        seen["x-env"],
        json!(["prod"]),
        "the route's set wins over the destination's"
    );
    assert_eq!(
        seen["x-trace"],
        json!(["client", "waypoint"]),
        "add appends"
    );
    assert_eq!(
        seen["x-subset"],
        json!(["all"]),
        "destination-level headers apply"
    );
    assert_eq!(seen.get("x-debug"), None, "removed before forwarding");

    assert_eq!(reply.header_values("x-app-version"), ["2"]);
    assert_eq!(reply.header_values("x-served-by"), ["waypoint"]);
    assert_eq!(reply.header_values("x-destination"), ["app"]);
    assert!(
        reply.header_values("x-remove-me").is_empty(),
        "removed from the response"
    );
}

#[tokio::test]
async fn a_direct_response_is_answered_by_the_waypoint() {
    let (port, backends) = one_backend().await;
    let vs = virtual_service(
        "app",
        "
hosts: [app]
http:
- match: [{uri: {prefix: /bytes}}]
  directResponse: {status: 200, body: {bytes: AAH/dGVh}}
- directResponse: {status: 418, body: {string: teapot}}
",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![vs],
        vec![],
    ))
    .await;
    let reply = TestClient::http1(&waypoint).get("app", "/").await;
    assert_eq!(
        (reply.status.as_u16(), &reply.body[..]),
        (418, &b"teapot"[..])
    );
    let reply = TestClient::http1(&waypoint).get("app", "/bytes").await;
    assert_eq!(
        (reply.status.as_u16(), &reply.body[..]),
        (200, &b"\x00\x01\xfftea"[..]),
        "`bytes` is base64"
    );
    assert_eq!(backends[0].hits(), 0);
}

#[tokio::test]
async fn hop_by_hop_headers_stay_on_their_hop_but_te_trailers_goes_through() {
    let (port, backends) = one_backend().await;
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![],
        vec![],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    let reply = client
        .send(
            "app",
            "/",
            &[
                ("connection", "x-hop"),
                ("x-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
            ],
        )
        .await;
    let seen = &reply.echo()["headers"];
    assert_eq!(
        seen.get("x-hop"),
        None,
        "a header named in Connection is hop-by-hop"
    );
    assert_eq!(seen.get("keep-alive"), None);
    assert_eq!(
        seen["te"],
        json!(["trailers"]),
        "gRPC needs te: trailers end to end"
    );
}

#[tokio::test]
async fn cors_preflights_are_answered_and_allowed_origins_get_the_headers() {
    let (port, backends) = one_backend().await;
    let vs = virtual_service(
        "app",
        "
hosts: [app]
http:
- corsPolicy:
    allowOrigins: [{exact: 'https://shop.example'}]
    allowMethods: [GET, PUT]
    allowHeaders: [x-user]
    exposeHeaders: [x-backend]
    maxAge: 10m
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
    let preflight = |origin: &'static str| {
        let client = client.clone();
        async move {
            client
                .send_method(
                    http::Method::OPTIONS,
                    "app",
                    "/items",
                    &[("origin", origin), ("access-control-request-method", "PUT")],
                )
                .await
        }
    };

    let answered = preflight("https://shop.example").await;
    assert_eq!(answered.status, 200, "{answered:?}");
    assert_eq!(
        answered.backend(),
        "-",
        "the waypoint answers the preflight itself"
    );
    assert_eq!(
        answered.header_values("access-control-allow-origin"),
        ["https://shop.example"]
    );
    assert_eq!(
        answered.header_values("access-control-allow-methods"),
        ["GET,PUT"]
    );
    assert_eq!(
        answered.header_values("access-control-allow-headers"),
        ["x-user"]
    );
    assert_eq!(answered.header_values("access-control-max-age"), ["600"]);
    assert_eq!(backends[0].hits(), 0);

    let forwarded = preflight("https://evil.example").await;
    assert_eq!(
        forwarded.backend(),
        "v1",
        "an unmatched preflight is forwarded"
    );
    assert!(
        forwarded
            .header_values("access-control-allow-origin")
            .is_empty()
    );

    let get = client
        .send("app", "/items", &[("origin", "https://shop.example")])
        .await;
    assert_eq!(get.backend(), "v1");
    assert_eq!(
        get.header_values("access-control-allow-origin"),
        ["https://shop.example"]
    );
    assert_eq!(
        get.header_values("access-control-expose-headers"),
        ["x-backend"]
    );
}
