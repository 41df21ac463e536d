//! The Gateway API's `Gateway` of class `istio`: an ingress gateway's listeners
//! (`gateway.networking.k8s.io/v1`). Waypoints (class `istio-waypoint`) are read by the
//! controller without this type: their one listener is fixed.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// The class Istio gives the gateways it runs for ingress.
pub const INGRESS_CLASS: &str = "istio";

/// The spec of a `Gateway`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "Gateway",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase")]
pub struct GatewaySpec {
    pub gateway_class_name: String,
    pub listeners: Vec<Listener>,
    /// Requested addresses (read to be warned about: the gateway takes its pod's).
    pub addresses: Vec<serde_json::Value>,
    /// Labels and annotations for what is deployed (read to be warned about).
    pub infrastructure: Option<serde_json::Value>,
}

/// A port, its protocol and the host names it takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Listener {
    pub name: String,
    /// `None`: every host name.
    pub hostname: Option<String>,
    pub port: u32,
    /// `HTTP`, `HTTPS`, `TLS`, `TCP`, `UDP` (or a domain-prefixed custom one).
    pub protocol: String,
    pub tls: Option<ListenerTls>,
    pub allowed_routes: Option<AllowedRoutes>,
}

/// How a listener uses TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ListenerTls {
    /// `None`: `Terminate`.
    pub mode: Option<TlsMode>,
    /// The certificate and key: a `kubernetes.io/tls` Secret.
    pub certificate_refs: Vec<SecretRef>,
    pub options: std::collections::BTreeMap<String, String>,
}

/// Whether the gateway terminates TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsMode {
    #[default]
    Terminate,
    Passthrough,
}

/// A Secret (by default) holding a certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SecretRef {
    /// `None`: `""` (core).
    pub group: Option<String>,
    /// `None`: `Secret`.
    pub kind: Option<String>,
    pub name: String,
    /// `None`: the Gateway's namespace.
    pub namespace: Option<String>,
}

/// Which routes may attach to a listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AllowedRoutes {
    pub namespaces: Option<RouteNamespaces>,
    pub kinds: Vec<RouteGroupKind>,
}

/// The namespaces routes may come from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RouteNamespaces {
    /// `None`: `Same`.
    pub from: Option<FromNamespaces>,
    pub selector: Option<serde_json::Value>,
}

/// `allowedRoutes.namespaces.from`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromNamespaces {
    All,
    #[default]
    Same,
    Selector,
    None,
}

/// A route kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RouteGroupKind {
    pub group: Option<String>,
    pub kind: String,
}
