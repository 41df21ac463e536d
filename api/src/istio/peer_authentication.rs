//! `PeerAuthentication`: whether a workload accepts plaintext or only mutual TLS.
//!
//! Follows Istio's reference (`security.istio.io/v1`, PeerAuthentication). The most
//! specific policy decides: a selector's over the namespace's, the namespace's over the
//! mesh's (the root namespace's), and `UNSET` inherits from the next one up. Port-level
//! settings apply to a workload's (container) port and need a selector.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::WorkloadSelector;

/// The spec of a `PeerAuthentication`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "PeerAuthentication",
    namespaced,
    shortname = "pa",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    /// The workloads this applies to; absent: the namespace (or the mesh, in the root
    /// namespace).
    pub selector: Option<WorkloadSelector>,
    pub mtls: Option<MutualTls>,
    /// Per container port: overrides `mtls` on that port. Keys are numbers, written
    /// plain (`8080:`) or quoted (`"8080":`).
    #[serde(deserialize_with = "port_keys")]
    pub port_level_mtls: BTreeMap<u32, MutualTls>,
}

/// A map key that is a port, as YAML or JSON writes it.
#[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(untagged)]
enum PortKey {
    Number(u32),
    Text(String),
}

fn port_keys<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<u32, MutualTls>, D::Error> {
    let raw = BTreeMap::<PortKey, MutualTls>::deserialize(deserializer)?;
    raw.into_iter()
        .map(|(key, value)| match key {
            PortKey::Number(port) => Ok((port, value)),
            PortKey::Text(text) => text.trim().parse().map(|port| (port, value)).map_err(|_| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a port number: key each setting by its port (8080)"
                ))
            }),
        })
        .collect()
}

/// `{mode: STRICT}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct MutualTls {
    pub mode: MtlsMode,
}

/// What a workload accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the next policy up (the default: PERMISSIVE).
    #[default]
    Unset,
    /// Plaintext only (ztunnel: plaintext accepted, as PERMISSIVE).
    Disable,
    /// Mutual TLS and plaintext.
    Permissive,
    /// Mutual TLS only: plaintext is refused.
    Strict,
}
