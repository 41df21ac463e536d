//! Closing a relayed connection no byte has crossed for a while (`connectionPool.tcp.
//! idleTimeout`): the relay records each read or write on the client's side (every
//! byte either way crosses it) in an [`Activity`], and [`until_idle`] completes once it
//! has been silent that long.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

/// When a stream last carried a byte.
#[derive(Debug)]
pub struct Activity {
    since: Instant,
    /// Milliseconds from `since` to the last byte.
    last_ms: AtomicU64,
}

impl Activity {
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
        })
    }

    /// A byte crossed now.
    pub fn record(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.since + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Completes once `activity` has seen no byte for `idle`.
pub async fn until_idle(activity: &Activity, idle: Duration) {
    loop {
        let deadline = activity.last() + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_silent_stream_is_idle_after_the_timeout_and_activity_pushes_it_back() {
        let activity = Activity::new();
        let idle = Duration::from_millis(300);
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        activity.record();
        until_idle(&activity, idle).await;
        let waited = started.elapsed();
        assert!(
            (Duration::from_millis(490)..Duration::from_millis(1_500)).contains(&waited),
            "idle {waited:?} after the start, expected 300 ms after the byte at 200 ms"
        );
    }
}
