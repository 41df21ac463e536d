//! The resolved mesh model: workloads, services and routes, built from a folder's
//! manifests and the previous model, so an object that turns invalid keeps its last good
//! version.
//!
//! [`build`] validates ([`crate::validate`]), resolves and carries over:
//! - a **workload** per Pod: node, service account, SPIFFE identity, pod IPs
//!   (`status.podIP(s)`), labels, ambient enrolment
//!   ([`ambit_api::enrolment::decide`]), and locality (its Node's topology labels, or
//!   its `istio-locality` label: [`ambit_api::locality`]);
//! - a **service** per Service: cluster IPs, ports, and as endpoints the IPs of the
//!   workloads of its namespace that its selector matches;
//! - a **route** per accepted VirtualService and DestinationRule, hosts expanded to FQDNs,
//!   per accepted Istio Gateway, per HTTPRoute, GRPCRoute, TCPRoute and TLSRoute
//!   (hosts: its parent Services) and per Gateway API Gateway of class `istio` (as the
//!   Istio Gateway made of it); a VirtualService that delegates also holds its routes
//!   merged with its delegates' ([`delegates`]);
//! - a **TLS credential** per Secret holding a certificate, key or CA (`credentials.rs`);
//! - a **policy** per accepted AuthorizationPolicy and PeerAuthentication, in the L4 form
//!   the receiving ztunnel enforces ([`policy`]);
//! - a **waypoint** per Gateway of class `istio-waypoint`, with its pods' addresses and
//!   identity, and for each service the waypoint it uses ([`waypoints`]).
//!
//! Last good version: an Istio object that fails validation keeps its previous version; every object of a file (or document) that cannot be read keeps its
//! previous version. An object that is no longer in the folder disappears.
//!
//! [`update`] brings the model up to date after some files changed, redoing only what
//! they can affect, with the same result; [`Changes`] lists the entries two versions
//! differ in, for the push. Entries are shared between versions (`Arc`).
//!
//! # Layout
//! - `istio.rs`: routes and policies from the validated Istio objects;
//!   `kubernetes_gateways.rs`: a class-`istio` Gateway as an Istio Gateway;
//! - `objects.rs`: workloads, services and credentials from Pods, Nodes, Services and
//!   Secrets, endpoints;
//! - `keep.rs`: the last good version of what is rejected or unreadable now;
//! - [`delegates`]: each root VirtualService merged with the delegates the model holds;
//! - `waypoints.rs`, [`policy`]: waypoints, and policies in their L4 form;
//! - `update.rs`, `changes.rs`: the incremental update, and what two versions differ in.

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, sync::Arc};

use ambit_api::{
    config::resource::Kind as Enforced, enrolment::Decision, identity::Identity,
    locality::Locality, manifests::Manifests,
};

use self::objects::Scope;
use crate::validate::Diagnostic;

mod changes;
mod credentials;
pub mod delegates;
mod istio;
mod keep;
mod kubernetes_gateways;
mod objects;
pub mod policy;
mod update;
pub mod waypoints;

pub use self::{
    changes::Changes,
    update::{FileChanges, update},
};

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
    /// Where it runs; empty when neither its Node nor its labels say.
    pub locality: Locality,
    pub source: PathBuf,
}

/// One port of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub port: u16,
    /// The numeric `targetPort`; `None` when named or absent.
    pub target_port: Option<u16>,
    /// The transport protocol (`protocol`): `TCP` unless the Service says otherwise.
    pub protocol: String,
    /// `appProtocol` as written; empty when absent. A waypoint reads what the port
    /// speaks from it, else from `name`.
    pub app_protocol: String,
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
    /// Istio's `Gateway` (`networking.istio.io`), served by ingress gateways.
    Gateway,
    /// Istio's mesh config (from the root namespace's `istio` ConfigMap): the
    /// extension providers CUSTOM policies name.
    MeshConfig,
    /// The Gateway API's `HTTPRoute`, served by the waypoints of its parent Services
    /// (or by ingress gateways).
    HttpRoute,
    /// The Gateway API's `GRPCRoute`, served as the HTTPRoute it amounts to.
    GrpcRoute,
    /// The Gateway API's `TCPRoute` (`v1alpha2`), served by the waypoints of its parent
    /// Services: their TCP connections spread over weighted backend Services.
    TcpRoute,
    /// The Gateway API's `TLSRoute` (`v1alpha2`, `v1alpha3`), served by the waypoints of
    /// its parent Services and by TLS listeners: TLS connections, passed through, chosen
    /// by the server name of their ClientHello and spread over weighted backend Services.
    TlsRoute,
    /// Istio's `Telemetry`: access logging and trace sampling of waypoints and gateways.
    Telemetry,
    /// The Gateway API's `Gateway` of class `istio`, pushed as the Istio Gateway Istio
    /// makes of it (servers from its listeners, selecting its pods by
    /// `gateway.networking.k8s.io/gateway-name`), served by ingress gateways.
    KubernetesGateway,
}

impl RouteKind {
    /// The kind as pushed: the Kubernetes kind, or `KubernetesGateway` for the
    /// Gateway API's `Gateway` (apart from Istio's `Gateway`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VirtualService => "VirtualService",
            Self::DestinationRule => "DestinationRule",
            Self::Gateway => "Gateway",
            Self::MeshConfig => "MeshConfig",
            Self::HttpRoute => "HTTPRoute",
            Self::GrpcRoute => "GRPCRoute",
            Self::TcpRoute => "TCPRoute",
            Self::TlsRoute => "TLSRoute",
            Self::Telemetry => "Telemetry",
            Self::KubernetesGateway => "KubernetesGateway",
        }
    }

    /// The route kinds a Gateway listener speaking `protocol` takes (the Gateway API's
    /// defaults for `allowedRoutes.kinds`).
    #[must_use]
    pub fn on_listener(protocol: &str) -> &'static [Self] {
        match protocol {
            "TCP" => &[Self::TcpRoute],
            "TLS" => &[Self::TlsRoute],
            _ => &[Self::HttpRoute, Self::GrpcRoute],
        }
    }

    /// The kind of an object of API `group` and `kind`.
    pub(crate) fn of(group: &str, kind: &str) -> Option<Self> {
        match (group, kind) {
            (_, "VirtualService") => Some(Self::VirtualService),
            (_, "DestinationRule") => Some(Self::DestinationRule),
            (ambit_api::gateway_api::GROUP, "Gateway") => Some(Self::KubernetesGateway),
            (_, "Gateway") => Some(Self::Gateway),
            // Only the one holding the mesh config is ever validated.
            (_, "ConfigMap") => Some(Self::MeshConfig),
            (_, "HTTPRoute") => Some(Self::HttpRoute),
            (_, "GRPCRoute") => Some(Self::GrpcRoute),
            (_, "TCPRoute") => Some(Self::TcpRoute),
            (_, "TLSRoute") => Some(Self::TlsRoute),
            (_, "Telemetry") => Some(Self::Telemetry),
            _ => None,
        }
    }
}

/// An accepted VirtualService, DestinationRule, Istio Gateway, mesh config, Telemetry or
/// Gateway API object (a route, a Gateway of class `istio`).
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
    /// Resolved to FQDNs (`spec.hosts`, or a DestinationRule's `spec.host`, a Gateway
    /// API route's parent Services); a Gateway's server hosts as written.
    pub hosts: Vec<String>,
    /// The validated spec, in Istio's field names, as written.
    pub spec: serde_json::Value,
    /// For a VirtualService with a `delegate` route: `spec` with each delegating route
    /// replaced by its delegate's routes (what waypoints receive, [`delegates`]).
    pub delegated: Option<serde_json::Value>,
    /// The object's `metadata.uid` (Kubernetes mode), for a Gateway API Gateway: what
    /// the objects deployed for it are owned by ([`crate::deployer`]).
    pub uid: Option<String>,
    /// The object's `metadata.generation` (Kubernetes mode), for a route: what its
    /// status was written for ([`crate::route_status`]).
    pub generation: Option<i64>,
    pub source: PathBuf,
}

impl Route {
    /// Whether this is a delegate: a VirtualService without hosts, whose routes serve
    /// only merged into the roots that delegate to it.
    #[must_use]
    pub fn is_delegate(&self) -> bool {
        self.kind == RouteKind::VirtualService && self.hosts.is_empty()
    }
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

    pub(crate) fn of(kind: &str) -> Option<Self> {
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
    /// The validated spec, in Istio's field names, for the L7 proxies that enforce the
    /// policy: every AuthorizationPolicy and RequestAuthentication, no
    /// PeerAuthentication.
    pub l7_spec: Option<serde_json::Value>,
    /// Which L7 proxies receive [`Policy::l7_spec`].
    pub l7_enforcers: L7Enforcers,
    pub source: PathBuf,
}

/// Which L7 proxies enforce a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L7Enforcers {
    /// Waypoints and ingress gateways: a policy with `targetRefs` (each keeps what
    /// targets it), or a RequestAuthentication.
    All,
    /// Only the ingress gateways it selects: an AuthorizationPolicy attached to workloads
    /// (by `selector`, or to a whole namespace), which ztunnel enforces for other pods.
    IngressGateways,
}

/// The certificate, key and client CAs a Secret holds (PEM), for the gateways whose
/// servers name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCredential {
    pub namespace: String,
    pub name: String,
    pub cert_chain: String,
    pub private_key: String,
    pub ca_certificates: String,
    pub source: PathBuf,
}

/// The whole resolved model. Entries are shared (`Arc`) between the versions of the
/// model, so a version that differs in a few entries costs those entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mesh {
    pub workloads: BTreeMap<Key, Arc<Workload>>,
    pub services: BTreeMap<Key, Arc<Service>>,
    pub routes: BTreeMap<(RouteKind, Key), Arc<Route>>,
    pub policies: BTreeMap<(PolicyKind, Key), Arc<Policy>>,
    pub waypoints: BTreeMap<Key, waypoints::Waypoint>,
    /// TLS credentials from Secrets, by the Secret's key.
    pub credentials: BTreeMap<Key, Arc<TlsCredential>>,
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
    let mut mesh = Mesh::default();
    let (diagnostics, mut kept) = istio::resolve(manifests, previous, &mut mesh);
    objects::resolve(&mut mesh, manifests, trust_domain, &Scope::All);
    kept.extend(keep::unreadable_files(
        &manifests.errors,
        previous,
        &mut mesh,
    ));
    delegates::resolve(&mut mesh);
    objects::resolve_endpoints(&mut mesh, &Scope::All);
    waypoints::resolve(manifests, &mut mesh);
    Built {
        mesh,
        diagnostics,
        kept,
    }
}

#[cfg(test)]
pub(crate) mod tests;
