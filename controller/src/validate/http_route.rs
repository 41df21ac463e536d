//! Pass 3 for the Gateway API's HTTPRoute: its parents (Services are served by their
//! waypoints, Gateways of class `istio` by ingress gateways; others are warned about),
//! each rule's matches, filters, backends, timeouts and retry as the Gateway API's CRD
//! rules and Istio check them, and — for a route attached to a Gateway — a
//! ReferenceGrant for each Service of another namespace it sends to, as the Gateway API
//! requires (a mesh route needs none: GAMMA). The parent, backend and ReferenceGrant
//! checks are shared with the other route kinds ([`super::tcp_route`],
//! [`super::tls_route`]).

use std::collections::BTreeMap;

use ambit_api::gateway_api::{
    http_route::{
        BackendRef, FilterType, HttpPathModifier, HttpRouteFilter, HttpRouteMatch, HttpRouteRule,
        HttpRouteSpec, ParentReference, PathMatchType, PathModifierType, ValueMatchType,
        producer_parents,
    },
    reference_grant::ReferenceGrantSpec,
};

use super::{Findings, Reason, fields};

/// The methods the Gateway API lets a match name.
const METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
/// The largest backend weight the API accepts.
const MAX_WEIGHT: u32 = 1_000_000;

/// Checks one HTTPRoute in `namespace`.
pub(super) fn check(
    spec: &HttpRouteSpec,
    (kind, namespace): (&str, &str),
    context: &Context<'_>,
    findings: &mut Findings,
) {
    check_parents(&spec.parent_refs, namespace, context, findings);
    for (i, rule) in spec.rules.iter().enumerate() {
        check_rule(rule, &format!("spec.rules[{i}]"), findings);
    }
    let backends = spec.rules.iter().enumerate().flat_map(|(i, rule)| {
        let sent = rule
            .backend_refs
            .iter()
            .enumerate()
            .map(move |(j, backend)| {
                (
                    format!("spec.rules[{i}].backendRefs[{j}]"),
                    backend.backend(),
                )
            });
        let mirrored = rule
            .filters
            .iter()
            .enumerate()
            .filter_map(move |(j, filter)| {
                let mirror = filter.request_mirror.as_ref()?;
                Some((
                    format!("spec.rules[{i}].filters[{j}].requestMirror.backendRef"),
                    mirror.backend_ref.clone(),
                ))
            });
        sent.chain(mirrored)
    });
    check_references(
        &spec.parent_refs,
        backends,
        (kind, namespace),
        &context.grants,
        findings,
    );
}

/// Checks the parents of a route (of any kind) in `namespace`: it has one, each port is
/// a port, and each is one Ambit serves — a Service of the route's namespace that no
/// VirtualService also routes (its waypoint would follow that instead), or a Gateway.
pub(super) fn check_parents(
    parents: &[ParentReference],
    namespace: &str,
    context: &Context<'_>,
    findings: &mut Findings,
) {
    if parents.is_empty() {
        findings.add("spec.parentRefs", Reason::NotServed(
            "the route attaches to nothing: add a parent (in the mesh, `{group: \"\", kind: Service, name: <service>}`)".to_owned(),
        ));
    }
    for (i, parent) in parents.iter().enumerate() {
        let path = format!("spec.parentRefs[{i}]");
        fields::port(findings, &format!("{path}.port"), parent.port);
        let producer =
            producer_parents(parents, namespace).any(|producer| std::ptr::eq(producer, parent));
        let host = crate::hosts::resolve(&parent.name, namespace);
        match context.virtual_services.get(&host) {
            Some(virtual_service) if producer => findings.add(
                path,
                Reason::NotServed(format!(
                    "VirtualService {virtual_service} also routes {host}: its waypoint follows the VirtualService, not this route (Istio calls mixing them undefined) — keep one"
                )),
            ),
            _ if producer || parent.is_gateway() => {}
            _ => findings.add(path, Reason::NotServed(not_served(parent))),
        }
    }
}

/// Why Ambit does not serve `parent`.
fn not_served(parent: &ParentReference) -> String {
    if parent.is_service() {
        "a route for a Service in another namespace (a consumer route) is not applied by waypoints yet: put the route in the Service's namespace".to_owned()
    } else {
        format!(
            "Ambit serves routes attached to Services (by their waypoints) and Gateways (of class istio); a {} parent is ignored",
            parent.group_kind()
        )
    }
}

/// What a route is checked against besides itself.
#[derive(Debug, Default)]
pub(super) struct Context<'a> {
    /// What ReferenceGrants allow.
    pub grants: Grants<'a>,
    /// The hosts (FQDNs) VirtualServices route at waypoints (`mesh`), with the first
    /// VirtualService (`namespace/name`) routing each.
    pub virtual_services: BTreeMap<String, String>,
}

/// The ReferenceGrants of the input, with their namespaces.
#[derive(Debug, Default)]
pub(super) struct Grants<'a>(pub Vec<(&'a str, ReferenceGrantSpec)>);

impl Grants<'_> {
    /// Whether a `kind` in `namespace` may send to Service `service` of `target`.
    fn allow(&self, from: (&str, &str), (target, service): (&str, &str)) -> bool {
        self.0
            .iter()
            .any(|(namespace, grant)| *namespace == target && grant.allows(from, service))
    }
}

/// For a route (of `kind`, in `namespace`) attached to a Gateway: each Service of
/// another namespace among `backends` (each with its field path) is granted to it, as
/// the Gateway API requires. A mesh route needs no grant (GAMMA).
pub(super) fn check_references(
    parents: &[ParentReference],
    backends: impl IntoIterator<Item = (String, BackendRef)>,
    (kind, namespace): (&str, &str),
    grants: &Grants<'_>,
    findings: &mut Findings,
) {
    if !parents.iter().any(ParentReference::is_gateway) {
        return;
    }
    for (path, backend) in backends {
        let Some(target) = backend.namespace.as_deref().filter(|ns| *ns != namespace) else {
            continue;
        };
        if !grants.allow((kind, namespace), (target, &backend.name)) {
            findings.add(
                format!("{path}.namespace"),
                Reason::Conflict(format!(
                    "Service {target}/{} is in another namespace, and no ReferenceGrant in {target} lets {kind}s of {namespace} send to it: add one (from: {{group: gateway.networking.k8s.io, kind: {kind}, namespace: {namespace}}}, to: {{group: \"\", kind: Service}}), or keep the route in the Service's namespace",
                    backend.name
                )),
            );
        }
    }
}

fn check_rule(rule: &HttpRouteRule, path: &str, findings: &mut Findings) {
    for (i, condition) in rule.matches.iter().enumerate() {
        check_match(condition, &format!("{path}.matches[{i}]"), findings);
    }
    let kinds: Vec<FilterType> = rule.filters.iter().map(|f| f.kind).collect();
    if kinds.contains(&FilterType::RequestRedirect) && kinds.contains(&FilterType::UrlRewrite) {
        findings.add(
            format!("{path}.filters"),
            Reason::Exclusive("RequestRedirect", "URLRewrite"),
        );
    }
    for (i, filter) in rule.filters.iter().enumerate() {
        let path = format!("{path}.filters[{i}]");
        check_filter(filter, &path, findings);
        if let Some(modifier) = filter
            .request_redirect
            .as_ref()
            .and_then(|r| r.path.as_ref())
        {
            check_path_modifier(
                modifier,
                rule,
                &format!("{path}.requestRedirect.path"),
                findings,
            );
        }
        if let Some(modifier) = filter.url_rewrite.as_ref().and_then(|r| r.path.as_ref()) {
            check_path_modifier(modifier, rule, &format!("{path}.urlRewrite.path"), findings);
        }
    }
    for (i, backend) in rule.backend_refs.iter().enumerate() {
        let path = format!("{path}.backendRefs[{i}]");
        check_weighted_backend(&backend.backend(), backend.weight, &path, findings);
        for (j, filter) in backend.filters.iter().enumerate() {
            let path = format!("{path}.filters[{j}]");
            match filter.kind {
                FilterType::RequestHeaderModifier | FilterType::ResponseHeaderModifier => {
                    check_filter(filter, &path, findings);
                }
                _ => findings.add(
                    format!("{path}.type"),
                    Reason::Unsupported(
                        "a backend's own filters may only edit headers in Ambit: move it to the rule's `filters`",
                    ),
                ),
            }
        }
    }
    if let Some(timeouts) = rule.timeouts
        && let (Some(request), Some(backend)) = (timeouts.request, timeouts.backend_request)
        && !request.get().is_zero()
        && backend > request
    {
        findings.add(
            format!("{path}.timeouts.backendRequest"),
            Reason::Conflict(
                "is longer than `request`, the whole request's deadline: make it at most that"
                    .to_owned(),
            ),
        );
    }
    if let Some(retry) = &rule.retry {
        for (i, code) in retry.codes.iter().enumerate() {
            if !(400..=599).contains(code) {
                findings.add(
                    format!("{path}.retry.codes[{i}]"),
                    Reason::StatusOutOfRange {
                        value: (*code).into(),
                        expected: "an HTTP error status from 400 to 599",
                    },
                );
            }
        }
    }
}

fn check_match(condition: &HttpRouteMatch, path: &str, findings: &mut Findings) {
    if let Some(path_match) = &condition.path {
        let value = path_match.value();
        match path_match.kind {
            PathMatchType::RegularExpression => {
                fields::regex(findings, &format!("{path}.path.value"), value);
            }
            _ if !value.starts_with('/') => findings.add(
                format!("{path}.path.value"),
                Reason::Conflict(format!("`{value}` is not a path: start it with `/`")),
            ),
            _ => {}
        }
    }
    for (kind, list) in [
        ("headers", &condition.headers),
        ("queryParams", &condition.query_params),
    ] {
        for (i, value_match) in list.iter().enumerate() {
            let path = format!("{path}.{kind}[{i}]");
            fields::required(
                findings,
                &format!("{path}.name"),
                &value_match.name,
                "name the header or query parameter",
            );
            if value_match.kind == ValueMatchType::RegularExpression {
                fields::regex(findings, &format!("{path}.value"), &value_match.value);
            }
        }
    }
    if let Some(method) = &condition.method
        && !METHODS.contains(&method.as_str())
    {
        findings.add(
            format!("{path}.method"),
            Reason::Conflict(format!(
                "`{method}` is not a method the Gateway API matches: use one of {}",
                METHODS.join(", ")
            )),
        );
    }
}

/// The filter carries the settings its `type` names, and Ambit serves that type.
fn check_filter(filter: &HttpRouteFilter, path: &str, findings: &mut Findings) {
    let (present, field) = match filter.kind {
        FilterType::RequestHeaderModifier => (
            filter.request_header_modifier.is_some(),
            "requestHeaderModifier",
        ),
        FilterType::ResponseHeaderModifier => (
            filter.response_header_modifier.is_some(),
            "responseHeaderModifier",
        ),
        FilterType::RequestRedirect => (filter.request_redirect.is_some(), "requestRedirect"),
        FilterType::UrlRewrite => (filter.url_rewrite.is_some(), "urlRewrite"),
        FilterType::RequestMirror => (filter.request_mirror.is_some(), "requestMirror"),
        FilterType::Cors => (filter.cors.is_some(), "cors"),
        FilterType::ExtensionRef | FilterType::ExternalAuth => {
            findings.add(
                format!("{path}.type"),
                Reason::Unsupported(
                    "not served by Ambit's waypoint (ExtensionRef and ExternalAuth filters): remove it — for external authorization use a CUSTOM AuthorizationPolicy",
                ),
            );
            return;
        }
    };
    if !present {
        findings.add(
            format!("{path}.{field}"),
            Reason::Required("the filter's `type` names these settings: add them"),
        );
    }
    if let Some(redirect) = &filter.request_redirect {
        if let Some(scheme) = redirect.scheme.as_deref()
            && !matches!(scheme, "http" | "https")
        {
            findings.add(
                format!("{path}.requestRedirect.scheme"),
                Reason::Conflict(format!("`{scheme}` is not a scheme: use http or https")),
            );
        }
        fields::port(
            findings,
            &format!("{path}.requestRedirect.port"),
            redirect.port,
        );
        if let Some(code) = redirect.status_code
            && ![301, 302, 303, 307, 308].contains(&code)
        {
            findings.add(
                format!("{path}.requestRedirect.statusCode"),
                Reason::StatusOutOfRange {
                    value: code.into(),
                    expected: "a redirect status: 301, 302, 303, 307 or 308",
                },
            );
        }
    }
    if let Some(mirror) = &filter.request_mirror {
        let path = format!("{path}.requestMirror");
        check_backend(&mirror.backend_ref, &format!("{path}.backendRef"), findings);
        if mirror.percent.is_some() && mirror.fraction.is_some() {
            findings.add(path.clone(), Reason::Exclusive("percent", "fraction"));
        }
        if let Some(percent) = mirror.percent {
            fields::percent_value(findings, &format!("{path}.percent"), percent.into());
        }
        if let Some(fraction) = mirror.fraction
            && (fraction.denominator == Some(0)
                || fraction.numerator > fraction.denominator.unwrap_or(100))
        {
            findings.add(
                format!("{path}.fraction"),
                Reason::Conflict(
                    "is not a share: the numerator must be at most the denominator (default 100), which must not be 0"
                        .to_owned(),
                ),
            );
        }
    }
}

/// A path modifier sets the value its `type` names; `ReplacePrefixMatch` needs the
/// rule to match exactly one `PathPrefix`, as the Gateway API's CRD requires.
fn check_path_modifier(
    modifier: &HttpPathModifier,
    rule: &HttpRouteRule,
    path: &str,
    findings: &mut Findings,
) {
    let (value, name) = match modifier.kind {
        PathModifierType::ReplaceFullPath => (&modifier.replace_full_path, "replaceFullPath"),
        PathModifierType::ReplacePrefixMatch => {
            let one_prefix = match rule.matches.as_slice() {
                [] => true,
                [only] => only
                    .path
                    .as_ref()
                    .is_none_or(|p| p.kind == PathMatchType::PathPrefix),
                _ => false,
            };
            if !one_prefix {
                findings.add(
                    format!("{path}.type"),
                    Reason::Conflict(
                        "ReplacePrefixMatch replaces the matched prefix: the rule must have exactly one match, of type PathPrefix".to_owned(),
                    ),
                );
            }
            (&modifier.replace_prefix_match, "replacePrefixMatch")
        }
    };
    if value.is_none() {
        findings.add(
            format!("{path}.{name}"),
            Reason::Required("the path modifier's `type` names this value: add it"),
        );
    }
}

/// A backend a rule of a route (of any kind) sends its share of the traffic to: a
/// Service (see [`check_backend`]), with a weight the Gateway API accepts.
pub(super) fn check_weighted_backend(
    backend: &BackendRef,
    weight: Option<u32>,
    path: &str,
    findings: &mut Findings,
) {
    check_backend(backend, path, findings);
    if let Some(weight) = weight.filter(|weight| *weight > MAX_WEIGHT) {
        findings.add(
            format!("{path}.weight"),
            Reason::StatusOutOfRange {
                value: weight.into(),
                expected: "a weight from 0 to 1000000",
            },
        );
    }
}

/// A backend is a Service of this cluster, named without dots, with a port.
fn check_backend(backend: &BackendRef, path: &str, findings: &mut Findings) {
    if !backend.is_service() {
        findings.add(
            format!("{path}.kind"),
            Reason::Unsupported("Ambit routes to Services only: use `kind: Service` (the default)"),
        );
        return;
    }
    fields::required(
        findings,
        &format!("{path}.name"),
        &backend.name,
        "name the Service",
    );
    if backend.name.contains('.') {
        findings.add(
            format!("{path}.name"),
            Reason::Conflict(format!(
                "`{}` is not a Service name: name the Service alone, and its namespace in `namespace`",
                backend.name
            )),
        );
    }
    if backend.port.is_none() {
        findings.add(
            format!("{path}.port"),
            Reason::Required(
                "a Service backend needs the Service port to send to: add `port`, one of the Service's ports",
            ),
        );
    }
    fields::port(findings, &format!("{path}.port"), backend.port);
}
