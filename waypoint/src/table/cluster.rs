//! Clusters, as Envoy names them: the endpoints of one service port (all of them, or
//! one DestinationRule subset's), and how the next one is chosen.

use std::{
    borrow::Cow,
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use ambit_api::istio::destination_rule::SimpleLb;

use super::{
    limits::{Admission, ConnectionLimits, Overflow},
    outlier::{Ejection, Health, OutlierPolicy, OutlierState},
};

/// How many times a pick avoiding the previous attempts' endpoints is tried (Istio's
/// `hostSelectionRetryMaxAttempts`).
const HOST_SELECTION_ATTEMPTS: usize = 5;

/// One endpoint of a cluster, with the requests in flight to it and its health.
#[derive(Debug)]
pub struct UpstreamEndpoint {
    pub address: SocketAddr,
    active: AtomicUsize,
    outlier: Mutex<OutlierState>,
}

impl UpstreamEndpoint {
    /// Counts a request to this endpoint until the guard is dropped (for
    /// `LEAST_REQUEST`).
    #[must_use]
    pub fn start_request(self: &Arc<Self>) -> ActiveRequest {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveRequest(Arc::clone(self))
    }

    /// Requests in flight to this endpoint.
    #[must_use]
    pub fn active_requests(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

/// A request in flight to an endpoint.
#[derive(Debug)]
pub struct ActiveRequest(Arc<UpstreamEndpoint>);

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The load-balancing algorithm (`loadBalancer.simple`).
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(AtomicUsize),
    Random,
    /// Envoy's: the less busy of two endpoints picked at random. Istio's default.
    LeastRequest,
}

impl Balancer {
    /// The balancer for `simple`; `None` (not set) and `UNSPECIFIED` are Istio's default,
    /// `LEAST_REQUEST`. `PASSTHROUGH` has no meaning without an original destination, so
    /// the caller refuses it.
    #[must_use]
    pub fn new(simple: Option<SimpleLb>) -> Self {
        match simple {
            Some(SimpleLb::RoundRobin) => Self::RoundRobin(AtomicUsize::new(0)),
            Some(SimpleLb::Random) => Self::Random,
            _ => Self::LeastRequest,
        }
    }

    fn pick<'e>(&self, endpoints: &'e [Arc<UpstreamEndpoint>]) -> &'e Arc<UpstreamEndpoint> {
        let len = endpoints.len();
        match self {
            Self::RoundRobin(next) => &endpoints[next.fetch_add(1, Ordering::Relaxed) % len],
            Self::Random => &endpoints[fastrand::usize(0..len)],
            Self::LeastRequest => {
                let first = &endpoints[fastrand::usize(0..len)];
                let second = &endpoints[fastrand::usize(0..len)];
                if second.active_requests() < first.active_requests() {
                    second
                } else {
                    first
                }
            }
        }
    }
}

/// What a DestinationRule sets for one cluster.
#[derive(Debug)]
pub struct ClusterPolicy {
    pub balancer: Balancer,
    pub limits: Option<ConnectionLimits>,
    pub outlier: Option<OutlierPolicy>,
}

/// The endpoints of one service port, or one subset of them.
#[derive(Debug)]
pub struct Cluster {
    /// Envoy's name, `outbound|<port>|<subset>|<host>`, for logs and telemetry.
    pub name: String,
    /// Whether endpoints speak HTTP/2 (prior knowledge) rather than HTTP/1.1.
    pub http2: bool,
    endpoints: Vec<Arc<UpstreamEndpoint>>,
    policy: ClusterPolicy,
    /// Endpoints ejected by outlier detection now.
    ejected: AtomicUsize,
}

impl Cluster {
    /// A cluster over `addresses` with `policy`.
    #[must_use]
    pub fn new(
        name: String,
        http2: bool,
        addresses: impl IntoIterator<Item = SocketAddr>,
        policy: ClusterPolicy,
    ) -> Self {
        let endpoints = addresses
            .into_iter()
            .map(|address| {
                Arc::new(UpstreamEndpoint {
                    address,
                    active: AtomicUsize::new(0),
                    outlier: Mutex::default(),
                })
            })
            .collect();
        Self {
            name,
            http2,
            endpoints,
            policy,
            ejected: AtomicUsize::new(0),
        }
    }

    /// Admits one more request under the cluster's `connectionPool` limits (waiting
    /// for an HTTP/1.1 connection if allowed), or refuses it (`UO`).
    pub async fn admit(&self) -> Result<Option<Admission>, Overflow> {
        match &self.policy.limits {
            None => Ok(None),
            Some(limits) => limits.admit().await.map(Some),
        }
    }

    /// The next endpoint among those not ejected, preferring one not in `tried`
    /// (Istio's previous-hosts retry predicate); `None` when none is available (`UH`).
    #[must_use]
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<Arc<UpstreamEndpoint>> {
        let available = self.available();
        if available.is_empty() {
            return None;
        }
        let mut choice = self.policy.balancer.pick(&available);
        for _ in 1..HOST_SELECTION_ATTEMPTS {
            if !tried.contains(&choice.address) {
                break;
            }
            choice = self.policy.balancer.pick(&available);
        }
        Some(Arc::clone(choice))
    }

    /// The endpoints not ejected, readmitting those whose ejection ended.
    fn available(&self) -> Cow<'_, [Arc<UpstreamEndpoint>]> {
        if self.ejected.load(Ordering::Acquire) == 0 {
            return Cow::Borrowed(&self.endpoints);
        }
        let now = Instant::now();
        let available = self.endpoints.iter().filter(|endpoint| {
            match endpoint.outlier_state().ejected_at(now) {
                Ejection::In => true,
                Ejection::Out => false,
                Ejection::Readmitted => {
                    self.ejected.fetch_sub(1, Ordering::AcqRel);
                    tracing::debug!(cluster = self.name, endpoint = %endpoint.address, "readmitted");
                    true
                }
            }
        });
        Cow::Owned(available.cloned().collect())
    }

    /// Counts how an attempt on `endpoint` went, ejecting it if it keeps failing.
    pub fn record(&self, endpoint: &UpstreamEndpoint, health: Health) {
        let Some(policy) = &self.policy.outlier else {
            return;
        };
        let mut state = endpoint.outlier_state();
        if policy.record(&mut state, health)
            && policy.may_eject(self.ejected.load(Ordering::Acquire), self.endpoints.len())
        {
            policy.eject(&mut state, Instant::now());
            self.ejected.fetch_add(1, Ordering::AcqRel);
            tracing::debug!(cluster = self.name, endpoint = %endpoint.address, "ejected");
        }
    }
}

impl UpstreamEndpoint {
    fn outlier_state(&self) -> std::sync::MutexGuard<'_, OutlierState> {
        self.outlier.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Every cluster, by service FQDN and subset (`""` for all endpoints), one per service
/// port.
#[derive(Debug, Default)]
pub struct ClusterIndex(HashMap<String, HashMap<String, PortClusters>>);

/// A subset's clusters, by service port.
pub type PortClusters = Vec<(u16, Arc<Cluster>)>;

impl ClusterIndex {
    /// Adds the cluster of `host`'s `subset` on service port `port`.
    pub fn insert(&mut self, host: &str, subset: &str, port: u16, cluster: Arc<Cluster>) {
        self.0
            .entry(host.to_owned())
            .or_default()
            .entry(subset.to_owned())
            .or_default()
            .push((port, cluster));
    }

    /// The clusters of `host`'s `subset`, by service port; empty when either does not
    /// exist.
    #[must_use]
    pub fn get(&self, host: &str, subset: &str) -> PortClusters {
        self.0
            .get(host)
            .and_then(|subsets| subsets.get(subset))
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::table::{Health, OutlierPolicy};

    fn cluster(balancer: Balancer, count: u8) -> Cluster {
        let addresses = (1..=count).map(|i| SocketAddr::from(([10, 0, 0, i], 80)));
        let policy = ClusterPolicy {
            balancer,
            limits: None,
            outlier: None,
        };
        Cluster::new("outbound|80||app".into(), false, addresses, policy)
    }

    #[test]
    fn round_robin_takes_turns() {
        let cluster = cluster(Balancer::new(Some(SimpleLb::RoundRobin)), 3);
        let picks: Vec<u8> = (0..6)
            .map(|_| match cluster.pick(&[]).unwrap().address {
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
                .entry(cluster.pick(&[]).unwrap().address)
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
        let first = cluster.pick(&[]).unwrap().address;
        // Five random picks all land on `first` once in 32 times.
        let again = (0..100)
            .filter(|_| cluster.pick(&[first]).unwrap().address == first)
            .count();
        assert!(
            again < 15,
            "{again} of 100 retries went back to the endpoint that failed"
        );
    }

    #[test]
    fn an_ejected_endpoint_is_not_picked_until_its_ejection_ends() {
        let outlier: ambit_api::istio::destination_rule::OutlierDetection =
            serde_yaml_ng::from_str("{consecutive5xxErrors: 1, baseEjectionTime: 1h}").unwrap();
        let policy = ClusterPolicy {
            balancer: Balancer::new(Some(SimpleLb::RoundRobin)),
            limits: None,
            outlier: OutlierPolicy::new(&outlier),
        };
        let addresses = (1..=2).map(|i| SocketAddr::from(([10, 0, 0, i], 80)));
        let cluster = Cluster::new("outbound|80||app".into(), false, addresses, policy);
        let failing = cluster.pick(&[]).unwrap();
        cluster.record(&failing, Health::ServerError { gateway: true });
        for _ in 0..10 {
            assert_ne!(cluster.pick(&[]).unwrap().address, failing.address);
        }
        let other = cluster.pick(&[]).unwrap();
        cluster.record(&other, Health::LocalFailure);
        assert!(
            cluster.pick(&[]).is_some(),
            "the default 10% lets only one of two endpoints out"
        );
    }

    #[test]
    fn an_empty_cluster_has_no_pick() {
        assert!(cluster(Balancer::Random, 0).pick(&[]).is_none());
    }
}
