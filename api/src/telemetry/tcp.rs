//! Istio's standard TCP metrics (`istio_tcp_*`) with Istio's standard labels, reported
//! by ztunnel for every connection and by the waypoint for the connections it relays
//! as L4, so Kiali and Istio's dashboards read both unchanged.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use super::{CLUSTER, Party, UNKNOWN, service_name_and_namespace};

/// The labels of every TCP metric: Istio's standard labels for TCP.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// `source` for the client side of a connection, `destination` for the server side,
    /// `waypoint` for a waypoint's.
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

    /// The destination service, by its FQDN (`name.namespace.svc.cluster.local`).
    pub fn set_service(&mut self, hostname: &str) {
        let (name, namespace) = service_name_and_namespace(hostname);
        self.destination_service_name = name.to_owned();
        self.destination_service_namespace = namespace.to_owned();
        self.destination_service = hostname.to_owned();
    }
}

/// Istio's TCP counters (clones share them).
#[derive(Debug, Clone, Default)]
pub struct TcpMetrics {
    pub connections_opened: Family<TcpLabels, Counter>,
    pub connections_closed: Family<TcpLabels, Counter>,
    pub sent_bytes: Family<TcpLabels, Counter>,
    pub received_bytes: Family<TcpLabels, Counter>,
}

impl TcpMetrics {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_is_labelled_by_its_fqdn_name_and_namespace() {
        let mut labels = TcpLabels::new("waypoint", Party::unknown(), Party::unknown(), "none");
        labels.set_service("echo.shop.svc.cluster.local");
        assert_eq!(labels.destination_service, "echo.shop.svc.cluster.local");
        assert_eq!(labels.destination_service_name, "echo");
        assert_eq!(labels.destination_service_namespace, "shop");
    }
}
