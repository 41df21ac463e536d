//! `Telemetry`: whether proxies write access logs and how many new traces they sample
//! (`telemetry.istio.io/v1`).
//!
//! Follows Istio's reference. One in the root namespace without a selector is the mesh's
//! default; one in a namespace, that namespace's; one with a `selector` or `targetRefs`,
//! those workloads' (or gateways'). The most specific that sets a field wins.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Duration, WorkloadSelector, authorization_policy::PolicyTargetReference};

/// The spec of a `Telemetry`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "telemetry.istio.io",
    version = "v1",
    kind = "Telemetry",
    plural = "telemetries",
    namespaced,
    shortname = "telemetry",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase")]
pub struct TelemetrySpec {
    /// The workloads this applies to; absent: the namespace (the mesh, in the root one).
    pub selector: Option<WorkloadSelector>,
    /// Deprecated single form of `targetRefs`.
    pub target_ref: Option<PolicyTargetReference>,
    /// The gateways or waypoints this applies to (instead of `selector`).
    pub target_refs: Vec<PolicyTargetReference>,
    pub tracing: Vec<Tracing>,
    pub access_logging: Vec<AccessLogging>,
    /// Metric overrides (read; Ambit's metrics are Istio's standard ones).
    pub metrics: Vec<Metrics>,
}

/// Tracing settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Tracing {
    pub providers: Vec<ProviderRef>,
    /// The share of new traces sampled, 0 to 100.
    pub random_sampling_percentage: Option<f64>,
    /// No spans at all.
    pub disable_span_reporting: Option<bool>,
    /// Tags added to spans (read, not applied).
    pub custom_tags: BTreeMap<String, CustomTag>,
    /// Which side of the traffic (read; a proxy here is the server side).
    #[serde(rename = "match")]
    pub traffic: Option<TrafficSelector>,
    pub use_request_id_for_trace_sampling: Option<bool>,
}

/// Access logging settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct AccessLogging {
    pub providers: Vec<ProviderRef>,
    /// No access log at all.
    pub disabled: Option<bool>,
    /// Which requests are logged, as a CEL expression (read, not applied).
    pub filter: Option<AccessLogFilter>,
    #[serde(rename = "match")]
    pub traffic: Option<TrafficSelector>,
}

/// Metric settings (read, not applied).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Metrics {
    pub providers: Vec<ProviderRef>,
    pub overrides: Vec<MetricsOverride>,
    pub reporting_interval: Option<Duration>,
}

/// One metric's override (read, not applied).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct MetricsOverride {
    #[serde(rename = "match")]
    pub metric: Option<MetricSelector>,
    pub disabled: Option<bool>,
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

/// Which metric an override is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct MetricSelector {
    pub metric: Option<String>,
    pub custom_metric: Option<String>,
    pub mode: Option<String>,
}

/// A metric label's change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct TagOverride {
    pub operation: Option<String>,
    pub value: Option<String>,
}

/// A span tag: a literal, an environment variable or a request header.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct CustomTag {
    pub literal: Option<BTreeMap<String, String>>,
    pub environment: Option<BTreeMap<String, String>>,
    pub header: Option<BTreeMap<String, String>>,
}

/// A provider of Istio's mesh config, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ProviderRef {
    pub name: String,
}

/// `CLIENT`, `SERVER` or `CLIENT_AND_SERVER` traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct TrafficSelector {
    pub mode: Option<String>,
}

/// An access log filter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct AccessLogFilter {
    pub expression: String,
}
