//! `outlierDetection`: endpoints that keep failing are ejected from their cluster for a
//! while, then readmitted.
//!
//! As Envoy does it for Istio: `consecutive5xxErrors` (default 5) counts any 5xx,
//! `consecutiveGatewayErrors` (and the deprecated `consecutiveErrors`) counts 502, 503
//! and 504; connection failures, resets and per-try timeouts count as both — unless
//! `splitExternalLocalOriginErrors`, when they count only towards
//! `consecutiveLocalOriginFailures` (default 5), and any response resets that count. A
//! count trips as soon as it is reached. An ejection lasts `baseEjectionTime` (default 30s)
//! times the number of times the endpoint was ejected, capped at 300s, and no more than
//! `maxEjectionPercent` (default 10%) of the endpoints are out at once, but at least one
//! may be. An ejected endpoint is readmitted the first time the cluster picks after its
//! ejection ended (Envoy checks every `interval`), with its counts cleared.
//! `minHealthPercent` is Envoy's panic threshold, as Istio maps it: while fewer than that
//! share of the cluster's endpoints are in, ejections are ignored and every endpoint takes
//! requests (0, the default, never panics).
//!
//! Not done: `interval` (Envoy sweeps for readmissions every `interval`; here an
//! ejection that ended is seen at the next pick).

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
}

/// One endpoint's counts and ejection.
#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local_origin: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

impl OutlierPolicy {
    /// The policy `spec` describes; `None` when it disables both counts.
    #[must_use]
    pub fn new(spec: &OutlierDetection) -> Option<Self> {
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

    /// Ejects the endpoint from `now`.
    pub fn eject(&self, state: &mut OutlierState, now: Instant) {
        state.ejections += 1;
        let length = self
            .base_ejection
            .saturating_mul(state.ejections)
            .min(MAX_EJECTION);
        state.ejected_until = Some(now + length);
        state.consecutive_5xx = 0;
        state.consecutive_gateway = 0;
    }
}

impl OutlierState {
    /// Whether the endpoint takes requests at `now`; an ejection that has ended is
    /// lifted, and reported once as [`Ejection::Readmitted`] so the caller can count it.
    pub fn ejected_at(&mut self, now: Instant) -> Ejection {
        match self.ejected_until {
            None => Ejection::In,
            Some(until) if now < until => Ejection::Out,
            Some(_) => {
                self.ejected_until = None;
                Ejection::Readmitted
            }
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
        OutlierPolicy::new(&serde_yaml_ng::from_str(yaml).unwrap()).expect("a policy")
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
    fn ejections_grow_and_end() {
        let policy = policy("{consecutive5xxErrors: 1, baseEjectionTime: 10s}");
        let mut state = OutlierState::default();
        let start = Instant::now();
        policy.eject(&mut state, start);
        assert_eq!(
            state.ejected_at(start + Duration::from_secs(9)),
            Ejection::Out
        );
        assert_eq!(
            state.ejected_at(start + Duration::from_secs(10)),
            Ejection::Readmitted
        );
        assert_eq!(
            state.ejected_at(start + Duration::from_secs(10)),
            Ejection::In
        );
        policy.eject(&mut state, start);
        assert_eq!(
            state.ejected_at(start + Duration::from_secs(19)),
            Ejection::Out,
            "the second ejection is twice as long"
        );
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
        OutlierPolicy::new(&OutlierDetection::default()).expect("5xx counting is on by default")
    }
}
