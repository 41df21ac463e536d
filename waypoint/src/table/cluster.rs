//! Clusters, as Envoy names them: the endpoints of one service port (all of them, or
//! one DestinationRule subset's), and how the next one is chosen: among those not
//! ejected, narrowed to one priority level or locality (`localityLbSetting`), by the
//! `simple` algorithm or on the `consistentHash` ring.
//!
//! A config update rebuilds every cluster. One whose settings did not change carries on
//! from its predecessor ([`Cluster::continuing`]), as Envoy keeps a cluster an update
//! does not touch: its endpoints' requests in flight and outlier state, its circuit
//! breakers' counts, its sweep timer. Otherwise any push (a pod starting anywhere in the
//! namespace) would readmit every ejected endpoint and reset every limit.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use ambit_api::istio::destination_rule::{
    ConnectionPoolSettings, LoadBalancerSettings, OutlierDetection, SimpleLb,
};

use super::{
    hashing::{HashPolicy, RequestHash, RequestKeys, Ring},
    limits::{self, Admission, ConnectionLimits, ConnectionSlot, Overflow, RetrySlot},
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
    /// Whether outlier detection has it out: set and cleared with `outlier` held, read
    /// without it on every pick.
    ejected: AtomicBool,
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

    /// Whether outlier detection has it out (its ejection not yet seen to end).
    fn is_ejected(&self) -> bool {
        self.ejected.load(Ordering::Acquire)
    }

    fn outlier_state(&self) -> std::sync::MutexGuard<'_, OutlierState> {
        self.outlier.lock().unwrap_or_else(PoisonError::into_inner)
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

/// What a cluster is built from besides its endpoints: whether they speak HTTP/2, and
/// the DestinationRule settings in force for it (port-level ones first, a subset's
/// before the rule's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterSettings {
    pub http2: bool,
    pub load_balancer: Option<LoadBalancerSettings>,
    pub connection_pool: Option<ConnectionPoolSettings>,
    pub outlier_detection: Option<OutlierDetection>,
}

/// The endpoints of one service port, or one subset of them.
#[derive(Debug)]
pub struct Cluster {
    /// Envoy's name, `outbound|<port>|<subset>|<host>`, for logs and telemetry.
    pub name: String,
    settings: ClusterSettings,
    endpoints: Vec<Arc<UpstreamEndpoint>>,
    policy: ClusterPolicy,
    /// The endpoints' points, for a consistent hash.
    ring: Option<Ring>,
}

impl Cluster {
    /// A cluster over `addresses` with `policy`, compiled from `settings`.
    #[must_use]
    pub fn new(
        name: String,
        settings: ClusterSettings,
        addresses: impl IntoIterator<Item = SocketAddr>,
        policy: ClusterPolicy,
    ) -> Self {
        let endpoints: Vec<Arc<UpstreamEndpoint>> = addresses
            .into_iter()
            .map(|address| {
                Arc::new(UpstreamEndpoint {
                    address,
                    active: AtomicUsize::new(0),
                    ejected: AtomicBool::new(false),
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
            settings,
            endpoints,
            policy,
            ring,
        }
    }

    /// This cluster, built by a config update, carrying on from `previous` (the
    /// cluster of the same name before it) when their settings are the same: the
    /// endpoints it still has keep their requests in flight and outlier state, the
    /// `connectionPool` limits their counts, outlier detection its sweep timer and
    /// `ROUND_ROBIN` its place. Changed settings start afresh, as Envoy rebuilds a
    /// cluster whose config changed.
    #[must_use]
    pub fn continuing(mut self, previous: &Self) -> Self {
        if self.settings != previous.settings {
            return self;
        }
        let kept: HashMap<SocketAddr, &Arc<UpstreamEndpoint>> = previous
            .endpoints
            .iter()
            .map(|endpoint| (endpoint.address, endpoint))
            .collect();
        for endpoint in &mut self.endpoints {
            if let Some(kept) = kept.get(&endpoint.address) {
                *endpoint = Arc::clone(kept);
            }
        }
        if let Some(limits) = &previous.policy.limits {
            self.policy.limits = Some(limits.shared());
        }
        if let (Some(outlier), Some(before)) =
            (self.policy.outlier.take(), &previous.policy.outlier)
        {
            self.policy.outlier = Some(outlier.sweeping_as(before));
        }
        if let (Balancer::RoundRobin(next), Balancer::RoundRobin(before)) =
            (&self.policy.balancer, &previous.policy.balancer)
        {
            next.store(before.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self
    }

    /// Whether its endpoints speak HTTP/2 (prior knowledge) rather than HTTP/1.1.
    #[must_use]
    pub fn speaks_http2(&self) -> bool {
        self.settings.http2
    }

    /// Its endpoints, in the order they were given.
    #[must_use]
    pub fn endpoints(&self) -> &[Arc<UpstreamEndpoint>] {
        &self.endpoints
    }

    /// Its `connectionPool` limits by Envoy's circuit-breaker names (`None`:
    /// unlimited).
    #[must_use]
    pub fn thresholds(&self) -> [(&'static str, Option<usize>); 4] {
        limits::thresholds(self.policy.limits.as_ref())
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
        self.speaks_http2()
            || (self.policy.tcp.use_client_protocol && client == http::Version::HTTP_2)
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
        let total = self.endpoints.len();
        let Some(policy) = &self.policy.outlier else {
            return vec![true; total];
        };
        if !self.endpoints.iter().any(|endpoint| endpoint.is_ejected()) {
            return vec![true; total];
        }
        let available = self.ejections_at(policy, Instant::now());
        let healthy = available.iter().filter(|yes| **yes).count();
        if policy.panics(healthy, total) {
            return vec![true; total];
        }
        available
    }

    /// Whether each endpoint is ejected now, readmitting those whose ejection has
    /// ended (as Envoy's last sweep did); for `/clusters`.
    #[must_use]
    pub fn ejected_now(&self) -> Vec<bool> {
        match &self.policy.outlier {
            Some(policy) => self
                .ejections_at(policy, Instant::now())
                .into_iter()
                .map(|available| !available)
                .collect(),
            None => vec![false; self.endpoints.len()],
        }
    }

    /// Whether each endpoint is in at `now` under `policy`, readmitting those whose
    /// ejection has ended.
    fn ejections_at(&self, policy: &OutlierPolicy, now: Instant) -> Vec<bool> {
        self.endpoints
            .iter()
            .map(|endpoint| {
                if !endpoint.is_ejected() {
                    return true;
                }
                let mut state = endpoint.outlier_state();
                match policy.ejection_at(&mut state, now) {
                    Ejection::In => true,
                    Ejection::Out => false,
                    Ejection::Readmitted => {
                        endpoint.ejected.store(false, Ordering::Release);
                        tracing::debug!(cluster = self.name, endpoint = %endpoint.address, "readmitted");
                        true
                    }
                }
            })
            .collect()
    }

    /// Counts how an attempt on `endpoint` went, ejecting it if it keeps failing.
    pub fn record(&self, endpoint: &UpstreamEndpoint, health: Health) {
        let Some(policy) = &self.policy.outlier else {
            return;
        };
        let mut state = endpoint.outlier_state();
        if !policy.record(&mut state, health) {
            return;
        }
        let ejected = self.endpoints.iter().filter(|e| e.is_ejected()).count();
        if policy.may_eject(ejected, self.endpoints.len()) {
            policy.eject(&mut state, Instant::now());
            endpoint.ejected.store(true, Ordering::Release);
            tracing::debug!(cluster = self.name, endpoint = %endpoint.address, "ejected");
        }
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

    /// Every cluster, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.0
            .values()
            .flat_map(HashMap::values)
            .flatten()
            .map(|(_, cluster)| cluster)
    }

    /// The cluster of `host`'s `subset` on service port `port`, if there is one.
    #[must_use]
    pub fn find(&self, host: &str, subset: &str, port: u16) -> Option<&Arc<Cluster>> {
        self.0
            .get(host)?
            .get(subset)?
            .iter()
            .find_map(|(number, cluster)| (*number == port).then_some(cluster))
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
mod tests;
