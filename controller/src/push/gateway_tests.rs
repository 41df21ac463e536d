//! What an ingress gateway receives: the Istio Gateways, and the private keys of the
//! Gateways that select a pod on its node — no other node and no waypoint gets a key.

use std::path::Path;

use ambit_api::{
    config::{SubscriberKind, resource::Kind},
    manifests::Manifests,
};

use super::select::{Subscriber, select};
use crate::mesh::{Mesh, build};

const INGRESS: &str = "apiVersion: v1
kind: Pod
metadata: {name: ingress-0, namespace: istio-system, labels: {istio: ingressgateway}}
spec: {nodeName: n1, serviceAccountName: istio-ingressgateway}
status: {podIP: 198.18.0.10}
---
apiVersion: v1
kind: Secret
metadata: {name: shop-cert, namespace: istio-system}
type: kubernetes.io/tls
stringData: {tls.crt: CERT, tls.key: KEY}
---
apiVersion: v1
kind: Secret
metadata: {name: unrelated, namespace: istio-system}
stringData: {tls.crt: OTHER, tls.key: OTHER}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ['*']
    tls: {mode: SIMPLE, credentialName: shop-cert}
";

fn keys(mesh: &Mesh, kind: SubscriberKind, node: &str) -> Vec<String> {
    let subscriber = Subscriber {
        node: node.to_owned(),
        kind,
    };
    select(mesh, &subscriber).into_keys().collect()
}

#[test]
fn only_the_node_of_a_selected_gateway_pod_gets_its_credential() {
    let mut manifests = Manifests::default();
    manifests.parse_documents(Path::new("ingress.yaml"), INGRESS);
    let mesh = build(&manifests, "cluster.local", &Mesh::default()).mesh;

    let on_n1 = keys(&mesh, SubscriberKind::Gateway, "n1");
    assert_eq!(
        on_n1,
        [
            "credential/istio-system/shop-cert",
            "gateway/istio-system/public",
            // Outside the mesh: known by its labels, with no identity.
            "peer/istio-system/ingress-0",
            "workload/istio-system/ingress-0",
        ]
    );
    let subscriber = Subscriber {
        node: "n1".to_owned(),
        kind: SubscriberKind::Gateway,
    };
    let Some(Kind::Credential(credential)) =
        &select(&mesh, &subscriber)["credential/istio-system/shop-cert"].kind
    else {
        panic!("not a credential");
    };
    assert_eq!(
        (
            credential.cert_chain.as_str(),
            credential.private_key.as_str()
        ),
        ("CERT", "KEY")
    );

    assert_eq!(
        keys(&mesh, SubscriberKind::Gateway, "n2"),
        ["gateway/istio-system/public", "peer/istio-system/ingress-0"]
    );
    assert_eq!(
        keys(&mesh, SubscriberKind::Waypoint, "n1"),
        [
            "peer/istio-system/ingress-0",
            "workload/istio-system/ingress-0"
        ],
        "a waypoint gets its node's workloads (for its own locality), no key"
    );
    assert!(
        !keys(&mesh, SubscriberKind::Ztunnel, "n1")
            .iter()
            .any(|key| key.starts_with("credential/"))
    );
}
