//! CUSTOM AuthorizationPolicies: a real HTTP authorizer ([`Authorizer`]) or gRPC one
//! ([`GrpcAuthorizer`]) behind a service of the mesh config's `envoyExtAuthzHttp` or
//! `envoyExtAuthzGrpc` provider, asked by a real waypoint before it forwards to real
//! backends.

use std::net::IpAddr;

use ambit_waypoint::{Config, Endpoint, Service, ServicePort};

use crate::{
    authorizer::{ADDRESS, Authorizer},
    grpc_authorizer::GrpcAuthorizer,
    support::*,
};

const PROVIDER: &str = "ext-authz";

/// A waypoint for service `app` (one backend) whose CUSTOM policy sends requests for
/// `/admin*` to the provider `provider_yaml` (its `envoyExtAuthzHttp`) describes, the
/// authorizer being the one endpoint of service `ext-authz` on `authorizer_port`.
async fn guarded(provider_yaml: &str, authorizer_port: u16) -> (Waypoint, TestClient, Backend) {
    guarded_by("envoyExtAuthzHttp", provider_yaml, authorizer_port).await
}

/// As [`guarded`], with a provider of `kind` (`envoyExtAuthzHttp`, `envoyExtAuthzGrpc`).
async fn guarded_by(
    kind: &str,
    provider_yaml: &str,
    authorizer_port: u16,
) -> (Waypoint, TestClient, Backend) {
    let (port, mut backends) = start_backends(&[("127.0.0.11", "v1", Behaviour::Answer)]).await;
    let ip: IpAddr = ADDRESS.parse().expect("an IP");
    let authorizer = Service {
        namespace: NAMESPACE.into(),
        name: PROVIDER.into(),
        ports: vec![ServicePort {
            name: "http".into(),
            port: 8000,
            target_port: authorizer_port,
            app_protocol: String::new(),
        }],
        endpoints: vec![Endpoint::new(ip, [("app", PROVIDER)])],
    };
    let mut config: Config = config(
        vec![service("app", port, &backends), authorizer],
        vec![],
        vec![],
    );
    config.mesh = serde_yaml_ng::from_str(&format!(
        "extensionProviders: [{{name: {PROVIDER}, {kind}: {{service: {PROVIDER}.{NAMESPACE}.svc.cluster.local, port: 8000, {provider_yaml}}}}}]"
    ))
    .expect("the test's mesh config is YAML");
    config.authorization_policies = vec![named(
        "custom",
        &format!(
            "targetRefs: [{{kind: Gateway, group: gateway.networking.k8s.io, name: {WAYPOINT}}}]
action: CUSTOM
provider: {{name: {PROVIDER}}}
rules: [{{to: [{{operation: {{paths: ['/admin*']}}}}]}}]"
        ),
    )];
    let waypoint = Waypoint::start(&config).await;
    let client = TestClient::http1(&waypoint);
    (waypoint, client, backends.remove(0))
}

#[tokio::test]
async fn the_authorizer_decides_what_a_custom_policy_matches() {
    let authorizer = Authorizer::start().await;
    let (waypoint, client, backend) = guarded(
        "pathPrefix: /check, includeRequestHeadersInCheck: [x-ext-authz], \
         headersToUpstreamOnAllow: [x-ext-authz-check-result], \
         headersToDownstreamOnDeny: ['x-ext-authz-check-*']",
        authorizer.port,
    )
    .await;

    let public = client.get("app", "/public").await;
    assert_eq!(public.status, 200, "{public:?}");
    assert!(
        authorizer.checks().is_empty(),
        "a request no CUSTOM rule matches is not checked"
    );

    let allowed = client
        .send(
            "app",
            "/admin/users?page=2",
            &[
                ("x-ext-authz", "allow"),
                ("x-private", "not for the authorizer"),
            ],
        )
        .await;
    assert_eq!(allowed.status, 200, "{allowed:?}");
    let echo = allowed.echo();
    assert_eq!(
        echo["headers"]["x-ext-authz-check-result"][0], "allowed",
        "the authorizer's listed header reaches the backend: {echo}"
    );
    assert!(
        echo["headers"].get("x-ext-authz-secret").is_none(),
        "unlisted headers of the answer do not: {echo}"
    );
    let checks = authorizer.checks();
    assert_eq!(checks.len(), 1);
    let check = &checks[0];
    assert_eq!(
        (check.method.as_str(), check.path.as_str()),
        ("GET", "/check/admin/users?page=2")
    );
    assert_eq!(check.headers["host"], "app");
    assert_eq!(check.headers["x-ext-authz"], "allow");
    assert!(
        check.headers.get("x-private").is_none(),
        "only the listed request headers are sent: {:?}",
        check.headers
    );

    let denied = client.get("app", "/admin/users").await;
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(
        &denied.body[..],
        b"denied by ext_authz for not found header `x-ext-authz: allow` in the request"
    );
    assert_eq!(denied.header_values("x-ext-authz-check-result"), ["denied"]);
    assert!(denied.header_values("x-ext-authz-secret").is_empty());
    assert_eq!(
        backend.hits(),
        2,
        "the refused request never reaches the backend"
    );
    wait_for_requests(
        &waypoint,
        &[("response_code", "403"), ("response_flags", "UAEX")],
        1.0,
    )
    .await;
}

#[tokio::test]
async fn an_authorizer_that_fails_refuses_unless_the_provider_fails_open() {
    let authorizer = Authorizer::start().await;
    let (_waypoint, client, _backend) = guarded(
        "includeRequestHeadersInCheck: [x-ext-authz], statusOnError: '503'",
        authorizer.port,
    )
    .await;
    let crashed = client
        .send("app", "/admin", &[("x-ext-authz", "crash")])
        .await;
    assert_eq!(
        (crashed.status.as_u16(), &crashed.body[..]),
        (503, &b""[..]),
        "a 5xx from the authorizer is an error, answered with statusOnError"
    );

    let closed = closed_port(ADDRESS).await.expect("a closed port");
    let (_waypoint, client, _backend) = guarded("timeout: 1s", closed).await;
    assert_eq!(
        client.get("app", "/admin").await.status,
        403,
        "an unreachable authorizer refuses with 403 by default"
    );
    let (_waypoint, client, _backend) = guarded("failOpen: true", closed).await;
    let open = client.get("app", "/admin").await;
    assert_eq!(
        (open.status.as_u16(), open.backend()),
        (200, "v1"),
        "failOpen lets the request through: {open:?}"
    );
}

#[tokio::test]
async fn a_grpc_authorizer_is_told_of_the_request_and_its_answer_applied() {
    let authorizer = GrpcAuthorizer::start().await;
    let (waypoint, client, backend) = guarded_by(
        "envoyExtAuthzGrpc",
        "timeout: 5s, includeRequestBodyInCheck: {maxRequestBytes: 64}",
        authorizer.port,
    )
    .await;

    let allowed = client
        .send(
            "app",
            "/admin/users?page=2",
            &[
                ("x-ext-authz", "allow"),
                ("x-user", "mallory"),
                ("x-remove-me", "x"),
            ],
        )
        .await;
    let posted = post(&client, "/admin/upload", "a gRPC-checked body").await;
    assert_eq!(posted.status, 200, "{posted:?}");
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header_values("x-ext-authz-response"), ["ok"]);
    let echo = allowed.echo();
    let seen = &echo["headers"];
    assert_eq!(seen["x-ext-authz-check-result"][0], "allowed", "{echo}");
    assert_eq!(
        seen["x-user"],
        serde_json::json!(["mallory", "alice"]),
        "an `append` header is appended: {echo}"
    );
    assert!(seen.get("x-remove-me").is_none(), "{echo}");
    let checks = authorizer.checks();
    assert_eq!(checks.len(), 2);
    let posted = checks[1].attributes.clone().and_then(|a| a.request?.http);
    assert_eq!(
        posted.map(|http| (http.body, http.headers["x-envoy-auth-partial-body"].clone())),
        Some(("a gRPC-checked body".to_owned(), "false".to_owned()))
    );
    let attributes = checks[0].attributes.clone().expect("attributes");
    let http = attributes
        .request
        .and_then(|r| r.http)
        .expect("an HTTP request");
    assert_eq!(
        (http.method.as_str(), http.path.as_str(), http.host.as_str()),
        ("GET", "/admin/users?page=2", "app")
    );
    assert_eq!(
        (http.query.as_str(), http.protocol.as_str()),
        ("page=2", "HTTP/1.1")
    );
    assert_eq!(http.headers["x-user"], "mallory");
    let source = attributes.source.and_then(|s| s.address?.socket_address);
    assert_eq!(source.map(|a| a.address), Some("127.0.0.1".to_owned()));
    let destination = attributes
        .destination
        .and_then(|d| d.address?.socket_address);
    assert_eq!(
        destination.map(|a| a.port_value),
        Some(u32::from(waypoint.address.port()))
    );

    let denied = client.get("app", "/admin").await;
    assert_eq!(
        (denied.status.as_u16(), &denied.body[..]),
        (401, &b"denied by the gRPC authorizer"[..])
    );
    assert_eq!(denied.header_values("x-ext-authz-check-result"), ["denied"]);
    let crashed = client
        .send("app", "/admin", &[("x-ext-authz", "crash")])
        .await;
    assert_eq!(
        crashed.status, 403,
        "a failed call refuses with statusOnError's default"
    );
    assert_eq!(backend.hits(), 2);
}

/// A POST of `body` to `path` on `app`, asking the authorizer to allow it.
async fn post(client: &TestClient, path: &str, body: &'static str) -> Reply {
    let request = http::Request::post(format!("http://app{path}"))
        .header(http::header::HOST, "app")
        .header("x-ext-authz", "allow")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            body.as_bytes(),
        )))
        .expect("a valid request");
    client.request(request).await
}

#[tokio::test]
async fn the_start_of_the_body_goes_with_the_check_and_all_of_it_upstream() {
    const LONG: &str = "hello authorizer, this body is longer than the limit";
    let authorizer = Authorizer::start().await;
    let (_waypoint, client, _backend) = guarded(
        "includeRequestHeadersInCheck: [x-ext-authz], \
         includeRequestBodyInCheck: {maxRequestBytes: 16, allowPartialMessage: true}",
        authorizer.port,
    )
    .await;
    let reply = post(&client, "/admin", LONG).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.echo()["body"],
        LONG,
        "the backend gets the whole body"
    );
    let check = authorizer.checks().pop().expect("a check");
    assert_eq!(&check.body[..], &LONG.as_bytes()[..16]);
    assert_eq!(check.headers["x-envoy-auth-partial-body"], "true");
    assert_eq!(check.headers["content-length"], "16");

    let reply = post(&client, "/admin", "short").await;
    assert_eq!(reply.echo()["body"], "short");
    let check = authorizer.checks().pop().expect("a check");
    assert_eq!(&check.body[..], b"short");
    assert_eq!(check.headers["x-envoy-auth-partial-body"], "false");

    let (_waypoint, client, backend) = guarded(
        "includeRequestHeadersInCheck: [x-ext-authz], \
         includeRequestBodyInCheck: {maxRequestBytes: 16}",
        authorizer.port,
    )
    .await;
    let checks = authorizer.checks().len();
    let refused = post(&client, "/admin", LONG).await;
    assert_eq!(
        refused.status, 413,
        "a longer body without allowPartialMessage: {refused:?}"
    );
    assert_eq!(authorizer.checks().len(), checks, "and no check is made");
    assert_eq!(backend.hits(), 0);
}
