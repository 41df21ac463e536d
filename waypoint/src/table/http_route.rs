//! HTTPRoutes (the Gateway API's) attached to Services: each match of each rule becomes
//! the VirtualService route Istio generates for it, compiled with the Gateway API's
//! meaning ([`Semantics::GatewayApi`]), and the routes of every HTTPRoute on one Service
//! are merged and ordered as the Gateway API ranks matches.
//!
//! At a waypoint, as in Istio's, only producer routes apply (the parent Service is in
//! the route's namespace) and `hostnames` mean nothing; at an ingress gateway, a route
//! attaches to the listeners of the served Gateways it names that admit it, for its
//! `hostnames`. Everywhere, a rule whose
//! backends all weigh 0 (or that has none) answers 500; without `retry` the mesh's
//! default retries apply, and `timeouts.backendRequest` bounds each try.

use std::collections::BTreeMap;

use ambit_api::{
    gateway_api::http_route::{
        FilterType, HttpBackendRef, HttpCorsFilter, HttpHeaderFilter, HttpPathModifier,
        HttpRouteFilter, HttpRouteMatch, HttpRouteRule, HttpRouteSpec, NamedValueMatch,
        PathMatchType, PathModifierType, ValueMatchType,
    },
    istio::{
        Duration, Percent, StringMatch,
        virtual_service::{
            CorsPolicy, HeaderOperations, Headers, HttpDirectResponse, HttpMatchRequest,
            HttpMirrorPolicy, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute,
            HttpRouteDestination, RedirectPortSelection, RegexRewrite,
        },
    },
};

use super::{
    ClusterIndex, ConfigError, Problem, Route, RouteTable,
    gateway_api::{ByHost, destination, gateway_attachments, service_attachments},
    rewrite::PREFIX_MARKER,
};
use crate::{
    config::{Config, Named, Role},
    gateway::servers::PortProtocol,
    matcher::Semantics,
};

/// What Istio retries on for a route's `retry`, before the listed status codes.
const RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled";
/// Istio's retry count when `retry.attempts` is not given.
const DEFAULT_ATTEMPTS: u32 = 2;

/// One match of one rule, as a VirtualService route with that single match.
#[derive(Debug)]
struct Converted {
    /// `rules[i].matches[j]`, for problems.
    pub field: String,
    pub rule: usize,
    pub rank: Rank,
    pub route: HttpRoute,
}

/// How the Gateway API orders matches on one parent: an exact path first, then the
/// longest prefix (a regular expression after any prefix), then a method, then the
/// most headers, then the most query parameters. Larger ranks first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Rank {
    path_kind: u8,
    path_len: usize,
    method: bool,
    headers: usize,
    query_params: usize,
}

impl RouteTable {
    /// Collects the HTTPRoutes' routes where they attach (a waypoint's Services, an
    /// ingress gateway's listeners) into `by_host`, in `namespace/name` order and rule;
    /// [`RouteTable::add_gateway_api_routes`] then orders each host's by rank.
    pub(super) fn collect_http_routes(
        &self,
        config: &Config,
        clusters: &ClusterIndex,
        errors: &mut Vec<ConfigError>,
        by_host: &mut ByHost,
    ) {
        let mut in_order: Vec<&Named<HttpRouteSpec>> = config.http_routes.iter().collect();
        in_order.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        for http in in_order {
            let attachments = match (&config.role, &self.ingress) {
                (Role::Ingress(gateways), Some(servers)) => gateway_attachments(
                    (
                        &http.namespace,
                        &http.spec.parent_refs,
                        &http.spec.hostnames,
                    ),
                    gateways,
                    servers,
                    |protocol| matches!(protocol, PortProtocol::Http | PortProtocol::Https),
                ),
                _ => service_attachments(&http.namespace, &http.spec.parent_refs),
            };
            let object = http.key();
            let mut problems = Vec::new();
            let mut compiled = Vec::new();
            for attachment in attachments {
                for converted in convert(http, attachment.port, &mut problems) {
                    compiled.extend(
                        Route::compile(
                            (&object, &http.namespace),
                            (&converted.field, converted.rule),
                            &converted.route,
                            Semantics::GatewayApi,
                            clusters,
                            &mut problems,
                        )
                        .map(|route| (attachment.key(), converted.rank, route)),
                    );
                }
            }
            if problems.is_empty() {
                for (key, rank, route) in compiled {
                    by_host.entry(key).or_default().http.push((rank, route));
                }
            } else {
                errors.extend(problems.into_iter().map(|problem| ConfigError {
                    kind: "HTTPRoute",
                    object: object.clone(),
                    problem,
                }));
            }
        }
    }
}

/// The routes of `route` for a parent limited to `port`. Filters the waypoint does not
/// serve go to `problems`.
fn convert(
    route: &Named<HttpRouteSpec>,
    port: Option<u32>,
    problems: &mut Vec<Problem>,
) -> Vec<Converted> {
    let default_rule = [HttpRouteRule::default()];
    let rules = match route.spec.rules.as_slice() {
        [] => &default_rule[..],
        rules => rules,
    };
    let mut converted = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let field = format!("rules[{i}]");
        let Some(actions) = convert_actions(&field, &route.namespace, rule, problems) else {
            continue;
        };
        let default_match = [HttpRouteMatch::default()];
        let matches = match rule.matches.as_slice() {
            [] => &default_match[..],
            matches => matches,
        };
        for (j, spec) in matches.iter().enumerate() {
            let name = rule
                .name
                .clone()
                .map_or_else(|| format!("{i}.{j}"), |name| format!("{name}.{j}"));
            converted.push(Converted {
                field: format!("{field}.matches[{j}]"),
                rule: i,
                rank: rank(spec),
                route: HttpRoute {
                    name,
                    matches: vec![convert_match(spec, port)],
                    ..actions.clone()
                },
            });
        }
    }
    converted
}

/// Everything a rule does to the requests it takes, as a VirtualService route without
/// conditions; `None` when a filter cannot be served (reported in `problems`).
fn convert_actions(
    field: &str,
    namespace: &str,
    rule: &HttpRouteRule,
    problems: &mut Vec<Problem>,
) -> Option<HttpRoute> {
    let before = problems.len();
    let mut route = HttpRoute::default();
    let mut headers = Headers::default();
    for (i, filter) in rule.filters.iter().enumerate() {
        let field = format!("{field}.filters[{i}]");
        if let Err(problem) = apply_filter(&field, namespace, filter, &mut route, &mut headers) {
            problems.push(problem);
        }
    }
    route.headers = Some(headers).filter(|h| h.request.is_some() || h.response.is_some());
    route.route = rule
        .backend_refs
        .iter()
        .enumerate()
        .filter(|(_, backend)| backend.weight.unwrap_or(1) > 0)
        .filter_map(|(i, backend)| {
            backend_destination(
                &format!("{field}.backendRefs[{i}]"),
                namespace,
                backend,
                problems,
            )
        })
        .collect();
    if route.route.is_empty() && route.redirect.is_none() {
        // The Gateway API: no backend to send to is a 500.
        route.direct_response = Some(HttpDirectResponse {
            status: 500,
            body: None,
        });
    }
    if let Some(timeouts) = rule.timeouts {
        route.timeout = timeouts.request;
    }
    let per_try_timeout = rule.timeouts.and_then(|t| t.backend_request);
    route.retries = match (&rule.retry, per_try_timeout) {
        (None, None) => None,
        (retry, per_try_timeout) => Some(HttpRetry {
            attempts: Some(
                retry
                    .as_ref()
                    .and_then(|r| r.attempts)
                    .unwrap_or(DEFAULT_ATTEMPTS)
                    .try_into()
                    .unwrap_or(i32::MAX),
            ),
            per_try_timeout,
            retry_on: retry.as_ref().map(|r| {
                r.codes
                    .iter()
                    .fold(RETRY_ON.to_owned(), |on, code| format!("{on},{code}"))
            }),
            backoff: retry.as_ref().and_then(|r| r.backoff),
            ..HttpRetry::default()
        }),
    };
    (problems.len() == before).then_some(route)
}

/// Applies `filter` (field `field`) of a rule to `route` and its `headers`.
fn apply_filter(
    field: &str,
    namespace: &str,
    filter: &HttpRouteFilter,
    route: &mut HttpRoute,
    headers: &mut Headers,
) -> Result<(), Problem> {
    if apply_header_filter(field, filter, headers)? {
        return Ok(());
    }
    match filter.kind {
        FilterType::RequestRedirect => {
            let redirect = configured(field, &filter.request_redirect, "requestRedirect")?;
            let (port, derive_port) = match (redirect.port, &redirect.scheme) {
                (Some(port), _) => (Some(port), None),
                (None, Some(_)) => (None, Some(RedirectPortSelection::FromProtocolDefault)),
                (None, None) => (None, Some(RedirectPortSelection::FromRequestPort)),
            };
            route.redirect = Some(HttpRedirect {
                uri: redirect
                    .path
                    .as_ref()
                    .map(redirect_path)
                    .unwrap_or_default(),
                authority: redirect.hostname.clone().unwrap_or_default(),
                port,
                derive_port,
                scheme: redirect.scheme.clone().unwrap_or_default(),
                redirect_code: Some(redirect.status_code.unwrap_or(302)),
            });
        }
        FilterType::UrlRewrite => {
            let rewrite = configured(field, &filter.url_rewrite, "urlRewrite")?;
            route.rewrite = Some(HttpRewrite {
                authority: rewrite.hostname.clone().unwrap_or_default(),
                ..rewrite.path.as_ref().map(path_rewrite).unwrap_or_default()
            });
        }
        FilterType::RequestMirror => {
            let mirror = configured(field, &filter.request_mirror, "requestMirror")?;
            let percent = match (mirror.percent, mirror.fraction) {
                (Some(percent), _) => f64::from(percent),
                (None, Some(fraction)) => {
                    100.0 * f64::from(fraction.numerator)
                        / f64::from(fraction.denominator.unwrap_or(100))
                }
                (None, None) => 100.0,
            };
            if percent > 0.0 {
                let backend = &mirror.backend_ref;
                route.mirrors.push(HttpMirrorPolicy {
                    destination: destination(
                        &backend.name,
                        backend.namespace.as_deref().unwrap_or(namespace),
                        backend.port,
                    ),
                    percentage: Some(Percent { value: percent }),
                });
            }
        }
        FilterType::Cors => {
            let cors = configured(field, &filter.cors, "cors")?;
            route.cors_policy = Some(cors_policy(cors));
        }
        kind => return Err(Problem::unsupported(field, filter_name(kind))),
    }
    Ok(())
}

/// A `CORS` filter as a VirtualService's `corsPolicy`: an origin with `*` becomes a
/// regular expression where `*` stands for any characters but `/`.
fn cors_policy(cors: &HttpCorsFilter) -> CorsPolicy {
    let origin = |origin: &String| match origin.as_str() {
        "*" => StringMatch::Present,
        pattern if pattern.contains('*') => StringMatch::Regex(
            pattern
                .split('*')
                .map(regex::escape)
                .collect::<Vec<_>>()
                .join("[^/]*"),
        ),
        exact => StringMatch::Exact(exact.to_owned()),
    };
    CorsPolicy {
        allow_origins: cors.allow_origins.iter().map(origin).collect(),
        allow_methods: cors.allow_methods.clone(),
        allow_headers: cors.allow_headers.clone(),
        expose_headers: cors.expose_headers.clone(),
        max_age: Some(Duration::from(std::time::Duration::from_secs(
            cors.max_age.unwrap_or(5).into(),
        ))),
        allow_credentials: cors.allow_credentials,
        ..CorsPolicy::default()
    }
}

/// Applies a header filter to `headers`; `Ok(false)` when `filter` is of another type.
fn apply_header_filter(
    field: &str,
    filter: &HttpRouteFilter,
    headers: &mut Headers,
) -> Result<bool, Problem> {
    match filter.kind {
        FilterType::RequestHeaderModifier => {
            let modifier = configured(
                field,
                &filter.request_header_modifier,
                "requestHeaderModifier",
            )?;
            headers.request = Some(header_operations(modifier));
        }
        FilterType::ResponseHeaderModifier => {
            let modifier = configured(
                field,
                &filter.response_header_modifier,
                "responseHeaderModifier",
            )?;
            headers.response = Some(header_operations(modifier));
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The settings a filter's `type` names, or the problem that they are missing.
fn configured<'a, T>(
    field: &str,
    settings: &'a Option<T>,
    name: &'static str,
) -> Result<&'a T, Problem> {
    settings.as_ref().ok_or_else(|| Problem::Missing {
        field: field.to_owned(),
        name,
    })
}

/// A weighted backend as a route destination, with its own header filters.
fn backend_destination(
    field: &str,
    namespace: &str,
    backend: &HttpBackendRef,
    problems: &mut Vec<Problem>,
) -> Option<HttpRouteDestination> {
    let mut headers = Headers::default();
    for (i, filter) in backend.filters.iter().enumerate() {
        let field = format!("{field}.filters[{i}]");
        match apply_header_filter(&field, filter, &mut headers) {
            Ok(true) => {}
            Ok(false) => {
                problems.push(Problem::unsupported(&field, filter_name(filter.kind)));
                return None;
            }
            Err(problem) => {
                problems.push(problem);
                return None;
            }
        }
    }
    Some(HttpRouteDestination {
        destination: destination(
            &backend.name,
            backend.namespace.as_deref().unwrap_or(namespace),
            backend.port,
        ),
        weight: Some(backend.weight.unwrap_or(1).try_into().unwrap_or(i32::MAX)),
        headers: Some(headers).filter(|h| h.request.is_some() || h.response.is_some()),
    })
}

/// The match as a VirtualService `match` entry, limited to `port`.
fn convert_match(spec: &HttpRouteMatch, port: Option<u32>) -> HttpMatchRequest {
    let path = spec.path.clone().unwrap_or_default();
    let uri = match path.kind {
        PathMatchType::Exact => StringMatch::Exact(path.value().to_owned()),
        PathMatchType::PathPrefix => StringMatch::Prefix(path.value().to_owned()),
        PathMatchType::RegularExpression => StringMatch::Regex(path.value().to_owned()),
    };
    HttpMatchRequest {
        uri: Some(uri),
        method: spec.method.clone().map(StringMatch::Exact),
        headers: first_of_each(&spec.headers, str::to_ascii_lowercase),
        query_params: first_of_each(&spec.query_params, str::to_owned),
        port,
        ..HttpMatchRequest::default()
    }
}

/// Conditions by name (normalised by `key`): only the first of a name counts.
fn first_of_each(
    conditions: &[NamedValueMatch],
    key: impl Fn(&str) -> String,
) -> BTreeMap<String, StringMatch> {
    let mut by_name = BTreeMap::new();
    for condition in conditions {
        by_name
            .entry(key(&condition.name))
            .or_insert_with(|| match condition.kind {
                ValueMatchType::Exact => StringMatch::Exact(condition.value.clone()),
                ValueMatchType::RegularExpression => StringMatch::Regex(condition.value.clone()),
            });
    }
    by_name
}

fn rank(spec: &HttpRouteMatch) -> Rank {
    let path = spec.path.clone().unwrap_or_default();
    Rank {
        path_kind: match path.kind {
            PathMatchType::Exact => 3,
            PathMatchType::PathPrefix => 2,
            PathMatchType::RegularExpression => 1,
        },
        path_len: path.value().trim_end_matches('/').len(),
        method: spec.method.is_some(),
        headers: spec.headers.len(),
        query_params: spec.query_params.len(),
    }
}

fn header_operations(filter: &HttpHeaderFilter) -> HeaderOperations {
    let by_name = |headers: &[ambit_api::gateway_api::http_route::HttpHeader]| {
        let mut map = BTreeMap::new();
        for header in headers {
            map.entry(header.name.to_ascii_lowercase())
                .or_insert_with(|| header.value.clone());
        }
        map
    };
    HeaderOperations {
        set: by_name(&filter.set),
        add: by_name(&filter.add),
        remove: filter.remove.clone(),
    }
}

/// A redirect's path: the whole path, or the matched prefix replaced.
fn redirect_path(path: &HttpPathModifier) -> String {
    match path.kind {
        PathModifierType::ReplaceFullPath => path.replace_full_path.clone().unwrap_or_default(),
        PathModifierType::ReplacePrefixMatch => format!(
            "{PREFIX_MARKER}{}",
            path.replace_prefix_match.as_deref().unwrap_or_default()
        ),
    }
}

/// A rewrite's path: the matched prefix replaced (`rewrite.uri`, joined as the Gateway
/// API says), or the whole path (a regular expression taking all of it).
fn path_rewrite(path: &HttpPathModifier) -> HttpRewrite {
    match path.kind {
        PathModifierType::ReplacePrefixMatch => HttpRewrite {
            uri: match path.replace_prefix_match.as_deref().unwrap_or_default() {
                "" => "/".to_owned(),
                replacement => replacement.to_owned(),
            },
            ..HttpRewrite::default()
        },
        PathModifierType::ReplaceFullPath => HttpRewrite {
            uri_regex_rewrite: Some(RegexRewrite {
                pattern: "^.*$".to_owned(),
                rewrite: path.replace_full_path.clone().unwrap_or_default(),
            }),
            ..HttpRewrite::default()
        },
    }
}

fn filter_name(kind: FilterType) -> &'static str {
    match kind {
        FilterType::RequestHeaderModifier => "RequestHeaderModifier",
        FilterType::ResponseHeaderModifier => "ResponseHeaderModifier",
        FilterType::RequestRedirect => "RequestRedirect",
        FilterType::UrlRewrite => "URLRewrite",
        FilterType::RequestMirror => "RequestMirror",
        FilterType::ExtensionRef => "ExtensionRef",
        FilterType::Cors => "CORS",
        FilterType::ExternalAuth => "ExternalAuth",
    }
}
