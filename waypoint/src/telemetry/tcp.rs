//! What the waypoint reports about each TCP connection it relays as L4, as Istio's
//! waypoints do: Istio's TCP metrics (`istio_tcp_*`, `reporter="waypoint"`) and one
//! access-log line (`tracing` target `access`) when the connection closes.

use std::{net::SocketAddr, time::Instant};

pub use ambit_api::telemetry::tcp::{TcpLabels, TcpMetrics};

use super::Workloads;
use crate::{flags::ResponseFlags, proxy::Peer};

/// What is known about one relayed connection: filled as it is routed and connected.
#[derive(Debug)]
pub struct TcpExchange {
    started: Instant,
    labels: TcpLabels,
    /// The address the client connected to (the service VIP and port).
    pub destination: SocketAddr,
    pub route: Option<String>,
    pub endpoint: Option<SocketAddr>,
    /// Bytes from the client, relayed to the endpoint.
    pub received: u64,
    /// Bytes from the endpoint, relayed to the client.
    pub sent: u64,
}

impl TcpExchange {
    /// A connection from `peer` to `destination`, starting now.
    #[must_use]
    pub fn start(workloads: &Workloads, peer: &Peer, destination: SocketAddr) -> Self {
        let security = if peer.identity.is_some() {
            "mutual_tls"
        } else {
            "none"
        };
        Self {
            started: Instant::now(),
            labels: TcpLabels::new(
                "waypoint",
                workloads.source(peer),
                super::Party::unknown(),
                security,
            ),
            destination,
            route: None,
            endpoint: None,
            received: 0,
            sent: 0,
        }
    }

    /// The connection took `route` towards service `host` (FQDN).
    pub fn routed(&mut self, route: &str, host: &str) {
        self.route = Some(route.to_owned());
        self.labels.set_service(host);
    }

    /// The connection goes to `endpoint`.
    pub fn reached(&mut self, workloads: &Workloads, endpoint: SocketAddr) {
        self.endpoint = Some(endpoint);
        self.labels
            .set_destination(super::Party::clone(&workloads.destination(Some(endpoint))));
    }

    /// Why the connection was not relayed.
    pub fn failed(&mut self, flags: ResponseFlags) {
        self.labels.response_flags = flags.first_code();
    }

    /// Counts the connection as opened; once its labels are known.
    pub fn opened(&self, metrics: &TcpMetrics) {
        metrics.connections_opened.get_or_create(&self.labels).inc();
    }

    /// Counts the connection as closed with its bytes, and logs it.
    pub fn closed(self, metrics: &TcpMetrics) {
        let labels = &self.labels;
        metrics.connections_closed.get_or_create(labels).inc();
        metrics
            .received_bytes
            .get_or_create(labels)
            .inc_by(self.received);
        metrics.sent_bytes.get_or_create(labels).inc_by(self.sent);
        tracing::info!(
            target: "access",
            protocol = "tcp",
            destination = %self.destination,
            flags = labels.response_flags,
            route = self.route.as_deref().unwrap_or("-"),
            upstream = self.endpoint.map_or_else(|| "-".to_owned(), |e| e.to_string()),
            duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            bytes_received = self.received,
            bytes_sent = self.sent,
            source = labels.source_principal,
            service = labels.destination_service,
            "connection",
        );
    }
}
