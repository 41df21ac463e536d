//! `connectionPool` limits, Envoy's circuit breakers: past them a request is refused at
//! once with 503 and the `UO` flag instead of piling onto a struggling service.
//!
//! - `http.http2MaxRequests` (Envoy's `max_requests`, any protocol): requests in flight
//!   to the cluster; one more is refused.
//! - `tcp.maxConnections`, for HTTP/1.1 clusters: each request in flight holds a
//!   connection, so at most this many are sent at once; the next ones wait, up to
//!   `http.http1MaxPendingRequests` of them, and the rest are refused.
//!
//! - `tcp.maxConnections`, for relayed TCP connections too: each holds a connection
//!   while it lives; one more is refused at once (Envoy's TCP proxy queues nothing).
//! - `http.maxRetries` (Envoy's `max_retries`): retries in flight to the cluster, each
//!   counted from when it is decided until the request's next retry decision or its
//!   end. A retry past it is not made: the last attempt's answer goes back, flagged `UO`.
//!
//! Unset limits are Istio's defaults: unlimited.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use ambit_api::istio::destination_rule::ConnectionPoolSettings;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A cluster's limits.
#[derive(Debug)]
pub struct ConnectionLimits {
    max_requests: Option<usize>,
    active: Arc<AtomicUsize>,
    max_connections: Option<usize>,
    /// One permit per HTTP/1.1 connection.
    connections: Option<Arc<Semaphore>>,
    max_pending: Option<usize>,
    pending: Arc<AtomicUsize>,
    max_retries: Option<usize>,
    retrying: Arc<AtomicUsize>,
}

/// A request refused by a limit (`UO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

/// A request admitted to the cluster, counted until dropped.
#[derive(Debug)]
pub struct Admission {
    _request: Counted,
    _connection: Option<OwnedSemaphorePermit>,
}

/// A relayed TCP connection's place under `tcp.maxConnections`, freed on drop.
#[derive(Debug)]
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
}

/// A retry in flight under `http.maxRetries`, counted until dropped.
#[derive(Debug)]
pub struct RetrySlot {
    _retry: Counted,
}

/// One unit of a counter, given back on drop.
#[derive(Debug)]
struct Counted(Arc<AtomicUsize>);

impl Counted {
    /// Counts one more, returning the count before.
    fn new(counter: &Arc<AtomicUsize>) -> (Self, usize) {
        let before = counter.fetch_add(1, Ordering::AcqRel);
        (Self(Arc::clone(counter)), before)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Each of `limits` by Envoy's circuit-breaker name (`None`: unlimited).
#[must_use]
pub fn thresholds(limits: Option<&ConnectionLimits>) -> [(&'static str, Option<usize>); 4] {
    let limit = |get: fn(&ConnectionLimits) -> Option<usize>| limits.and_then(get);
    [
        ("max_connections", limit(|l| l.max_connections)),
        ("max_pending_requests", limit(|l| l.max_pending)),
        ("max_requests", limit(|l| l.max_requests)),
        ("max_retries", limit(|l| l.max_retries)),
    ]
}

impl ConnectionLimits {
    /// The limits `settings` set for a cluster speaking HTTP/2 or not; `None` when
    /// nothing is limited.
    #[must_use]
    pub fn new(settings: &ConnectionPoolSettings, http2: bool) -> Option<Self> {
        let positive = |value: Option<i32>| {
            value
                .and_then(|v| usize::try_from(v).ok())
                .filter(|v| *v > 0)
        };
        let http = settings.http.as_ref();
        let max_requests = positive(http.and_then(|h| h.http2_max_requests));
        let max_connections = positive(settings.tcp.as_ref().and_then(|t| t.max_connections))
            .filter(|_| !http2)
            .map(|max| max.min(Semaphore::MAX_PERMITS));
        let max_retries = positive(http.and_then(|h| h.max_retries));
        if max_requests.is_none() && max_connections.is_none() && max_retries.is_none() {
            return None;
        }
        Some(Self {
            max_requests,
            active: Arc::default(),
            max_connections,
            connections: max_connections.map(|max| Arc::new(Semaphore::new(max))),
            max_pending: positive(http.and_then(|h| h.http1_max_pending_requests)),
            pending: Arc::default(),
            max_retries,
            retrying: Arc::default(),
        })
    }

    /// The same limits, counting in the same counters: for the cluster a config update
    /// rebuilds with unchanged settings, so that what was admitted before still counts.
    #[must_use]
    pub fn shared(&self) -> Self {
        Self {
            max_requests: self.max_requests,
            active: Arc::clone(&self.active),
            max_connections: self.max_connections,
            connections: self.connections.clone(),
            max_pending: self.max_pending,
            pending: Arc::clone(&self.pending),
            max_retries: self.max_retries,
            retrying: Arc::clone(&self.retrying),
        }
    }

    /// Admits one relayed TCP connection (`None`: connections are not limited), or
    /// refuses it when every connection is taken.
    pub fn admit_stream(&self) -> Result<Option<ConnectionSlot>, Overflow> {
        let Some(connections) = &self.connections else {
            return Ok(None);
        };
        let permit = Arc::clone(connections)
            .try_acquire_owned()
            .map_err(|_all_taken| Overflow)?;
        Ok(Some(ConnectionSlot { _permit: permit }))
    }

    /// Admits one more retry (`None`: retries are not limited), or refuses it when
    /// `http.maxRetries` are in flight.
    pub fn admit_retry(&self) -> Result<Option<RetrySlot>, Overflow> {
        let Some(max) = self.max_retries else {
            return Ok(None);
        };
        let (retry, before) = Counted::new(&self.retrying);
        if before >= max {
            return Err(Overflow);
        }
        Ok(Some(RetrySlot { _retry: retry }))
    }

    /// Admits one request, waiting for a connection when allowed to, or refuses it.
    pub async fn admit(&self) -> Result<Admission, Overflow> {
        let (request, before) = Counted::new(&self.active);
        if self.max_requests.is_some_and(|max| before >= max) {
            return Err(Overflow);
        }
        let Some(connections) = &self.connections else {
            return Ok(Admission {
                _request: request,
                _connection: None,
            });
        };
        if let Ok(permit) = Arc::clone(connections).try_acquire_owned() {
            return Ok(Admission {
                _request: request,
                _connection: Some(permit),
            });
        }
        let (_waiting, waiting_before) = Counted::new(&self.pending);
        if self.max_pending.is_some_and(|max| waiting_before >= max) {
            return Err(Overflow);
        }
        let permit = Arc::clone(connections)
            .acquire_owned()
            .await
            .map_err(|_closed| Overflow)?;
        Ok(Admission {
            _request: request,
            _connection: Some(permit),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{pin::Pin, task::Poll};

    use super::*;

    fn limits(yaml: &str, http2: bool) -> ConnectionLimits {
        let settings: ConnectionPoolSettings = serde_yaml_ng::from_str(yaml).unwrap();
        ConnectionLimits::new(&settings, http2).expect("limits are set")
    }

    #[test]
    fn relayed_connections_are_refused_past_max_connections_until_one_closes() {
        let two = limits("{tcp: {maxConnections: 2}}", false);
        let first = two.admit_stream().expect("first").expect("limited");
        let _second = two.admit_stream().expect("second").expect("limited");
        assert_eq!(two.admit_stream().unwrap_err(), Overflow);
        drop(first);
        assert!(two.admit_stream().is_ok_and(|slot| slot.is_some()));
        let unlimited = limits("{http: {http2MaxRequests: 5}}", false);
        assert!(unlimited.admit_stream().is_ok_and(|slot| slot.is_none()));
    }

    #[tokio::test]
    async fn one_connection_and_one_pending_request_refuse_the_third() {
        let limits = limits(
            "{tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}",
            false,
        );
        let first = limits
            .admit()
            .await
            .expect("the first request gets the connection");
        let second = limits.admit();
        tokio::pin!(second);
        assert!(
            poll_once(second.as_mut()).await.is_none(),
            "the second request waits for the connection"
        );
        assert_eq!(
            limits.admit().await.unwrap_err(),
            Overflow,
            "the third overflows the pending queue"
        );
        drop(first);
        second
            .await
            .expect("the waiting request gets the freed connection");
        assert_eq!(limits.pending.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn max_requests_refuses_without_waiting_and_http2_ignores_max_connections() {
        let limits = limits(
            "{tcp: {maxConnections: 1}, http: {http2MaxRequests: 2}}",
            true,
        );
        let _one = limits.admit().await.expect("admitted");
        let _two = limits
            .admit()
            .await
            .expect("HTTP/2 multiplexes: no connection limit");
        assert_eq!(limits.admit().await.unwrap_err(), Overflow);
        assert!(ConnectionLimits::new(&ConnectionPoolSettings::default(), false).is_none());
    }

    #[test]
    fn retries_past_max_retries_are_refused_until_one_ends() {
        let one = limits("{http: {maxRetries: 1}}", false);
        let retry = one.admit_retry().expect("first").expect("limited");
        assert_eq!(one.admit_retry().unwrap_err(), Overflow);
        drop(retry);
        assert!(one.admit_retry().is_ok_and(|slot| slot.is_some()));
        let unlimited = limits("{tcp: {maxConnections: 1}}", false);
        assert!(unlimited.admit_retry().is_ok_and(|slot| slot.is_none()));
    }

    /// Polls `future` once: `Some` if it completed.
    async fn poll_once<F: Future + Unpin>(mut future: F) -> Option<F::Output> {
        std::future::poll_fn(|cx| match Pin::new(&mut future).poll(cx) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending => Poll::Ready(None),
        })
        .await
    }
}
