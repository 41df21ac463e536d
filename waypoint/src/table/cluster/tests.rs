use std::collections::HashMap;

use super::*;
use crate::table::{ConnectionLimits, Health, OutlierPolicy};

/// A cluster `outbound|80||app` over `10.0.0.<last>:80` for each of `last`, built from
/// `settings`, with `policy` (its locality and TCP settings the defaults).
fn app_cluster(
    settings: ClusterSettings,
    last: impl IntoIterator<Item = u8>,
    (balancer, limits, outlier): (Balancer, Option<ConnectionLimits>, Option<OutlierPolicy>),
) -> Cluster {
    let policy = ClusterPolicy {
        balancer,
        limits,
        outlier,
        locality: None,
        tcp: TcpPolicy::default(),
    };
    let addresses = last
        .into_iter()
        .map(|i| SocketAddr::from(([10, 0, 0, i], 80)));
    Cluster::new("outbound|80||app".into(), settings, addresses, policy)
}

fn cluster(balancer: Balancer, count: u8) -> Cluster {
    app_cluster(
        ClusterSettings::default(),
        1..=count,
        (balancer, None, None),
    )
}

#[test]
fn tcp_timeouts_are_istios_unless_set_and_a_zero_idle_timeout_turns_it_off() {
    let pool = |yaml: &str| -> ConnectionPoolSettings {
        serde_yaml_ng::from_str(yaml).expect("test pool is YAML")
    };
    assert_eq!(TcpPolicy::new(None), TcpPolicy::default());
    assert_eq!(
        TcpPolicy::new(Some(&pool("{tcp: {maxConnections: 3}}"))),
        TcpPolicy::default()
    );
    assert_eq!(
        TcpPolicy::new(Some(&pool(
            "{tcp: {idleTimeout: 90s, connectTimeout: 250ms, maxConnectionDuration: 1h, tcpKeepalive: {time: 7s, probes: 3}}}"
        ))),
        TcpPolicy {
            connect_timeout: Duration::from_millis(250),
            idle_timeout: Some(Duration::from_secs(90)),
            max_connection_duration: Some(Duration::from_secs(3600)),
            pool_idle_timeout: Some(DEFAULT_POOL_IDLE_TIMEOUT),
            use_client_protocol: false,
            max_requests_per_connection: None,
            keepalive: Some(Keepalive {
                time: Some(Duration::from_secs(7)),
                interval: None,
                probes: Some(3),
            }),
        }
    );
    assert_eq!(
        TcpPolicy::new(Some(&pool("{http: {idleTimeout: 5s}}"))).pool_idle_timeout,
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        TcpPolicy::new(Some(&pool(
            "{http: {idleTimeout: 0s}, tcp: {connectTimeout: 1s}}"
        )))
        .pool_idle_timeout,
        None
    );
    assert_eq!(
        TcpPolicy::new(Some(&pool("{tcp: {maxConnectionDuration: 0s}}"))).max_connection_duration,
        None
    );
    assert_eq!(
        TcpPolicy::new(Some(&pool("{tcp: {idleTimeout: 0s}}"))).idle_timeout,
        None
    );
}

#[test]
fn round_robin_takes_turns() {
    let cluster = cluster(Balancer::new(Some(SimpleLb::RoundRobin)), 3);
    let picks: Vec<u8> = (0..6)
        .map(|_| match cluster.pick(None, &[]).unwrap().address {
            SocketAddr::V4(v4) => v4.ip().octets()[3],
            SocketAddr::V6(_) => unreachable!("test endpoints are IPv4"),
        })
        .collect();
    assert_eq!(picks, [1, 2, 3, 1, 2, 3]);
}

#[test]
fn least_request_avoids_a_busy_endpoint() {
    let cluster = cluster(Balancer::new(None), 2);
    let busy = cluster.endpoints[0].start_request();
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    for _ in 0..200 {
        *counts
            .entry(cluster.pick(None, &[]).unwrap().address)
            .or_default() += 1;
    }
    // The busy one wins only when both random picks land on it: about a quarter.
    let busy_share = counts.get(&busy.0.address).copied().unwrap_or(0);
    assert!(
        busy_share < 100,
        "the busy endpoint got {busy_share} of 200 picks"
    );
    drop(busy);
    assert_eq!(cluster.endpoints[0].active_requests(), 0);
}

#[test]
fn a_retry_prefers_another_endpoint() {
    let cluster = cluster(Balancer::new(Some(SimpleLb::Random)), 2);
    let first = cluster.pick(None, &[]).unwrap().address;
    // Five random picks all land on `first` once in 32 times.
    let again = (0..100)
        .filter(|_| cluster.pick(None, &[first]).unwrap().address == first)
        .count();
    assert!(
        again < 15,
        "{again} of 100 retries went back to the endpoint that failed"
    );
}

/// A round-robin cluster of `count` endpoints with `outlier` detection.
fn ejecting_cluster(count: u8, outlier: &str) -> Cluster {
    let outlier: OutlierDetection = serde_yaml_ng::from_str(outlier).unwrap();
    let balancer = Balancer::new(Some(SimpleLb::RoundRobin));
    let outlier = OutlierPolicy::new(&outlier, Instant::now());
    app_cluster(
        ClusterSettings::default(),
        1..=count,
        (balancer, None, outlier),
    )
}

#[test]
fn an_ejected_endpoint_is_not_picked_until_its_ejection_ends() {
    let cluster = ejecting_cluster(2, "{consecutive5xxErrors: 1, baseEjectionTime: 1h}");
    let failing = cluster.pick(None, &[]).unwrap();
    cluster.record(&failing, Health::ServerError { gateway: true });
    for _ in 0..10 {
        assert_ne!(cluster.pick(None, &[]).unwrap().address, failing.address);
    }
    let other = cluster.pick(None, &[]).unwrap();
    cluster.record(&other, Health::LocalFailure);
    assert!(
        cluster.pick(None, &[]).is_some(),
        "the default 10% lets only one of two endpoints out"
    );
}

#[test]
fn with_too_few_endpoints_in_for_min_health_percent_every_endpoint_takes_requests() {
    let cluster = ejecting_cluster(
        4,
        "{consecutive5xxErrors: 1, baseEjectionTime: 1h, maxEjectionPercent: 100, minHealthPercent: 50}",
    );
    let picked = |cluster: &Cluster| {
        (0..8)
            .map(|_| cluster.pick(None, &[]).unwrap().address)
            .collect::<std::collections::BTreeSet<_>>()
    };
    cluster.record(&cluster.endpoints[0], Health::LocalFailure);
    cluster.record(&cluster.endpoints[1], Health::LocalFailure);
    assert_eq!(picked(&cluster).len(), 2, "two of four out: half are in");
    cluster.record(&cluster.endpoints[2], Health::LocalFailure);
    assert_eq!(
        picked(&cluster).len(),
        4,
        "one of four in: the cluster panics and uses all of them"
    );
}

fn hashing_cluster(count: u8, outlier: Option<&str>) -> Cluster {
    let lb: LoadBalancerSettings =
        serde_yaml_ng::from_str("{consistentHash: {httpHeaderName: x-user}}").unwrap();
    let outlier: Option<OutlierDetection> =
        outlier.map(|yaml| serde_yaml_ng::from_str(yaml).unwrap());
    let outlier = outlier
        .as_ref()
        .and_then(|spec| OutlierPolicy::new(spec, Instant::now()));
    let balancer = Balancer::from_settings(Some(&lb));
    app_cluster(
        ClusterSettings::default(),
        1..=count,
        (balancer, None, outlier),
    )
}

/// Where each of `users` lands.
fn placements(cluster: &Cluster, users: &[String]) -> Vec<SocketAddr> {
    users
        .iter()
        .map(|user| {
            let mut headers = http::HeaderMap::new();
            headers.insert("x-user", user.parse().unwrap());
            let keys = RequestKeys {
                headers: &headers,
                query: None,
                source: [198, 18, 0, 1].into(),
            };
            let hash = cluster.hash(keys).hash;
            assert!(hash.is_some(), "the header is hashed");
            cluster.pick(hash, &[]).unwrap().address
        })
        .collect()
}

fn users(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("user-{i}")).collect()
}

#[test]
fn a_consistent_hash_sticks_per_key_and_spreads_across_keys() {
    let cluster = hashing_cluster(3, None);
    let users = users(300);
    let first = placements(&cluster, &users);
    for _ in 0..3 {
        assert_eq!(
            placements(&cluster, &users),
            first,
            "a user changed endpoint"
        );
    }
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    for address in &first {
        *counts.entry(*address).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "300 users reached {counts:?}");
    assert!(
        counts.values().all(|n| *n >= 50),
        "the users spread unevenly: {counts:?}"
    );
}

#[test]
fn an_ejected_endpoints_keys_move_and_come_back_when_it_is_readmitted() {
    let cluster = hashing_cluster(
        4,
        Some(
            "{consecutive5xxErrors: 1, baseEjectionTime: 20ms, interval: 10ms, maxEjectionPercent: 100}",
        ),
    );
    let users = users(200);
    let before = placements(&cluster, &users);
    let failing = cluster.endpoints[1].clone();
    cluster.record(&failing, Health::ServerError { gateway: false });
    let during = placements(&cluster, &users);
    for ((user, was), is) in users.iter().zip(&before).zip(&during) {
        if *was == failing.address {
            assert_ne!(
                *is, failing.address,
                "{user} still goes to the ejected endpoint"
            );
        } else {
            assert_eq!(was, is, "{user} moved although its endpoint is healthy");
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(40));
    assert_eq!(
        placements(&cluster, &users),
        before,
        "the readmitted endpoint gets its users back"
    );
}

#[test]
fn a_consistent_hash_retry_goes_round_the_ring_to_another_endpoint() {
    let cluster = hashing_cluster(3, None);
    let first = cluster.pick(Some(42), &[]).unwrap().address;
    let retry = cluster.pick(Some(42), &[first]).unwrap().address;
    assert_ne!(retry, first);
    assert_eq!(cluster.pick(Some(42), &[first]).unwrap().address, retry);
    let all: Vec<SocketAddr> = cluster.endpoints.iter().map(|e| e.address).collect();
    assert_eq!(
        cluster.pick(Some(42), &all).unwrap().address,
        first,
        "with every endpoint tried, the key's own endpoint"
    );
}

#[test]
fn an_empty_cluster_has_no_pick() {
    assert!(cluster(Balancer::Random, 0).pick(None, &[]).is_none());
}

/// A round-robin cluster over endpoints `10.0.0.<last>` for each of `last`, ejecting
/// after one failure and allowing one connection, built from `settings`.
fn protected_cluster(settings: ClusterSettings, last: &[u8]) -> Cluster {
    let outlier: OutlierDetection = serde_yaml_ng::from_str(
        "{consecutive5xxErrors: 1, baseEjectionTime: 1h, maxEjectionPercent: 100}",
    )
    .unwrap();
    let pool: ConnectionPoolSettings =
        serde_yaml_ng::from_str("{tcp: {maxConnections: 1}}").unwrap();
    let policy = (
        Balancer::new(Some(SimpleLb::RoundRobin)),
        ConnectionLimits::new(&pool, false),
        OutlierPolicy::new(&outlier, Instant::now()),
    );
    app_cluster(settings, last.iter().copied(), policy)
}

#[test]
fn a_cluster_rebuilt_with_the_same_settings_carries_on_where_the_last_one_was() {
    let before = protected_cluster(ClusterSettings::default(), &[1, 2, 3]);
    let failing = Arc::clone(&before.endpoints[0]);
    before.record(&failing, Health::LocalFailure);
    let _in_flight = before.endpoints[1].start_request();
    let _connection = before.admit_stream().expect("the one connection");

    // An update drops 10.0.0.3 and brings 10.0.0.4.
    let after = protected_cluster(ClusterSettings::default(), &[1, 2, 4]).continuing(&before);
    for _ in 0..10 {
        assert_ne!(
            after.pick(None, &[]).unwrap().address,
            failing.address,
            "the ejected endpoint stays out"
        );
    }
    assert_eq!(
        after.endpoints[1].active_requests(),
        1,
        "the request in flight still counts for LEAST_REQUEST"
    );
    assert!(
        after.admit_stream().is_err(),
        "the connection admitted before the update still holds the only place"
    );
    after.record(&after.endpoints[1], Health::LocalFailure);
    assert!(
        !before.available()[1],
        "an ejection on either shows on both: they share the endpoint"
    );
}

#[test]
fn a_cluster_rebuilt_with_other_settings_starts_afresh() {
    let before = protected_cluster(ClusterSettings::default(), &[1, 2]);
    before.record(&before.endpoints[0], Health::LocalFailure);
    let _connection = before.admit_stream().expect("the one connection");

    let changed = ClusterSettings {
        http2: true,
        ..ClusterSettings::default()
    };
    let after = protected_cluster(changed, &[1, 2]).continuing(&before);
    assert_eq!(after.available(), [true, true], "no endpoint is out");
    assert!(after.admit_stream().is_ok(), "no connection counts yet");
}
