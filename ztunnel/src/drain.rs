//! Graceful shutdown: connections in flight are counted, so that on SIGTERM ztunnel
//! can stop accepting and give them time to finish.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use tokio::sync::Notify;

/// Counts the connections being relayed.
#[derive(Debug, Default)]
pub struct Drain {
    active: AtomicUsize,
    idle: Notify,
}

/// Held for the life of one relayed connection.
#[derive(Debug)]
pub struct Tracked(Arc<Drain>);

impl Drain {
    /// Counts a connection until the returned guard is dropped.
    #[must_use]
    pub fn track(self: &Arc<Self>) -> Tracked {
        self.active.fetch_add(1, Ordering::AcqRel);
        Tracked(Arc::clone(self))
    }

    /// The number of connections in flight.
    #[must_use]
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Returns once no connection is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn idle_waits_for_the_last_connection() {
        let drain = Arc::new(Drain::default());
        let first = drain.track();
        let second = drain.track();
        assert_eq!(drain.active(), 2);
        let waiter = tokio::spawn({
            let drain = Arc::clone(&drain);
            async move { drain.idle().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "one connection is still in flight");
        drop(second);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("idle() returns once the last connection ends")
            .unwrap();
    }
}
