//! L7 policy: AuthorizationPolicy (ALLOW, DENY, `notPaths`, header conditions, a
//! Service target) and RequestAuthentication (JWTs signed by a test issuer), through a
//! real waypoint to real backends.

use ambit_waypoint::Config;
use http::Method;
use rustls::pki_types::CertificateDer;
use serde_json::json;

use crate::{issuer::Issuer, jwks_server::JwksServer, support::*};

const TO_WAYPOINT: &str =
    "targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]";

/// A waypoint for services `app` and `admin` (one backend each) under `policies`.
async fn guarded(policies: &[&str]) -> (Waypoint, TestClient, Vec<Backend>) {
    let (port, backends) = start_backends(&[
        ("127.0.0.11", "v1", Behaviour::Answer),
        ("127.0.0.12", "v2", Behaviour::Answer),
    ])
    .await;
    let mut config = config(
        vec![
            service("app", port, &backends[..1]),
            service("admin", port, &backends[1..]),
        ],
        vec![],
        vec![],
    );
    config.authorization_policies = policies
        .iter()
        .enumerate()
        .map(|(i, yaml)| named(&format!("policy-{i}"), yaml))
        .collect();
    let waypoint = Waypoint::start(&config).await;
    let client = TestClient::http1(&waypoint);
    (waypoint, client, backends)
}

fn assert_denied(reply: &Reply, what: &str) {
    assert_eq!(
        (reply.status.as_u16(), &reply.body[..]),
        (403, &b"RBAC: access denied"[..]),
        "{what}: expected Istio's 403, got {reply:?}"
    );
}

#[tokio::test]
async fn get_is_allowed_and_post_denied_on_a_path() {
    let (_waypoint, client, backends) = guarded(&[&format!(
        "{TO_WAYPOINT}\nrules: [{{to: [{{operation: {{methods: [GET], paths: ['/items*']}}}}]}}]"
    )])
    .await;

    let get = client.get("app", "/items/7?sort=asc").await;
    assert_eq!(get.status, 200, "GET /items/7 is allowed: {get:?}");
    assert_eq!(get.backend(), "v1");

    let post = client
        .send_method(Method::POST, "app", "/items/7", &[])
        .await;
    assert_denied(&post, "POST /items/7");
    let other = client.get("app", "/orders").await;
    assert_denied(&other, "GET /orders matches no ALLOW rule");
    assert_eq!(
        backends[0].hits(),
        1,
        "denied requests never reach the backend"
    );
}

#[tokio::test]
async fn not_paths_match_the_normalized_path_without_its_query() {
    let (_waypoint, client, _backends) = guarded(&[&format!(
        "{TO_WAYPOINT}\nrules: [{{to: [{{operation: {{notPaths: ['/private*']}}}}]}}]"
    )])
    .await;

    assert_eq!(client.get("app", "/public?next=/private").await.status, 200);
    assert_denied(&client.get("app", "/private/key").await, "GET /private/key");
    assert_denied(
        &client.get("app", "/private?x=1").await,
        "GET /private with a query",
    );
    assert_denied(
        &client.get("app", "/public/%2e%2e/private/key").await,
        "a dot segment does not hide /private",
    );
    let normalized = client.get("app", "/public/./a/../b").await;
    assert_eq!(
        normalized.echo()["path"],
        "/public/b",
        "the backend gets the normalized path"
    );
}

#[tokio::test]
async fn destination_ip_conditions_read_the_address_the_client_dialled() {
    let (waypoint, client, _backends) = guarded(&[&format!(
        "{TO_WAYPOINT}\naction: DENY\nrules: [{{when: [{{key: destination.ip, values: [127.0.0.0/24], notValues: [10.0.0.0/8]}}]}}]"
    )])
    .await;
    assert_eq!(waypoint.address.ip().to_string(), "127.0.0.1");
    assert_denied(
        &client.get("app", "/").await,
        "the DENY on the waypoint's own address",
    );
    let (_waypoint, client, backends) = guarded(&[&format!(
        "{TO_WAYPOINT}\naction: DENY\nrules: [{{when: [{{key: destination.ip, values: [10.96.0.0/12]}}]}}]"
    )])
    .await;
    assert_eq!(
        client.get("app", "/").await.status,
        200,
        "a DENY for another address lets it through"
    );
    assert_eq!(backends[0].hits(), 1);
}

#[tokio::test]
async fn a_deny_on_a_header_condition_wins_and_a_service_policy_stays_on_its_service() {
    let (_waypoint, client, backends) = guarded(&[
        &format!(
            "{TO_WAYPOINT}\naction: DENY\nrules: [{{when: [{{key: 'request.headers[x-debug]', values: ['true', 'on']}}]}}]"
        ),
        "targetRefs: [{kind: Service, name: admin}]\nrules: [{to: [{operation: {methods: [GET]}}]}]",
    ])
    .await;

    assert_eq!(client.get("app", "/").await.status, 200);
    assert_denied(
        &client.send("app", "/", &[("x-debug", "true")]).await,
        "the DENY on x-debug",
    );
    assert_eq!(
        client
            .send("app", "/", &[("x-debug", "false")])
            .await
            .status,
        200,
        "x-debug: false is not denied"
    );
    assert_eq!(
        client
            .send_method(Method::DELETE, "app", "/", &[])
            .await
            .status,
        200,
        "the ALLOW policy on service admin does not cover app"
    );
    assert_denied(
        &client.send_method(Method::DELETE, "admin", "/", &[]).await,
        "DELETE on admin, whose ALLOW policy takes only GET",
    );
    assert_eq!(
        client.get("admin.shop.svc.cluster.local", "/").await.status,
        200
    );
    assert_eq!(backends[1].hits(), 1);
}

/// A waypoint for `app` that accepts `issuer`'s tokens, verified with `keys` (`jwks:
/// <set>` or `jwksUri: <uri>`), and lets in only requests with a token of it
/// (`requestPrincipals`), and of them only group `dev` on `/dev`.
async fn with_jwt(issuer: &Issuer, keys: &str) -> (Waypoint, TestClient, Vec<Backend>) {
    with_jwt_trusting(issuer, keys, Vec::new()).await
}

/// [`with_jwt`], trusting `roots` for an `https` key set.
async fn with_jwt_trusting(
    issuer: &Issuer,
    keys: &str,
    roots: Vec<CertificateDer<'static>>,
) -> (Waypoint, TestClient, Vec<Backend>) {
    let (port, backends) = start_backends(&[("127.0.0.11", "v1", Behaviour::Answer)]).await;
    let config = Config {
        authorization_policies: vec![named(
            "require-jwt",
            &format!(
                "{TO_WAYPOINT}
rules:
- from: [{{source: {{requestPrincipals: ['{0}/*']}}}}]
  to: [{{operation: {{notPaths: ['/dev*']}}}}]
- from: [{{source: {{requestPrincipals: ['{0}/*']}}}}]
  when: [{{key: 'request.auth.claims[groups]', values: [dev]}}]",
                issuer.name
            ),
        )],
        request_authentications: vec![named(
            "jwt",
            &format!(
                "{TO_WAYPOINT}\njwtRules: [{{issuer: '{}', audiences: [app], {keys}}}]",
                issuer.name,
            ),
        )],
        ..config(vec![service("app", port, &backends)], vec![], vec![])
    };
    let waypoint = Waypoint::start_trusting(&config, roots).await;
    let client = TestClient::http1(&waypoint);
    (waypoint, client, backends)
}

#[tokio::test]
async fn a_valid_token_passes_a_missing_one_is_denied_and_a_bad_one_unauthenticated() {
    let issuer = Issuer::new("https://issuer.test");
    let (_waypoint, client, backends) = with_jwt(&issuer, &inline(&issuer)).await;
    let bearer = |token: &str| format!("Bearer {token}");

    let token = issuer.token("alice", &json!({}));
    let reply = client
        .send("app", "/", &[("authorization", &bearer(&token))])
        .await;
    assert_eq!(reply.status, 200, "a valid token is let in: {reply:?}");
    assert!(
        reply.echo()["headers"].get("authorization").is_none(),
        "the token is not forwarded: {}",
        reply.echo()
    );
    let dev = issuer.token("bob", &json!({"groups": ["dev"]}));
    assert_eq!(
        client
            .send("app", "/dev", &[("authorization", &bearer(&dev))])
            .await
            .status,
        200,
        "a claim condition lets group dev in"
    );
    assert_denied(
        &client
            .send("app", "/dev", &[("authorization", &bearer(&token))])
            .await,
        "alice is not in group dev",
    );

    assert_denied(
        &client.get("app", "/").await,
        "no token: policy requires one",
    );

    let expired = issuer.token("alice", &json!({"exp": 1_000_000_000}));
    let forged = Issuer::new(issuer.name).token("alice", &json!({}));
    let stranger = Issuer::new("https://other.test").token("alice", &json!({}));
    let wrong_audience = issuer.token("alice", &json!({"aud": "billing"}));
    for (token, body, what) in [
        (&expired, "Jwt is expired", "an expired token"),
        (
            &forged,
            "Jwt verification fails",
            "a token signed by another key",
        ),
        (
            &stranger,
            "Jwt issuer is not configured",
            "a token of another issuer",
        ),
        (
            &wrong_audience,
            "Audiences in Jwt are not allowed",
            "a token for another audience",
        ),
    ] {
        let reply = client
            .send("app", "/", &[("authorization", &bearer(token))])
            .await;
        assert_eq!(
            (
                reply.status.as_u16(),
                String::from_utf8_lossy(&reply.body).as_ref()
            ),
            (401, body),
            "{what} is refused with 401"
        );
    }
    assert_eq!(
        backends[0].hits(),
        2,
        "only the two allowed requests reach the backend"
    );
}

fn inline(issuer: &Issuer) -> String {
    format!("jwks: '{}'", issuer.jwks())
}

#[tokio::test]
async fn a_key_set_from_jwks_uri_is_fetched_once_and_an_unreachable_one_fails_tokens() {
    let issuer = Issuer::new("https://issuer.test");
    let server = JwksServer::start(&issuer).await;
    let (_waypoint, client, _backends) =
        with_jwt(&issuer, &format!("jwksUri: '{}'", server.uri)).await;
    let token = format!("Bearer {}", issuer.token("alice", &json!({})));
    for attempt in 0..3 {
        let reply = client.send("app", "/", &[("authorization", &token)]).await;
        assert_eq!(reply.status, 200, "request {attempt}: {reply:?}");
    }
    assert_eq!(server.hits(), 1, "the key set is fetched once, then cached");
    let forged = format!(
        "Bearer {}",
        Issuer::new(issuer.name).token("alice", &json!({}))
    );
    let reply = client.send("app", "/", &[("authorization", &forged)]).await;
    assert_eq!(reply.status, 401, "a forged token still fails: {reply:?}");

    let closed = closed_port("127.0.0.13").await.expect("a free port");
    let (_waypoint, client, backends) = with_jwt(
        &issuer,
        &format!("jwksUri: 'http://127.0.0.13:{closed}/jwks', timeout: 2s"),
    )
    .await;
    let reply = client.send("app", "/", &[("authorization", &token)]).await;
    assert_eq!(
        (reply.status.as_u16(), &reply.body[..]),
        (401, &b"Jwt verification fails"[..]),
        "without its key set no token verifies: {reply:?}"
    );
    assert_eq!(backends[0].hits(), 0);
}

#[tokio::test]
async fn a_claim_copied_into_a_header_routes_the_request_and_cannot_be_forged() {
    let issuer = Issuer::new("https://issuer.test");
    let (port, backends) = start_backends(&[
        ("127.0.0.11", "v1", Behaviour::Answer),
        ("127.0.0.12", "v2", Behaviour::Answer),
    ])
    .await;
    let by_group = virtual_service(
        "app",
        "
hosts: [app]
http:
- match: [{headers: {x-jwt-group: {exact: dev}}}]
  route: [{destination: {host: app, subset: v2}}]
- route: [{destination: {host: app, subset: v1}}]
",
    );
    let config = Config {
        request_authentications: vec![named(
            "jwt",
            &format!(
                "{TO_WAYPOINT}\njwtRules: [{{issuer: '{}', {}, outputClaimToHeaders: [{{header: x-jwt-group, claim: team.group}}]}}]",
                issuer.name,
                inline(&issuer),
            ),
        )],
        ..config(
            vec![service("app", port, &backends)],
            vec![by_group],
            vec![app_subsets()],
        )
    };
    let waypoint = Waypoint::start(&config).await;
    let client = TestClient::http1(&waypoint);
    let bearer = |group: &str| {
        let token = issuer.token("alice", &json!({"team": {"group": group}}));
        format!("Bearer {token}")
    };

    let dev = client
        .send("app", "/", &[("authorization", &bearer("dev"))])
        .await;
    assert_eq!(dev.backend(), "v2", "the dev claim routes to v2: {dev:?}");
    let ops = client
        .send("app", "/", &[("authorization", &bearer("ops"))])
        .await;
    assert_eq!(ops.backend(), "v1", "another group does not: {ops:?}");
    let forged = client.send("app", "/", &[("x-jwt-group", "dev")]).await;
    assert_eq!(
        forged.backend(),
        "v1",
        "a client's own claim header is dropped before routing: {forged:?}"
    );
}

#[tokio::test]
async fn a_key_set_over_https_is_fetched_from_a_server_with_a_trusted_certificate_only() {
    let issuer = Issuer::new("https://issuer.test");
    let (server, root) = JwksServer::start_tls(&issuer).await;
    let keys = format!("jwksUri: '{}', timeout: 2s", server.uri);
    let token = format!("Bearer {}", issuer.token("alice", &json!({})));

    let (_waypoint, client, backends) = with_jwt_trusting(&issuer, &keys, vec![root]).await;
    for attempt in 0..2 {
        let reply = client.send("app", "/", &[("authorization", &token)]).await;
        assert_eq!(reply.status, 200, "request {attempt}: {reply:?}");
    }
    assert_eq!(server.hits(), 1, "fetched once over TLS, then cached");
    assert_eq!(backends[0].hits(), 2);

    let (_waypoint, client, backends) = with_jwt(&issuer, &keys).await;
    let reply = client.send("app", "/", &[("authorization", &token)]).await;
    assert_eq!(
        (reply.status.as_u16(), &reply.body[..]),
        (401, &b"Jwt verification fails"[..]),
        "a server whose certificate no trusted root signed gives no keys: {reply:?}"
    );
    assert_eq!(
        server.hits(),
        1,
        "nothing was asked of the untrusted server"
    );
    assert_eq!(backends[0].hits(), 0);
}
