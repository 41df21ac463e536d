//! `outlierDetection`: endpoints that keep failing are ejected from their cluster for a
//! while, then readmitted.
//!
//! As Envoy does it for Istio: `consecutive5xxErrors` (default 5) counts any 5xx,
//! `consecutiveGatewayErrors` (and the deprecated `consecutiveErrors`) counts 502, 503
//! and 504; connection failures, resets and per-try timeouts count as both — unless
//! `splitExternalLocalOriginErrors`, when they count only towards
//! `consecutiveLocalOriginFailures` (default 5), and any response resets that count. A
//! count trips as soon as it is reached. An ejection lasts `baseEjectionTime` (default 30s)
//! times a multiplier, capped at 300s, and no more than `maxEjectionPercent` (default
//! 10%) of the endpoints are out at once, but at least one may be.
//!
//! Envoy reviews ejections on a timer, every `interval` (default 10s) from the cluster's
//! creation: a sweep readmits the endpoints whose ejection time is over, with their
//! counts cleared, and lowers by one the multiplier of each endpoint it finds in. Each
//! ejection raises the multiplier by one, until the ejection reaches the cap. So an
//! endpoint that keeps failing stays out longer each time, and one that has recovered
//! is forgiven one step per sweep. Here the sweeps are not a task: they fall at known
//! instants ([`Sweeps`]), and an endpoint's state is brought up to date when it is read.
//! `minHealthPercent` is Envoy's panic threshold, as Istio maps it: while fewer than that
//! share of the cluster's endpoints are in, ejections are ignored and every endpoint takes
//! requests (0, the default, never panics).

use std::time::{Duration, Instant};

use ambit_api::istio::destination_rule::OutlierDetection;

/// Envoy's default 5xx threshold.
pub const DEFAULT_CONSECUTIVE_5XX: u32 = 5;
/// Envoy's default first ejection.
pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(30);
/// Envoy's default `max_ejection_time`.
pub const MAX_EJECTION: Duration = Duration::from_secs(300);
/// Envoy's default local-origin threshold, when those errors are split off.
pub const DEFAULT_CONSECUTIVE_LOCAL_ORIGIN: u32 = 5;
/// Envoy's default share of endpoints that may be ejected.
pub const DEFAULT_MAX_EJECTION_PERCENT: u32 = 10;
/// Envoy's default time between sweeps.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// How one attempt went, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// A response below 500.
    Succeeded,
    /// A 5xx response; `gateway` for 502, 503 and 504.
    ServerError { gateway: bool },
    /// No response: connection failure, reset or per-try timeout.
    LocalFailure,
}

/// A cluster's compiled `outlierDetection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierPolicy {
    consecutive_5xx: Option<u32>,
    consecutive_gateway: Option<u32>,
    /// `consecutiveLocalOriginFailures`, when `splitExternalLocalOriginErrors`.
    consecutive_local_origin: Option<u32>,
    base_ejection: Duration,
    max_ejection_percent: u32,
    min_health_percent: u32,
    sweeps: Sweeps,
}

/// When a cluster's ejections are reviewed: every `interval` after `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sweeps {
    start: Instant,
    interval: Duration,
}

/// One endpoint's counts and ejection.
#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local_origin: u32,
    /// How many base ejection times the next ejection lasts, less one.
    multiplier: u32,
    /// When the current ejection's time is over (it ends at the sweep after).
    ejected_until: Option<Instant>,
    /// The sweep that readmitted the endpoint last: each sweep after it finds the
    /// endpoint in and lowers the multiplier.
    readmitted: Option<Instant>,
}

impl Sweeps {
    /// The first sweep at or after `at`.
    fn first_from(self, at: Instant) -> Instant {
        let index = self.index_of(at);
        let on_a_sweep =
            at.saturating_duration_since(self.start).as_nanos() == index * self.interval.as_nanos();
        let next = if on_a_sweep && index > 0 {
            index
        } else {
            index + 1
        };
        self.start + nanos(next * self.interval.as_nanos())
    }

    /// How many sweeps fall after `after`, up to `until` included.
    fn after(self, after: Instant, until: Instant) -> u128 {
        self.index_of(until).saturating_sub(self.index_of(after))
    }

    /// How many sweeps have fallen by `at`.
    fn index_of(self, at: Instant) -> u128 {
        at.saturating_duration_since(self.start).as_nanos() / self.interval.as_nanos()
    }
}

/// `count` nanoseconds, saturating far beyond any uptime.
fn nanos(count: u128) -> Duration {
    Duration::from_nanos(u64::try_from(count).unwrap_or(u64::MAX))
}

impl OutlierPolicy {
    /// The policy `spec` describes, sweeping from `start` (the cluster's creation);
    /// `None` when it disables every count.
    #[must_use]
    pub fn new(spec: &OutlierDetection, start: Instant) -> Option<Self> {
        let consecutive_5xx = spec
            .consecutive_5xx_errors
            .unwrap_or(DEFAULT_CONSECUTIVE_5XX);
        let consecutive_gateway = spec
            .consecutive_gateway_errors
            .or_else(|| spec.consecutive_errors.and_then(|n| u32::try_from(n).ok()));
        let policy = Self {
            consecutive_5xx: Some(consecutive_5xx).filter(|n| *n > 0),
            consecutive_gateway: consecutive_gateway.filter(|n| *n > 0),
            consecutive_local_origin: spec
                .split_external_local_origin_errors
                .unwrap_or(false)
                .then(|| {
                    spec.consecutive_local_origin_failures
                        .unwrap_or(DEFAULT_CONSECUTIVE_LOCAL_ORIGIN)
                })
                .filter(|n| *n > 0),
            base_ejection: spec
                .base_ejection_time
                .map(|d| d.get())
                .filter(|d| !d.is_zero())
                .unwrap_or(DEFAULT_BASE_EJECTION),
            max_ejection_percent: spec
                .max_ejection_percent
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(DEFAULT_MAX_EJECTION_PERCENT)
                .min(100),
            min_health_percent: spec
                .min_health_percent
                .and_then(|p| u32::try_from(p).ok())
                .unwrap_or(0)
                .min(100),
            sweeps: Sweeps {
                start,
                interval: spec
                    .interval
                    .map(|d| d.get())
                    .filter(|d| !d.is_zero())
                    .unwrap_or(DEFAULT_INTERVAL),
            },
        };
        (policy.consecutive_5xx.is_some()
            || policy.consecutive_gateway.is_some()
            || policy.consecutive_local_origin.is_some())
        .then_some(policy)
    }

    /// Whether the cluster panics with `healthy` of `total` endpoints in: too few for
    /// `minHealthPercent`, so every endpoint takes requests.
    #[must_use]
    pub fn panics(&self, healthy: usize, total: usize) -> bool {
        healthy * 100 < total * self.min_health_percent as usize
    }

    /// Whether one more of `total` endpoints may be ejected while `ejected` are.
    #[must_use]
    pub fn may_eject(&self, ejected: usize, total: usize) -> bool {
        ejected == 0 || (ejected + 1) * 100 <= total * self.max_ejection_percent as usize
    }

    /// Counts `health` into `state`; returns whether the endpoint is to be ejected now
    /// (the caller checks [`may_eject`](Self::may_eject) and calls
    /// [`eject`](Self::eject)).
    #[must_use]
    pub fn record(&self, state: &mut OutlierState, health: Health) -> bool {
        if state.ejected_until.is_some() {
            return false;
        }
        let split = self.consecutive_local_origin.is_some();
        match health {
            Health::Succeeded => {
                state.consecutive_5xx = 0;
                state.consecutive_gateway = 0;
                state.consecutive_local_origin = 0;
            }
            Health::ServerError { gateway } => {
                state.consecutive_local_origin = 0;
                state.consecutive_5xx += 1;
                state.consecutive_gateway = if gateway {
                    state.consecutive_gateway + 1
                } else {
                    0
                };
            }
            Health::LocalFailure if split => state.consecutive_local_origin += 1,
            Health::LocalFailure => {
                state.consecutive_5xx += 1;
                state.consecutive_gateway += 1;
            }
        }
        self.consecutive_5xx
            .is_some_and(|n| state.consecutive_5xx >= n)
            || self
                .consecutive_gateway
                .is_some_and(|n| state.consecutive_gateway >= n)
            || self
                .consecutive_local_origin
                .is_some_and(|n| state.consecutive_local_origin >= n)
    }

    /// Ejects the endpoint from `now`, for longer than last time unless the sweeps
    /// since its readmission have brought the multiplier down.
    pub fn eject(&self, state: &mut OutlierState, now: Instant) {
        let forgiven = state
            .readmitted
            .map_or(0, |readmitted| self.sweeps.after(readmitted, now));
        let multiplier = u128::from(state.multiplier).saturating_sub(forgiven);
        let multiplier = u32::try_from(multiplier).unwrap_or(u32::MAX);
        // Envoy's rule: the multiplier grows until it is a step past the cap, so that
        // the first sweep's forgiveness does not already shorten the next ejection.
        let past_the_cap = MAX_EJECTION.saturating_add(self.base_ejection);
        state.multiplier = if self.base_ejection.saturating_mul(multiplier) < past_the_cap {
            multiplier + 1
        } else {
            multiplier
        };
        let length = self
            .base_ejection
            .saturating_mul(state.multiplier)
            .min(MAX_EJECTION);
        state.ejected_until = Some(now + length);
        state.readmitted = None;
        state.consecutive_5xx = 0;
        state.consecutive_gateway = 0;
    }

    /// Whether the endpoint takes requests at `now`: an ejection ends at the first
    /// sweep after its time is over, and is reported once as [`Ejection::Readmitted`]
    /// so the caller can count it.
    pub fn ejection_at(&self, state: &mut OutlierState, now: Instant) -> Ejection {
        let Some(until) = state.ejected_until else {
            return Ejection::In;
        };
        let readmission = self.sweeps.first_from(until);
        if now < readmission {
            return Ejection::Out;
        }
        state.ejected_until = None;
        state.readmitted = Some(readmission);
        Ejection::Readmitted
    }

    /// The same policy, sweeping from `previous`'s start: a cluster rebuilt with
    /// unchanged settings keeps its timer.
    #[must_use]
    pub fn sweeping_as(self, previous: &Self) -> Self {
        Self {
            sweeps: previous.sweeps,
            ..self
        }
    }
}

/// Whether an endpoint takes requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ejection {
    In,
    Out,
    /// Its ejection just ended.
    Readmitted,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> OutlierPolicy {
        policy_from(yaml, Instant::now())
    }

    fn policy_from(yaml: &str, start: Instant) -> OutlierPolicy {
        OutlierPolicy::new(&serde_yaml_ng::from_str(yaml).unwrap(), start).expect("a policy")
    }

    fn secs(count: u64) -> Duration {
        Duration::from_secs(count)
    }

    #[test]
    fn consecutive_5xx_trip_and_a_success_resets_the_count() {
        let policy = policy("{consecutive5xxErrors: 3}");
        let mut state = OutlierState::default();
        let error = Health::ServerError { gateway: false };
        assert!(!policy.record(&mut state, error));
        assert!(!policy.record(&mut state, error));
        assert!(!policy.record(&mut state, Health::Succeeded));
        assert!(!policy.record(&mut state, error));
        assert!(!policy.record(&mut state, Health::LocalFailure));
        assert!(policy.record(&mut state, error), "the third in a row trips");
    }

    #[test]
    fn gateway_errors_count_only_502_to_504_and_local_failures() {
        let policy = policy("{consecutive5xxErrors: 0, consecutiveGatewayErrors: 2}");
        let mut state = OutlierState::default();
        assert!(!policy.record(&mut state, Health::ServerError { gateway: true }));
        assert!(
            !policy.record(&mut state, Health::ServerError { gateway: false }),
            "a 500 breaks the run"
        );
        assert!(!policy.record(&mut state, Health::LocalFailure));
        assert!(policy.record(&mut state, Health::ServerError { gateway: true }));
    }

    #[test]
    fn split_local_origin_failures_count_apart_and_a_response_resets_them() {
        let policy = policy(
            "{consecutive5xxErrors: 2, splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3}",
        );
        let mut state = OutlierState::default();
        let error = Health::ServerError { gateway: true };
        assert!(!policy.record(&mut state, Health::LocalFailure));
        assert!(!policy.record(&mut state, Health::LocalFailure));
        assert!(
            !policy.record(&mut state, error),
            "a 5xx is a response: it resets the local count and starts the 5xx one"
        );
        assert!(!policy.record(&mut state, Health::LocalFailure));
        assert!(!policy.record(&mut state, Health::LocalFailure));
        assert!(
            policy.record(&mut state, Health::LocalFailure),
            "the third local failure in a row trips"
        );
        let mut state = OutlierState::default();
        assert!(!policy.record(&mut state, error));
        assert!(!policy.record(&mut state, Health::LocalFailure));
        assert!(
            policy.record(&mut state, error),
            "local failures do not break a run of 5xx"
        );
        let unsplit = policy_default();
        let mut state = OutlierState::default();
        for _ in 0..4 {
            assert!(!unsplit.record(&mut state, Health::LocalFailure));
        }
        assert!(
            unsplit.record(&mut state, Health::LocalFailure),
            "without the split they count as 5xx"
        );
    }

    #[test]
    fn an_ejection_ends_at_the_first_sweep_after_its_time() {
        let start = Instant::now();
        let policy = policy_from(
            "{consecutive5xxErrors: 1, baseEjectionTime: 10s, interval: 4s}",
            start,
        );
        let mut state = OutlierState::default();
        policy.eject(&mut state, start + secs(1));
        assert_eq!(
            policy.ejection_at(&mut state, start + secs(11)),
            Ejection::Out
        );
        assert_eq!(
            policy.ejection_at(&mut state, start + secs(12) - Duration::from_millis(1)),
            Ejection::Out,
            "its 10s are over at 11s, but the next sweep is at 12s"
        );
        assert_eq!(
            policy.ejection_at(&mut state, start + secs(12)),
            Ejection::Readmitted
        );
        assert_eq!(
            policy.ejection_at(&mut state, start + secs(12)),
            Ejection::In
        );

        policy.eject(&mut state, start + secs(12));
        assert_eq!(
            policy.ejection_at(&mut state, start + secs(31)),
            Ejection::Out,
            "ejected again before any sweep found it in: twice as long"
        );
        assert_eq!(
            policy.ejection_at(&mut state, start + secs(32)),
            Ejection::Readmitted
        );
    }

    #[test]
    fn each_sweep_that_finds_the_endpoint_in_forgives_one_ejection() {
        let start = Instant::now();
        let policy = policy_from(
            "{consecutive5xxErrors: 1, baseEjectionTime: 10s, interval: 10s}",
            start,
        );
        let mut state = OutlierState::default();
        for (ejected, over) in [(0, 10), (10, 30), (30, 60)] {
            policy.eject(&mut state, start + secs(ejected));
            assert_eq!(
                policy.ejection_at(&mut state, start + secs(over)),
                Ejection::Readmitted,
                "the ejections grow: 10s, 20s, 30s"
            );
        }
        // Readmitted at the 60s sweep with a multiplier of 3; the sweeps at 70s and
        // 80s find it in and bring it to 1, so the next ejection lasts 20s.
        policy.eject(&mut state, start + secs(85));
        assert_eq!(
            policy.ejection_at(&mut state, start + secs(100)),
            Ejection::Out
        );
        assert_eq!(
            policy.ejection_at(&mut state, start + secs(110)),
            Ejection::Readmitted,
            "20s from 85s is 105s; the next sweep is at 110s"
        );
    }

    #[test]
    fn ejections_stop_growing_at_five_minutes() {
        let start = Instant::now();
        let policy = policy_from("{baseEjectionTime: 100s, interval: 1s}", start);
        let mut state = OutlierState::default();
        let mut now = start;
        for length in [100, 200, 300, 300, 300] {
            policy.eject(&mut state, now);
            now += secs(length);
            assert_eq!(
                policy.ejection_at(&mut state, now - secs(1)),
                Ejection::Out,
                "ejected for {length}s"
            );
            assert_eq!(policy.ejection_at(&mut state, now), Ejection::Readmitted);
        }
        assert_eq!(
            state.multiplier, 4,
            "one step past the cap, as Envoy keeps it"
        );
        policy.eject(&mut state, now + secs(2));
        assert_eq!(
            state.multiplier, 3,
            "two sweeps found it in (4 → 2), and the ejection adds one"
        );
    }

    #[test]
    fn sweeps_fall_every_interval_after_the_start() {
        let start = Instant::now();
        let sweeps = Sweeps {
            start,
            interval: secs(10),
        };
        assert_eq!(sweeps.first_from(start), start + secs(10));
        assert_eq!(sweeps.first_from(start + secs(10)), start + secs(10));
        assert_eq!(sweeps.first_from(start + secs(11)), start + secs(20));
        assert_eq!(sweeps.after(start + secs(10), start + secs(10)), 0);
        assert_eq!(sweeps.after(start + secs(10), start + secs(39)), 2);
    }

    #[test]
    fn below_min_health_percent_the_cluster_panics() {
        let half = policy("{minHealthPercent: 50}");
        assert!(!half.panics(2, 4), "two of four are half");
        assert!(half.panics(1, 4));
        assert!(!policy_default().panics(0, 4), "0% never panics");
    }

    #[test]
    fn at_least_one_endpoint_may_be_ejected_and_then_only_the_allowed_share() {
        let policy = policy("{maxEjectionPercent: 50}");
        assert!(policy.may_eject(0, 10));
        assert!(policy.may_eject(4, 10));
        assert!(!policy.may_eject(5, 10));
        let default = policy_default();
        assert!(
            default.may_eject(0, 2),
            "Envoy ejects at least one endpoint"
        );
        assert!(!default.may_eject(1, 2));
    }

    fn policy_default() -> OutlierPolicy {
        OutlierPolicy::new(&OutlierDetection::default(), Instant::now())
            .expect("5xx counting is on by default")
    }
}
