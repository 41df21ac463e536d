//! The Istio objects of the model: validated ([`crate::validate`]), routes with their
//! hosts resolved to FQDNs (and Istio Gateways), policies in the form ztunnel and waypoints enforce, and an
//! object rejected now kept at its previous version.

use std::{path::PathBuf, sync::Arc};

use ambit_api::{
    config::resource::Kind as Enforced,
    gateway_api::http_route::{ParentReference, producer_parents},
    manifests::Manifests,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, core::object::HasSpec};

use super::{
    L7Enforcers, Mesh, Policy, PolicyKind, Route, RouteKind, keep, kubernetes_gateways, policy,
};
use crate::{
    hosts,
    model::Accepted,
    validate::{self, Diagnostic},
};

/// Replaces the routes and policies of `mesh` with the valid ones of `manifests`, keeping
/// from `previous` those rejected now; returns every diagnostic and the objects kept.
pub(super) fn resolve(
    manifests: &Manifests,
    previous: &Mesh,
    mesh: &mut Mesh,
) -> (Vec<Diagnostic>, Vec<String>) {
    let report = validate::validate(manifests);
    mesh.routes.clear();
    mesh.policies.clear();
    for accepted in &report.model.virtual_services {
        let vs = &accepted.object;
        let namespace = vs.metadata.namespace.clone().unwrap_or_default();
        let hosts = vs
            .spec
            .hosts
            .iter()
            .map(|h| hosts::resolve(h, &namespace))
            .collect();
        let name = vs.metadata.name.clone().unwrap_or_default();
        let spec = serde_json::to_value(&vs.spec).unwrap_or_default();
        let route = route(RouteKind::VirtualService, namespace, name, hosts, spec);
        insert_route(mesh, route, accepted.source.file.clone());
    }
    for accepted in &report.model.destination_rules {
        let dr = &accepted.object;
        let namespace = dr.metadata.namespace.clone().unwrap_or_default();
        let hosts = vec![hosts::resolve(&dr.spec.host, &namespace)];
        let name = dr.metadata.name.clone().unwrap_or_default();
        let spec = serde_json::to_value(&dr.spec).unwrap_or_default();
        let route = route(RouteKind::DestinationRule, namespace, name, hosts, spec);
        insert_route(mesh, route, accepted.source.file.clone());
    }
    for accepted in &report.model.gateways {
        let gateway = &accepted.object;
        let namespace = gateway.metadata.namespace.clone().unwrap_or_default();
        let hosts = gateway
            .spec
            .servers
            .iter()
            .flat_map(|server| server.hosts.iter().cloned())
            .collect();
        let name = gateway.metadata.name.clone().unwrap_or_default();
        let spec = serde_json::to_value(&gateway.spec).unwrap_or_default();
        let route = route(RouteKind::Gateway, namespace, name, hosts, spec);
        insert_route(mesh, route, accepted.source.file.clone());
    }
    for accepted in &report.model.telemetries {
        let telemetry = &accepted.object;
        let namespace = telemetry.metadata.namespace.clone().unwrap_or_default();
        let name = telemetry.metadata.name.clone().unwrap_or_default();
        let spec = serde_json::to_value(&telemetry.spec).unwrap_or_default();
        let route = route(RouteKind::Telemetry, namespace, name, Vec::new(), spec);
        insert_route(mesh, route, accepted.source.file.clone());
    }
    let model = &report.model;
    insert_gateway_api_routes(mesh, RouteKind::HttpRoute, &model.http_routes, |s| {
        &s.parent_refs
    });
    insert_gateway_api_routes(mesh, RouteKind::GrpcRoute, &model.grpc_routes, |s| {
        &s.parent_refs
    });
    insert_gateway_api_routes(mesh, RouteKind::TcpRoute, &model.tcp_routes, |s| {
        &s.parent_refs
    });
    insert_gateway_api_routes(mesh, RouteKind::TlsRoute, &model.tls_routes, |s| {
        &s.parent_refs
    });
    for accepted in &report.model.kubernetes_gateways {
        let gateway = &accepted.object;
        let namespace = gateway.metadata.namespace.clone().unwrap_or_default();
        let name = gateway.metadata.name.clone().unwrap_or_default();
        let istio = kubernetes_gateways::istio_gateway(&name, &gateway.spec);
        let hosts = istio
            .servers
            .iter()
            .flat_map(|server| server.hosts.iter().cloned())
            .collect();
        let spec = serde_json::to_value(&istio).unwrap_or_default();
        let route = Route {
            uid: gateway.metadata.uid.clone(),
            ..route(RouteKind::KubernetesGateway, namespace, name, hosts, spec)
        };
        insert_route(mesh, route, accepted.source.file.clone());
    }
    let root = ambit_api::istio::DEFAULT_ROOT_NAMESPACE;
    if let Some(accepted) = &report.model.mesh_config {
        let spec = serde_json::to_value(&accepted.object).unwrap_or_default();
        let name = validate::MESH_CONFIG_MAP.to_owned();
        let route = route(
            RouteKind::MeshConfig,
            root.to_owned(),
            name,
            Vec::new(),
            spec,
        );
        insert_route(mesh, route, accepted.source.file.clone());
    }
    for accepted in &report.model.authorization_policies {
        let policy = &accepted.object;
        let enforced = policy::authorization(policy, root).map(Enforced::Authorization);
        let spec = serde_json::to_value(&policy.spec).unwrap_or_default();
        let enforcers = if policy.spec.has_target_refs() {
            L7Enforcers::All
        } else {
            L7Enforcers::IngressGateways
        };
        insert_policy(
            mesh,
            (PolicyKind::AuthorizationPolicy, policy),
            (enforced, Some((spec, enforcers))),
            &accepted.source,
        );
    }
    for accepted in &report.model.request_authentications {
        let spec = serde_json::to_value(&accepted.object.spec).unwrap_or_default();
        insert_policy(
            mesh,
            (PolicyKind::RequestAuthentication, &accepted.object),
            (None, Some((spec, L7Enforcers::All))),
            &accepted.source,
        );
    }
    for accepted in &report.model.peer_authentications {
        let enforced =
            Enforced::PeerAuthentication(policy::peer_authentication(&accepted.object, root));
        insert_policy(
            mesh,
            (PolicyKind::PeerAuthentication, &accepted.object),
            (Some(enforced), None),
            &accepted.source,
        );
    }
    let kept = keep::rejected(&report.diagnostics, previous, mesh);
    (report.diagnostics, kept)
}

fn route(
    kind: RouteKind,
    namespace: String,
    name: String,
    hosts: Vec<String>,
    spec: serde_json::Value,
) -> Route {
    Route {
        kind,
        namespace,
        name,
        hosts,
        spec,
        delegated: None,
        uid: None,
        generation: None,
        source: PathBuf::new(),
    }
}

/// Adds the policy `object` of `kind`, with what ztunnel enforces of it and the spec
/// L7 proxies enforce, for which of them.
fn insert_policy(
    mesh: &mut Mesh,
    (kind, object): (PolicyKind, &impl kube::Resource),
    (enforced, l7): (Option<Enforced>, Option<(serde_json::Value, L7Enforcers)>),
    source: &ambit_api::manifests::Source,
) {
    let meta = object.meta();
    let key = (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );
    let policy = Policy {
        kind,
        namespace: key.0.clone(),
        name: key.1.clone(),
        enforced,
        l7_enforcers: l7
            .as_ref()
            .map_or(L7Enforcers::All, |(_, enforcers)| *enforcers),
        l7_spec: l7.map(|(spec, _)| spec),
        source: source.file.clone(),
    };
    mesh.policies.insert((kind, key), Arc::new(policy));
}

/// A Gateway API route of `kind`: pushed to the waypoints of the Services it is a
/// producer route of (its `parents` in its own namespace), with its generation for
/// its status.
fn gateway_api_route(
    kind: RouteKind,
    metadata: &ObjectMeta,
    parents: &[ParentReference],
    spec: &impl serde::Serialize,
) -> Route {
    let namespace = metadata.namespace.clone().unwrap_or_default();
    let hosts = producer_parents(parents, &namespace)
        .map(|parent| hosts::resolve(&parent.name, &namespace))
        .collect();
    let name = metadata.name.clone().unwrap_or_default();
    let spec = serde_json::to_value(spec).unwrap_or_default();
    Route {
        generation: metadata.generation,
        ..route(kind, namespace, name, hosts, spec)
    }
}

/// Inserts each of the `accepted` Gateway API routes of `kind`; `parents` reads the
/// parentRefs of one's spec.
fn insert_gateway_api_routes<R>(
    mesh: &mut Mesh,
    kind: RouteKind,
    accepted: &[Accepted<R>],
    parents: fn(&R::Spec) -> &[ParentReference],
) where
    R: Resource + HasSpec,
    R::Spec: serde::Serialize,
{
    for accepted in accepted {
        let spec = accepted.object.spec();
        let route = gateway_api_route(kind, accepted.object.meta(), parents(spec), spec);
        insert_route(mesh, route, accepted.source.file.clone());
    }
}

fn insert_route(mesh: &mut Mesh, mut route: Route, source: PathBuf) {
    route.source = source;
    let key = (route.kind, (route.namespace.clone(), route.name.clone()));
    mesh.routes.insert(key, Arc::new(route));
}
