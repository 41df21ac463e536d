//! `HTTPRoute`: how requests to a parent (a Service, in the mesh) are routed.
//!
//! Follows the Gateway API reference (`gateway.networking.k8s.io/v1`, standard channel
//! up to v1.7: `timeouts`, `retry`, mirror `percent`/`fraction`, rule `name`). Defaults
//! the API server would fill in (`PathPrefix /`, `Exact`, weight 1, status 302) are
//! applied by the accessors here, so a route read from a file means what it means in a
//! cluster.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use crate::istio::Duration;

/// The spec of an `HTTPRoute`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "HTTPRoute",
    root = "HttpRoute",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// What the route attaches to: in the mesh, Services (`group: ""`, `kind: Service`).
    pub parent_refs: Vec<ParentReference>,
    /// Host names (ignored for Service parents, as the GAMMA spec says).
    pub hostnames: Vec<String>,
    /// The rules; none means one rule matching every request with no backend.
    pub rules: Vec<HttpRouteRule>,
}

/// Those of `parents` (of a route in `namespace`) that are Services in that namespace: a
/// producer route's, which the Services' waypoints apply for every caller.
pub fn producer_parents<'a>(
    parents: &'a [ParentReference],
    namespace: &'a str,
) -> impl Iterator<Item = &'a ParentReference> + 'a {
    parents.iter().filter(move |parent| {
        parent.is_service() && parent.namespace.as_deref().is_none_or(|ns| ns == namespace)
    })
}

/// A parent the route attaches to (written back as given in the route's status, so
/// unset fields stay unset).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ParentReference {
    /// `None`: `gateway.networking.k8s.io`; a Service parent says `""`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `None`: `Gateway`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `None`: the route's namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// A Gateway's listener, or a Service's port name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Only this port of the parent; `None`: all of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
}

impl ParentReference {
    /// Whether the parent is a core `Service` (a mesh route, GAMMA).
    #[must_use]
    pub fn is_service(&self) -> bool {
        self.group.as_deref() == Some("") && self.kind.as_deref() == Some("Service")
    }

    /// Whether the parent is a Gateway API `Gateway` (the default kind).
    #[must_use]
    pub fn is_gateway(&self) -> bool {
        self.group.as_deref().unwrap_or(super::GROUP) == super::GROUP
            && self.kind.as_deref().unwrap_or("Gateway") == "Gateway"
    }

    /// Whether the parent names the Gateway listener `name` on `port`: its
    /// `sectionName` and `port`, where set, are those.
    #[must_use]
    pub fn names_listener(&self, name: &str, port: u32) -> bool {
        self.section_name
            .as_deref()
            .is_none_or(|section| section == name)
            && self.port.is_none_or(|wanted| wanted == port)
    }

    /// `group/kind`, with the defaults, for messages.
    #[must_use]
    pub fn group_kind(&self) -> String {
        let group = self.group.as_deref().unwrap_or(super::GROUP);
        let kind = self.kind.as_deref().unwrap_or("Gateway");
        if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{group}/{kind}")
        }
    }
}

/// One rule: conditions, what to do to a matching request, and where it goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRouteRule {
    pub name: Option<String>,
    /// Any one holds (OR); none means `PathPrefix /`.
    pub matches: Vec<HttpRouteMatch>,
    pub filters: Vec<HttpRouteFilter>,
    /// Weighted backends; none (or all weights 0) answers 500.
    pub backend_refs: Vec<HttpBackendRef>,
    pub timeouts: Option<HttpRouteTimeouts>,
    pub retry: Option<HttpRouteRetry>,
}

/// One match: every condition set holds (AND).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// `None`: `PathPrefix /`.
    pub path: Option<HttpPathMatch>,
    pub headers: Vec<NamedValueMatch>,
    pub query_params: Vec<NamedValueMatch>,
    pub method: Option<String>,
}

/// A path condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpPathMatch {
    #[serde(rename = "type")]
    pub kind: PathMatchType,
    /// `None`: `/`.
    pub value: Option<String>,
}

impl HttpPathMatch {
    /// The value, `/` when absent.
    #[must_use]
    pub fn value(&self) -> &str {
        self.value.as_deref().unwrap_or("/")
    }
}

/// How a path is compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatchType {
    /// The whole path, case-sensitive.
    Exact,
    /// Whole path elements: `/abc` takes `/abc`, `/abc/` and `/abc/def`, not `/abcd`.
    #[default]
    PathPrefix,
    /// The whole path matches the (RE2) expression.
    RegularExpression,
}

/// A header or query parameter condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct NamedValueMatch {
    #[serde(rename = "type")]
    pub kind: ValueMatchType,
    pub name: String,
    pub value: String,
}

/// How a header or query parameter value is compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueMatchType {
    #[default]
    Exact,
    RegularExpression,
}

/// A filter: one of its fields, named by `type`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRouteFilter {
    #[serde(rename = "type")]
    pub kind: FilterType,
    pub request_header_modifier: Option<HttpHeaderFilter>,
    pub response_header_modifier: Option<HttpHeaderFilter>,
    pub request_redirect: Option<HttpRequestRedirectFilter>,
    #[serde(rename = "urlRewrite")]
    pub url_rewrite: Option<HttpUrlRewriteFilter>,
    pub request_mirror: Option<HttpRequestMirrorFilter>,
    pub extension_ref: Option<serde_json::Value>,
    pub cors: Option<HttpCorsFilter>,
    pub external_auth: Option<serde_json::Value>,
}

/// The filter types of the API (`CORS` and `ExternalAuth` are read to be refused).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterType {
    #[default]
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestRedirect,
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    RequestMirror,
    ExtensionRef,
    #[serde(rename = "CORS")]
    Cors,
    ExternalAuth,
}

/// Header operations: `set` replaces, `add` appends, `remove` drops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpHeaderFilter {
    pub set: Vec<HttpHeader>,
    pub add: Vec<HttpHeader>,
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

/// `RequestRedirect`: answer with a redirect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRequestRedirectFilter {
    pub scheme: Option<String>,
    pub hostname: Option<String>,
    pub path: Option<HttpPathModifier>,
    pub port: Option<u32>,
    /// `None`: 302.
    pub status_code: Option<u32>,
}

/// `URLRewrite`: change the host or path before forwarding.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpUrlRewriteFilter {
    pub hostname: Option<String>,
    pub path: Option<HttpPathModifier>,
}

/// A new path: the whole of it, or the matched prefix replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpPathModifier {
    #[serde(rename = "type")]
    pub kind: PathModifierType,
    pub replace_full_path: Option<String>,
    pub replace_prefix_match: Option<String>,
}

/// Which path replacement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathModifierType {
    #[default]
    ReplaceFullPath,
    ReplacePrefixMatch,
}

/// `CORS`: answer browsers' preflights and mark allowed responses (standard since v1.5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpCorsFilter {
    /// Origins, exactly or with `*` standing for any labels of the host (`*` alone: any).
    pub allow_origins: Vec<String>,
    pub allow_credentials: Option<bool>,
    pub allow_methods: Vec<String>,
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    /// Seconds a browser may cache the preflight's answer; `None`: 5.
    pub max_age: Option<u32>,
}

/// `RequestMirror`: copy a share of the requests to another backend.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRequestMirrorFilter {
    pub backend_ref: BackendRef,
    /// 0 to 100; with `fraction`, neither; none of both: every request.
    pub percent: Option<u32>,
    pub fraction: Option<Fraction>,
}

/// `numerator / denominator` (default 100).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Fraction {
    pub numerator: u32,
    pub denominator: Option<u32>,
}

/// A backend: a Service and its port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BackendRef {
    /// `None`: `""` (core).
    pub group: Option<String>,
    /// `None`: `Service`.
    pub kind: Option<String>,
    pub name: String,
    /// `None`: the route's namespace.
    pub namespace: Option<String>,
    pub port: Option<u32>,
}

impl BackendRef {
    /// Whether it names a core `Service` (the only backend kind served).
    #[must_use]
    pub fn is_service(&self) -> bool {
        self.group.as_deref().unwrap_or_default().is_empty()
            && self.kind.as_deref().unwrap_or("Service") == "Service"
    }
}

/// A weighted backend of a rule, with filters of its own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpBackendRef {
    /// `None`: `""` (core).
    pub group: Option<String>,
    /// `None`: `Service`.
    pub kind: Option<String>,
    pub name: String,
    /// `None`: the route's namespace.
    pub namespace: Option<String>,
    pub port: Option<u32>,
    /// `None`: 1. A share of the rule's total, not a percentage.
    pub weight: Option<u32>,
    pub filters: Vec<HttpRouteFilter>,
}

impl HttpBackendRef {
    /// The backend it names (without weight and filters).
    #[must_use]
    pub fn backend(&self) -> BackendRef {
        BackendRef {
            group: self.group.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            port: self.port,
        }
    }
}

/// Deadlines: the whole request's, and each try's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRouteTimeouts {
    pub request: Option<Duration>,
    pub backend_request: Option<Duration>,
}

/// Retries: which statuses, how many times, and the wait between tries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HttpRouteRetry {
    pub codes: Vec<u32>,
    pub attempts: Option<u32>,
    pub backoff: Option<Duration>,
}
