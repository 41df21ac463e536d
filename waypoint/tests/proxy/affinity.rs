//! `consistentHash` through the proxy: a client keeps its pod, a generated cookie makes
//! it keep it.

use std::collections::BTreeSet;

use crate::support::*;

fn pods() -> [(&'static str, &'static str, Behaviour); 3] {
    [
        ("127.0.0.11", "a", Behaviour::Answer),
        ("127.0.0.12", "b", Behaviour::Answer),
        ("127.0.0.13", "c", Behaviour::Answer),
    ]
}

#[tokio::test]
async fn a_generated_cookie_keeps_the_client_on_its_pod() {
    let (port, backends) = start_backends(&pods()).await;
    let sticky = destination_rule(
        "app",
        "{host: app, trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: sticky, path: /, ttl: 60s}}}}}",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![],
        vec![sticky],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    let mut first_pods = BTreeSet::new();
    for _ in 0..12 {
        let first = client.get("app", "/").await;
        assert_eq!(first.status, 200);
        let set_cookie = first.header_values("set-cookie");
        assert_eq!(set_cookie.len(), 1, "one cookie is set: {set_cookie:?}");
        assert!(
            set_cookie[0].starts_with("sticky=\"")
                && set_cookie[0].ends_with("; Max-Age=60; Path=/; HttpOnly"),
            "unexpected Set-Cookie: {}",
            set_cookie[0]
        );
        let cookie = set_cookie[0].split(';').next().expect("name=value");
        let pod = first.backend().to_owned();
        for _ in 0..5 {
            let again = client.send("app", "/", &[("cookie", cookie)]).await;
            assert_eq!(again.backend(), pod, "with {cookie} the client changed pod");
            assert!(
                again.header_values("set-cookie").is_empty(),
                "a client with the cookie gets no new one"
            );
        }
        first_pods.insert(pod);
    }
    assert!(
        first_pods.len() > 1,
        "twelve new clients all landed on {first_pods:?}"
    );
}

#[tokio::test]
async fn a_query_parameter_keeps_its_pod_and_a_request_without_it_goes_anywhere() {
    let (port, backends) = start_backends(&pods()).await;
    let by_query = destination_rule(
        "app",
        "{host: app, trafficPolicy: {loadBalancer: {consistentHash: {httpQueryParameterName: user, ringHash: {minimumRingSize: 4096}}}}}",
    );
    let waypoint = Waypoint::start(&config(
        vec![service("app", port, &backends)],
        vec![],
        vec![by_query],
    ))
    .await;
    let client = TestClient::http1(&waypoint);

    let mut pods = BTreeSet::new();
    for user in 0..30 {
        let path = format!("/?user={user}");
        let pod = client.get("app", &path).await.backend().to_owned();
        for _ in 0..3 {
            assert_eq!(client.get("app", &path).await.backend(), pod, "{path}");
        }
        pods.insert(pod);
    }
    assert_eq!(pods.len(), 3, "30 users reached only {pods:?}");
    let (anyone, statuses) = tally(&client, "app", 60, 1).await;
    assert_eq!(statuses.get(&200), Some(&60));
    assert!(
        anyone.len() > 1,
        "requests without the parameter are placed at random: {anyone:?}"
    );
}
