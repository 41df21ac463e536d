//! Derived selections against selections computed from scratch.

use std::path::Path;

use ambit_api::manifests::Manifests;

use super::*;
use crate::mesh::{build, tests::FIXTURE};

const KINDS: [SubscriberKind; 3] = [
    SubscriberKind::Agent,
    SubscriberKind::Ztunnel,
    SubscriberKind::Waypoint,
];
const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

const POLICY: &str = "---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: l4, namespace: shop}
spec: {rules: [{from: [{source: {namespaces: [shop]}}]}]}
";
const WAYPOINT: &str = "---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec: {gatewayClassName: istio-waypoint}
---
apiVersion: v1
kind: Pod
metadata: {name: waypoint-1, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: waypoint}}
spec: {nodeName: node-c, serviceAccountName: waypoint}
status: {podIP: 10.0.9.9}
";

fn mesh(yaml: &str) -> Mesh {
    let mut manifests = Manifests::default();
    manifests.parse_documents(Path::new("all.yaml"), yaml);
    build(&manifests, "cluster.local", &Mesh::default()).mesh
}

fn keyed(selection: &Selection) -> BTreeMap<String, Resource> {
    selection
        .resources()
        .map(|r| (r.key.clone(), r.clone()))
        .collect()
}

/// `sent` with a delta applied, as a subscriber applies it.
fn applied(
    sent: &Selection,
    (upserted, removed): (Vec<Resource>, Vec<String>),
) -> BTreeMap<String, Resource> {
    let mut held = keyed(sent);
    for key in removed {
        assert!(
            held.remove(&key).is_some(),
            "removes {key}, which it was not sent"
        );
    }
    held.extend(upserted.into_iter().map(|r| (r.key.clone(), r)));
    held
}

/// Derived from `before`'s selections, `after`'s equal those computed from scratch,
/// and their deltas turn what was sent into them.
fn assert_derived_as_computed(what: &str, before: &Mesh, after: &Mesh) {
    let previous = Selections::default();
    let shared = KINDS.map(|kind| previous.shared(before, kind));
    let nodes = NODES.map(|node| previous.on_node(before, node));
    let derived = previous.next(before, after, &Changes::between(before, after));
    let fresh = Selections::default();
    for (kind, sent) in KINDS.into_iter().zip(shared) {
        let now = derived.shared(after, kind);
        let expected = keyed(&fresh.shared(after, kind));
        assert_eq!(
            keyed(&now),
            expected,
            "{what}: what every {kind:?} receives"
        );
        assert_eq!(
            applied(&sent, now.delta_from(&sent)),
            expected,
            "{what}: the {kind:?} delta"
        );
    }
    for (node, sent) in NODES.into_iter().zip(nodes) {
        let now = derived.on_node(after, node);
        let expected = keyed(&fresh.on_node(after, node));
        assert_eq!(keyed(&now), expected, "{what}: the workloads on {node}");
        assert_eq!(
            applied(&sent, now.delta_from(&sent)),
            expected,
            "{what}: the {node} delta"
        );
    }
}

#[test]
fn a_version_derived_from_the_previous_one_equals_one_computed_from_scratch() {
    let base = mesh(FIXTURE);
    let edits = [
        ("nothing", FIXTURE.to_owned()),
        (
            "pod relabelled",
            FIXTURE.replace(
                "cart-2, namespace: shop, labels: {app: cart}",
                "cart-2, namespace: shop, labels: {app: web}",
            ),
        ),
        (
            "pod moved",
            FIXTURE.replace(
                "{nodeName: node-b, serviceAccountName: cart-sa}",
                "{nodeName: node-c, serviceAccountName: cart-sa}",
            ),
        ),
        (
            "pod deleted",
            FIXTURE.replace("name: web, namespace: shop", "name: web, namespace: gone"),
        ),
        (
            "namespace joins the mesh",
            FIXTURE.replace(
                "{name: plain}",
                "{name: plain, labels: {istio.io/dataplane-mode: ambient}}",
            ),
        ),
        (
            "service changed",
            FIXTURE.replace("port: 80, targetPort: 8080", "port: 81, targetPort: 8080"),
        ),
        (
            "route changed",
            FIXTURE.replace("ROUND_ROBIN", "LEAST_REQUEST"),
        ),
        ("policy added", format!("{FIXTURE}{POLICY}")),
        (
            "waypoint added",
            format!("{FIXTURE}{WAYPOINT}").replace(
                "{name: shop, labels: {",
                "{name: shop, labels: {istio.io/use-waypoint: waypoint, ",
            ),
        ),
    ];
    for (what, yaml) in &edits {
        let edited = mesh(yaml);
        assert_eq!(
            edited == base,
            *what == "nothing",
            "{what}: the edit changes the model"
        );
        assert_derived_as_computed(what, &base, &edited);
        assert_derived_as_computed(&format!("{what}, undone"), &edited, &base);
    }
}
