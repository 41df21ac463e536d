//! Request conditions (`http[].match`), compiled once so a request is tested without
//! parsing or allocating: `uri`, `scheme`, `method`, `authority`, `headers`,
//! `withoutHeaders`, `queryParams`, `port` and `ignoreUriCase`, as Envoy evaluates
//! Istio's translation of them. The conditions on who sends (`sourceLabels`,
//! `sourceNamespace`) and through what (`gateways`) are shared with the connection
//! conditions of `tcp[].match` ([`connection`]).

pub mod connection;

use std::collections::BTreeMap;

use ambit_api::istio::{StringMatch, virtual_service::HttpMatchRequest};
use http::{HeaderMap, HeaderName};
use regex::Regex;

/// Why a match condition cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum MatchError {
    #[error("`{field}` regex `{pattern}` does not compile: {source}")]
    Regex {
        field: String,
        pattern: String,
        source: Box<regex::Error>,
    },
    #[error(
        "`{field}: {{}}` matches any value only in headers, withoutHeaders and queryParams: give `exact`, `prefix` or `regex`"
    )]
    PresentOutsideMaps { field: String },
    #[error("`{field}` is not a valid header name: use lowercase letters, digits and `-`")]
    HeaderName { field: String },
    #[error(
        "`{field}` is not supported by the waypoint yet: remove it (the route would otherwise match more than intended)"
    )]
    Unsupported { field: &'static str },
    #[error("`port: {port}` is not a TCP port: use 1 to 65535")]
    Port { port: u32 },
    #[error("`{field}`: {source}")]
    Subnet {
        field: String,
        source: ambit_api::ip_block::IpBlockError,
    },
}

/// The parts of a request that conditions look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    /// The authority as the client sent it (`Host` or `:authority`), port included.
    pub authority: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The port the request arrived on.
    pub port: u16,
    /// Who sent it, when known: what `sourceLabels` and `sourceNamespace` match.
    pub source: Option<Source<'a>>,
    /// What the request came through, as `gateways` names it: `mesh` at a waypoint,
    /// the serving Gateways (`namespace/name`) at an ingress gateway.
    pub gateways: &'a [String],
}

/// The workload a request came from.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub namespace: &'a str,
    /// The pod's labels; empty when only the identity is known.
    pub labels: &'a BTreeMap<String, String>,
}

/// One compiled string condition.
#[derive(Debug, Clone)]
pub enum StringMatcher {
    Exact(String),
    Prefix(String),
    /// Whole path elements (the Gateway API's `PathPrefix`): `/abc` takes `/abc` and
    /// `/abc/def`, not `/abcd`. Held without a trailing `/` (`""` takes every path).
    PathPrefix(String),
    /// Anchored at both ends: the whole value must match, like Envoy's `safe_regex`.
    Regex(Regex),
    Present,
}

impl StringMatcher {
    /// Compiles `condition`; `field` names it in errors. `ignore_case` lowercases the
    /// expected value of `exact` and `prefix` (the caller lowercases the actual one).
    pub fn compile(
        field: &str,
        condition: &StringMatch,
        ignore_case: bool,
    ) -> Result<Self, MatchError> {
        let fold = |value: &str| {
            if ignore_case {
                value.to_lowercase()
            } else {
                value.to_owned()
            }
        };
        Ok(match condition {
            StringMatch::Exact(value) => Self::Exact(fold(value)),
            StringMatch::Prefix(value) => Self::Prefix(fold(value)),
            StringMatch::Regex(pattern) => {
                Self::Regex(Regex::new(&format!("^(?:{pattern})$")).map_err(|source| {
                    MatchError::Regex {
                        field: field.to_owned(),
                        pattern: pattern.clone(),
                        source: Box::new(source),
                    }
                })?)
            }
            StringMatch::Present => Self::Present,
        })
    }

    /// Compiles a condition on a value that is always there (uri, method, …), where
    /// `{}` is a mistake rather than "present".
    fn compile_required(
        field: &str,
        condition: &StringMatch,
        ignore_case: bool,
    ) -> Result<Self, MatchError> {
        if *condition == StringMatch::Present {
            return Err(MatchError::PresentOutsideMaps {
                field: field.to_owned(),
            });
        }
        Self::compile(field, condition, ignore_case)
    }

    /// Whether `value` satisfies the condition.
    #[must_use]
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(expected) => value == expected,
            Self::Prefix(prefix) => value.starts_with(prefix.as_str()),
            Self::PathPrefix(prefix) => value
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            Self::Regex(regex) => regex.is_match(value),
            Self::Present => true,
        }
    }
}

/// Whose rules a route follows where Istio's VirtualService and the Gateway API's
/// HTTPRoute differ (an HTTPRoute is compiled as the VirtualService Istio generates
/// for it, read with the Gateway API's meaning, as Istio's "gateway semantics" do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantics {
    VirtualService,
    /// A `prefix` matches whole path elements ([`StringMatcher::PathPrefix`]); a
    /// prefix rewrite or a `%PREFIX()%` redirect joins the replacement and the rest of
    /// the path with one `/`.
    GatewayApi,
}

/// One compiled `match` entry: every condition set must hold.
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    uri: Option<StringMatcher>,
    ignore_uri_case: bool,
    scheme: Option<StringMatcher>,
    method: Option<StringMatcher>,
    authority: Option<StringMatcher>,
    headers: Vec<(HeaderName, StringMatcher)>,
    without_headers: Vec<(HeaderName, StringMatcher)>,
    query_params: Vec<(String, StringMatcher)>,
    port: Option<u16>,
    source: SourceCondition,
    gateways: GatewayCondition,
}

/// `sourceLabels` and `sourceNamespace`: an unknown source matches neither.
#[derive(Debug, Clone, Default)]
pub struct SourceCondition {
    labels: BTreeMap<String, String>,
    namespace: Option<String>,
}

impl SourceCondition {
    /// The condition on a source with all of `labels`, in `namespace` (empty: any).
    #[must_use]
    pub fn new(labels: &BTreeMap<String, String>, namespace: &str) -> Self {
        Self {
            labels: labels.clone(),
            namespace: Some(namespace.to_owned()).filter(|ns| !ns.is_empty()),
        }
    }

    /// Whether `source` (`None`: unknown) meets the condition.
    #[must_use]
    pub fn holds(&self, source: Option<Source<'_>>) -> bool {
        if self.labels.is_empty() && self.namespace.is_none() {
            return true;
        }
        source.is_some_and(|source| {
            self.namespace
                .as_deref()
                .is_none_or(|namespace| namespace == source.namespace)
                && self
                    .labels
                    .iter()
                    .all(|(key, value)| source.labels.get(key) == Some(value))
        })
    }
}

/// `gateways`: `namespace/name` (or `mesh`); empty: wherever the VirtualService applies.
#[derive(Debug, Clone, Default)]
pub struct GatewayCondition(Vec<String>);

impl GatewayCondition {
    /// The condition naming `gateways` of a VirtualService in `namespace`, where short
    /// names are resolved.
    #[must_use]
    pub fn new(gateways: &[String], namespace: &str) -> Self {
        Self(
            gateways
                .iter()
                .map(|gateway| {
                    if gateway == "mesh" || gateway.contains('/') {
                        gateway.clone()
                    } else {
                        format!("{namespace}/{gateway}")
                    }
                })
                .collect(),
        )
    }

    /// Whether traffic that came through `bound_as` meets the condition.
    #[must_use]
    pub fn holds(&self, bound_as: &[String]) -> bool {
        self.0.is_empty() || self.0.iter().any(|g| bound_as.contains(g))
    }
}

/// A `port` condition, or the error saying it is no TCP port.
fn port_condition(port: Option<u32>) -> Result<Option<u16>, MatchError> {
    port.map(|port| match u16::try_from(port) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(MatchError::Port { port }),
    })
    .transpose()
}

impl RequestMatch {
    /// Compiles one `match` entry of a VirtualService in `namespace` (short gateway
    /// names are resolved there); `field` (`http[0].match[1]`) prefixes error paths.
    /// Every problem is reported, not only the first.
    pub fn compile(
        field: &str,
        namespace: &str,
        spec: &HttpMatchRequest,
        semantics: Semantics,
    ) -> Result<Self, Vec<MatchError>> {
        let mut errors = Vec::new();
        let mut required = |name: &str, condition: &Option<StringMatch>, ignore_case: bool| {
            let condition = condition.as_ref()?;
            StringMatcher::compile_required(&format!("{field}.{name}"), condition, ignore_case)
                .map_err(|e| errors.push(e))
                .ok()
        };
        let uri =
            required("uri", &spec.uri, spec.ignore_uri_case).map(|uri| match (uri, semantics) {
                (StringMatcher::Prefix(prefix), Semantics::GatewayApi) => {
                    StringMatcher::PathPrefix(prefix.trim_end_matches('/').to_owned())
                }
                (uri, _) => uri,
            });
        let scheme = required("scheme", &spec.scheme, false);
        let method = required("method", &spec.method, false);
        let authority = required("authority", &spec.authority, false);
        let headers = compile_headers(&format!("{field}.headers"), &spec.headers, &mut errors);
        let without_headers = compile_headers(
            &format!("{field}.withoutHeaders"),
            &spec.without_headers,
            &mut errors,
        );
        let query_params = spec
            .query_params
            .iter()
            .filter_map(|(name, condition)| {
                StringMatcher::compile(&format!("{field}.queryParams.{name}"), condition, false)
                    .map(|matcher| (name.clone(), matcher))
                    .map_err(|e| errors.push(e))
                    .ok()
            })
            .collect();
        let port = port_condition(spec.port)
            .map_err(|e| errors.push(e))
            .ok()
            .flatten();
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            uri,
            ignore_uri_case: spec.ignore_uri_case,
            scheme,
            method,
            authority,
            headers,
            without_headers,
            query_params,
            port,
            source: SourceCondition::new(&spec.source_labels, &spec.source_namespace),
            gateways: GatewayCondition::new(&spec.gateways, namespace),
        })
    }

    /// The `uri` prefix this entry matched on, which a `rewrite.uri` replaces.
    #[must_use]
    pub fn uri_prefix(&self) -> Option<&str> {
        match &self.uri {
            Some(StringMatcher::Prefix(prefix) | StringMatcher::PathPrefix(prefix)) => Some(prefix),
            _ => None,
        }
    }

    /// Whether the entry has a `uri` condition.
    #[must_use]
    pub fn has_uri(&self) -> bool {
        self.uri.is_some()
    }

    /// Whether every condition holds for `request`.
    #[must_use]
    pub fn matches(&self, request: &RequestView<'_>) -> bool {
        let uri_holds = self.uri.as_ref().is_none_or(|uri| {
            if self.ignore_uri_case && !matches!(uri, StringMatcher::Regex(_)) {
                uri.matches(&request.path.to_lowercase())
            } else {
                uri.matches(request.path)
            }
        });
        let holds = |matcher: &Option<StringMatcher>, value: &str| {
            matcher.as_ref().is_none_or(|m| m.matches(value))
        };
        uri_holds
            && self.source.holds(request.source)
            && self.gateways.holds(request.gateways)
            && holds(&self.scheme, request.scheme)
            && holds(&self.method, request.method)
            && holds(&self.authority, request.authority)
            && self.port.is_none_or(|port| port == request.port)
            && self
                .headers
                .iter()
                .all(|(name, m)| header_matches(request.headers, name, m))
            && !self
                .without_headers
                .iter()
                .any(|(name, m)| header_matches(request.headers, name, m))
            && self.query_params.iter().all(|(name, m)| {
                query_param(request.query, name).is_some_and(|value| m.matches(value))
            })
    }
}

fn compile_headers(
    field: &str,
    specs: &BTreeMap<String, StringMatch>,
    errors: &mut Vec<MatchError>,
) -> Vec<(HeaderName, StringMatcher)> {
    specs
        .iter()
        .filter_map(|(name, condition)| {
            let field = format!("{field}.{name}");
            let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
                errors.push(MatchError::HeaderName { field });
                return None;
            };
            StringMatcher::compile(&field, condition, false)
                .map(|matcher| (header, matcher))
                .map_err(|e| errors.push(e))
                .ok()
        })
        .collect()
}

/// Whether header `name` is present and its value (several values joined with `,`, as
/// Envoy sees them) satisfies `matcher`.
fn header_matches(headers: &HeaderMap, name: &HeaderName, matcher: &StringMatcher) -> bool {
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return false;
    }
    if matches!(matcher, StringMatcher::Present) {
        return true;
    }
    let joined: Option<Vec<&str>> = values.map(|v| v.to_str().ok()).collect();
    joined.is_some_and(|parts| matcher.matches(&parts.join(",")))
}

/// The first value of query parameter `name` (not percent-decoded, as Envoy matches).
fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn compile(yaml: &str) -> RequestMatch {
        let spec: HttpMatchRequest = serde_yaml_ng::from_str(yaml).expect("test match is YAML");
        RequestMatch::compile("match[0]", "shop", &spec, Semantics::VirtualService)
            .expect("test match compiles")
    }

    fn request<'a>(path_and_query: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        RequestView {
            method: "GET",
            scheme: "http",
            authority: "reviews:9080",
            path,
            query,
            headers,
            port: 9080,
            source: None,
            gateways: MESH,
        }
    }

    const MESH: &[String] = &[];

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn uri_exact_prefix_and_regex() {
        let none = HeaderMap::new();
        let exact = compile("uri: {exact: /login}");
        assert!(exact.matches(&request("/login", &none)));
        assert!(
            exact.matches(&request("/login?next=/", &none)),
            "the query is not part of the path"
        );
        assert!(!exact.matches(&request("/login/x", &none)));

        let prefix = compile("uri: {prefix: /api}");
        assert!(prefix.matches(&request("/api/v1", &none)));
        assert!(!prefix.matches(&request("/ap", &none)));
        assert_eq!(prefix.uri_prefix(), Some("/api"));

        let regex = compile("uri: {regex: '/v[0-9]+'}");
        assert!(regex.matches(&request("/v12", &none)));
        assert!(
            !regex.matches(&request("/v12/x", &none)),
            "a regex must match the whole path"
        );
        assert!(!regex.matches(&request("/x/v12", &none)));
    }

    #[test]
    fn ignore_uri_case_applies_to_exact_and_prefix() {
        let none = HeaderMap::new();
        let prefix = compile("{uri: {prefix: /API}, ignoreUriCase: true}");
        assert!(prefix.matches(&request("/api/x", &none)));
        assert!(prefix.matches(&request("/Api/x", &none)));
        let sensitive = compile("uri: {prefix: /API}");
        assert!(!sensitive.matches(&request("/api/x", &none)));
    }

    #[test]
    fn headers_must_all_hold_and_without_headers_must_not() {
        let jason = compile("headers: {end-user: {exact: jason}, x-canary: {}}");
        assert!(jason.matches(&request(
            "/",
            &headers(&[("end-user", "jason"), ("x-canary", "")])
        )));
        assert!(
            !jason.matches(&request("/", &headers(&[("end-user", "jason")]))),
            "x-canary must be present"
        );
        assert!(!jason.matches(&request(
            "/",
            &headers(&[("end-user", "json"), ("x-canary", "1")])
        )));

        let not_test = compile("withoutHeaders: {x-test: {prefix: yes}}");
        assert!(
            not_test.matches(&request("/", &HeaderMap::new())),
            "an absent header does not match"
        );
        assert!(not_test.matches(&request("/", &headers(&[("x-test", "no")]))));
        assert!(!not_test.matches(&request("/", &headers(&[("x-test", "yes-please")]))));
    }

    #[test]
    fn repeated_headers_are_matched_joined_with_commas() {
        let mut repeated = HeaderMap::new();
        repeated.append("x-tag", HeaderValue::from_static("a"));
        repeated.append("x-tag", HeaderValue::from_static("b"));
        assert!(compile("headers: {x-tag: {exact: 'a,b'}}").matches(&request("/", &repeated)));
    }

    #[test]
    fn method_authority_port_scheme_and_query() {
        let none = HeaderMap::new();
        assert!(compile("method: {exact: GET}").matches(&request("/", &none)));
        assert!(!compile("method: {exact: POST}").matches(&request("/", &none)));
        assert!(compile("authority: {prefix: reviews}").matches(&request("/", &none)));
        assert!(compile("port: 9080").matches(&request("/", &none)));
        assert!(!compile("port: 80").matches(&request("/", &none)));
        assert!(compile("scheme: {exact: http}").matches(&request("/", &none)));

        let query = compile("queryParams: {user: {exact: ann}, debug: {}}");
        assert!(query.matches(&request("/?debug&user=ann", &none)));
        assert!(
            !query.matches(&request("/?user=ann", &none)),
            "debug must be present"
        );
        assert!(!query.matches(&request("/?debug=1&user=anne", &none)));
    }

    #[test]
    fn an_empty_match_holds_for_every_request() {
        assert!(compile("{}").matches(&request("/anything", &HeaderMap::new())));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let spec: HttpMatchRequest = serde_yaml_ng::from_str(
            "{uri: {regex: '('}, method: {}, headers: {'bad header': {exact: a}}, port: 70000}",
        )
        .unwrap();
        let errors: Vec<String> =
            RequestMatch::compile("http[0].match[0]", "shop", &spec, Semantics::VirtualService)
                .expect_err("four problems")
                .iter()
                .map(ToString::to_string)
                .collect();
        assert_eq!(errors.len(), 4, "{errors:#?}");
        assert!(
            errors[0].starts_with("`http[0].match[0].uri` regex `(`"),
            "{errors:#?}"
        );
        assert!(
            errors[1].starts_with("`http[0].match[0].method: {}`"),
            "{errors:#?}"
        );
        assert!(errors.iter().any(|e| e.contains("70000")), "{errors:#?}");
        assert!(
            errors.iter().any(|e| e.contains("bad header")),
            "{errors:#?}"
        );
    }

    #[test]
    fn source_labels_and_namespace_match_the_calling_workload() {
        let none = HeaderMap::new();
        let reviews_v2 =
            compile("{sourceLabels: {app: reviews, version: v2}, sourceNamespace: shop}");
        let labels: BTreeMap<String, String> = [("app", "reviews"), ("version", "v2"), ("x", "y")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let from = |namespace| RequestView {
            source: Some(Source {
                namespace,
                labels: &labels,
            }),
            ..request("/", &none)
        };
        assert!(reviews_v2.matches(&from("shop")));
        assert!(!reviews_v2.matches(&from("other")));
        assert!(
            !reviews_v2.matches(&request("/", &none)),
            "an unknown source matches no source condition"
        );
        assert!(compile("{}").matches(&request("/", &none)));
    }

    #[test]
    fn a_match_bound_to_gateways_holds_only_through_them() {
        let none = HeaderMap::new();
        let through = compile("gateways: [public, mesh]");
        let public = ["shop/public".to_owned()];
        let mesh = ["mesh".to_owned()];
        let other = ["istio-system/other".to_owned()];
        let via = |gateways| RequestView {
            gateways,
            ..request("/", &none)
        };
        assert!(
            through.matches(&via(&public)),
            "a short name is in the VirtualService's namespace"
        );
        assert!(through.matches(&via(&mesh)));
        assert!(!through.matches(&via(&other)));
        assert!(compile("{}").matches(&via(&other)));
    }
}
