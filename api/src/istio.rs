//! Istio's `networking.istio.io` and `security.istio.io` objects, as Istio documents
//! them.
//!
//! Each spec is a kube [`CustomResource`](kube::CustomResource) (with a
//! [`schemars::JsonSchema`]) so CRD manifests can be generated from it. The derive names
//! one version, `v1`; Istio serves `v1`, `v1beta1` and `v1alpha3` (security: `v1`,
//! `v1beta1`) with the same schema, so a reader matches on group and kind
//! ([`served_versions`]) and decodes the `spec` with the same type whatever the version.
//!
//! The types are plain data: every struct defaults its missing fields (so a reader can
//! report *all* missing required fields, not the first), fields are camelCase as users
//! write them, and Istio's oneofs with a closed set of values are Rust enums, so an
//! unknown value fails to decode with the list of allowed ones. Fields these types do not
//! know are not dropped silently by the controller: it decodes through `serde_ignored`
//! and reports each one with its path.
//!
//! # Layout
//! - [`virtual_service`]: `VirtualService` (HTTP, TLS and TCP routes);
//! - [`destination_rule`]: `DestinationRule` (traffic policy, subsets);
//! - [`gateway`]: Istio's `Gateway` (an ingress gateway's ports, hosts and TLS);
//! - [`authorization_policy`]: `AuthorizationPolicy` (who may reach what);
//! - [`peer_authentication`]: `PeerAuthentication` (mutual TLS required or not);
//! - [`request_authentication`]: `RequestAuthentication` (which JWTs are accepted);
//! - [`mesh_config`]: the part of Istio's `MeshConfig` Ambit reads (extension providers);
//! - [`telemetry`]: `Telemetry` (access logging on or off, trace sampling);
//! - [`string_match`]: `StringMatch` (`exact` | `prefix` | `regex`);
//! - [`duration`]: durations as Istio writes them (`1.5s`, `250ms`, `1m`, `1h`);
//! - this file: the small shared messages ([`Percent`], [`PortSelector`]) and the group's
//!   served versions.

pub mod authorization_policy;
pub mod destination_rule;
pub mod duration;
pub mod gateway;
pub mod mesh_config;
pub mod peer_authentication;
pub mod request_authentication;
pub mod string_match;
pub mod telemetry;
pub mod virtual_service;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use self::{
    authorization_policy::{AuthorizationPolicy, AuthorizationPolicySpec},
    destination_rule::{DestinationRule, DestinationRuleSpec, WorkloadSelector},
    duration::Duration,
    gateway::{Gateway as IstioGateway, GatewaySpec},
    mesh_config::MeshConfig,
    peer_authentication::{PeerAuthentication, PeerAuthenticationSpec},
    request_authentication::{RequestAuthentication, RequestAuthenticationSpec},
    string_match::StringMatch,
    telemetry::{Telemetry, TelemetrySpec},
    virtual_service::{VirtualService, VirtualServiceSpec},
};

/// The API group of VirtualService, DestinationRule, Gateway, ServiceEntry, ….
pub const NETWORKING_GROUP: &str = "networking.istio.io";

/// The versions of [`NETWORKING_GROUP`] users write; all share one schema.
pub const NETWORKING_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];

/// The API group of AuthorizationPolicy, PeerAuthentication, RequestAuthentication.
pub const SECURITY_GROUP: &str = "security.istio.io";

/// The versions of [`SECURITY_GROUP`] users write; all share one schema.
pub const SECURITY_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// The API group of Telemetry.
pub const TELEMETRY_GROUP: &str = "telemetry.istio.io";

/// The versions of [`TELEMETRY_GROUP`] users write; all share one schema.
pub const TELEMETRY_VERSIONS: &[&str] = &["v1", "v1alpha1"];

/// Istio's default root namespace: a policy there without a selector applies to the
/// whole mesh.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// The versions Istio serves for `group`; empty for a group that is not Istio's.
#[must_use]
pub fn served_versions(group: &str) -> &'static [&'static str] {
    match group {
        NETWORKING_GROUP => NETWORKING_VERSIONS,
        SECURITY_GROUP => SECURITY_VERSIONS,
        TELEMETRY_GROUP => TELEMETRY_VERSIONS,
        _ => &[],
    }
}

/// A percentage, `{value: 12.5}`: Istio's `Percent` message (a double from 0 to 100).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Percent {
    pub value: f64,
}

/// A port by number, `{number: 9080}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct PortSelector {
    pub number: u32,
}
