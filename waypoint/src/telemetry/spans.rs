//! Spans reported to a Zipkin collector (Istio's `meshConfig.defaultConfig.tracing.zipkin`,
//! what Jaeger and Zipkin both receive): one `SERVER` span per sampled request, named as
//! Envoy names it (`<service>:<port>/*`), with Envoy's tags. Spans are queued without
//! waiting and sent by one task in JSON batches (Zipkin v2, `POST /api/v2/spans`) of up
//! to [`BATCH_SPANS`] or every [`BATCH_INTERVAL`]; when the collector is away or slow,
//! spans past [`QUEUED_SPANS`] are dropped, never requests held up.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::mpsc, time::Instant};

use super::trace::SpanIds;

/// The most spans sent in one request to the collector.
pub const BATCH_SPANS: usize = 100;
/// How long a span waits for others to share its batch.
pub const BATCH_INTERVAL: Duration = Duration::from_secs(1);
/// The most spans waiting to be sent.
pub const QUEUED_SPANS: usize = 10_000;

/// Sends spans to a collector; cheap to clone.
#[derive(Debug, Clone)]
pub struct SpanReporter {
    queue: mpsc::Sender<Value>,
    /// The `localEndpoint.serviceName` of every span: `<proxy name>.<namespace>`.
    service_name: Arc<str>,
}

impl SpanReporter {
    /// Starts the task that sends spans to `collector` (`host:port`, resolved for each
    /// batch) on the current Tokio runtime.
    #[must_use]
    pub fn start(collector: String, service_name: String) -> Self {
        let (queue, spans) = mpsc::channel(QUEUED_SPANS);
        tokio::spawn(send_batches(collector, spans));
        Self {
            queue,
            service_name: service_name.into(),
        }
    }

    /// A span for the request with `ids` that starts now on port `port`.
    #[must_use]
    pub fn open(&self, ids: SpanIds, port: u16) -> OpenSpan {
        OpenSpan {
            reporter: self.clone(),
            ids,
            port,
            started: SystemTime::now(),
        }
    }
}

/// A sampled request's span, reported by [`OpenSpan::finish`].
#[derive(Debug)]
pub struct OpenSpan {
    reporter: SpanReporter,
    ids: SpanIds,
    port: u16,
    started: SystemTime,
}

/// What a finished request's span says about it.
#[derive(Debug)]
pub struct Finished<'a> {
    pub service: &'a str,
    pub method: &'a str,
    pub url: String,
    pub status: u16,
    pub flags: String,
    pub cluster: Option<&'a str>,
    pub request_id: &'a str,
    pub duration: Duration,
}

impl OpenSpan {
    /// Queues the span of the request, which ended as `finished` says.
    pub fn finish(self, finished: &Finished<'_>) {
        let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut span = json!({
            "traceId": self.ids.trace_id,
            "id": self.ids.id,
            "kind": "SERVER",
            "name": format!("{}:{}/*", finished.service, self.port),
            "timestamp": micros(self.started.duration_since(UNIX_EPOCH).unwrap_or_default()),
            "duration": micros(finished.duration).max(1),
            "localEndpoint": {"serviceName": &*self.reporter.service_name},
            "tags": {
                "component": "proxy",
                "http.method": finished.method,
                "http.url": finished.url,
                "http.status_code": finished.status.to_string(),
                "response_flags": finished.flags,
                "upstream_cluster": finished.cluster.unwrap_or("-"),
                "guid:x-request-id": finished.request_id,
            },
        });
        if let Some(parent) = &self.ids.parent {
            span["parentId"] = json!(parent);
        }
        if finished.status >= 500 {
            span["tags"]["error"] = json!("true");
        }
        if self.reporter.queue.try_send(span).is_err() {
            tracing::debug!("span dropped: the collector is not keeping up");
        }
    }
}

/// Sends what arrives on `spans` in batches until every reporter is gone.
async fn send_batches(collector: String, mut spans: mpsc::Receiver<Value>) {
    while let Some(first) = spans.recv().await {
        let mut batch = vec![first];
        let deadline = Instant::now() + BATCH_INTERVAL;
        while batch.len() < BATCH_SPANS {
            match tokio::time::timeout_at(deadline, spans.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let count = batch.len();
        if let Err(error) = post(&collector, Value::Array(batch)).await {
            tracing::warn!(%collector, %error, count, "spans not delivered");
        }
    }
}

/// `POST /api/v2/spans` of `batch` to `collector`.
async fn post(collector: &str, batch: Value) -> Result<(), String> {
    let address: SocketAddr = tokio::net::lookup_host(collector)
        .await
        .map_err(|e| format!("resolving: {e}"))?
        .next()
        .ok_or("the name resolves to no address")?;
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("connecting to {address}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::post("/api/v2/spans")
        .header(header::HOST, collector)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(batch.to_string())))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {}", response.status()))
    }
}
