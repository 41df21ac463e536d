//! What the waypoint reports about each request, as Istio's proxies do: Istio's
//! standard HTTP metrics with Istio's standard labels (so Kiali and Istio's dashboards
//! read them unchanged), one access-log line (`tracing` target `access`), trace
//! context propagated to the endpoint, and a span to a Zipkin collector when it has
//! one ([`spans`]); and likewise about each TCP connection it relays ([`tcp`]).
//!
//! A request is recorded when its response body ends (or is dropped, when the client
//! goes away): the duration runs to the last byte, and gRPC's status is read from the
//! trailers. What the waypoint cannot know is `unknown`, as Istio reports it: a source
//! without an identity whose address is no endpoint of a served service, a destination
//! the request never reached.
//!
//! # Layout
//! - this file: [`Metrics`] (registered on the caller's registry), [`Party`],
//!   [`Workloads`] and [`Exchange`], what one request's record is built from;
//! - [`trace`]: `traceparent` (started when absent) and `x-request-id`;
//! - [`spans`]: the spans of sampled requests, sent to a Zipkin collector;
//! - [`settings`]: what Telemetry objects say (access logging, trace sampling);
//! - [`tcp`]: Istio's TCP metrics and access log for relayed connections.

pub mod settings;
pub mod spans;
pub mod tcp;
pub mod trace;

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{Arc, LazyLock, Mutex, PoisonError, Weak},
    time::Instant,
};

pub use ambit_api::telemetry::{CLUSTER, Party, UNKNOWN, service_name_and_namespace};
use http::{HeaderMap, Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Frame;
use prometheus_client::{
    encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder},
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use self::spans::{Finished, OpenSpan};
use crate::{
    config::{MeshWorkload, Service},
    flags::ResponseFlags,
    matcher::Source,
    proxy::{Body, Peer, inspect::Inspected},
    table::RouteTable,
};

/// Istio's buckets for `istio_request_duration_milliseconds`.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// Buckets for the byte-size histograms: 1 B to 1 GB by powers of ten.
const SIZE_BUCKETS: (f64, f64, u16) = (1.0, 10.0, 10);

/// A party the waypoint knows nothing about, shared by every request that names one.
fn unknown() -> Arc<Party> {
    static UNKNOWN_PARTY: LazyLock<Arc<Party>> = LazyLock::new(|| Arc::new(Party::unknown()));
    Arc::clone(&UNKNOWN_PARTY)
}

/// A pod as telemetry knows it: what the endpoints of the served services say.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Workload {
    namespace: String,
    labels: BTreeMap<String, String>,
    /// Its names for telemetry, principal `unknown` (worked out once, shared by every
    /// request that reaches it).
    party: Arc<Party>,
}

impl Workload {
    /// A pod of workload `name` (`unknown` when empty).
    fn new(name: &str, namespace: &str, labels: &BTreeMap<String, String>) -> Self {
        let name = if name.is_empty() { UNKNOWN } else { name };
        Self {
            namespace: namespace.to_owned(),
            labels: labels.clone(),
            party: Arc::new(Party::workload(name, namespace, UNKNOWN.to_owned(), labels)),
        }
    }
}

/// The pods behind the served services, by address: who a source or an endpoint is.
#[derive(Debug, Default)]
pub struct Workloads(HashMap<IpAddr, Workload>);

impl Workloads {
    /// The mesh `workloads`, and the endpoints of `services` (an address in two services
    /// is the first's).
    #[must_use]
    pub fn new(services: &[Service], mesh: &[MeshWorkload]) -> Self {
        let mut workloads: HashMap<IpAddr, Workload> = mesh
            .iter()
            .map(|workload| {
                let known = Workload::new(&workload.name, &workload.namespace, &workload.labels);
                (workload.ip.to_canonical(), known)
            })
            .collect();
        for service in services {
            for endpoint in &service.endpoints {
                workloads
                    .entry(endpoint.ip.to_canonical())
                    .or_insert_with(|| {
                        Workload::new(&endpoint.workload, &service.namespace, &endpoint.labels)
                    });
            }
        }
        Self(workloads)
    }

    /// The downstream end: its identity (when authenticated) and, if its address is a
    /// known pod, that pod's workload.
    #[must_use]
    pub fn source(&self, peer: &Peer) -> Party {
        let known = self.0.get(&peer.ip).map(|workload| &workload.party);
        let mut party = Party::clone(known.unwrap_or(&unknown()));
        if let Some(identity) = &peer.identity {
            party.principal = identity.to_string();
            if known.is_none() {
                party.namespace.clone_from(&identity.namespace);
            }
        }
        party
    }

    /// The downstream end as `sourceLabels` and `sourceNamespace` see it: its pod, else
    /// the namespace of its identity with no labels; `None` when neither is known.
    #[must_use]
    pub fn matching_source<'a>(&'a self, peer: &'a Peer) -> Option<Source<'a>> {
        static NO_LABELS: BTreeMap<String, String> = BTreeMap::new();
        match self.0.get(&peer.ip) {
            Some(workload) => Some(Source {
                namespace: &workload.namespace,
                labels: &workload.labels,
            }),
            None => peer.identity.as_ref().map(|identity| Source {
                namespace: &identity.namespace,
                labels: &NO_LABELS,
            }),
        }
    }

    /// The endpoint the request was sent to. Its identity is unknown until HBONE.
    #[must_use]
    pub fn destination(&self, endpoint: Option<SocketAddr>) -> Arc<Party> {
        endpoint
            .and_then(|address| self.0.get(&address.ip().to_canonical()))
            .map_or_else(unknown, |workload| Arc::clone(&workload.party))
    }
}

/// The downstream end of one connection as telemetry names it: worked out at its first
/// request and again only when the route table changes (Envoy, too, learns a peer's
/// metadata once per connection).
#[derive(Debug, Default)]
pub struct ConnectionSource(Mutex<Option<(Weak<RouteTable>, Arc<Party>)>>);

impl ConnectionSource {
    /// `peer` as `table` names it.
    pub fn party(&self, table: &Arc<RouteTable>, peer: &Peer) -> Arc<Party> {
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &*known {
            // The `Weak` keeps the allocation, so no later table can share its address.
            Some((named_by, party)) if std::ptr::eq(named_by.as_ptr(), Arc::as_ptr(table)) => {
                Arc::clone(party)
            }
            _ => {
                let party = Arc::new(table.workloads().source(peer));
                *known = Some((Arc::downgrade(table), Arc::clone(&party)));
                party
            }
        }
    }
}

/// The labels of every HTTP metric: Istio's standard labels. The parties are shared,
/// so building one request's labels copies no names.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct RequestLabels {
    pub source: Arc<Party>,
    pub destination: Arc<Party>,
    /// The destination service's FQDN, or `unknown`.
    pub destination_service: String,
    pub request_protocol: &'static str,
    pub response_code: u16,
    pub grpc_response_status: Option<String>,
    pub response_flags: ResponseFlags,
    pub connection_security_policy: &'static str,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let (source, destination) = (&*self.source, &*self.destination);
        let (service_name, service_namespace) =
            service_name_and_namespace(&self.destination_service);
        let labels: [(&str, &str); 22] = [
            ("reporter", "waypoint"),
            ("source_workload", &source.workload),
            ("source_workload_namespace", &source.namespace),
            ("source_principal", &source.principal),
            ("source_app", &source.app),
            ("source_version", &source.version),
            ("source_canonical_service", &source.canonical_service),
            ("source_canonical_revision", &source.canonical_revision),
            ("source_cluster", CLUSTER),
            ("destination_workload", &destination.workload),
            ("destination_workload_namespace", &destination.namespace),
            ("destination_principal", &destination.principal),
            ("destination_app", &destination.app),
            ("destination_version", &destination.version),
            ("destination_service", &self.destination_service),
            ("destination_service_name", service_name),
            ("destination_service_namespace", service_namespace),
            (
                "destination_canonical_service",
                &destination.canonical_service,
            ),
            (
                "destination_canonical_revision",
                &destination.canonical_revision,
            ),
            ("destination_cluster", CLUSTER),
            ("request_protocol", self.request_protocol),
            (
                "connection_security_policy",
                self.connection_security_policy,
            ),
        ];
        for label in labels {
            label.encode(encoder.encode_label())?;
        }
        ("response_code", self.response_code).encode(encoder.encode_label())?;
        let grpc_status = self.grpc_response_status.as_deref().unwrap_or_default();
        ("grpc_response_status", grpc_status).encode(encoder.encode_label())?;
        ("response_flags", self.response_flags.to_string()).encode(encoder.encode_label())
    }
}

/// Istio's HTTP metrics, and the TCP metrics of relayed connections.
#[derive(Debug, Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
    request_bytes: Family<RequestLabels, Histogram, fn() -> Histogram>,
    response_bytes: Family<RequestLabels, Histogram, fn() -> Histogram>,
    tcp: tcp::TcpMetrics,
}

impl Metrics {
    /// The metrics, registered on `registry` under Istio's names.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS_MS)),
            request_bytes: Family::new_with_constructor(size_histogram),
            response_bytes: Family::new_with_constructor(size_histogram),
            tcp: tcp::TcpMetrics::default(),
        };
        metrics.tcp.register(registry);
        registry.register(
            "istio_requests",
            "Requests the waypoint handled",
            metrics.requests.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Time from a request's arrival to the last byte of its response, in milliseconds",
            metrics.duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body sizes, in bytes",
            metrics.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body sizes, in bytes",
            metrics.response_bytes.clone(),
        );
        metrics
    }

    /// The TCP metrics, which relayed connections report to.
    #[must_use]
    pub fn tcp(&self) -> &tcp::TcpMetrics {
        &self.tcp
    }

    /// Wraps `response`'s body so `exchange` is recorded (metrics and access log) when
    /// the body ends.
    #[must_use]
    pub fn observe(&self, exchange: Exchange, response: Response<Body>) -> Response<Body> {
        let (parts, body) = response.into_parts();
        let mut record = Record {
            metrics: self.clone(),
            grpc_status: exchange.grpc.then(|| grpc_status(&parts.headers)).flatten(),
            status: parts.status.as_u16(),
            exchange,
            response_bytes: 0,
        };
        let body = Inspected::new(body, move |frame: &Frame<bytes::Bytes>| record.see(frame))
            .boxed_unsync();
        Response::from_parts(parts, body)
    }
}

fn size_histogram() -> Histogram {
    let (start, factor, length) = SIZE_BUCKETS;
    Histogram::new(exponential_buckets(start, factor, length))
}

/// What is known about one request when its response starts: filled as the request
/// goes through the waypoint.
#[derive(Debug)]
pub struct Exchange {
    pub started: Instant,
    pub method: String,
    pub path: String,
    pub authority: String,
    pub request_id: String,
    /// `content-type: application/grpc…`.
    pub grpc: bool,
    /// The request body's size, as far as it is known when it arrives.
    pub request_bytes: u64,
    pub source: Arc<Party>,
    pub destination: Arc<Party>,
    /// Whether the downstream connection was mutually authenticated.
    pub mutual_tls: bool,
    pub flags: ResponseFlags,
    pub route: Option<String>,
    /// The cluster the request was sent to, `outbound|<port>|<subset>|<host>`.
    pub cluster: Option<String>,
    /// The destination service's FQDN: the cluster's host, else the service the client
    /// addressed (set before routing), else the one the authority names.
    pub service: Option<String>,
    pub endpoint: Option<SocketAddr>,
    pub attempts: u32,
    /// The request's span, when it is sampled and spans are reported.
    pub span: Option<OpenSpan>,
    /// Whether an access-log line is written (Telemetry `accessLogging`).
    pub access_logging: bool,
}

impl Exchange {
    /// A request arriving at `started`, for `authority`, with its request id.
    #[must_use]
    pub fn start<B: hyper::body::Body>(
        started: Instant,
        request: &Request<B>,
        authority: Option<&str>,
        request_id: String,
    ) -> Self {
        let grpc = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        Self {
            started,
            method: request.method().to_string(),
            path: request.uri().path().to_owned(),
            authority: authority.unwrap_or_default().to_owned(),
            request_id,
            grpc,
            request_bytes: request.body().size_hint().lower(),
            source: unknown(),
            destination: unknown(),
            mutual_tls: false,
            flags: ResponseFlags::default(),
            route: None,
            cluster: None,
            service: None,
            endpoint: None,
            attempts: 0,
            span: None,
            access_logging: true,
        }
    }

    /// Names the destination (service and workload) once the request was answered.
    pub fn finish(&mut self, table: &RouteTable) {
        let addressed = self.service.take();
        self.service = self
            .cluster
            .as_deref()
            .and_then(|cluster| cluster.rsplit('|').next())
            .map(str::to_owned)
            .or(addressed)
            .or_else(|| table.service(&self.authority).map(str::to_owned));
        self.destination = table.workloads().destination(self.endpoint);
        self.access_logging = table.access_logging();
    }
}

/// A request being answered: recorded once, when its response body is dropped.
struct Record {
    metrics: Metrics,
    exchange: Exchange,
    status: u16,
    grpc_status: Option<String>,
    response_bytes: u64,
}

impl Record {
    fn see(&mut self, frame: &Frame<bytes::Bytes>) {
        if let Some(data) = frame.data_ref() {
            self.response_bytes += data.len() as u64;
        } else if let Some(trailers) = frame.trailers_ref()
            && self.exchange.grpc
        {
            self.grpc_status = grpc_status(trailers).or(self.grpc_status.take());
        }
    }

    fn labels(&self) -> RequestLabels {
        let exchange = &self.exchange;
        RequestLabels {
            source: Arc::clone(&exchange.source),
            destination: Arc::clone(&exchange.destination),
            destination_service: exchange.service.as_deref().unwrap_or(UNKNOWN).to_owned(),
            request_protocol: if exchange.grpc { "grpc" } else { "http" },
            response_code: self.status,
            grpc_response_status: self.grpc_status.clone(),
            response_flags: exchange.flags,
            connection_security_policy: if exchange.mutual_tls {
                "mutual_tls"
            } else {
                "none"
            },
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let span = self.exchange.span.take();
        let elapsed = self.exchange.started.elapsed();
        let labels = self.labels();
        let metrics = &self.metrics;
        metrics.requests.get_or_create(&labels).inc();
        metrics
            .duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64() * 1000.0);
        metrics
            .request_bytes
            .get_or_create(&labels)
            .observe(self.exchange.request_bytes as f64);
        metrics
            .response_bytes
            .get_or_create(&labels)
            .observe(self.response_bytes as f64);
        let exchange = &self.exchange;
        if exchange.access_logging {
            log_access(self, elapsed, &labels);
        }
        if let Some(span) = span {
            span.finish(&Finished {
                service: &labels.destination_service,
                method: &exchange.method,
                url: format!("http://{}{}", exchange.authority, exchange.path),
                status: self.status,
                flags: exchange.flags.to_string(),
                cluster: exchange.cluster.as_deref(),
                request_id: &exchange.request_id,
                duration: elapsed,
            });
        }
    }
}

/// The access-log line of `record`'s request (`tracing` target `access`).
fn log_access(record: &Record, elapsed: std::time::Duration, labels: &RequestLabels) {
    let exchange = &record.exchange;
    tracing::info!(
        target: "access",
        method = exchange.method,
        path = exchange.path,
        authority = exchange.authority,
        status = record.status,
        flags = %exchange.flags,
        route = exchange.route.as_deref().unwrap_or("-"),
        upstream = exchange.endpoint.map_or_else(|| "-".to_owned(), |e| e.to_string()),
        attempts = exchange.attempts,
        duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        bytes_received = exchange.request_bytes,
        bytes_sent = record.response_bytes,
        request_id = exchange.request_id,
        source = labels.source.principal,
        service = labels.destination_service,
        "request",
    );
}

fn grpc_status(headers: &HeaderMap) -> Option<String> {
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests;
