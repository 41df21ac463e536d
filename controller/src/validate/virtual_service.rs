//! Pass 3 for a VirtualService: the rules Istio's own validation applies to one object.
//! (Subset references are pass 4, in [`super::references`].)

use ambit_api::istio::virtual_service::{
    Abort, CorsPolicy, Delay, Destination, HttpMatchRequest, HttpRetry, HttpRoute,
    RouteDestination, VirtualServiceSpec,
};

use super::{Findings, Reason, fields};

/// The retry conditions Envoy knows (`retryOn`), besides HTTP status codes.
const RETRY_CONDITIONS: [&str; 16] = [
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Checks one VirtualService's spec. A VirtualService that another one delegates to
/// (`delegate_target`) has no `hosts` of its own: it is a delegate.
pub(super) fn check(spec: &VirtualServiceSpec, delegate_target: bool, findings: &mut Findings) {
    if spec.hosts.is_empty() {
        if delegate_target {
            delegate(spec, findings);
        } else {
            findings.add(
                "spec.hosts",
                Reason::Required("list the hosts (services or domains) these routes apply to"),
            );
        }
    }
    for (index, host) in spec.hosts.iter().enumerate() {
        fields::required(
            findings,
            &format!("spec.hosts[{index}]"),
            host,
            "a host name",
        );
    }
    for (index, route) in spec.http.iter().enumerate() {
        http_route(findings, &format!("spec.http[{index}]"), route);
    }
    for (index, route) in spec.tls.iter().enumerate() {
        let path = format!("spec.tls[{index}]");
        for (m, attributes) in route.matches.iter().enumerate() {
            let at = format!("{path}.match[{m}]");
            if attributes.sni_hosts.is_empty() {
                findings.add(
                    format!("{at}.sniHosts"),
                    Reason::Required("list the SNI names this TLS route matches"),
                );
            }
            fields::port(findings, &format!("{at}.port"), attributes.port);
        }
        l4_destinations(findings, &format!("{path}.route"), &route.route);
    }
    for (index, route) in spec.tcp.iter().enumerate() {
        let path = format!("spec.tcp[{index}]");
        for (m, attributes) in route.matches.iter().enumerate() {
            fields::port(
                findings,
                &format!("{path}.match[{m}].port"),
                attributes.port,
            );
        }
        l4_destinations(findings, &format!("{path}.route"), &route.route);
    }
}

/// What Istio refuses in a delegate: what only a root decides (gateways, TLS and TCP
/// routes), and a second level of delegation.
fn delegate(spec: &VirtualServiceSpec, findings: &mut Findings) {
    let root_only = [
        ("spec.gateways", spec.gateways.is_empty()),
        ("spec.tls", spec.tls.is_empty()),
        ("spec.tcp", spec.tcp.is_empty()),
    ];
    for (path, empty) in root_only {
        if !empty {
            findings.add(
                path,
                Reason::Unsupported(
                    "a delegate takes only `http` routes, the root decides the rest: remove it",
                ),
            );
        }
    }
    for (index, route) in spec.http.iter().enumerate() {
        if route.delegate.is_some() {
            findings.add(
                format!("spec.http[{index}].delegate"),
                Reason::Unsupported(
                    "a delegate cannot delegate again (Istio supports one level): give this route a `route`, a `redirect` or a `directResponse`",
                ),
            );
        }
    }
}

fn http_route(findings: &mut Findings, path: &str, route: &HttpRoute) {
    for (index, conditions) in route.matches.iter().enumerate() {
        http_match(findings, &format!("{path}.match[{index}]"), conditions);
    }

    let routed = !route.route.is_empty();
    if routed && route.redirect.is_some() {
        findings.add(format!("{path}.redirect"), Reason::RedirectWithRoute);
    }
    if routed && route.direct_response.is_some() {
        findings.add(
            format!("{path}.directResponse"),
            Reason::Exclusive("directResponse", "route"),
        );
    }
    if route.redirect.is_some() && route.direct_response.is_some() {
        findings.add(
            format!("{path}.directResponse"),
            Reason::Exclusive("directResponse", "redirect"),
        );
    }
    if !routed
        && route.redirect.is_none()
        && route.direct_response.is_none()
        && route.delegate.is_none()
    {
        findings.add(path, Reason::NoAction);
    }
    if let Some(delegate) = &route.delegate {
        let at = format!("{path}.delegate");
        fields::required(
            findings,
            &format!("{at}.name"),
            &delegate.name,
            "the name of the VirtualService this route delegates to",
        );
        let actions = [
            ("route", routed),
            ("redirect", route.redirect.is_some()),
            ("directResponse", route.direct_response.is_some()),
        ];
        for (action, given) in actions {
            if given {
                findings.add(&at, Reason::Exclusive("delegate", action));
            }
        }
    }

    let route_path = format!("{path}.route");
    for (index, target) in route.route.iter().enumerate() {
        destination(
            findings,
            &format!("{route_path}[{index}].destination"),
            &target.destination,
        );
    }
    let weights: Vec<Option<i32>> = route.route.iter().map(|d| d.weight).collect();
    fields::weights(findings, &route_path, &weights);

    if let Some(redirect) = &route.redirect {
        let at = format!("{path}.redirect");
        fields::port(findings, &format!("{at}.port"), redirect.port);
        if let Some(code) = redirect.redirect_code
            && !(300..=399).contains(&code)
        {
            findings.add(
                format!("{at}.redirectCode"),
                Reason::StatusOutOfRange {
                    value: code.into(),
                    expected: "a redirect status: use 301, 302, 303, 307 or 308",
                },
            );
        }
    }
    if let Some(response) = &route.direct_response
        && !(200..=599).contains(&response.status)
    {
        findings.add(
            format!("{path}.directResponse.status"),
            Reason::StatusOutOfRange {
                value: response.status.into(),
                expected: "an HTTP status: use 200 to 599",
            },
        );
    }
    if let Some(rewrite) = &route.rewrite
        && let Some(regex_rewrite) = &rewrite.uri_regex_rewrite
    {
        let at = format!("{path}.rewrite");
        if !rewrite.uri.is_empty() {
            findings.add(
                format!("{at}.uriRegexRewrite"),
                Reason::Exclusive("uriRegexRewrite", "uri"),
            );
        }
        fields::regex(
            findings,
            &format!("{at}.uriRegexRewrite.match"),
            &regex_rewrite.pattern,
        );
    }
    if let Some(retries) = &route.retries {
        retry(findings, &format!("{path}.retries"), retries);
    }
    if let Some(fault) = &route.fault {
        if let Some(d) = &fault.delay {
            delay(findings, &format!("{path}.fault.delay"), d);
        }
        if let Some(a) = &fault.abort {
            abort(findings, &format!("{path}.fault.abort"), a);
        }
    }
    mirrors(findings, path, route);
    if let Some(cors) = &route.cors_policy {
        cors_policy(findings, &format!("{path}.corsPolicy"), cors);
    }
}

fn http_match(findings: &mut Findings, path: &str, conditions: &HttpMatchRequest) {
    fields::string_match(findings, &format!("{path}.uri"), conditions.uri.as_ref());
    fields::string_match(
        findings,
        &format!("{path}.scheme"),
        conditions.scheme.as_ref(),
    );
    fields::string_match(
        findings,
        &format!("{path}.method"),
        conditions.method.as_ref(),
    );
    fields::string_match(
        findings,
        &format!("{path}.authority"),
        conditions.authority.as_ref(),
    );
    fields::string_match_map(findings, &format!("{path}.headers"), &conditions.headers);
    fields::string_match_map(
        findings,
        &format!("{path}.queryParams"),
        &conditions.query_params,
    );
    fields::string_match_map(
        findings,
        &format!("{path}.withoutHeaders"),
        &conditions.without_headers,
    );
    fields::port(findings, &format!("{path}.port"), conditions.port);
}

fn destination(findings: &mut Findings, path: &str, destination: &Destination) {
    fields::required(
        findings,
        &format!("{path}.host"),
        &destination.host,
        "name the service to send traffic to",
    );
    fields::port(
        findings,
        &format!("{path}.port.number"),
        destination.port.map(|p| p.number),
    );
}

fn l4_destinations(findings: &mut Findings, path: &str, route: &[RouteDestination]) {
    for (index, target) in route.iter().enumerate() {
        destination(
            findings,
            &format!("{path}[{index}].destination"),
            &target.destination,
        );
    }
    let weights: Vec<Option<i32>> = route.iter().map(|d| d.weight).collect();
    fields::weights(findings, path, &weights);
}

fn retry(findings: &mut Findings, path: &str, retries: &HttpRetry) {
    fields::non_negative(findings, &format!("{path}.attempts"), retries.attempts);
    let conditions = retries.retry_on.as_deref().unwrap_or_default();
    for condition in conditions.split(',').map(str::trim) {
        let known = condition.is_empty()
            || RETRY_CONDITIONS.contains(&condition)
            || condition.parse::<u16>().is_ok();
        if !known {
            findings.add(
                format!("{path}.retryOn"),
                Reason::RetryOn(condition.to_owned()),
            );
        }
    }
}

fn delay(findings: &mut Findings, path: &str, delay: &Delay) {
    if delay.fixed_delay.is_none() && delay.exponential_delay.is_none() {
        findings.add(
            format!("{path}.fixedDelay"),
            Reason::Required("how long to delay, for example `fixedDelay: 5s`"),
        );
    }
    fields::percentage(
        findings,
        &format!("{path}.percentage"),
        delay.percentage.as_ref(),
    );
    if let Some(percent) = delay.percent {
        let at = format!("{path}.percent");
        fields::deprecated(findings, &at, true, "`percentage: {value: N}`");
        fields::percent_value(findings, &at, percent.into());
    }
}

fn abort(findings: &mut Findings, path: &str, abort: &Abort) {
    if abort.http_status.is_none() && abort.grpc_status.is_none() && abort.http2_error.is_none() {
        findings.add(
            format!("{path}.httpStatus"),
            Reason::Required("the error to answer with, for example `httpStatus: 503`"),
        );
    }
    if let Some(status) = abort.http_status
        && !(200..=599).contains(&status)
    {
        findings.add(
            format!("{path}.httpStatus"),
            Reason::StatusOutOfRange {
                value: status.into(),
                expected: "an HTTP status: use 200 to 599",
            },
        );
    }
    fields::percentage(
        findings,
        &format!("{path}.percentage"),
        abort.percentage.as_ref(),
    );
}

fn mirrors(findings: &mut Findings, path: &str, route: &HttpRoute) {
    if let Some(mirror) = &route.mirror {
        destination(findings, &format!("{path}.mirror"), mirror);
    }
    fields::percentage(
        findings,
        &format!("{path}.mirrorPercentage"),
        route.mirror_percentage.as_ref(),
    );
    if let Some(percent) = route.mirror_percent {
        let at = format!("{path}.mirrorPercent");
        fields::deprecated(findings, &at, true, "`mirrorPercentage: {value: N}`");
        fields::percent_value(findings, &at, percent.into());
    }
    for (index, mirror) in route.mirrors.iter().enumerate() {
        let at = format!("{path}.mirrors[{index}]");
        destination(findings, &format!("{at}.destination"), &mirror.destination);
        fields::percentage(
            findings,
            &format!("{at}.percentage"),
            mirror.percentage.as_ref(),
        );
    }
}

fn cors_policy(findings: &mut Findings, path: &str, cors: &CorsPolicy) {
    for (index, origin) in cors.allow_origins.iter().enumerate() {
        fields::string_match(
            findings,
            &format!("{path}.allowOrigins[{index}]"),
            Some(origin),
        );
    }
    fields::deprecated(
        findings,
        &format!("{path}.allowOrigin"),
        !cors.allow_origin.is_empty(),
        "`allowOrigins` (a list of string matches)",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::fields::tests::found;

    fn check_yaml(yaml: &str) -> Vec<(String, String)> {
        let spec: VirtualServiceSpec = serde_yaml_ng::from_str(yaml).unwrap();
        let mut findings = Findings::default();
        check(&spec, false, &mut findings);
        found(findings)
    }

    fn one(yaml: &str) -> (String, String) {
        let mut found = check_yaml(yaml);
        assert_eq!(found.len(), 1, "expected one problem, found {found:?}");
        found.remove(0)
    }

    fn pair(path: &str, message: &str) -> (String, String) {
        (path.to_owned(), message.to_owned())
    }

    const ROUTE: &str = "  route:\n  - destination: {host: reviews}\n";

    #[test]
    fn the_bookinfo_routes_are_valid() {
        let found = check_yaml(
            "
hosts: [reviews]
http:
- match:
  - headers: {end-user: {exact: jason}}
    uri: {regex: '^/reviews/[0-9]+$'}
  fault:
    delay: {fixedDelay: 7s, percentage: {value: 100}}
  route:
  - destination: {host: ratings, subset: v1}
- route:
  - destination: {host: reviews, subset: v1}
    weight: 50
  - destination: {host: reviews, subset: v3}
    weight: 50
  timeout: 0.5s
  retries: {attempts: 3, perTryTimeout: 2s, retryOn: 'gateway-error,connect-failure,503'}
tcp:
- match: [{port: 27017}]
  route:
  - destination: {host: mongo, port: {number: 27017}}
",
        );
        assert_eq!(found, []);
    }

    #[test]
    fn weights_not_summing_to_100_are_reported_on_the_route() {
        assert_eq!(
            one(
                "hosts: [r]\nhttp:\n- route:\n  - destination: {host: r, subset: v1}\n    weight: 50\n  - destination: {host: r, subset: v2}\n    weight: 40\n"
            ),
            pair(
                "spec.http[0].route",
                "weights sum to 90, they must sum to 100"
            )
        );
        assert_eq!(
            one(
                "hosts: [r]\ntcp:\n- route:\n  - destination: {host: r}\n    weight: 10\n  - destination: {host: s}\n    weight: 10\n"
            ),
            pair(
                "spec.tcp[0].route",
                "weights sum to 20, they must sum to 100"
            )
        );
    }

    #[test]
    fn a_regex_that_does_not_compile_is_reported_where_it_is() {
        assert_eq!(
            one(&format!(
                "hosts: [r]\nhttp:\n- match:\n  - uri: {{regex: '/a/(b'}}\n{ROUTE}"
            )),
            pair(
                "spec.http[0].match[0].uri.regex",
                "`/a/(b` is not a valid regular expression (RE2 syntax): unclosed group"
            )
        );
        assert_eq!(
            one(&format!(
                "hosts: [r]\nhttp:\n- match:\n  - headers: {{x-version: {{regex: 'v[1-'}}}}\n{ROUTE}"
            ))
            .0,
            "spec.http[0].match[0].headers.x-version.regex"
        );
    }

    #[test]
    fn ports_out_of_range_are_reported() {
        assert_eq!(
            one("hosts: [r]\nhttp:\n- route:\n  - destination: {host: r, port: {number: 70000}}\n"),
            pair(
                "spec.http[0].route[0].destination.port.number",
                "port 70000 is out of range: use 1 to 65535"
            )
        );
        assert_eq!(
            one(&format!(
                "hosts: [r]\nhttp:\n- match: [{{port: 0}}]\n{ROUTE}"
            ))
            .0,
            "spec.http[0].match[0].port"
        );
    }

    #[test]
    fn percentages_must_be_0_to_100() {
        assert_eq!(
            one(&format!(
                "hosts: [r]\nhttp:\n- fault:\n    abort: {{httpStatus: 503, percentage: {{value: 150}}}}\n{ROUTE}"
            )),
            pair(
                "spec.http[0].fault.abort.percentage.value",
                "150 is not a percentage: use a value from 0 to 100"
            )
        );
        assert_eq!(
            one(&format!(
                "hosts: [r]\nhttp:\n- mirror: {{host: m}}\n  mirrorPercentage: {{value: -5}}\n{ROUTE}"
            ))
            .0,
            "spec.http[0].mirrorPercentage.value"
        );
    }

    #[test]
    fn negative_retry_attempts_and_unknown_conditions_are_reported() {
        assert_eq!(
            check_yaml(&format!(
                "hosts: [r]\nhttp:\n- retries: {{attempts: -1, retryOn: '5xx,sometimes'}}\n{ROUTE}"
            )),
            [
                pair(
                    "spec.http[0].retries.attempts",
                    "-1 is negative: it must be 0 or more"
                ),
                pair(
                    "spec.http[0].retries.retryOn",
                    &Reason::RetryOn("sometimes".into()).to_string()
                ),
            ]
        );
    }

    #[test]
    fn redirect_with_route_is_refused() {
        assert_eq!(
            one(&format!(
                "hosts: [r]\nhttp:\n- redirect: {{uri: /new}}\n{ROUTE}"
            )),
            pair(
                "spec.http[0].redirect",
                "`redirect` cannot be combined with `route`: a redirect answers the request itself — keep one"
            )
        );
        assert_eq!(
            check_yaml("hosts: [r]\nhttp:\n- redirect: {uri: /new, redirectCode: 302}\n"),
            []
        );
    }

    #[test]
    fn a_route_that_does_nothing_or_lacks_a_host_is_reported() {
        assert_eq!(
            one("hosts: [r]\nhttp:\n- name: empty\n"),
            pair(
                "spec.http[0]",
                "does nothing: give it a `route`, a `redirect`, a `directResponse` or a `delegate`"
            )
        );
        assert_eq!(
            one("hosts: [r]\nhttp:\n- route:\n  - destination: {subset: v1}\n"),
            pair(
                "spec.http[0].route[0].destination.host",
                "required: name the service to send traffic to"
            )
        );
        assert_eq!(one(&format!("http:\n-{}", &ROUTE[1..])).0, "spec.hosts");
    }

    #[test]
    fn faults_need_an_effect_and_statuses_a_range() {
        assert_eq!(
            check_yaml(&format!(
                "hosts: [r]\nhttp:\n- fault:\n    delay: {{percentage: {{value: 10}}}}\n    abort: {{httpStatus: 700}}\n{ROUTE}"
            )),
            [
                pair(
                    "spec.http[0].fault.delay.fixedDelay",
                    "required: how long to delay, for example `fixedDelay: 5s`"
                ),
                pair(
                    "spec.http[0].fault.abort.httpStatus",
                    "700 is not an HTTP status: use 200 to 599"
                ),
            ]
        );
    }

    #[test]
    fn deprecated_fields_warn_without_rejecting() {
        let spec: VirtualServiceSpec = serde_yaml_ng::from_str(&format!(
            "hosts: [r]\nhttp:\n- mirror: {{host: m}}\n  mirrorPercent: 10\n{ROUTE}"
        ))
        .unwrap();
        let mut findings = Findings::default();
        check(&spec, false, &mut findings);
        assert!(!findings.has_errors());
        assert_eq!(
            found(findings),
            [pair(
                "spec.http[0].mirrorPercent",
                "deprecated: use `mirrorPercentage: {value: N}`"
            )]
        );
    }
}
