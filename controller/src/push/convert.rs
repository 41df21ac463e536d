//! The model as `ambit.config.v1` resources, each with its key
//! (`<kind>/<namespace>/<name>`).

use std::collections::BTreeMap;

use ambit_api::config::{self as pb, resource::Kind};

use crate::mesh::{Key, Policy, Route, Service, TlsCredential, Workload, waypoints::Waypoint};

/// A workload with its enrolment decision.
#[must_use]
pub fn workload(workload: &Workload) -> pb::Resource {
    resource(
        "workload",
        &workload.namespace,
        &workload.name,
        Kind::Workload(pb::Workload {
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
            uid: workload.uid.clone().unwrap_or_default(),
            node: workload.node.clone().unwrap_or_default(),
            service_account: workload.service_account.clone(),
            identity: workload
                .identity
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            ips: workload.ips.iter().map(ToString::to_string).collect(),
            labels: workload.labels.clone().into_iter().collect(),
            enrolled: workload.decision.enrols(),
            enrolment_reason: workload.decision.to_string(),
            locality: Some((&workload.locality).into()),
        }),
    )
}

/// A mesh workload's addresses and identity; `None` for a workload outside the mesh, or
/// without an identity or an address.
#[must_use]
pub fn peer(workload: &Workload) -> Option<pb::Resource> {
    let identity = workload.identity.as_ref()?;
    if !workload.decision.enrols() || workload.ips.is_empty() {
        return None;
    }
    Some(peer_resource(workload, identity.to_string()))
}

/// A workload as a waypoint or gateway knows an endpoint: a mesh workload as [`peer`]
/// does; one outside the mesh with no identity (it is dialled in plain TCP), for its
/// labels to pick subsets and its locality to weigh it, as Istio's endpoints carry
/// them for every pod. `None` without an address.
#[must_use]
pub fn endpoint_peer(workload: &Workload) -> Option<pb::Resource> {
    if workload.decision.enrols() {
        return peer(workload);
    }
    (!workload.ips.is_empty()).then(|| peer_resource(workload, String::new()))
}

fn peer_resource(workload: &Workload, identity: String) -> pb::Resource {
    resource(
        "peer",
        &workload.namespace,
        &workload.name,
        Kind::Peer(pb::PeerIdentity {
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
            node: workload.node.clone().unwrap_or_default(),
            ips: workload.ips.iter().map(ToString::to_string).collect(),
            identity,
            labels: workload.labels.clone().into_iter().collect(),
            locality: Some((&workload.locality).into()),
        }),
    )
}

/// A service with its endpoints and, when it uses one, its waypoint as `waypoints` knows
/// it.
#[must_use]
pub fn service(service: &Service, waypoints: &BTreeMap<Key, Waypoint>) -> pb::Resource {
    let waypoint = service.waypoint.as_ref().map(|key| {
        let known = waypoints.get(key);
        pb::ServiceWaypoint {
            namespace: key.0.clone(),
            name: key.1.clone(),
            addresses: known
                .map(|w| w.addresses.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            identity: known
                .and_then(|w| w.identity.as_ref())
                .map(ToString::to_string)
                .unwrap_or_default(),
        }
    });
    resource(
        "service",
        &service.namespace,
        &service.name,
        Kind::Service(pb::Service {
            namespace: service.namespace.clone(),
            name: service.name.clone(),
            hostname: service.hostname.clone(),
            cluster_ips: service
                .cluster_ips
                .iter()
                .map(ToString::to_string)
                .collect(),
            ports: service
                .ports
                .iter()
                .map(|p| pb::ServicePort {
                    name: p.name.clone(),
                    port: u32::from(p.port),
                    target_port: p.target_port.map_or(0, u32::from),
                    protocol: p.protocol.clone(),
                    app_protocol: p.app_protocol.clone(),
                })
                .collect(),
            endpoints: service.endpoints.iter().map(ToString::to_string).collect(),
            waypoint,
        }),
    )
}

/// An accepted VirtualService (with its delegates merged in), DestinationRule or Istio
/// Gateway.
#[must_use]
pub fn route(route: &Route) -> pb::Resource {
    let spec = route.delegated.as_ref().unwrap_or(&route.spec);
    resource(
        &route.kind.as_str().to_lowercase(),
        &route.namespace,
        &route.name,
        Kind::Route(pb::Route {
            kind: route.kind.as_str().to_owned(),
            namespace: route.namespace.clone(),
            name: route.name.clone(),
            hosts: route.hosts.clone(),
            spec_json: spec.to_string(),
        }),
    )
}

/// A policy as the receiving ztunnel enforces it; `None` when it enforces nothing.
#[must_use]
pub fn policy(policy: &Policy) -> Option<pb::Resource> {
    Some(resource(
        &policy.kind.as_str().to_lowercase(),
        &policy.namespace,
        &policy.name,
        policy.enforced.clone()?,
    ))
}

/// A policy an L7 proxy enforces, as a `Route` resource with its spec (the proxy picks
/// the ones that apply to it); `None` for a policy no L7 proxy enforces.
#[must_use]
pub fn waypoint_policy(policy: &Policy) -> Option<pb::Resource> {
    let spec = policy.l7_spec.as_ref()?;
    Some(resource(
        &format!("{}-l7", policy.kind.as_str().to_lowercase()),
        &policy.namespace,
        &policy.name,
        Kind::Route(pb::Route {
            kind: policy.kind.as_str().to_owned(),
            namespace: policy.namespace.clone(),
            name: policy.name.clone(),
            hosts: Vec::new(),
            spec_json: spec.to_string(),
        }),
    ))
}

/// A Secret's TLS material, for a gateway.
#[must_use]
pub fn credential(credential: &TlsCredential) -> pb::Resource {
    resource(
        "credential",
        &credential.namespace,
        &credential.name,
        Kind::Credential(pb::TlsCredential {
            namespace: credential.namespace.clone(),
            name: credential.name.clone(),
            cert_chain: credential.cert_chain.clone(),
            private_key: credential.private_key.clone(),
            ca_certificates: credential.ca_certificates.clone(),
        }),
    )
}

fn resource(kind: &str, namespace: &str, name: &str, body: Kind) -> pb::Resource {
    pb::Resource {
        key: format!("{kind}/{namespace}/{name}"),
        kind: Some(body),
    }
}
