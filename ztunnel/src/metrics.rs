//! Istio's standard TCP metrics, so Kiali and Istio's Grafana dashboards read Ambit's
//! ztunnel unchanged. On HBONE connections the peer's identity (from its certificate, or
//! the directory for the destination) fills the principal and workload labels and
//! `connection_security_policy` is `mutual_tls`; on plaintext ones what Ambit cannot
//! know is `unknown`, as Istio reports it.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

/// The labels of every TCP metric (a subset of Istio's standard labels).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// `source` for the client side of a connection, `destination` for the server side.
    pub reporter: &'static str,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub request_protocol: &'static str,
    pub response_flags: &'static str,
    pub connection_security_policy: &'static str,
}

/// The counters ztunnel keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_opened: Family<TcpLabels, Counter>,
    pub connections_closed: Family<TcpLabels, Counter>,
    pub sent_bytes: Family<TcpLabels, Counter>,
    pub received_bytes: Family<TcpLabels, Counter>,
}

impl Metrics {
    /// Registers the metrics under Istio's names.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            self.connections_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            self.connections_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the client (server side) or the server (client side)",
            self.sent_bytes.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the client (server side) or the server (client side)",
            self.received_bytes.clone(),
        );
    }
}
