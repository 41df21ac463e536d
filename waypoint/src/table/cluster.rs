//! Clusters, as Envoy names them: the endpoints of one service port (all of them, or
//! one DestinationRule subset's), and how the next one is chosen: among those not
//! ejected, narrowed to one priority level or locality (`localityLbSetting`), by the
//! `simple` algorithm or on the `consistentHash` ring.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use ambit_api::istio::destination_rule::{ConnectionPoolSettings, LoadBalancerSettings, SimpleLb};

use super::{
    hashing::{HashPolicy, RequestHash, RequestKeys, Ring},
    limits::{Admission, ConnectionLimits, ConnectionSlot, Overflow, RetrySlot},
    locality::LocalityLb,
    outlier::{Ejection, Health, OutlierPolicy, OutlierState},
};
use crate::proxy::connector::CONNECT_TIMEOUT;

/// How many times a pick avoiding the previous attempts' endpoints is tried (Istio's
/// `hostSelectionRetryMaxAttempts`).
const HOST_SELECTION_ATTEMPTS: usize = 5;
/// How finely a request's hash places it among the locality shares.
const HASH_DRAW_STEPS: u64 = 10_000;

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

/// The load-balancing algorithm (`loadBalancer.simple` or `consistentHash`).
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(AtomicUsize),
    Random,
    /// Envoy's: the less busy of two endpoints picked at random. Istio's default.
    LeastRequest,
    /// Session affinity: the endpoint the request's key falls to on a hash ring.
    ConsistentHash(HashPolicy),
}

impl Balancer {
    /// The balancer `settings` describe: `consistentHash` when it names a key, else
    /// [`Balancer::new`] of `simple`. A `consistentHash` whose header name is invalid
    /// is refused when the table compiles; here it counts as unset.
    #[must_use]
    pub fn from_settings(settings: Option<&LoadBalancerSettings>) -> Self {
        let hashing = settings
            .and_then(|lb| lb.consistent_hash.as_ref())
            .and_then(|spec| HashPolicy::new(spec, "consistentHash").ok().flatten());
        match hashing {
            Some(policy) => Self::ConsistentHash(policy),
            None => Self::new(settings.and_then(|lb| lb.simple)),
        }
    }

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

    /// One of `endpoints` (not empty) by a simple algorithm; a consistent hash's
    /// endpoint is found on its ring instead ([`Cluster::pick`]).
    fn pick<'e>(&self, endpoints: &[&'e Arc<UpstreamEndpoint>]) -> &'e Arc<UpstreamEndpoint> {
        let len = endpoints.len();
        match self {
            Self::RoundRobin(next) => endpoints[next.fetch_add(1, Ordering::Relaxed) % len],
            Self::Random | Self::ConsistentHash(_) => endpoints[fastrand::usize(0..len)],
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
    /// The priority levels or weighted localities picks are narrowed to; `None`: all
    /// endpoints alike.
    pub locality: Option<LocalityLb>,
    /// Its connections' timeouts (`connectionPool.tcp`).
    pub tcp: TcpPolicy,
}

/// Istio's TCP idle timeout when `connectionPool.tcp.idleTimeout` is unset.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long an idle pooled HTTP connection is kept when `connectionPool.http.idleTimeout`
/// is unset: hyper's 90 s rather than Istio's hour, as a pool refills in one connect
/// while each idle connection holds its buffers.
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A cluster's connection timeouts, the defaults unless its `connectionPool` sets them
/// (`tcp`, and `http.idleTimeout` for pooled HTTP connections).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPolicy {
    /// How long opening a connection to an endpoint may take (`connectTimeout`).
    pub connect_timeout: Duration,
    /// How long a relayed TCP connection may carry no byte before it is closed
    /// (`idleTimeout`); `None`: never (`0s`).
    pub idle_timeout: Option<Duration>,
    /// How long a relayed TCP connection may last, busy or not
    /// (`maxConnectionDuration`); `None`: for ever (unset or `0s`, Istio's default).
    pub max_connection_duration: Option<Duration>,
    /// How long a pooled HTTP connection may stay without a request before it is
    /// closed (`http.idleTimeout`); `None`: until the endpoint closes it (`0s`).
    pub pool_idle_timeout: Option<Duration>,
    /// Keepalive probes on the sockets to endpoints (`tcpKeepalive`); `None`: off.
    pub keepalive: Option<Keepalive>,
    /// HTTP/2 clients' requests go upstream in HTTP/2 (`http.useClientProtocol`).
    pub use_client_protocol: bool,
    /// Requests a pooled connection carries before it is closed
    /// (`http.maxRequestsPerConnection`); `None`: no limit.
    pub max_requests_per_connection: Option<u32>,
}

/// `tcp.tcpKeepalive`: the socket sends keepalive probes; a field left unset keeps the
/// system's default (Linux: after 2 h idle, every 75 s, 9 probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Keepalive {
    /// Idle time before the first probe.
    pub time: Option<Duration>,
    /// Time between probes.
    pub interval: Option<Duration>,
    /// Unanswered probes before the connection is dropped.
    pub probes: Option<u32>,
}

/// How a cluster's HTTP connections are opened and kept: the waypoint keeps one pool
/// per endpoint, pooling and worker thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pooling {
    /// HTTP/2 with prior knowledge, else HTTP/1.1.
    pub http2: bool,
    pub connect_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub keepalive: Option<Keepalive>,
    pub max_requests_per_connection: Option<u32>,
}

impl Default for TcpPolicy {
    fn default() -> Self {
        Self {
            connect_timeout: CONNECT_TIMEOUT,
            idle_timeout: Some(DEFAULT_TCP_IDLE_TIMEOUT),
            max_connection_duration: None,
            pool_idle_timeout: Some(DEFAULT_POOL_IDLE_TIMEOUT),
            keepalive: None,
            use_client_protocol: false,
            max_requests_per_connection: None,
        }
    }
}

impl TcpPolicy {
    /// The timeouts `pool` sets, the defaults for the rest.
    #[must_use]
    pub fn new(pool: Option<&ConnectionPoolSettings>) -> Self {
        let http = pool.and_then(|pool| pool.http.as_ref());
        let defaults = Self {
            pool_idle_timeout: http
                .and_then(|http| http.idle_timeout)
                .map_or(Some(DEFAULT_POOL_IDLE_TIMEOUT), |idle| {
                    Some(idle.0).filter(|idle| !idle.is_zero())
                }),
            use_client_protocol: http.and_then(|http| http.use_client_protocol) == Some(true),
            max_requests_per_connection: http
                .and_then(|http| http.max_requests_per_connection)
                .and_then(|max| u32::try_from(max).ok())
                .filter(|max| *max > 0),
            ..Self::default()
        };
        let Some(tcp) = pool.and_then(|pool| pool.tcp.as_ref()) else {
            return defaults;
        };
        Self {
            connect_timeout: tcp
                .connect_timeout
                .map_or(defaults.connect_timeout, |timeout| timeout.0),
            idle_timeout: match tcp.idle_timeout {
                None => defaults.idle_timeout,
                Some(idle) => Some(idle.0).filter(|idle| !idle.is_zero()),
            },
            max_connection_duration: tcp
                .max_connection_duration
                .map(|duration| duration.0)
                .filter(|duration| !duration.is_zero()),
            keepalive: tcp.tcp_keepalive.as_ref().map(|keepalive| Keepalive {
                time: keepalive.time.map(|time| time.0),
                interval: keepalive.interval.map(|interval| interval.0),
                probes: keepalive.probes,
            }),
            ..defaults
        }
    }
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
    /// The endpoints' points, for a consistent hash.
    ring: Option<Ring>,
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
        let endpoints: Vec<Arc<UpstreamEndpoint>> = addresses
            .into_iter()
            .map(|address| {
                Arc::new(UpstreamEndpoint {
                    address,
                    active: AtomicUsize::new(0),
                    outlier: Mutex::default(),
                })
            })
            .collect();
        let ring = match &policy.balancer {
            Balancer::ConsistentHash(hashing) => {
                let names: Vec<String> = endpoints.iter().map(|e| e.address.to_string()).collect();
                Some(Ring::new(&names, hashing.ring_size()))
            }
            _ => None,
        };
        Self {
            name,
            http2,
            endpoints,
            policy,
            ring,
            ejected: AtomicUsize::new(0),
        }
    }

    /// Where `request` falls on the cluster's ring, for [`Cluster::pick`]; nothing
    /// unless the cluster balances by consistent hash.
    #[must_use]
    pub fn hash(&self, request: RequestKeys<'_>) -> RequestHash {
        match &self.policy.balancer {
            Balancer::ConsistentHash(policy) => policy.hash(request),
            _ => RequestHash::default(),
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

    /// Admits one more retry under the cluster's `http.maxRetries`, or refuses it
    /// (`UO`).
    pub fn admit_retry(&self) -> Result<Option<RetrySlot>, Overflow> {
        self.policy
            .limits
            .as_ref()
            .map_or(Ok(None), ConnectionLimits::admit_retry)
    }

    /// Its connections' timeouts.
    #[must_use]
    pub fn tcp(&self) -> TcpPolicy {
        self.policy.tcp
    }

    /// Whether a request from a client speaking `client` goes to it in HTTP/2: its
    /// endpoints speak it, or it follows the client's protocol (`useClientProtocol`).
    #[must_use]
    pub fn http2_for(&self, client: http::Version) -> bool {
        self.http2 || (self.policy.tcp.use_client_protocol && client == http::Version::HTTP_2)
    }

    /// How its pooled HTTP connections are opened and kept, for requests sent in
    /// HTTP/2 or not.
    #[must_use]
    pub fn pooling(&self, http2: bool) -> Pooling {
        Pooling {
            http2,
            connect_timeout: self.policy.tcp.connect_timeout,
            idle_timeout: self.policy.tcp.pool_idle_timeout,
            keepalive: self.policy.tcp.keepalive,
            max_requests_per_connection: self.policy.tcp.max_requests_per_connection,
        }
    }

    /// Admits one more relayed TCP connection under the cluster's
    /// `tcp.maxConnections`, or refuses it (`UO`).
    pub fn admit_stream(&self) -> Result<Option<ConnectionSlot>, Overflow> {
        match &self.policy.limits {
            None => Ok(None),
            Some(limits) => limits.admit_stream(),
        }
    }

    /// The next endpoint among those not ejected, in the priority level or locality the
    /// request goes to, preferring one not in `tried` (Istio's previous-hosts retry
    /// predicate); `None` when none is available (`UH`). `hash` places the request on a
    /// consistent hash's ring and among the locality shares (`None`: at random); the
    /// simple algorithms ignore it.
    #[must_use]
    pub fn pick(&self, hash: Option<u64>, tried: &[SocketAddr]) -> Option<Arc<UpstreamEndpoint>> {
        let mut available = self.available();
        if let Some(locality) = &self.policy.locality {
            // Both below HASH_DRAW_STEPS: exact in an f64.
            let draw = hash.map_or_else(fastrand::f64, |hash| {
                (hash % HASH_DRAW_STEPS) as f64 / HASH_DRAW_STEPS as f64
            });
            locality.narrow(&mut available, draw);
        }
        if !available.iter().any(|yes| *yes) {
            return None;
        }
        if let Some(ring) = &self.ring {
            let hash = hash.unwrap_or_else(|| fastrand::u64(..));
            return self.on_ring(ring, hash, &available, tried).map(Arc::clone);
        }
        let candidates: Vec<&Arc<UpstreamEndpoint>> = self
            .endpoints
            .iter()
            .zip(&available)
            .filter_map(|(endpoint, yes)| yes.then_some(endpoint))
            .collect();
        let mut choice = self.policy.balancer.pick(&candidates);
        for _ in 1..HOST_SELECTION_ATTEMPTS {
            if !tried.contains(&choice.address) {
                break;
            }
            choice = self.policy.balancer.pick(&candidates);
        }
        Some(Arc::clone(choice))
    }

    /// The first available endpoint going round `ring` from `hash` that is not in
    /// `tried`, else the first available one (Envoy's ring walk on a retry).
    fn on_ring(
        &self,
        ring: &Ring,
        hash: u64,
        available: &[bool],
        tried: &[SocketAddr],
    ) -> Option<&Arc<UpstreamEndpoint>> {
        let mut met = vec![false; self.endpoints.len()];
        let mut left = available.iter().filter(|yes| **yes).count();
        let mut first = None;
        for index in ring.walk(hash) {
            if !available[index] || met[index] {
                continue;
            }
            let endpoint = &self.endpoints[index];
            if !tried.contains(&endpoint.address) {
                return Some(endpoint);
            }
            first.get_or_insert(endpoint);
            met[index] = true;
            left -= 1;
            if left == 0 {
                break;
            }
        }
        first
    }

    /// Whether each endpoint may take a request now (not ejected, unless too few are in
    /// for `minHealthPercent`), readmitting those whose ejection ended.
    fn available(&self) -> Vec<bool> {
        if self.ejected.load(Ordering::Acquire) == 0 {
            return vec![true; self.endpoints.len()];
        }
        let now = Instant::now();
        let available: Vec<bool> = self
            .endpoints
            .iter()
            .map(|endpoint| match endpoint.outlier_state().ejected_at(now) {
                Ejection::In => true,
                Ejection::Out => false,
                Ejection::Readmitted => {
                    self.ejected.fetch_sub(1, Ordering::AcqRel);
                    tracing::debug!(cluster = self.name, endpoint = %endpoint.address, "readmitted");
                    true
                }
            })
            .collect();
        let healthy = available.iter().filter(|yes| **yes).count();
        let total = available.len();
        if self
            .policy
            .outlier
            .as_ref()
            .is_some_and(|outlier| outlier.panics(healthy, total))
        {
            return vec![true; total];
        }
        available
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
            locality: None,
            tcp: TcpPolicy::default(),
        };
        Cluster::new("outbound|80||app".into(), false, addresses, policy)
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
            TcpPolicy::new(Some(&pool("{tcp: {maxConnectionDuration: 0s}}")))
                .max_connection_duration,
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
        let outlier: ambit_api::istio::destination_rule::OutlierDetection =
            serde_yaml_ng::from_str(outlier).unwrap();
        let policy = ClusterPolicy {
            balancer: Balancer::new(Some(SimpleLb::RoundRobin)),
            limits: None,
            outlier: OutlierPolicy::new(&outlier),
            locality: None,
            tcp: TcpPolicy::default(),
        };
        let addresses = (1..=count).map(|i| SocketAddr::from(([10, 0, 0, i], 80)));
        Cluster::new("outbound|80||app".into(), false, addresses, policy)
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
        let outlier = outlier.map(|yaml| serde_yaml_ng::from_str(yaml).unwrap());
        let policy = ClusterPolicy {
            balancer: Balancer::from_settings(Some(&lb)),
            limits: None,
            outlier: outlier.as_ref().and_then(OutlierPolicy::new),
            locality: None,
            tcp: TcpPolicy::default(),
        };
        let addresses = (1..=count).map(|i| SocketAddr::from(([10, 0, 0, i], 80)));
        Cluster::new("outbound|80||app".into(), false, addresses, policy)
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
            Some("{consecutive5xxErrors: 1, baseEjectionTime: 20ms, maxEjectionPercent: 100}"),
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
}
