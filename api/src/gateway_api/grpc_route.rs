//! `GRPCRoute`: how gRPC calls to a parent are routed, by service and method
//! (`gateway.networking.k8s.io/v1`). A gRPC call is an HTTP/2 `POST` to
//! `/<service>/<method>`, so a GRPCRoute is served as the HTTPRoute it amounts to
//! ([`GrpcRouteSpec::to_http_route`]): each method match becomes a path match.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::http_route::{
    HttpBackendRef, HttpPathMatch, HttpRouteFilter, HttpRouteMatch, HttpRouteRule, HttpRouteSpec,
    NamedValueMatch, ParentReference, PathMatchType,
};

/// The spec of a `GRPCRoute`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1",
    kind = "GRPCRoute",
    root = "GrpcRoute",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase")]
pub struct GrpcRouteSpec {
    pub parent_refs: Vec<ParentReference>,
    pub hostnames: Vec<String>,
    pub rules: Vec<GrpcRouteRule>,
}

/// One rule: conditions, filters and weighted backends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GrpcRouteRule {
    pub name: Option<String>,
    /// Any one holds (OR); none means every call.
    pub matches: Vec<GrpcRouteMatch>,
    /// Header modifiers and mirrors (the types a GRPCRoute allows).
    pub filters: Vec<HttpRouteFilter>,
    pub backend_refs: Vec<HttpBackendRef>,
}

/// One match: the method and headers (AND).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GrpcRouteMatch {
    /// `None`: every method.
    pub method: Option<GrpcMethodMatch>,
    pub headers: Vec<NamedValueMatch>,
}

/// A service and method condition; at least one of them is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GrpcMethodMatch {
    #[serde(rename = "type")]
    pub kind: MethodMatchType,
    /// The fully qualified service (`shop.Cart`); `None`: any.
    pub service: Option<String>,
    /// `None`: any method of the service.
    pub method: Option<String>,
}

/// How service and method are compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MethodMatchType {
    #[default]
    Exact,
    RegularExpression,
}

/// Any service or method name, as a regular expression (a path element).
const ANY_ELEMENT: &str = "[^/]+";

impl GrpcRouteSpec {
    /// The HTTPRoute this GRPCRoute amounts to: the same parents, hostnames, filters
    /// and backends, each method match a path match — `/service/method` exactly, a
    /// service alone as the path prefix `/service`, anything else as a regular
    /// expression over both elements.
    #[must_use]
    pub fn to_http_route(&self) -> HttpRouteSpec {
        HttpRouteSpec {
            parent_refs: self.parent_refs.clone(),
            hostnames: self.hostnames.clone(),
            rules: self
                .rules
                .iter()
                .map(|rule| HttpRouteRule {
                    name: rule.name.clone(),
                    matches: rule.matches.iter().map(http_match).collect(),
                    filters: rule.filters.clone(),
                    backend_refs: rule.backend_refs.clone(),
                    ..HttpRouteRule::default()
                })
                .collect(),
        }
    }
}

fn http_match(grpc: &GrpcRouteMatch) -> HttpRouteMatch {
    HttpRouteMatch {
        path: grpc.method.as_ref().map(path_match),
        headers: grpc.headers.clone(),
        ..HttpRouteMatch::default()
    }
}

fn path_match(method: &GrpcMethodMatch) -> HttpPathMatch {
    let (service, name) = (method.service.as_deref(), method.method.as_deref());
    let (kind, value) = match (method.kind, service, name) {
        (MethodMatchType::Exact, Some(service), Some(name)) => {
            (PathMatchType::Exact, format!("/{service}/{name}"))
        }
        (MethodMatchType::Exact, Some(service), None) => {
            (PathMatchType::PathPrefix, format!("/{service}"))
        }
        (MethodMatchType::Exact, None, name) => (
            PathMatchType::RegularExpression,
            format!(
                "/{ANY_ELEMENT}/{}",
                name.map_or(ANY_ELEMENT.to_owned(), regex_escape)
            ),
        ),
        (MethodMatchType::RegularExpression, service, name) => (
            PathMatchType::RegularExpression,
            format!(
                "/(?:{})/(?:{})",
                service.unwrap_or(ANY_ELEMENT),
                name.unwrap_or(ANY_ELEMENT)
            ),
        ),
    };
    HttpPathMatch {
        kind,
        value: Some(value),
    }
}

/// `text` with the regular expression metacharacters escaped.
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(yaml: &str) -> (PathMatchType, String) {
        let method: GrpcMethodMatch = serde_yaml_ng::from_str(yaml).expect("a method match");
        let path = path_match(&method);
        (path.kind, path.value.unwrap_or_default())
    }

    #[test]
    fn each_method_match_becomes_the_path_match_it_means() {
        assert_eq!(
            path_of("{service: shop.Cart, method: Add}"),
            (PathMatchType::Exact, "/shop.Cart/Add".to_owned())
        );
        assert_eq!(
            path_of("{service: shop.Cart}"),
            (PathMatchType::PathPrefix, "/shop.Cart".to_owned())
        );
        assert_eq!(
            path_of("{method: Add}"),
            (PathMatchType::RegularExpression, "/[^/]+/Add".to_owned())
        );
        assert_eq!(
            path_of("{type: RegularExpression, service: 'shop\\..*', method: 'Get.*'}"),
            (
                PathMatchType::RegularExpression,
                "/(?:shop\\..*)/(?:Get.*)".to_owned()
            )
        );
    }
}
