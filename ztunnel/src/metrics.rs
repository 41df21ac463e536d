//! Istio's standard TCP metrics, with Istio's standard labels, so Kiali and Istio's
//! Grafana dashboards read Ambit's ztunnel unchanged. Each end of a connection is a
//! [`Party`]: on HBONE connections the peer's identity comes from its certificate (or
//! the directory for the destination) and its workload, app, version and canonical
//! service from the directory; what Ambit cannot know is `unknown`, as Istio reports it.

pub use ambit_api::telemetry::{CLUSTER, Party, UNKNOWN};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use crate::directory::{Peer, Service};

/// A mesh workload from the directory.
impl From<&Peer> for Party {
    fn from(peer: &Peer) -> Self {
        Self::workload(
            &peer.name,
            &peer.namespace,
            peer.identity.to_string(),
            &peer.labels,
        )
    }
}

/// The labels of every TCP metric: Istio's standard labels for TCP.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// `source` for the client side of a connection, `destination` for the server side.
    pub reporter: &'static str,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
    pub source_cluster: &'static str,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_canonical_service: String,
    pub destination_canonical_revision: String,
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
    pub destination_cluster: &'static str,
    pub request_protocol: &'static str,
    pub response_flags: &'static str,
    pub connection_security_policy: &'static str,
}

impl TcpLabels {
    /// A TCP connection reported by `reporter`, no service known yet.
    #[must_use]
    pub fn new(
        reporter: &'static str,
        source: Party,
        destination: Party,
        connection_security_policy: &'static str,
    ) -> Self {
        let mut labels = Self {
            reporter,
            source_workload: String::new(),
            source_workload_namespace: String::new(),
            source_principal: String::new(),
            source_app: String::new(),
            source_version: String::new(),
            source_canonical_service: String::new(),
            source_canonical_revision: String::new(),
            source_cluster: CLUSTER,
            destination_workload: String::new(),
            destination_workload_namespace: String::new(),
            destination_principal: String::new(),
            destination_app: String::new(),
            destination_version: String::new(),
            destination_canonical_service: String::new(),
            destination_canonical_revision: String::new(),
            destination_service: UNKNOWN.to_owned(),
            destination_service_name: UNKNOWN.to_owned(),
            destination_service_namespace: UNKNOWN.to_owned(),
            destination_cluster: CLUSTER,
            request_protocol: "tcp",
            response_flags: "-",
            connection_security_policy,
        };
        labels.set_source(source);
        labels.set_destination(destination);
        labels
    }

    pub fn set_source(&mut self, party: Party) {
        self.source_workload = party.workload;
        self.source_workload_namespace = party.namespace;
        self.source_principal = party.principal;
        self.source_app = party.app;
        self.source_version = party.version;
        self.source_canonical_service = party.canonical_service;
        self.source_canonical_revision = party.canonical_revision;
    }

    pub fn set_destination(&mut self, party: Party) {
        self.destination_workload = party.workload;
        self.destination_workload_namespace = party.namespace;
        self.destination_principal = party.principal;
        self.destination_app = party.app;
        self.destination_version = party.version;
        self.destination_canonical_service = party.canonical_service;
        self.destination_canonical_revision = party.canonical_revision;
    }

    pub fn set_service(&mut self, service: &Service) {
        self.destination_service.clone_from(&service.hostname);
        self.destination_service_name.clone_from(&service.name);
        self.destination_service_namespace
            .clone_from(&service.namespace);
    }
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
