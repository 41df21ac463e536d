//! Istio's `networking.istio.io` objects, as Istio documents them.
//!
//! Each spec is a kube [`CustomResource`](kube::CustomResource) (with a
//! [`schemars::JsonSchema`]) so CRD manifests can be generated from it. The derive names
//! one version, `v1`; Istio serves `v1`, `v1beta1` and `v1alpha3` with the same schema,
//! so a reader matches on group and kind ([`is_served_version`]) and decodes the `spec`
//! with the same type whatever the version.
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
//! - [`string_match`]: `StringMatch` (`exact` | `prefix` | `regex`);
//! - [`duration`]: durations as Istio writes them (`1.5s`, `250ms`, `1m`, `1h`);
//! - this file: the small shared messages ([`Percent`], [`PortSelector`]) and the group's
//!   served versions.

pub mod destination_rule;
pub mod duration;
pub mod string_match;
pub mod virtual_service;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use self::{
    destination_rule::{DestinationRule, DestinationRuleSpec},
    duration::Duration,
    string_match::StringMatch,
    virtual_service::{VirtualService, VirtualServiceSpec},
};

/// The API group of VirtualService, DestinationRule, Gateway, ServiceEntry, ….
pub const NETWORKING_GROUP: &str = "networking.istio.io";

/// The versions of [`NETWORKING_GROUP`] users write; all share one schema.
pub const NETWORKING_VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];

/// Whether `version` is one of [`NETWORKING_VERSIONS`].
#[must_use]
pub fn is_served_version(version: &str) -> bool {
    NETWORKING_VERSIONS.contains(&version)
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
