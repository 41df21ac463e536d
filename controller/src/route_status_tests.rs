//! The status each HTTPRoute (GRPCRoute, TCPRoute, TLSRoute) gets: per parent Ambit judges,
//! Accepted and ResolvedRefs with Istio's reasons; parents of other controllers get no
//! entry.

use std::path::Path;

use ambit_api::manifests::Manifests;

use super::*;
use crate::mesh::build;

const CLUSTER: &str = "
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {clusterIP: 10.96.0.10, ports: [{name: http, port: 9080}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews-v1, namespace: shop}
spec: {clusterIP: 10.96.0.11, ports: [{name: http, port: 9080}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
";

fn statuses_of(routes: &str) -> BTreeMap<RouteKey, RouteStatus> {
    let mut manifests = Manifests::default();
    manifests.parse_documents(Path::new("all.yaml"), &format!("{CLUSTER}---\n{routes}"));
    let built = build(&manifests, "cluster.local", &Mesh::default());
    let errors: Vec<_> = built
        .diagnostics
        .iter()
        .filter(|d| d.severity == crate::validate::Severity::Error)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    statuses(&built.mesh)
}

fn outcomes(status: &RouteStatus) -> Vec<(String, Outcome, Outcome)> {
    status
        .parents
        .iter()
        .map(|p| {
            (
                p.parent.name.clone(),
                p.accepted.clone(),
                p.resolved_refs.clone(),
            )
        })
        .collect()
}

#[test]
fn each_parent_is_judged_and_backends_resolved() {
    let statuses = statuses_of(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: shop, generation: 3}
spec:
  parentRefs:
  - {group: '', kind: Service, name: reviews}
  - {group: '', kind: Service, name: ratings}
  - {name: edge, sectionName: http}
  - {name: edge, sectionName: https}
  - {name: someone-elses}
  rules: [{backendRefs: [{name: reviews-v1, port: 9080}]}]
",
    );
    let status = &statuses[&(
        RouteKind::HttpRoute,
        ("shop".to_owned(), "reviews".to_owned()),
    )];
    assert_eq!(status.generation, Some(3));
    let not_found = (
        "NoMatchingParent",
        "parent service: \"ratings\" not found".to_owned(),
    );
    let no_listener = (
        "NoMatchingParent",
        "no listener of the Gateway has this sectionName and port".to_owned(),
    );
    assert_eq!(
        outcomes(status),
        [
            ("reviews".to_owned(), Ok(()), Ok(())),
            ("ratings".to_owned(), Err(not_found), Ok(())),
            ("edge".to_owned(), Ok(()), Ok(())),
            ("edge".to_owned(), Err(no_listener), Ok(())),
        ],
        "a Gateway not in the model is another controller's: no entry"
    );
    let document = document((RouteKind::HttpRoute, "v1", "shop", "reviews"), status);
    let first = &document["status"]["parents"][0];
    assert_eq!(first["controllerName"], CONTROLLER_NAME);
    assert_eq!(first["parentRef"]["name"], "reviews");
    assert_eq!(first["conditions"][0]["type"], "Accepted");
    assert_eq!(first["conditions"][0]["status"], "True");
    assert_eq!(first["conditions"][0]["observedGeneration"], 3);
    assert_eq!(first["conditions"][1]["type"], "ResolvedRefs");
}

#[test]
fn a_missing_backend_and_a_foreign_namespace_are_reported() {
    let statuses = statuses_of(
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: elsewhere, namespace: other}
spec:
  parentRefs:
  - {name: edge, namespace: shop}
  - {group: '', kind: Service, name: reviews, namespace: shop}
  rules: [{backendRefs: [{name: reviews-v2, namespace: shop, port: 9080}]}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-other, namespace: shop}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: other}]
  to: [{group: '', kind: Service}]
",
    );
    let status = &statuses[&(
        RouteKind::HttpRoute,
        ("other".to_owned(), "elsewhere".to_owned()),
    )];
    let missing = Err((
        "BackendNotFound",
        "backend(reviews-v2.shop) not found".to_owned(),
    ));
    let outcomes = outcomes(status);
    assert_eq!(
        outcomes[0].1.as_ref().map_err(|e| e.0),
        Err("NotAllowedByListeners")
    );
    assert_eq!(
        outcomes[1].1.as_ref().map_err(|e| e.0),
        Err("UnsupportedValue")
    );
    assert!(
        outcomes.iter().all(|(_, _, resolved)| *resolved == missing),
        "{outcomes:?}"
    );
}

#[test]
fn a_grpc_route_gets_its_status_as_its_own_kind() {
    let statuses = statuses_of(
        "apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: calls, namespace: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: reviews}]
  rules: [{matches: [{method: {service: shop.Reviews}}], backendRefs: [{name: reviews-v1, port: 9080}]}]
",
    );
    let key = (
        RouteKind::GrpcRoute,
        ("shop".to_owned(), "calls".to_owned()),
    );
    assert_eq!(
        outcomes(&statuses[&key]),
        [("reviews".to_owned(), Ok(()), Ok(()))]
    );
    let document = document(
        (RouteKind::GrpcRoute, "v1", "shop", "calls"),
        &statuses[&key],
    );
    assert_eq!(document["kind"], "GRPCRoute");
}

#[test]
fn a_tcp_route_gets_its_status_in_v1alpha2_and_only_a_tcp_listener_takes_it() {
    let statuses = statuses_of(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: streams, namespace: shop}
spec:
  gatewayClassName: istio
  listeners: [{name: db, port: 5432, protocol: TCP}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: stream, namespace: shop, generation: 2}
spec:
  parentRefs:
  - {group: '', kind: Service, name: reviews}
  - {name: edge}
  - {name: streams}
  rules: [{backendRefs: [{name: reviews-v1, port: 9080}, {name: reviews-v9, port: 9080}]}]
",
    );
    let key = (
        RouteKind::TcpRoute,
        ("shop".to_owned(), "stream".to_owned()),
    );
    let missing = Err((
        "BackendNotFound",
        "backend(reviews-v9.shop) not found".to_owned(),
    ));
    let http_only = Err((
        "NotAllowedByListeners",
        "no listener of the Gateway takes a TCPRoute (HTTP and HTTPS take HTTPRoutes and GRPCRoutes, TLS takes TLSRoutes, TCP takes TCPRoutes)".to_owned(),
    ));
    assert_eq!(
        outcomes(&statuses[&key]),
        [
            ("reviews".to_owned(), Ok(()), missing.clone()),
            ("edge".to_owned(), http_only, missing.clone()),
            ("streams".to_owned(), Ok(()), missing),
        ]
    );
    let document = document(
        (RouteKind::TcpRoute, "v1alpha2", "shop", "stream"),
        &statuses[&key],
    );
    assert_eq!(document["apiVersion"], "gateway.networking.k8s.io/v1alpha2");
    assert_eq!(document["kind"], "TCPRoute");
    let accepted = &document["status"]["parents"][0]["conditions"][0];
    assert_eq!(accepted["observedGeneration"], 2);
}

#[test]
fn a_tls_route_gets_its_status_in_v1alpha2_and_only_a_tls_listener_takes_it() {
    let statuses = statuses_of(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: secure, namespace: shop}
spec:
  gatewayClassName: istio
  listeners: [{name: tls, port: 443, protocol: TLS, tls: {mode: Passthrough}}]
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: TLSRoute
metadata: {name: passed, namespace: shop}
spec:
  parentRefs: [{name: edge}, {name: secure}]
  hostnames: [secure.example.com]
  rules: [{backendRefs: [{name: reviews-v1, port: 9080}]}]
",
    );
    let key = (
        RouteKind::TlsRoute,
        ("shop".to_owned(), "passed".to_owned()),
    );
    let http_only = Err((
        "NotAllowedByListeners",
        "no listener of the Gateway takes a TLSRoute (HTTP and HTTPS take HTTPRoutes and GRPCRoutes, TLS takes TLSRoutes, TCP takes TCPRoutes)".to_owned(),
    ));
    assert_eq!(
        outcomes(&statuses[&key]),
        [
            ("edge".to_owned(), http_only, Ok(())),
            ("secure".to_owned(), Ok(()), Ok(())),
        ]
    );
    let document = document(
        (RouteKind::TlsRoute, "v1alpha2", "shop", "passed"),
        &statuses[&key],
    );
    assert_eq!(document["apiVersion"], "gateway.networking.k8s.io/v1alpha2");
    assert_eq!(document["kind"], "TLSRoute");
}
