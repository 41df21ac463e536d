//! `VirtualService`: how requests to a set of hosts are routed.
//!
//! Follows Istio's reference (`networking.istio.io/v1`, VirtualService). Rust names use
//! Rust casing (`HttpRoute` for Istio's `HTTPRoute`); the YAML names are Istio's. Fields
//! Istio marks deprecated are kept (so existing manifests read) and documented as such.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Duration, Percent, PortSelector, StringMatch};

/// The spec of a `VirtualService`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "VirtualService",
    namespaced,
    shortname = "vs",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    /// The hosts this applies to: short names (`reviews`, resolved in the object's
    /// namespace), FQDNs, or wildcards (`*.example.com`).
    pub hosts: Vec<String>,
    /// Gateways (`namespace/name`) and sidecars (`mesh`) these routes apply to.
    pub gateways: Vec<String>,
    /// HTTP routes, tried in order; the first match wins.
    pub http: Vec<HttpRoute>,
    /// TLS (SNI) routes for unterminated TLS traffic.
    pub tls: Vec<TlsRoute>,
    /// Opaque TCP routes.
    pub tcp: Vec<TcpRoute>,
    /// The namespaces that may see this object (`.` this one, `*` all).
    pub export_to: Vec<String>,
}

impl VirtualServiceSpec {
    /// Whether it routes mesh traffic (and so applies at waypoints): it names no
    /// gateways, or `mesh` among them.
    #[must_use]
    pub fn applies_to_mesh(&self) -> bool {
        self.gateways.is_empty() || self.gateways.iter().any(|g| g == "mesh")
    }
}

/// One HTTP route: conditions, and what to do with a request that meets them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRoute {
    pub name: String,
    /// Any one of these matches (OR); within one, all conditions hold (AND).
    #[serde(rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    /// Where to send the request, with weights summing to 100.
    pub route: Vec<HttpRouteDestination>,
    /// Answer with a redirect instead of routing (not with `route`).
    pub redirect: Option<HttpRedirect>,
    /// Answer with a fixed response instead of routing.
    pub direct_response: Option<HttpDirectResponse>,
    /// Hand the decision to another VirtualService.
    pub delegate: Option<Delegate>,
    pub rewrite: Option<HttpRewrite>,
    /// The whole request's deadline.
    pub timeout: Option<Duration>,
    pub retries: Option<HttpRetry>,
    pub fault: Option<HttpFaultInjection>,
    /// Send a copy of the traffic here too (responses are dropped).
    pub mirror: Option<Destination>,
    /// Several mirrors, each with its own share.
    pub mirrors: Vec<HttpMirrorPolicy>,
    /// The share of traffic `mirror` receives.
    pub mirror_percentage: Option<Percent>,
    /// Deprecated: use `mirrorPercentage`.
    pub mirror_percent: Option<u32>,
    pub cors_policy: Option<CorsPolicy>,
    pub headers: Option<Headers>,
}

/// Conditions on a request; all set conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpMatchRequest {
    pub name: String,
    pub uri: Option<StringMatch>,
    pub scheme: Option<StringMatch>,
    pub method: Option<StringMatch>,
    pub authority: Option<StringMatch>,
    /// Header name (lowercase) → condition; `{}` checks presence.
    pub headers: BTreeMap<String, StringMatch>,
    /// The port the request arrived on.
    pub port: Option<u32>,
    /// Only for callers with these labels.
    pub source_labels: BTreeMap<String, String>,
    pub gateways: Vec<String>,
    pub query_params: BTreeMap<String, StringMatch>,
    /// Match `uri` case-insensitively.
    pub ignore_uri_case: bool,
    /// Headers that must *not* match.
    pub without_headers: BTreeMap<String, StringMatch>,
    pub source_namespace: String,
    pub stat_prefix: String,
}

/// A weighted destination of an HTTP route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRouteDestination {
    pub destination: Destination,
    /// The share of traffic, out of 100; may be omitted for a single destination.
    pub weight: Option<i32>,
    pub headers: Option<Headers>,
}

/// A weighted destination of a TLS or TCP route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct RouteDestination {
    pub destination: Destination,
    pub weight: Option<i32>,
}

/// A service (and optionally a subset and port of it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Destination {
    /// A short name (resolved in the VirtualService's namespace) or an FQDN.
    pub host: String,
    /// A subset a DestinationRule for `host` defines; empty for all endpoints.
    pub subset: String,
    pub port: Option<PortSelector>,
}

/// Answer with a 3xx redirect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRedirect {
    pub uri: String,
    pub authority: String,
    pub port: Option<u32>,
    pub derive_port: Option<RedirectPortSelection>,
    pub scheme: String,
    /// 301 when not set.
    pub redirect_code: Option<u32>,
}

/// Where a redirect's port comes from, when `port` is not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RedirectPortSelection {
    FromProtocolDefault,
    FromRequestPort,
}

/// Answer with a fixed status and body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpDirectResponse {
    pub status: u32,
    pub body: Option<HttpBody>,
}

/// A direct response's body: text or base64 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpBody {
    pub string: Option<String>,
    pub bytes: Option<String>,
}

/// The VirtualService (`namespace/name`) an HTTP route delegates to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Delegate {
    pub name: String,
    pub namespace: String,
}

/// Rewrites applied before forwarding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRewrite {
    /// Replaces the matched `uri` prefix (or the whole path).
    pub uri: String,
    pub authority: String,
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// Rewrite the path with a regular expression.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct RegexRewrite {
    /// The RE2 expression to match.
    #[serde(rename = "match")]
    pub pattern: String,
    /// The replacement, with `\1`-style group references.
    pub rewrite: String,
}

/// Retries of a failed request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRetry {
    /// How many retries; 0 disables them.
    pub attempts: Option<i32>,
    pub per_try_timeout: Option<Duration>,
    /// Comma-separated conditions (`5xx,gateway-error,connect-failure` or status codes).
    pub retry_on: Option<String>,
    pub retry_remote_localities: Option<bool>,
    pub retry_ignore_previous_hosts: Option<bool>,
    pub backoff: Option<Duration>,
}

/// Faults injected into the request (testing resilience).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpFaultInjection {
    pub delay: Option<Delay>,
    pub abort: Option<Abort>,
}

/// Delay a share of requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Delay {
    pub fixed_delay: Option<Duration>,
    pub exponential_delay: Option<Duration>,
    pub percentage: Option<Percent>,
    /// Deprecated: use `percentage`.
    pub percent: Option<i32>,
}

/// Fail a share of requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Abort {
    pub http_status: Option<i32>,
    pub grpc_status: Option<GrpcStatus>,
    pub http2_error: Option<String>,
    pub percentage: Option<Percent>,
}

/// gRPC status codes by name, as `fault.abort.grpcStatus` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GrpcStatus {
    Ok = 0,
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl GrpcStatus {
    /// The status's number on the wire (`grpc-status`): `UNAVAILABLE` is 14. The
    /// variants are declared in that order, from `OK` = 0.
    #[must_use]
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// One of several mirrors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpMirrorPolicy {
    pub destination: Destination,
    pub percentage: Option<Percent>,
}

/// Cross-origin resource sharing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct CorsPolicy {
    pub allow_origins: Vec<StringMatch>,
    /// Deprecated: use `allowOrigins`.
    pub allow_origin: Vec<String>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub max_age: Option<Duration>,
    pub allow_credentials: Option<bool>,
    pub unmatched_preflights: Option<UnmatchedPreflights>,
}

/// What to do with a preflight request that matches no origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnmatchedPreflights {
    Unspecified,
    Forward,
    Ignore,
}

/// Header manipulation for requests and responses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Headers {
    pub request: Option<HeaderOperations>,
    pub response: Option<HeaderOperations>,
}

/// Headers to overwrite, append and remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct HeaderOperations {
    pub set: BTreeMap<String, String>,
    pub add: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

/// A TLS route, chosen by SNI.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct TlsRoute {
    #[serde(rename = "match")]
    pub matches: Vec<TlsMatchAttributes>,
    pub route: Vec<RouteDestination>,
}

/// Conditions on a TLS connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct TlsMatchAttributes {
    pub sni_hosts: Vec<String>,
    pub destination_subnets: Vec<String>,
    pub port: Option<u32>,
    pub source_labels: BTreeMap<String, String>,
    pub gateways: Vec<String>,
    pub source_namespace: String,
}

/// A TCP route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct TcpRoute {
    #[serde(rename = "match")]
    pub matches: Vec<L4MatchAttributes>,
    pub route: Vec<RouteDestination>,
}

/// Conditions on a TCP connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct L4MatchAttributes {
    pub destination_subnets: Vec<String>,
    pub port: Option<u32>,
    pub source_labels: BTreeMap<String, String>,
    pub gateways: Vec<String>,
    pub source_namespace: String,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn grpc_statuses_have_their_wire_numbers() {
        let parse = |name: &str| serde_yaml_ng::from_str::<GrpcStatus>(name).unwrap().code();
        assert_eq!(parse("OK"), 0);
        assert_eq!(parse("NOT_FOUND"), 5);
        assert_eq!(parse("UNAVAILABLE"), 14);
        assert_eq!(parse("UNAUTHENTICATED"), 16);
    }

    #[test]
    fn reads_the_bookinfo_reviews_routes() {
        let spec: VirtualServiceSpec = serde_yaml_ng::from_str(
            "
hosts: [reviews]
http:
- match:
  - headers:
      end-user: {exact: jason}
  route:
  - destination: {host: reviews, subset: v2}
- route:
  - destination: {host: reviews, subset: v1}
    weight: 50
  - destination: {host: reviews, subset: v3, port: {number: 9080}}
    weight: 50
  timeout: 1.5s
  retries: {attempts: 3, perTryTimeout: 250ms, retryOn: 5xx}
",
        )
        .unwrap();
        assert_eq!(spec.hosts, ["reviews"]);
        let jason = &spec.http[0];
        assert_eq!(
            jason.matches[0].headers["end-user"],
            StringMatch::Exact("jason".into())
        );
        let split = &spec.http[1];
        assert_eq!(split.route[1].weight, Some(50));
        assert_eq!(
            split.route[1].destination.port,
            Some(PortSelector { number: 9080 })
        );
        assert_eq!(
            split.timeout.map(Duration::get),
            Some(std::time::Duration::from_millis(1_500))
        );
        assert_eq!(split.retries.as_ref().unwrap().attempts, Some(3));
    }

    #[test]
    fn a_crd_can_be_generated() {
        let crd = VirtualService::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("virtualservices.networking.istio.io")
        );
        assert_eq!(crd.spec.names.short_names, Some(vec!["vs".to_owned()]));
    }
}
