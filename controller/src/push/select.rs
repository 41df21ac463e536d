//! What each subscriber receives. This is the one place that decides it.

use std::collections::BTreeMap;

use ambit_api::{
    config::{Resource, SubscriberKind},
    istio::GatewaySpec,
};

use super::{convert, selections::Selections};
use crate::mesh::{
    Key, L7Enforcers, Mesh, Policy, Route, RouteKind, Service, TlsCredential, Workload,
    waypoints::Waypoint,
};

/// Who is subscribed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscriber {
    pub node: String,
    pub kind: SubscriberKind,
}

/// The resources `subscriber` needs, by key:
/// - **AGENT** on node N: the workloads on N (with their enrolment decision) — nothing
///   about other nodes;
/// - **ZTUNNEL** on node N: the workloads on N; for every enrolled workload on any node
///   with an identity and an address, a `peer` (its IPs → its SPIFFE identity, to pick
///   HBONE and check the peer); every service (VIPs, ports, endpoints, waypoint); every
///   AuthorizationPolicy and PeerAuthentication in their L4 form (ztunnel matches
///   selectors against its own workloads' labels);
/// - **WAYPOINT** on node N: every service, every peer (with its labels, for subsets,
///   and its locality; a workload outside the mesh too, without an identity), every
///   accepted route (VirtualService, DestinationRule) and every policy a waypoint
///   enforces (AuthorizationPolicy with `targetRefs`, RequestAuthentication) — not yet
///   narrowed to the waypoint's namespace — and the workloads on N (the waypoint finds
///   its own pod's locality among them);
/// - **GATEWAY** (an ingress gateway) on node N: what a waypoint gets, every Istio
///   Gateway, the workloads on N (the gateway finds its own pod's labels among them) and
///   the TLS credentials named by the Gateways that select a pod on N, from that pod's
///   namespace (as Istio reads `credentialName`) — private keys go to no other node;
/// - an unspecified kind: nothing.
///
/// [`shared_resource`], [`receives_node_workloads`] and [`gateway_credentials`] state it
/// entry by entry; [`Selections`] computes it once per model version for every
/// subscriber.
#[must_use]
pub fn select(mesh: &Mesh, subscriber: &Subscriber) -> BTreeMap<String, Resource> {
    let selections = Selections::default();
    let parts = [
        selections.shared(mesh, subscriber.kind),
        selections.for_node(mesh, subscriber),
    ];
    parts
        .iter()
        .flat_map(|part| part.resources())
        .map(|resource| (resource.key.clone(), resource.clone()))
        .collect()
}

/// One entry of the model, as the selection rule reads it.
#[derive(Debug, Clone, Copy)]
pub enum Entry<'a> {
    Workload(&'a Workload),
    /// A service, and the waypoints it may use.
    Service(&'a Service, &'a BTreeMap<Key, Waypoint>),
    Route(&'a Route),
    Policy(&'a Policy),
}

/// What a subscriber of `kind` receives of `entry`, whatever its node (see [`select`]).
#[must_use]
pub fn shared_resource(kind: SubscriberKind, entry: Entry<'_>) -> Option<Resource> {
    use SubscriberKind::{Gateway, Waypoint, Ztunnel};
    match (kind, entry) {
        (Ztunnel, Entry::Workload(workload)) => convert::peer(workload),
        (Waypoint | Gateway, Entry::Workload(workload)) => convert::endpoint_peer(workload),
        (Ztunnel | Waypoint | Gateway, Entry::Service(service, waypoints)) => {
            Some(convert::service(service, waypoints))
        }
        // A delegate reaches them merged into its roots ([`convert::route`]).
        (Waypoint, Entry::Route(route))
            if !matches!(
                route.kind,
                RouteKind::Gateway | RouteKind::KubernetesGateway
            ) =>
        {
            (!route.is_delegate()).then(|| convert::route(route))
        }
        (Gateway, Entry::Route(route)) => (!route.is_delegate()).then(|| convert::route(route)),
        (Ztunnel, Entry::Policy(policy)) => convert::policy(policy),
        (Waypoint, Entry::Policy(policy)) if policy.l7_enforcers == L7Enforcers::All => {
            convert::waypoint_policy(policy)
        }
        (Gateway, Entry::Policy(policy)) => convert::waypoint_policy(policy),
        _ => None,
    }
}

/// Whether a subscriber of `kind` receives the workloads on its node, with their
/// enrolment decision ([`convert::workload`]).
#[must_use]
pub fn receives_node_workloads(kind: SubscriberKind) -> bool {
    matches!(
        kind,
        SubscriberKind::Agent
            | SubscriberKind::Ztunnel
            | SubscriberKind::Waypoint
            | SubscriberKind::Gateway
    )
}

/// The TLS credentials a GATEWAY on a node with `pods` receives: those named by the
/// Gateways that select one of `pods`, looked up in that pod's namespace (with a MUTUAL
/// server's `<name>-cacert`).
pub fn gateway_credentials<'a>(
    mesh: &'a Mesh,
    pods: &[&Workload],
) -> impl Iterator<Item = &'a TlsCredential> {
    let gateways: Vec<GatewaySpec> = mesh
        .routes
        .values()
        .filter(|route| {
            matches!(
                route.kind,
                RouteKind::Gateway | RouteKind::KubernetesGateway
            )
        })
        .filter_map(|route| serde_json::from_value(route.spec.clone()).ok())
        .collect();
    let mut named = Vec::new();
    for spec in &gateways {
        let selects = |pod: &&&Workload| {
            !spec.selector.is_empty()
                && spec
                    .selector
                    .iter()
                    .all(|(key, value)| pod.labels.get(key) == Some(value))
        };
        for pod in pods.iter().filter(selects) {
            let named_tls = spec
                .servers
                .iter()
                .filter_map(|server| server.tls.as_ref())
                .filter(|tls| !tls.credential_name.is_empty());
            for tls in named_tls {
                for name in [
                    tls.credential_name.clone(),
                    format!("{}-cacert", tls.credential_name),
                ] {
                    if let Some(credential) = mesh.credentials.get(&(pod.namespace.clone(), name)) {
                        named.push(credential.as_ref());
                    }
                }
            }
        }
    }
    named.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::tests::fixture;

    fn keys(kind: SubscriberKind, node: &str) -> Vec<String> {
        let subscriber = Subscriber {
            node: node.to_owned(),
            kind,
        };
        select(&fixture(), &subscriber).into_keys().collect()
    }

    #[test]
    fn an_agent_gets_the_workloads_of_its_node_only() {
        assert_eq!(
            keys(SubscriberKind::Agent, "node-a"),
            ["workload/plain/legacy", "workload/shop/cart"]
        );
        assert_eq!(
            keys(SubscriberKind::Agent, "node-b"),
            ["workload/shop/cart-2", "workload/shop/web"]
        );
        assert!(keys(SubscriberKind::Agent, "node-c").is_empty());
    }

    #[test]
    fn a_ztunnel_gets_its_workloads_every_mesh_peer_and_the_services() {
        assert_eq!(
            keys(SubscriberKind::Ztunnel, "node-a"),
            [
                "peer/shop/cart",
                "peer/shop/cart-2",
                "peer/shop/web",
                "service/shop/cart",
                "workload/plain/legacy",
                "workload/shop/cart",
            ]
        );
    }

    #[test]
    fn a_waypoint_gets_services_peers_and_routes_and_nobody_else_gets_routes() {
        assert_eq!(
            keys(SubscriberKind::Waypoint, "any"),
            [
                "destinationrule/shop/cart",
                "peer/plain/legacy",
                "peer/shop/cart",
                "peer/shop/cart-2",
                "peer/shop/web",
                "service/shop/cart",
                "virtualservice/shop/cart"
            ]
        );
        assert!(keys(SubscriberKind::Unspecified, "node-a").is_empty());
    }

    /// The peer `key` as a subscriber of `kind` on node-a gets it.
    fn peer_for(kind: SubscriberKind, key: &str) -> ambit_api::config::PeerIdentity {
        let subscriber = Subscriber {
            node: "node-a".to_owned(),
            kind,
        };
        let selected = select(&fixture(), &subscriber);
        match selected.get(key).and_then(|resource| resource.kind.clone()) {
            Some(ambit_api::config::resource::Kind::Peer(peer)) => peer,
            other => panic!("{key} is not a peer: {other:?}"),
        }
    }

    #[test]
    fn a_peer_carries_addresses_and_identity() {
        let peer = peer_for(SubscriberKind::Ztunnel, "peer/shop/web");
        assert_eq!(peer.ips, ["10.0.1.1"]);
        assert_eq!(peer.identity, "spiffe://cluster.local/ns/shop/sa/default");
        assert_eq!(peer.node, "node-b");
    }

    #[test]
    fn a_waypoint_knows_a_workload_outside_the_mesh_by_its_labels_without_identity() {
        let peer = peer_for(SubscriberKind::Gateway, "peer/plain/legacy");
        assert_eq!(peer.identity, "");
        assert_eq!(peer.labels.get("app").map(String::as_str), Some("cart"));
        assert!(!peer.ips.is_empty());
    }
}

#[cfg(test)]
mod policy_tests {
    use std::path::Path;

    use ambit_api::{config::resource::Kind, manifests::Manifests};

    use super::*;
    use crate::mesh::{Mesh, build};

    const POLICIES: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  rules: [{to: [{operation: {methods: [GET]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: l4, namespace: shop}
spec:
  rules: [{from: [{source: {namespaces: [shop]}}]}]
";

    #[test]
    fn waypoint_policies_go_to_waypoints_and_l4_ones_to_ztunnels_and_gateways() {
        let mut manifests = Manifests::default();
        manifests.parse_documents(Path::new("p.yaml"), POLICIES);
        let mesh = build(&manifests, "cluster.local", &Mesh::default()).mesh;
        let of = |kind| {
            let subscriber = Subscriber {
                node: "n1".to_owned(),
                kind,
            };
            select(&mesh, &subscriber)
        };
        let waypoint = of(SubscriberKind::Waypoint);
        let Some(Some(Kind::Route(route))) = waypoint
            .get("authorizationpolicy-l7/shop/get-only")
            .map(|r| r.kind.clone())
        else {
            panic!(
                "the waypoint policy should reach waypoints: {:?}",
                waypoint.keys()
            );
        };
        assert_eq!(route.kind, "AuthorizationPolicy");
        assert!(
            route.spec_json.contains("\"targetRefs\""),
            "{}",
            route.spec_json
        );
        assert!(!waypoint.keys().any(|k| k.contains("/shop/l4")));
        let gateway = of(SubscriberKind::Gateway);
        assert!(
            gateway.contains_key("authorizationpolicy-l7/shop/l4"),
            "an ingress gateway enforces the workload policies that select it: {:?}",
            gateway.keys()
        );
        let ztunnel = of(SubscriberKind::Ztunnel);
        assert!(ztunnel.contains_key("authorizationpolicy/shop/l4"));
        assert!(!ztunnel.keys().any(|k| k.contains("get-only")));
    }

    #[test]
    fn the_mesh_config_goes_to_waypoints_and_gateways_with_the_custom_policies() {
        let mut manifests = Manifests::default();
        manifests.parse_documents(
            Path::new("p.yaml"),
            "apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |
    extensionProviders:
    - {name: authz, envoyExtAuthzHttp: {service: authz.shop.svc.cluster.local, port: 80}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: sso, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: CUSTOM
  provider: {name: authz}
",
        );
        let built = build(&manifests, "cluster.local", &Mesh::default());
        assert!(built.diagnostics.is_empty(), "{:?}", built.diagnostics);
        for kind in [SubscriberKind::Waypoint, SubscriberKind::Gateway] {
            let subscriber = Subscriber {
                node: "n1".to_owned(),
                kind,
            };
            let selected = select(&built.mesh, &subscriber);
            let Some(Some(Kind::Route(route))) = selected
                .get("meshconfig/istio-system/istio")
                .map(|r| r.kind.clone())
            else {
                panic!("{kind:?} gets no mesh config: {:?}", selected.keys());
            };
            assert_eq!(route.kind, "MeshConfig");
            let mesh: ambit_api::istio::MeshConfig =
                serde_json::from_str(&route.spec_json).expect("a MeshConfig");
            assert!(mesh.provider("authz").is_some(), "{}", route.spec_json);
            assert!(selected.contains_key("authorizationpolicy-l7/shop/sso"));
        }
        let ztunnel = Subscriber {
            node: "n1".to_owned(),
            kind: SubscriberKind::Ztunnel,
        };
        assert!(
            !select(&built.mesh, &ztunnel)
                .keys()
                .any(|k| k.contains("istio-system/istio") || k.contains("sso"))
        );
    }
}

#[cfg(test)]
mod delegate_tests {
    use std::path::Path;

    use ambit_api::{config::resource::Kind, manifests::Manifests};

    use super::*;
    use crate::mesh::{Mesh, build};

    const ROUTES: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: shop}
spec:
  hosts: [cart]
  http: [{match: [{uri: {prefix: /a}}], delegate: {name: leaf}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: leaf, namespace: shop}
spec:
  http: [{name: leaf, route: [{destination: {host: cart}}]}]
";

    #[test]
    fn waypoints_get_the_root_merged_and_not_the_delegate() {
        let mut manifests = Manifests::default();
        manifests.parse_documents(Path::new("vs.yaml"), ROUTES);
        let mesh = build(&manifests, "cluster.local", &Mesh::default()).mesh;
        let subscriber = Subscriber {
            node: "n1".to_owned(),
            kind: SubscriberKind::Waypoint,
        };
        let selected = select(&mesh, &subscriber);
        assert!(!selected.contains_key("virtualservice/shop/leaf"));
        let Some(Kind::Route(root)) = &selected["virtualservice/shop/root"].kind else {
            panic!("the root is a route: {:?}", selected.keys());
        };
        assert!(
            !root.spec_json.contains("\"delegate\":{")
                && root.spec_json.contains("cart.shop.svc.cluster.local"),
            "the root should carry the delegate's route, merged: {}",
            root.spec_json
        );
    }
}
