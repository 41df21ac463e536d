//! The resolved mesh model: workloads, services and routes, built from a folder's
//! manifests and the previous model, so an object that turns invalid keeps its last good
//! version.
//!
//! [`build`] validates ([`crate::validate`]), resolves and carries over:
//! - a **workload** per Pod: node, service account, SPIFFE identity, pod IPs
//!   (`status.podIP(s)`), labels, ambient enrolment
//!   ([`ambit_api::enrolment::decide`]);
//! - a **service** per Service: cluster IPs, ports, and as endpoints the IPs of the
//!   workloads of its namespace that its selector matches;
//! - a **route** per accepted VirtualService and DestinationRule, hosts expanded to FQDNs;
//! - a **policy** per accepted AuthorizationPolicy and PeerAuthentication, in the L4 form
//!   the receiving ztunnel enforces ([`policy`]);
//! - a **waypoint** per Gateway of class `istio-waypoint`, with its pods' addresses and
//!   identity, and for each service the waypoint it uses ([`waypoints`]).
//!
//! Last good version: an Istio object that fails validation keeps its previous version; every object of a file (or document) that cannot be read keeps its
//! previous version. An object that is no longer in the folder disappears.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
};

use ambit_api::{
    config::resource::Kind as Enforced,
    enrolment::Decision,
    identity::Identity,
    manifests::{ManifestError, Manifests},
};

use crate::{
    hosts,
    validate::{self, Diagnostic, ObjectRef, Severity},
};

mod changes;
mod objects;
pub mod policy;
pub mod waypoints;

pub use self::changes::Changes;

/// `(namespace, name)`.
pub type Key = (String, String);

/// A pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    /// `spec.nodeName`; `None` for a pod not scheduled yet.
    pub node: Option<String>,
    pub service_account: String,
    /// `None` when the namespace or service account cannot form one.
    pub identity: Option<Identity>,
    pub ips: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
    pub decision: Decision,
    pub source: PathBuf,
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    /// The numeric `targetPort`; `None` when named or absent.
    pub target_port: Option<u16>,
    pub protocol: String,
}

/// A Service, with its endpoints resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// `<name>.<namespace>.svc.cluster.local`.
    pub hostname: String,
    pub cluster_ips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub selector: BTreeMap<String, String>,
    /// The IPs of the matching workloads, sorted.
    pub endpoints: Vec<IpAddr>,
    /// The waypoint (`namespace`, `name`) its traffic goes through, if any.
    pub waypoint: Option<Key>,
    pub source: PathBuf,
}

/// The Istio routing kinds the model holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteKind {
    VirtualService,
    DestinationRule,
}

impl RouteKind {
    /// The Kubernetes kind.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VirtualService => "VirtualService",
            Self::DestinationRule => "DestinationRule",
        }
    }

    fn of(kind: &str) -> Option<Self> {
        match kind {
            "VirtualService" => Some(Self::VirtualService),
            "DestinationRule" => Some(Self::DestinationRule),
            _ => None,
        }
    }
}

/// An accepted VirtualService or DestinationRule.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
    /// Resolved to FQDNs (`spec.hosts`, or a DestinationRule's `spec.host`).
    pub hosts: Vec<String>,
    /// The validated spec, in Istio's field names.
    pub spec: serde_json::Value,
    pub source: PathBuf,
}

/// The Istio security kinds the model holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PolicyKind {
    AuthorizationPolicy,
    PeerAuthentication,
    RequestAuthentication,
}

impl PolicyKind {
    /// The Kubernetes kind.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationPolicy => "AuthorizationPolicy",
            Self::PeerAuthentication => "PeerAuthentication",
            Self::RequestAuthentication => "RequestAuthentication",
        }
    }

    fn of(kind: &str) -> Option<Self> {
        match kind {
            "AuthorizationPolicy" => Some(Self::AuthorizationPolicy),
            "PeerAuthentication" => Some(Self::PeerAuthentication),
            "RequestAuthentication" => Some(Self::RequestAuthentication),
            _ => None,
        }
    }
}

/// An accepted AuthorizationPolicy, PeerAuthentication or RequestAuthentication.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub kind: PolicyKind,
    pub namespace: String,
    pub name: String,
    /// What the receiving ztunnel enforces (`Authorization` or `PeerAuthentication`);
    /// `None` for a policy ztunnel has nothing to do with (a waypoint's, or AUDIT).
    pub enforced: Option<Enforced>,
    /// The validated spec, in Istio's field names, when a waypoint enforces the policy
    /// (an AuthorizationPolicy with `targetRefs`, a RequestAuthentication).
    pub for_waypoints: Option<serde_json::Value>,
    pub source: PathBuf,
}

/// The whole resolved model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mesh {
    pub workloads: BTreeMap<Key, Workload>,
    pub services: BTreeMap<Key, Service>,
    pub routes: BTreeMap<(RouteKind, Key), Route>,
    pub policies: BTreeMap<(PolicyKind, Key), Policy>,
    pub waypoints: BTreeMap<Key, waypoints::Waypoint>,
}

/// What [`build`] produced.
#[derive(Debug, Default)]
pub struct Built {
    pub mesh: Mesh,
    /// Every problem found, as `ambit-controller validate` reports them.
    pub diagnostics: Vec<Diagnostic>,
    /// Objects (`namespace/name (Kind)`) kept at their previous version.
    pub kept: Vec<String>,
}

/// Builds the model from `manifests`, keeping from `previous` the last good version of
/// what is now invalid or unreadable.
#[must_use]
pub fn build(manifests: &Manifests, trust_domain: &str, previous: &Mesh) -> Built {
    let report = validate::validate(manifests);
    let mut mesh = Mesh::default();
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
        insert_route(&mut mesh, route, accepted.source.file.clone());
    }
    for accepted in &report.model.destination_rules {
        let dr = &accepted.object;
        let namespace = dr.metadata.namespace.clone().unwrap_or_default();
        let hosts = vec![hosts::resolve(&dr.spec.host, &namespace)];
        let name = dr.metadata.name.clone().unwrap_or_default();
        let spec = serde_json::to_value(&dr.spec).unwrap_or_default();
        let route = route(RouteKind::DestinationRule, namespace, name, hosts, spec);
        insert_route(&mut mesh, route, accepted.source.file.clone());
    }
    let root = ambit_api::istio::DEFAULT_ROOT_NAMESPACE;
    for accepted in &report.model.authorization_policies {
        let policy = &accepted.object;
        let enforced = policy::authorization(policy, root).map(Enforced::Authorization);
        let for_waypoints = policy
            .spec
            .has_target_refs()
            .then(|| serde_json::to_value(&policy.spec).unwrap_or_default());
        insert_policy(
            &mut mesh,
            (PolicyKind::AuthorizationPolicy, policy),
            (enforced, for_waypoints),
            &accepted.source,
        );
    }
    for accepted in &report.model.request_authentications {
        let spec = serde_json::to_value(&accepted.object.spec).unwrap_or_default();
        insert_policy(
            &mut mesh,
            (PolicyKind::RequestAuthentication, &accepted.object),
            (None, Some(spec)),
            &accepted.source,
        );
    }
    for accepted in &report.model.peer_authentications {
        let enforced =
            Enforced::PeerAuthentication(policy::peer_authentication(&accepted.object, root));
        insert_policy(
            &mut mesh,
            (PolicyKind::PeerAuthentication, &accepted.object),
            (Some(enforced), None),
            &accepted.source,
        );
    }
    let enrolment = objects::EnrolmentInputs::new(manifests);
    for pod in manifests.of_kind("Pod") {
        let workload = objects::workload(&enrolment, pod, trust_domain);
        let key = (workload.namespace.clone(), workload.name.clone());
        mesh.workloads.insert(key, workload);
    }
    for object in manifests.of_kind("Service") {
        let service = objects::service(object);
        let key = (service.namespace.clone(), service.name.clone());
        mesh.services.insert(key, service);
    }

    let mut kept = keep_rejected(&report.diagnostics, previous, &mut mesh);
    kept.extend(keep_unreadable_files(
        &manifests.errors,
        previous,
        &mut mesh,
    ));
    resolve_endpoints(&mut mesh);
    waypoints::resolve(manifests, &mut mesh);
    Built {
        mesh,
        diagnostics: report.diagnostics,
        kept,
    }
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
        source: PathBuf::new(),
    }
}

/// Adds the policy `object` of `kind`, with what ztunnel and waypoints enforce of it.
fn insert_policy(
    mesh: &mut Mesh,
    (kind, object): (PolicyKind, &impl kube::Resource),
    (enforced, for_waypoints): (Option<Enforced>, Option<serde_json::Value>),
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
        for_waypoints,
        source: source.file.clone(),
    };
    mesh.policies.insert((kind, key), policy);
}

fn insert_route(mesh: &mut Mesh, mut route: Route, source: PathBuf) {
    route.source = source;
    let key = (route.kind, (route.namespace.clone(), route.name.clone()));
    mesh.routes.insert(key, route);
}

/// An Istio object with an error and no accepted version now keeps its previous one.
fn keep_rejected(diagnostics: &[Diagnostic], previous: &Mesh, mesh: &mut Mesh) -> Vec<String> {
    let rejected: Vec<&ObjectRef> = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .filter_map(|d| d.object.as_ref())
        .collect();
    let key_of = |o: &ObjectRef| (o.namespace.clone(), o.name.clone());
    let mut kept = keep_previous(
        rejected
            .iter()
            .filter_map(|o| Some((RouteKind::of(&o.kind)?, key_of(o)))),
        &previous.routes,
        &mut mesh.routes,
        |(kind, key)| label(key, kind.as_str()),
    );
    kept.extend(keep_previous(
        rejected
            .iter()
            .filter_map(|o| Some((PolicyKind::of(&o.kind)?, key_of(o)))),
        &previous.policies,
        &mut mesh.policies,
        |(kind, key)| label(key, kind.as_str()),
    ));
    kept
}

/// Every object of a file that cannot be read (entirely or from a bad document on)
/// keeps its previous version, unless the readable part still defines it.
fn keep_unreadable_files(
    errors: &[ManifestError],
    previous: &Mesh,
    mesh: &mut Mesh,
) -> Vec<String> {
    let broken: BTreeSet<&PathBuf> = errors
        .iter()
        .filter_map(|error| match error {
            ManifestError::File { path, .. } => Some(path),
            ManifestError::Document { at, .. } => Some(&at.file),
            ManifestError::Folder { .. } => None,
        })
        .collect();
    let from_broken = |source: &PathBuf| broken.contains(source);
    let mut kept = keep_previous(
        keys_where(&previous.workloads, |w| from_broken(&w.source)),
        &previous.workloads,
        &mut mesh.workloads,
        |key| label(key, "Pod"),
    );
    kept.extend(keep_previous(
        keys_where(&previous.services, |s| from_broken(&s.source)),
        &previous.services,
        &mut mesh.services,
        |key| label(key, "Service"),
    ));
    kept.extend(keep_previous(
        keys_where(&previous.routes, |r| from_broken(&r.source)),
        &previous.routes,
        &mut mesh.routes,
        |(kind, key)| label(key, kind.as_str()),
    ));
    kept.extend(keep_previous(
        keys_where(&previous.policies, |p| from_broken(&p.source)),
        &previous.policies,
        &mut mesh.policies,
        |(kind, key)| label(key, kind.as_str()),
    ));
    kept
}

fn keys_where<K: Clone, V>(map: &BTreeMap<K, V>, keep: impl Fn(&V) -> bool) -> Vec<K> {
    map.iter()
        .filter(|(_, value)| keep(value))
        .map(|(key, _)| key.clone())
        .collect()
}

/// Copies from `previous` into `current` each of `keys` that `current` lacks; returns
/// their labels.
fn keep_previous<K: Ord + Clone, V: Clone>(
    keys: impl IntoIterator<Item = K>,
    previous: &BTreeMap<K, V>,
    current: &mut BTreeMap<K, V>,
    describe: impl Fn(&K) -> String,
) -> Vec<String> {
    let mut kept = Vec::new();
    for key in keys {
        if current.contains_key(&key) {
            continue;
        }
        if let Some(value) = previous.get(&key) {
            kept.push(describe(&key));
            current.insert(key, value.clone());
        }
    }
    kept
}

/// `namespace/name (Kind)`.
fn label(key: &Key, kind: &str) -> String {
    format!("{}/{} ({kind})", key.0, key.1)
}

/// Sets every service's [`endpoints`].
fn resolve_endpoints(mesh: &mut Mesh) {
    for service in mesh.services.values_mut() {
        service.endpoints = endpoints(service, &mesh.workloads);
    }
}

/// A service's endpoints: the IPs of the workloads of its namespace whose labels hold
/// every entry of its selector (a Service without a selector has none), sorted.
fn endpoints(service: &Service, workloads: &BTreeMap<Key, Workload>) -> Vec<IpAddr> {
    if service.selector.is_empty() {
        return Vec::new();
    }
    let mut endpoints: Vec<IpAddr> = workloads
        .range((service.namespace.clone(), String::new())..)
        .take_while(|((namespace, _), _)| *namespace == service.namespace)
        .map(|(_, w)| w)
        .filter(|w| {
            service
                .selector
                .iter()
                .all(|(k, v)| w.labels.get(k) == Some(v))
        })
        .flat_map(|w| w.ips.iter().copied())
        .collect();
    endpoints.sort();
    endpoints.dedup();
    endpoints
}

#[cfg(test)]
pub(crate) mod tests;
