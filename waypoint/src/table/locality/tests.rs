use std::{collections::HashMap, net::SocketAddr, time::Instant};

use ambit_api::istio::destination_rule::{OutlierDetection, SimpleLb};

use super::*;
use crate::table::{
    Balancer, Cluster, ClusterPolicy, ClusterSettings, Health, OutlierPolicy, TcpPolicy,
};

fn at(text: &str) -> Locality {
    let mut parts = text.split('/').map(str::to_owned);
    Locality {
        region: parts.next().unwrap_or_default(),
        zone: parts.next().unwrap_or_default(),
        subzone: parts.next().unwrap_or_default(),
    }
}

/// Endpoints at `localities`, 10.0.0.1 onwards, with `labels`.
fn endpoints(localities: &[&str], labels: &[(&str, &str)]) -> Vec<Endpoint> {
    (1..)
        .zip(localities)
        .map(|(last, locality)| {
            Endpoint::new(
                std::net::Ipv4Addr::new(10, 0, 0, last).into(),
                labels.iter().copied(),
            )
            .in_locality(at(locality))
        })
        .collect()
}

/// What `setting` makes of a cluster with endpoints at `localities`, for a waypoint at
/// `own` without labels.
fn balanced(
    setting: &LocalitySetting,
    own: &str,
    outlier: bool,
    localities: &[&str],
) -> Option<LocalityLb> {
    let endpoints = endpoints(localities, &[]);
    let refs: Vec<&Endpoint> = endpoints.iter().collect();
    let origin = Origin {
        locality: &at(own),
        labels: &BTreeMap::new(),
    };
    setting.for_cluster(origin, outlier, &refs)
}

fn setting(yaml: &str) -> LocalitySetting {
    let spec: LocalityLbSetting = serde_yaml_ng::from_str(yaml).expect("a localityLbSetting");
    LocalitySetting::new(&spec, "localityLbSetting").expect("it compiles")
}

/// The share of 1,000 evenly spread draws each endpoint stays available for.
fn shares(lb: &LocalityLb, available: &[bool]) -> Vec<f64> {
    let mut counts = vec![0_u32; available.len()];
    for step in 0..1_000 {
        let mut narrowed = available.to_vec();
        lb.narrow(&mut narrowed, f64::from(step) / 1_000.0);
        for (count, yes) in counts.iter_mut().zip(&narrowed) {
            *count += u32::from(*yes);
        }
    }
    counts.iter().map(|c| f64::from(*c) / 1_000.0).collect()
}

fn close(actual: &[f64], expected: &[f64]) -> bool {
    actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .all(|(a, e)| (a - e).abs() < 0.01)
}

#[test]
fn endpoints_rank_by_subzone_zone_region_then_the_failover_region() {
    let own = at("us-east/a/rack-1");
    let plain = LocalitySetting::default();
    let failover = setting("{failover: [{from: us-east, to: eu-west}]}");
    for (endpoint, without, with) in [
        ("us-east/a/rack-1", 0, 0),
        ("us-east/a/rack-2", 1, 1),
        ("us-east/b/rack-1", 2, 2),
        ("eu-west/a/rack-1", 3, 3),
        ("ap-south/a/rack-1", 3, 4),
    ] {
        assert_eq!(
            plain.locality_rank(&own, &at(endpoint)),
            without,
            "{endpoint}"
        );
        assert_eq!(
            failover.locality_rank(&own, &at(endpoint)),
            with,
            "{endpoint}"
        );
    }
}

#[test]
fn failover_ranking_needs_outlier_detection_and_can_be_turned_off() {
    let on = LocalitySetting::default();
    assert_eq!(
        balanced(&on, "r1/a", false, &["r1/a", "r1/b"]),
        None,
        "without outlierDetection Istio does not rank"
    );
    let ranked = balanced(&on, "r1/a", true, &["r1/a", "r1/b"]).expect("two levels");
    assert!(close(&shares(&ranked, &[true, true]), &[1.0, 0.0]));
    assert_eq!(
        balanced(
            &setting("{enabled: false}"),
            "r1/a",
            true,
            &["r1/a", "r1/b"]
        ),
        None
    );
    assert_eq!(
        balanced(&on, "r1/a", true, &["r1/b", "r1/b"]),
        None,
        "one level changes nothing"
    );
}

#[test]
fn an_unhealthy_level_keeps_what_its_health_allows_and_spills_the_rest() {
    // Two endpoints in the waypoint's zone, two in another zone, one in another region.
    let lb = balanced(
        &LocalitySetting::default(),
        "r1/a",
        true,
        &["r1/a", "r1/a", "r1/b", "r1/b", "r2/a"],
    )
    .expect("three levels");
    assert!(close(&shares(&lb, &[true; 5]), &[1.0, 1.0, 0.0, 0.0, 0.0]));
    // One of two out: 50% healthy, times 1.4, keeps 70%; the next level takes 30%.
    let shared = shares(&lb, &[false, true, true, true, true]);
    assert!(close(&shared, &[0.0, 0.7, 0.3, 0.3, 0.0]), "{shared:?}");
    // The whole zone out: all to the next zone; it too half out: 70%, then the region.
    let shared = shares(&lb, &[false, false, false, true, true]);
    assert!(close(&shared, &[0.0, 0.0, 0.0, 0.7, 0.3]), "{shared:?}");
}

#[test]
fn failover_priority_ranks_by_the_longest_prefix_of_matching_labels() {
    let endpoint =
        |locality: &str, labels: &[(&str, &str)]| endpoints(&[locality], labels).remove(0);
    let own_labels: BTreeMap<String, String> = [("tier", "gold"), ("rack", "r7")]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let own = at("us/a");
    let origin = Origin {
        locality: &own,
        labels: &own_labels,
    };
    let keys = setting("{failoverPriority: [tier, topology.kubernetes.io/zone, rack]}");
    for (endpoint, rank) in [
        (endpoint("us/a", &[("tier", "gold"), ("rack", "r7")]), 0),
        (endpoint("us/a", &[("tier", "gold"), ("rack", "r1")]), 1),
        (endpoint("us/b", &[("tier", "gold"), ("rack", "r7")]), 2),
        (endpoint("us/a", &[("tier", "iron"), ("rack", "r7")]), 3),
    ] {
        assert_eq!(keys.rank(origin, &endpoint), rank, "{endpoint:?}");
    }
    let fixed = setting("{failoverPriority: [tier=iron]}");
    assert_eq!(
        fixed.rank(origin, &endpoint("us/a", &[("tier", "iron")])),
        0,
        "`key=value` compares with the value given"
    );
    // With `failover` too, locality ranks within each label level.
    let both = setting("{failoverPriority: [tier], failover: [{from: us, to: eu}]}");
    for (endpoint, rank) in [
        (endpoint("us/a", &[("tier", "gold")]), 0),
        (endpoint("us/b", &[("tier", "gold")]), 2),
        (endpoint("eu/a", &[("tier", "gold")]), 3),
        (endpoint("us/a", &[("tier", "iron")]), 5),
        (endpoint("ap/a", &[("tier", "iron")]), 9),
    ] {
        assert_eq!(both.rank(origin, &endpoint), rank, "{endpoint:?}");
    }
    let unlabelled = Origin {
        locality: &own,
        labels: &BTreeMap::new(),
    };
    assert_eq!(
        keys.rank(unlabelled, &endpoint("us/b", &[("tier", "iron")])),
        2,
        "without the proxy's labels, by locality alone"
    );
}

#[test]
fn levels_short_of_full_health_together_are_scaled_up() {
    let lb = LocalityLb::ranked(&[0, 0, 0, 0, 2, 2, 2, 2]).expect("two levels");
    // One of four up in each level: 35% health each, 70% together, scaled to 50/50.
    let mut available = [true, false, false, false, true, false, false, false];
    let shared = shares(&lb, &available);
    assert!(
        close(&shared[..1], &[0.5]) && close(&shared[4..5], &[0.5]),
        "{shared:?}"
    );
    available = [false; 8];
    assert!(close(&shares(&lb, &available), &[0.0; 8]));
}

#[test]
fn distribute_spreads_by_weight_shared_in_proportion_to_endpoints() {
    let rule = setting(
        "{distribute: [{from: 'r2/*', to: {'r2/*': 100}}, {from: 'r1/a/*', to: {'r1/a/*': 20, 'r1/b/*': 80}}]}",
    );
    let lb = balanced(
        &rule,
        "r1/a/x",
        false,
        &["r1/a/x", "r1/b/x", "r1/b/y", "r1/b/y", "r1/b/y", "r3/c"],
    )
    .expect("the second entry's from matches");
    // r1/b/x holds one of r1/b's four endpoints: a quarter of 80; r3/c is not named.
    let shared = shares(&lb, &[true; 6]);
    assert!(
        close(&shared, &[0.2, 0.2, 0.6, 0.6, 0.6, 0.0]),
        "{shared:?}"
    );
    // r1/b/y two of three out: 33% healthy, times 1.4, keeps 47% of its weight 60.
    let shared = shares(&lb, &[true, true, false, false, true, true]);
    let y = 60.0 * (1.4 / 3.0);
    let total = 20.0 + 20.0 + y;
    assert!(
        close(
            &shared,
            &[20.0 / total, 20.0 / total, 0.0, 0.0, y / total, 0.0]
        ),
        "{shared:?}"
    );
    assert_eq!(
        balanced(
            &setting("{distribute: [{from: 'r9/*', to: {'r1/*': 100}}]}"),
            "r1/a/x",
            false,
            &["r1/a/x"]
        ),
        None,
        "no entry is from here"
    );
}

#[test]
fn bad_localities_are_refused() {
    let spec: LocalityLbSetting =
        serde_yaml_ng::from_str("{distribute: [{from: 'r1/*/x', to: {'r1/*': 100}}]}").unwrap();
    assert_eq!(
        LocalitySetting::new(&spec, "lb").unwrap_err().to_string(),
        "`lb.distribute[0].from` `r1/*/x`: `*` stands for a whole part and only the last one (`region/*`)"
    );
}

#[test]
fn a_cluster_fails_over_to_the_next_zone_when_its_local_endpoint_is_ejected() {
    let outlier: OutlierDetection = serde_yaml_ng::from_str(
        "{consecutive5xxErrors: 1, baseEjectionTime: 1h, maxEjectionPercent: 100}",
    )
    .unwrap();
    let lb = balanced(
        &LocalitySetting::default(),
        "r1/a",
        true,
        &["r1/b", "r1/a", "r1/b"],
    );
    let policy = ClusterPolicy {
        balancer: Balancer::new(Some(SimpleLb::RoundRobin)),
        limits: None,
        outlier: OutlierPolicy::new(&outlier, Instant::now()),
        locality: lb,
        tcp: TcpPolicy::default(),
    };
    let addresses = (1..=3).map(|i| SocketAddr::from(([10, 0, 0, i], 80)));
    let cluster = Cluster::new(
        "outbound|80||app".into(),
        ClusterSettings::default(),
        addresses,
        policy,
    );
    let local = SocketAddr::from(([10, 0, 0, 2], 80));
    let picks = |count| {
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        for _ in 0..count {
            *seen
                .entry(cluster.pick(None, &[]).unwrap().address)
                .or_default() += 1;
        }
        seen
    };
    assert_eq!(
        picks(20),
        HashMap::from([(local, 20)]),
        "the local zone first"
    );
    let endpoint = cluster.pick(None, &[]).unwrap();
    cluster.record(&endpoint, Health::ServerError { gateway: true });
    let after = picks(20);
    assert_eq!(
        after.len(),
        2,
        "both endpoints of the other zone: {after:?}"
    );
    assert!(!after.contains_key(&local), "{after:?}");
}
