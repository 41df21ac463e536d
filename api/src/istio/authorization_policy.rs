//! `AuthorizationPolicy`: who may reach a workload (or a waypoint's services), and on
//! what.
//!
//! Follows Istio's reference (`security.istio.io/v1`, AuthorizationPolicy). A rule
//! matches when every one of its `from`, `to` and `when` parts holds; within `from` (or
//! `to`) any one entry is enough, and within an entry every field that is set must hold.
//! Principals, namespaces, hosts and paths accept Istio's wildcards: `*` alone, or at the
//! start or end (`*/sa/reader`, `cluster.local/ns/shop/*`).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::WorkloadSelector;

/// The spec of an `AuthorizationPolicy`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "AuthorizationPolicy",
    namespaced,
    shortname = "ap",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    /// The workloads this applies to; absent: every workload of the namespace (or of the
    /// mesh, in the root namespace).
    pub selector: Option<WorkloadSelector>,
    /// Deprecated single form of `targetRefs`.
    pub target_ref: Option<PolicyTargetReference>,
    /// The waypoints, gateways or services this applies to (instead of `selector`).
    pub target_refs: Vec<PolicyTargetReference>,
    /// Any one matching rule triggers the action. No rules: an ALLOW policy matches
    /// nothing (so it denies everything), a DENY policy never denies.
    pub rules: Vec<Rule>,
    pub action: Action,
    /// The external authorizer of a `CUSTOM` policy.
    pub provider: Option<ExtensionProvider>,
}

/// What a matching rule does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    /// Allow what matches; once any ALLOW policy applies, everything else is denied.
    #[default]
    Allow,
    /// Deny what matches; wins over ALLOW.
    Deny,
    /// Log what matches; decides nothing.
    Audit,
    /// Ask an external authorizer (`provider`).
    Custom,
}

/// A Gateway API style reference (`kind: Gateway`, `kind: Service`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct PolicyTargetReference {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

/// The external authorizer of a `CUSTOM` policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ExtensionProvider {
    pub name: String,
}

/// `from` × `to` × `when`: all parts must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Rule {
    /// Any one entry matches; empty: any source.
    pub from: Vec<From>,
    /// Any one entry matches; empty: any operation.
    pub to: Vec<To>,
    /// Every condition must hold.
    pub when: Vec<Condition>,
}

/// One `from` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct From {
    pub source: Source,
}

/// Who the peer is; every field that is set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Source {
    /// Peer identities without `spiffe://` (`cluster.local/ns/shop/sa/web`).
    pub principals: Vec<String>,
    pub not_principals: Vec<String>,
    /// JWT `iss/sub` pairs (L7: a waypoint's).
    pub request_principals: Vec<String>,
    pub not_request_principals: Vec<String>,
    pub namespaces: Vec<String>,
    pub not_namespaces: Vec<String>,
    /// The peer's address: IPs or CIDRs.
    pub ip_blocks: Vec<String>,
    pub not_ip_blocks: Vec<String>,
    /// The original client's address (`X-Forwarded-For` behind a gateway).
    pub remote_ip_blocks: Vec<String>,
    pub not_remote_ip_blocks: Vec<String>,
}

/// One `to` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct To {
    pub operation: Operation,
}

/// What is asked for; every field that is set must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Operation {
    /// HTTP hosts (L7).
    pub hosts: Vec<String>,
    pub not_hosts: Vec<String>,
    /// Destination ports, as strings (`"8080"`).
    pub ports: Vec<String>,
    pub not_ports: Vec<String>,
    /// HTTP methods (L7).
    pub methods: Vec<String>,
    pub not_methods: Vec<String>,
    /// HTTP paths (L7).
    pub paths: Vec<String>,
    pub not_paths: Vec<String>,
}

/// `when`: a connection or request attribute and the values it may (or may not) have.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Condition {
    /// `source.ip`, `source.namespace`, `source.principal`, `destination.port`,
    /// `request.headers[x-user]`, `request.auth.claims[iss]`, ….
    pub key: String,
    pub values: Vec<String>,
    pub not_values: Vec<String>,
}

/// The attribute a `when` condition reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionKey {
    SourceIp,
    /// The original client (`X-Forwarded-For`); at L4, the peer's address.
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    DestinationIp,
    DestinationPort,
    /// `request.headers[…]`, `request.auth.…`, `request.regex.headers[…]`,
    /// `connection.sni`, `experimental.envoy.filters.…`: only a proxy that terminates the
    /// application protocol (a waypoint) can read it.
    L7,
}

impl ConditionKey {
    /// The keys Istio documents for `when`.
    pub const DOCUMENTED: &'static str = "source.ip, remote.ip, source.namespace, source.principal, destination.ip, destination.port, connection.sni, request.headers[NAME], request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[NAME]";

    /// Reads a `when.key`; `None` for a key Istio does not know.
    #[must_use]
    pub fn parse(key: &str) -> Option<Self> {
        Some(match key {
            "source.ip" => Self::SourceIp,
            "remote.ip" => Self::RemoteIp,
            "source.namespace" => Self::SourceNamespace,
            "source.principal" => Self::SourcePrincipal,
            "destination.ip" => Self::DestinationIp,
            "destination.port" => Self::DestinationPort,
            "connection.sni"
            | "request.auth.principal"
            | "request.auth.audiences"
            | "request.auth.presenter" => Self::L7,
            _ if is_indexed(key, "request.headers[")
                || is_indexed(key, "request.auth.claims[")
                || is_indexed(key, "request.regex.headers[")
                || key.starts_with("experimental.envoy.filters.") =>
            {
                Self::L7
            }
            _ => return None,
        })
    }
}

fn is_indexed(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|name| !name.is_empty())
}

impl Source {
    /// The fields set here that only an L7 proxy can check.
    #[must_use]
    pub fn l7_fields(&self) -> Vec<&'static str> {
        [
            ("requestPrincipals", &self.request_principals),
            ("notRequestPrincipals", &self.not_request_principals),
        ]
        .into_iter()
        .filter(|(_, values)| !values.is_empty())
        .map(|(name, _)| name)
        .collect()
    }
}

impl Operation {
    /// The fields set here that only an L7 proxy can check.
    #[must_use]
    pub fn l7_fields(&self) -> Vec<&'static str> {
        [
            ("hosts", &self.hosts),
            ("notHosts", &self.not_hosts),
            ("methods", &self.methods),
            ("notMethods", &self.not_methods),
            ("paths", &self.paths),
            ("notPaths", &self.not_paths),
        ]
        .into_iter()
        .filter(|(_, values)| !values.is_empty())
        .map(|(name, _)| name)
        .collect()
    }
}

impl AuthorizationPolicySpec {
    /// Whether the policy names its targets (waypoints, gateways, services) rather than
    /// selecting workloads: then a waypoint enforces it, not ztunnel.
    #[must_use]
    pub fn has_target_refs(&self) -> bool {
        self.target_ref.is_some() || !self.target_refs.is_empty()
    }
}
