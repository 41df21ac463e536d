//! When a certificate is renewed and how long to wait after a failed attempt.

use std::{
    collections::hash_map::RandomState,
    hash::BuildHasher as _,
    time::{Duration, SystemTime},
};

/// The first wait after a failed fetch.
pub const FIRST_RETRY_DELAY_MS: u64 = 200;
/// The longest wait between fetch attempts.
pub const MAX_RETRY_DELAY_MS: u64 = 30_000;
/// Up to this share of each wait is taken off at random, so nodes do not retry in step.
pub const RETRY_JITTER_PERCENT: u64 = 20;

/// When to renew a certificate valid until `not_after`: half way through its lifetime,
/// counted from when it was obtained (`fetched_at`) or its `not_before`, whichever is
/// later. CAs back-date `not_before` to absorb clock skew (Ambit's by 60 s); counting
/// from there would renew a short-lived certificate as soon as it arrived.
#[must_use]
pub fn renew_at(
    not_before: SystemTime,
    not_after: SystemTime,
    fetched_at: SystemTime,
) -> SystemTime {
    let start = not_before.max(fetched_at);
    let lifetime = not_after.duration_since(start).unwrap_or_default();
    start + lifetime / 2
}

/// Exponential backoff: 200 ms, 400 ms, … capped at 30 s, each less some jitter.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The wait before the next attempt, without jitter, after `failures` failures (≥ 1).
    #[must_use]
    pub fn base_delay(failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(16);
        let millis = FIRST_RETRY_DELAY_MS.saturating_mul(1 << exponent);
        Duration::from_millis(millis.min(MAX_RETRY_DELAY_MS))
    }

    /// Records a failure and returns how long to wait before trying again.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let base = Self::base_delay(self.failures);
        let jitter_range = base / 100 * u32::try_from(RETRY_JITTER_PERCENT).unwrap_or(0);
        let random = RandomState::new().hash_one(self.failures);
        let jitter_nanos = u64::try_from(jitter_range.as_nanos())
            .ok()
            .filter(|range| *range > 0)
            .map_or(0, |range| random % range);
        base - Duration::from_nanos(jitter_nanos)
    }

    /// A fetch succeeded: the next failure starts from the first delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_at_half_life() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        assert_eq!(renew_at(t0, t0 + 24 * hour, t0), t0 + 12 * hour);
        // A back-dated not_before counts from when the certificate arrived.
        let skew = Duration::from_secs(60);
        let four = Duration::from_secs(4);
        assert_eq!(renew_at(t0 - skew, t0 + four, t0), t0 + four / 2);
        // Already expired: renew now.
        assert_eq!(renew_at(t0 - hour, t0 - skew, t0), t0);
    }

    #[test]
    fn backoff_doubles_from_200ms_and_caps_at_30s() {
        let sequence: Vec<u64> = (1..=10)
            .map(|n| u64::try_from(Backoff::base_delay(n).as_millis()).expect("small delays"))
            .collect();
        assert_eq!(
            sequence,
            [
                200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 30_000, 30_000
            ]
        );
        assert_eq!(Backoff::base_delay(u32::MAX), Duration::from_secs(30));

        let mut backoff = Backoff::default();
        for n in 1..=12 {
            let delay = backoff.next_delay();
            let base = Backoff::base_delay(n);
            assert!(
                delay <= base && delay >= base * 4 / 5,
                "attempt {n}: {delay:?} is outside 80–100 % of {base:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(200));
    }
}
