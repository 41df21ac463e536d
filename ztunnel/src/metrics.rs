//! Istio's standard TCP metrics, with Istio's standard labels, so Kiali and Istio's
//! Grafana dashboards read Ambit's ztunnel unchanged. Each end of a connection is a
//! [`Party`]: on HBONE connections the peer's identity comes from its certificate (or
//! the directory for the destination) and its workload, app, version and canonical
//! service from the directory; what Ambit cannot know is `unknown`, as Istio reports it.

use std::collections::BTreeMap;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use crate::directory::{Peer, Service};

/// Istio's name for the cluster when none is configured.
pub const CLUSTER: &str = "Kubernetes";
const UNKNOWN: &str = "unknown";

/// One end of a connection, as telemetry names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Party {
    pub workload: String,
    pub namespace: String,
    pub principal: String,
    pub app: String,
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
}

impl Party {
    /// An end Ambit knows nothing about (a plaintext peer).
    #[must_use]
    pub fn unknown() -> Self {
        Self {
            workload: UNKNOWN.to_owned(),
            namespace: UNKNOWN.to_owned(),
            principal: UNKNOWN.to_owned(),
            app: UNKNOWN.to_owned(),
            version: UNKNOWN.to_owned(),
            canonical_service: UNKNOWN.to_owned(),
            canonical_revision: UNKNOWN.to_owned(),
        }
    }

    /// A workload with its labels, by Istio's rules: canonical service from
    /// `service.istio.io/canonical-name`, `app.kubernetes.io/name`, `app`, else the
    /// workload name; canonical revision from `service.istio.io/canonical-revision`,
    /// `app.kubernetes.io/version`, `version`, else `latest`.
    #[must_use]
    pub fn workload(
        name: &str,
        namespace: &str,
        principal: String,
        labels: &BTreeMap<String, String>,
    ) -> Self {
        let first = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k)).cloned();
        Self {
            workload: name.to_owned(),
            namespace: namespace.to_owned(),
            principal,
            app: first(&["app"]).unwrap_or_else(|| UNKNOWN.to_owned()),
            version: first(&["version"]).unwrap_or_else(|| UNKNOWN.to_owned()),
            canonical_service: first(&[
                "service.istio.io/canonical-name",
                "app.kubernetes.io/name",
                "app",
            ])
            .unwrap_or_else(|| name.to_owned()),
            canonical_revision: first(&[
                "service.istio.io/canonical-revision",
                "app.kubernetes.io/version",
                "version",
            ])
            .unwrap_or_else(|| "latest".to_owned()),
        }
    }

    /// A mesh workload from the directory.
    #[must_use]
    pub fn peer(peer: &Peer) -> Self {
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
