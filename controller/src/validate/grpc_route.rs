//! Pass 3 for the Gateway API's GRPCRoute: its method matches (a service or a method,
//! regular expressions that compile) and the filter types a GRPCRoute allows; parents,
//! filters and backends as an HTTPRoute's ([`super::http_route`]), on the HTTPRoute it
//! is served as.

use ambit_api::gateway_api::{
    grpc_route::{GrpcRouteSpec, MethodMatchType},
    http_route::{FilterType, ValueMatchType},
};

use super::{Findings, Reason, fields, http_route};

/// Checks one GRPCRoute in `namespace`.
pub(super) fn check(
    spec: &GrpcRouteSpec,
    namespace: &str,
    context: &http_route::Context<'_>,
    findings: &mut Findings,
) {
    for (i, rule) in spec.rules.iter().enumerate() {
        for (j, condition) in rule.matches.iter().enumerate() {
            let path = format!("spec.rules[{i}].matches[{j}]");
            if let Some(method) = &condition.method {
                let path = format!("{path}.method");
                if method.service.is_none() && method.method.is_none() {
                    findings.add(
                        path.clone(),
                        Reason::Required("name a `service`, a `method`, or both"),
                    );
                }
                if method.kind == MethodMatchType::RegularExpression {
                    for (field, value) in [("service", &method.service), ("method", &method.method)]
                    {
                        if let Some(pattern) = value {
                            fields::regex(findings, &format!("{path}.{field}"), pattern);
                        }
                    }
                }
            }
            for (k, header) in condition.headers.iter().enumerate() {
                let path = format!("{path}.headers[{k}]");
                fields::required(
                    findings,
                    &format!("{path}.name"),
                    &header.name,
                    "name the header",
                );
                if header.kind == ValueMatchType::RegularExpression {
                    fields::regex(findings, &format!("{path}.value"), &header.value);
                }
            }
        }
        for (j, filter) in rule.filters.iter().enumerate() {
            if !matches!(
                filter.kind,
                FilterType::RequestHeaderModifier
                    | FilterType::ResponseHeaderModifier
                    | FilterType::RequestMirror
                    | FilterType::ExtensionRef
            ) {
                findings.add(
                    format!("spec.rules[{i}].filters[{j}].type"),
                    Reason::Unsupported(
                        "a GRPCRoute's filters edit headers or mirror calls: redirects and rewrites are HTTPRoute filters",
                    ),
                );
            }
        }
    }
    // The method matches are checked above; the rest as the HTTPRoute served.
    let mut served = spec.to_http_route();
    for rule in &mut served.rules {
        rule.matches.clear();
    }
    http_route::check(&served, ("GRPCRoute", namespace), context, findings);
}
