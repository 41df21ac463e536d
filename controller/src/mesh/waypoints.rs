//! Waypoints: a Gateway API `Gateway` of class `istio-waypoint` in a namespace is a
//! waypoint; its pods are those labelled `gateway.networking.k8s.io/gateway-name` with
//! its name (as Istio labels the pods of the Deployment it creates). A Service uses a
//! waypoint when it, or else its namespace, is labelled `istio.io/use-waypoint: NAME`
//! (`none` on the Service opts it out).

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use ambit_api::{identity::Identity, manifests::Manifests};

use super::{Key, Mesh};

/// The Gateway API group.
pub const GATEWAY_API_GROUP: &str = ambit_api::gateway_api::GROUP;
/// The class that makes a Gateway a waypoint.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";
/// The label naming the Gateway a pod serves.
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// The label with which a Service or namespace picks its waypoint.
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";

/// A waypoint and where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waypoint {
    pub namespace: String,
    pub name: String,
    /// The Gateway's `metadata.uid`, which the objects deployed for it are owned by
    /// (Kubernetes mode); `None` when its manifest has none (a folder's).
    pub uid: Option<String>,
    /// Its pods' identity (Istio runs a waypoint as the service account of its name).
    pub identity: Option<Identity>,
    /// Its pods' addresses, sorted; empty until a pod runs.
    pub addresses: Vec<IpAddr>,
}

/// Every waypoint Gateway in `manifests`, with the pods of `mesh` that serve it.
pub(super) fn resolve(manifests: &Manifests, mesh: &mut Mesh) {
    mesh.waypoints.clear();
    for gateway in manifests.of_kind("Gateway") {
        let group = gateway.api_version.split_once('/').map(|(group, _)| group);
        let class = gateway.spec_str("gatewayClassName");
        if group != Some(GATEWAY_API_GROUP) || class != Some(WAYPOINT_CLASS) {
            continue;
        }
        let namespace = gateway.namespace().to_owned();
        let name = gateway.metadata.name.clone();
        let pods: Vec<_> = mesh
            .workloads
            .values()
            .filter(|w| w.namespace == namespace && w.labels.get(GATEWAY_NAME_LABEL) == Some(&name))
            .collect();
        let mut addresses: Vec<IpAddr> = pods.iter().flat_map(|w| w.ips.iter().copied()).collect();
        addresses.sort();
        let identity = pods.iter().find_map(|w| w.identity.clone());
        mesh.waypoints.insert(
            (namespace.clone(), name.clone()),
            Waypoint {
                namespace,
                name,
                uid: gateway.metadata.uid.clone(),
                identity,
                addresses,
            },
        );
    }
    let namespace_choice: BTreeMap<String, String> = manifests
        .of_kind("Namespace")
        .filter_map(|ns| {
            let choice = ns.metadata.labels.get(USE_WAYPOINT_LABEL)?;
            Some((ns.metadata.name.clone(), choice.clone()))
        })
        .collect();
    let service_choice: BTreeMap<Key, String> = manifests
        .of_kind("Service")
        .filter_map(|s| {
            let choice = s.metadata.labels.get(USE_WAYPOINT_LABEL)?;
            Some((
                (s.namespace().to_owned(), s.metadata.name.clone()),
                choice.clone(),
            ))
        })
        .collect();
    for (key, service) in &mut mesh.services {
        let choice = service_choice
            .get(key)
            .or_else(|| namespace_choice.get(&service.namespace));
        let waypoint = choice
            .filter(|name| name.as_str() != "none")
            .map(|name| (service.namespace.clone(), name.clone()));
        if service.waypoint != waypoint {
            Arc::make_mut(service).waypoint = waypoint;
        }
    }
}
