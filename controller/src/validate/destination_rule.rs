//! Pass 3 for a DestinationRule: the rules Istio's own validation applies to one
//! object.

use std::collections::BTreeMap;

use ambit_api::{
    istio::destination_rule::{
        ConnectionPoolSettings, ConsistentHashLb, DestinationRuleSpec, LoadBalancerSettings,
        LocalityLbSetting, OutlierDetection, TrafficPolicy,
    },
    locality::LocalityPattern,
};

use super::{Findings, Reason, fields};

/// Checks one DestinationRule's spec.
pub(super) fn check(spec: &DestinationRuleSpec, findings: &mut Findings) {
    fields::required(
        findings,
        "spec.host",
        &spec.host,
        "name the service this rule applies to",
    );
    if let Some(policy) = &spec.traffic_policy {
        traffic_policy(findings, "spec.trafficPolicy", policy, false);
    }
    let rule_ejects = spec
        .traffic_policy
        .as_ref()
        .is_some_and(|p| p.outlier_detection.is_some());
    let mut first_seen: BTreeMap<&str, String> = BTreeMap::new();
    for (index, subset) in spec.subsets.iter().enumerate() {
        let path = format!("spec.subsets[{index}]");
        fields::required(
            findings,
            &format!("{path}.name"),
            &subset.name,
            "name the subset, as routes refer to it (`subset: v1`)",
        );
        if !subset.name.is_empty() {
            if let Some(first) = first_seen.get(subset.name.as_str()) {
                findings.add(
                    format!("{path}.name"),
                    Reason::DuplicateSubset {
                        name: subset.name.clone(),
                        first: first.clone(),
                    },
                );
            } else {
                first_seen.insert(&subset.name, path.clone());
            }
        }
        if let Some(policy) = &subset.traffic_policy {
            traffic_policy(
                findings,
                &format!("{path}.trafficPolicy"),
                policy,
                rule_ejects,
            );
        }
    }
}

/// `inherits_ejection`: whether a policy this one falls back to has
/// `outlierDetection` (a subset's, the rule's).
fn traffic_policy(
    findings: &mut Findings,
    path: &str,
    policy: &TrafficPolicy,
    inherits_ejection: bool,
) {
    let ejects = inherits_ejection || policy.outlier_detection.is_some();
    if let Some(lb) = &policy.load_balancer {
        load_balancer(findings, &format!("{path}.loadBalancer"), lb, ejects);
    }
    if let Some(pool) = &policy.connection_pool {
        connection_pool(findings, &format!("{path}.connectionPool"), pool);
    }
    if let Some(outlier) = &policy.outlier_detection {
        outlier_detection(findings, &format!("{path}.outlierDetection"), outlier);
    }
    for (index, port_policy) in policy.port_level_settings.iter().enumerate() {
        let at = format!("{path}.portLevelSettings[{index}]");
        match port_policy.port {
            None => findings.add(
                format!("{at}.port"),
                Reason::Required("the port this policy applies to, `port: {number: N}`"),
            ),
            Some(port) => fields::port(findings, &format!("{at}.port.number"), Some(port.number)),
        }
        if let Some(lb) = &port_policy.load_balancer {
            let ejects = ejects || port_policy.outlier_detection.is_some();
            load_balancer(findings, &format!("{at}.loadBalancer"), lb, ejects);
        }
        if let Some(pool) = &port_policy.connection_pool {
            connection_pool(findings, &format!("{at}.connectionPool"), pool);
        }
        if let Some(outlier) = &port_policy.outlier_detection {
            outlier_detection(findings, &format!("{at}.outlierDetection"), outlier);
        }
    }
}

/// `ejects`: whether the policy has (or falls back to) `outlierDetection`.
fn load_balancer(findings: &mut Findings, path: &str, lb: &LoadBalancerSettings, ejects: bool) {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        findings.add(
            format!("{path}.consistentHash"),
            Reason::Exclusive("consistentHash", "simple"),
        );
    }
    if let Some(hash) = &lb.consistent_hash {
        consistent_hash(findings, &format!("{path}.consistentHash"), hash);
    }
    if let Some(locality) = &lb.locality_lb_setting {
        let at = format!("{path}.localityLbSetting");
        locality_lb(findings, &at, locality);
        let fails_over = [
            ("failover", !locality.failover.is_empty()),
            ("failoverPriority", !locality.failover_priority.is_empty()),
        ];
        for (field, set) in fails_over {
            if set && !ejects && locality.enabled != Some(false) {
                findings.add(format!("{at}.{field}"), Reason::FailoverWithoutOutlier);
            }
        }
    }
}

/// `localityLbSetting`: `distribute` or `failover`, localities as `region/zone/subzone`
/// (`*` for any), `failover` between two regions.
fn locality_lb(findings: &mut Findings, at: &str, locality: &LocalityLbSetting) {
    if !locality.distribute.is_empty() && !locality.failover.is_empty() {
        findings.add(
            format!("{at}.failover"),
            Reason::Exclusive("failover", "distribute"),
        );
    }
    let mut pattern = |field: String, text: &str| {
        if let Err(error) = text.parse::<LocalityPattern>() {
            findings.add(field, Reason::Locality(error));
        }
    };
    for (index, distribute) in locality.distribute.iter().enumerate() {
        let entry = format!("{at}.distribute[{index}]");
        pattern(format!("{entry}.from"), &distribute.from);
        for to in distribute.to.keys() {
            pattern(format!("{entry}.to.{to}"), to);
        }
    }
    for (index, distribute) in locality.distribute.iter().enumerate() {
        let weights: Vec<Option<i32>> = distribute
            .to
            .values()
            .map(|w| Some(i32::try_from(*w).unwrap_or(i32::MAX)))
            .collect();
        fields::weights(findings, &format!("{at}.distribute[{index}].to"), &weights);
    }
    for (index, failover) in locality.failover.iter().enumerate() {
        let entry = format!("{at}.failover[{index}]");
        for (field, region) in [("from", &failover.from), ("to", &failover.to)] {
            if region.is_empty() || region.contains(['/', '*']) {
                findings.add(format!("{entry}.{field}"), Reason::Region(region.clone()));
            }
        }
        if failover.from == failover.to && !failover.from.is_empty() {
            findings.add(
                format!("{entry}.to"),
                Reason::FailoverToItself(failover.from.clone()),
            );
        }
    }
}

fn consistent_hash(findings: &mut Findings, path: &str, hash: &ConsistentHashLb) {
    let keys: Vec<&str> = [
        hash.http_header_name.as_ref().map(|_| "`httpHeaderName`"),
        hash.http_cookie.as_ref().map(|_| "`httpCookie`"),
        hash.use_source_ip.map(|_| "`useSourceIp`"),
        hash.http_query_parameter_name
            .as_ref()
            .map(|_| "`httpQueryParameterName`"),
    ]
    .into_iter()
    .flatten()
    .collect();
    match keys.len() {
        0 => findings.add(
            path,
            Reason::Required(
                "what to hash: one of `httpHeaderName`, `httpCookie`, `useSourceIp`, `httpQueryParameterName`",
            ),
        ),
        1 => {}
        _ => findings.add(path, Reason::OneOf(keys.join(" and "))),
    }
    if let Some(cookie) = &hash.http_cookie {
        fields::required(
            findings,
            &format!("{path}.httpCookie.name"),
            &cookie.name,
            "the cookie's name",
        );
    }
    if hash.ring_hash.is_some() && hash.maglev.is_some() {
        findings.add(
            format!("{path}.maglev"),
            Reason::Exclusive("maglev", "ringHash"),
        );
    }
    let ring_sizes = [
        hash.ring_hash
            .as_ref()
            .and_then(|ring| ring.minimum_ring_size),
        hash.minimum_ring_size,
    ];
    for (field, size) in ["ringHash.minimumRingSize", "minimumRingSize"]
        .into_iter()
        .zip(ring_sizes)
    {
        if let Some(size) = size.filter(|size| *size > MAX_RING_SIZE) {
            findings.add(
                format!("{path}.{field}"),
                Reason::HashTableSize {
                    value: size,
                    expected: "at most 8388608 (Envoy's maximum ring size)",
                },
            );
        }
    }
    if let Some(size) = hash.maglev.as_ref().and_then(|maglev| maglev.table_size)
        && (size > MAX_MAGLEV_TABLE_SIZE || !is_prime(size))
    {
        findings.add(
            format!("{path}.maglev.tableSize"),
            Reason::HashTableSize {
                value: size,
                expected: "a prime number up to 5000011, such as 65537 (the default)",
            },
        );
    }
    fields::deprecated(
        findings,
        &format!("{path}.minimumRingSize"),
        hash.minimum_ring_size.is_some(),
        "`ringHash: {minimumRingSize: N}`",
    );
}

/// Envoy's `maximum_ring_size`, the largest `minimumRingSize` it takes.
const MAX_RING_SIZE: u64 = 8_388_608;
/// The largest Maglev table Envoy builds.
const MAX_MAGLEV_TABLE_SIZE: u64 = 5_000_011;

fn is_prime(n: u64) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

fn connection_pool(findings: &mut Findings, path: &str, pool: &ConnectionPoolSettings) {
    if let Some(tcp) = &pool.tcp {
        fields::non_negative(
            findings,
            &format!("{path}.tcp.maxConnections"),
            tcp.max_connections,
        );
    }
    if let Some(http) = &pool.http {
        let at = format!("{path}.http");
        for (field, value) in [
            ("http1MaxPendingRequests", http.http1_max_pending_requests),
            ("http2MaxRequests", http.http2_max_requests),
            ("maxRequestsPerConnection", http.max_requests_per_connection),
            ("maxRetries", http.max_retries),
            ("maxConcurrentStreams", http.max_concurrent_streams),
        ] {
            fields::non_negative(findings, &format!("{at}.{field}"), value);
        }
    }
}

fn outlier_detection(findings: &mut Findings, path: &str, outlier: &OutlierDetection) {
    for (field, value) in [
        ("maxEjectionPercent", outlier.max_ejection_percent),
        ("minHealthPercent", outlier.min_health_percent),
    ] {
        if let Some(value) = value {
            fields::percent_value(findings, &format!("{path}.{field}"), value.into());
        }
    }
    let at = format!("{path}.consecutiveErrors");
    fields::deprecated(
        findings,
        &at,
        outlier.consecutive_errors.is_some(),
        "`consecutive5xxErrors` or `consecutiveGatewayErrors`",
    );
    fields::non_negative(findings, &at, outlier.consecutive_errors);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::fields::tests::found;

    fn check_yaml(yaml: &str) -> Vec<(String, String)> {
        let spec: DestinationRuleSpec = serde_yaml_ng::from_str(yaml).unwrap();
        let mut findings = Findings::default();
        check(&spec, &mut findings);
        found(findings)
    }

    fn pair(path: &str, message: &str) -> (String, String) {
        (path.to_owned(), message.to_owned())
    }

    #[test]
    fn a_full_rule_is_valid() {
        let found = check_yaml(
            "
host: reviews
trafficPolicy:
  loadBalancer:
    simple: ROUND_ROBIN
    localityLbSetting:
      distribute:
      - from: eu/zone1/*
        to: {eu/zone1/*: 80, eu/zone2/*: 20}
  connectionPool:
    tcp: {maxConnections: 100, connectTimeout: 30ms}
    http: {http1MaxPendingRequests: 1, http2MaxRequests: 100, maxRequestsPerConnection: 10, maxRetries: 3}
  outlierDetection: {consecutive5xxErrors: 5, consecutiveGatewayErrors: 3, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}
  portLevelSettings:
  - port: {number: 9080}
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
subsets:
- name: v1
  labels: {version: v1}
- name: v2
  labels: {version: v2}
  trafficPolicy:
    loadBalancer: {consistentHash: {useSourceIp: true}}
",
        );
        assert_eq!(found, []);
    }

    #[test]
    fn duplicate_subset_names_are_reported_at_the_second() {
        assert_eq!(
            check_yaml("host: r\nsubsets:\n- name: v1\n- name: v2\n- name: v1\n"),
            [pair(
                "spec.subsets[2].name",
                "subset `v1` is already defined at spec.subsets[0]: give each subset its own name"
            )]
        );
    }

    #[test]
    fn a_missing_host_or_subset_name_is_required() {
        assert_eq!(
            check_yaml("subsets:\n- labels: {version: v1}\n"),
            [
                pair(
                    "spec.host",
                    "required: name the service this rule applies to"
                ),
                pair(
                    "spec.subsets[0].name",
                    "required: name the subset, as routes refer to it (`subset: v1`)"
                ),
            ]
        );
    }

    #[test]
    fn load_balancer_oneofs_are_enforced() {
        assert_eq!(
            check_yaml(
                "host: r\ntrafficPolicy:\n  loadBalancer:\n    simple: RANDOM\n    consistentHash: {httpHeaderName: a, useSourceIp: true}\n"
            ),
            [
                pair(
                    "spec.trafficPolicy.loadBalancer.consistentHash",
                    "`consistentHash` cannot be combined with `simple`: keep one"
                ),
                pair(
                    "spec.trafficPolicy.loadBalancer.consistentHash",
                    "sets `httpHeaderName` and `useSourceIp`: set exactly one of them"
                ),
            ]
        );
    }

    #[test]
    fn hash_ring_and_maglev_sizes_are_what_envoy_builds() {
        let lb = |hash: &str| {
            check_yaml(&format!(
                "host: r\ntrafficPolicy:\n  loadBalancer:\n    consistentHash: {{httpHeaderName: x-user, {hash}}}\n"
            ))
        };
        assert_eq!(lb("maglev: {tableSize: 65537}"), []);
        assert_eq!(lb("ringHash: {minimumRingSize: 8388608}"), []);
        assert_eq!(
            lb("maglev: {tableSize: 65536}"),
            [pair(
                "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
                "65536 is not a prime number up to 5000011, such as 65537 (the default): Envoy refuses it"
            )]
        );
        assert_eq!(
            lb("ringHash: {minimumRingSize: 8388609}"),
            [pair(
                "spec.trafficPolicy.loadBalancer.consistentHash.ringHash.minimumRingSize",
                "8388609 is not at most 8388608 (Envoy's maximum ring size): Envoy refuses it"
            )]
        );
    }

    #[test]
    fn limits_and_percentages_have_ranges() {
        assert_eq!(
            check_yaml(
                "host: r\ntrafficPolicy:\n  connectionPool:\n    http: {maxRetries: -1}\n  outlierDetection: {maxEjectionPercent: 120}\n  portLevelSettings:\n  - port: {number: 0}\n"
            ),
            [
                pair(
                    "spec.trafficPolicy.connectionPool.http.maxRetries",
                    "-1 is negative: it must be 0 or more"
                ),
                pair(
                    "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
                    "120 is not a percentage: use a value from 0 to 100"
                ),
                pair(
                    "spec.trafficPolicy.portLevelSettings[0].port.number",
                    "port 0 is out of range: use 1 to 65535"
                ),
            ]
        );
    }

    #[test]
    fn localities_and_failover_regions_must_be_well_formed() {
        assert_eq!(
            check_yaml(
                "host: r\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute:\n      - {from: 'a/*/c', to: {'a//x': 40, 'b/*': 60}}\n"
            ),
            [
                pair(
                    "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].from",
                    "locality `a/*/c`: `*` stands for a whole part and only the last one (`region/*`)"
                ),
                pair(
                    "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to.a//x",
                    "locality `a//x` has an empty part: use `region/zone/subzone`, `*` for any"
                ),
            ]
        );
        assert_eq!(
            check_yaml(
                "host: r\nsubsets:\n- name: v1\n  trafficPolicy:\n    outlierDetection: {}\n    loadBalancer:\n      localityLbSetting:\n        failover:\n        - {from: us-east/a, to: eu}\n        - {from: eu, to: eu}\n"
            ),
            [
                pair(
                    "spec.subsets[0].trafficPolicy.loadBalancer.localityLbSetting.failover[0].from",
                    "`us-east/a` is not a region: name one region, without `/` or `*`"
                ),
                pair(
                    "spec.subsets[0].trafficPolicy.loadBalancer.localityLbSetting.failover[1].to",
                    "fails over from region `eu` to itself: name another region"
                ),
            ]
        );
    }

    #[test]
    fn failover_without_outlier_detection_is_a_warning() {
        let failover = "loadBalancer: {localityLbSetting: {failover: [{from: us, to: eu}]}}";
        assert_eq!(
            check_yaml(&format!("host: r\ntrafficPolicy: {{{failover}}}\n")),
            [pair(
                "spec.trafficPolicy.loadBalancer.localityLbSetting.failover",
                "does nothing without `outlierDetection`: Istio moves requests to other localities only when it can eject endpoints — add `outlierDetection`"
            )]
        );
        let inherited = format!(
            "host: r\ntrafficPolicy: {{outlierDetection: {{}}}}\nsubsets:\n- {{name: v1, trafficPolicy: {{{failover}}}}}\n"
        );
        assert_eq!(
            check_yaml(&inherited),
            [],
            "the subset falls back to the rule's"
        );
    }

    #[test]
    fn locality_weights_must_sum_to_100() {
        assert_eq!(
            check_yaml(
                "host: r\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute:\n      - {from: a/*, to: {a/*: 70, b/*: 20}}\n"
            ),
            [pair(
                "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
                "weights sum to 90, they must sum to 100"
            )]
        );
    }
}
