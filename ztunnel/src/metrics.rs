//! Istio's standard TCP metrics, with Istio's standard labels (shared with the
//! waypoint: [`ambit_api::telemetry::tcp`]), so Kiali and Istio's Grafana dashboards
//! read Ambit's ztunnel unchanged. Each end of a connection is a
//! [`Party`]: on HBONE connections the peer's identity comes from its certificate (or
//! the directory for the destination) and its workload, app, version and canonical
//! service from the directory; what Ambit cannot know is `unknown`, as Istio reports it.

pub use ambit_api::telemetry::{
    CLUSTER, Party, UNKNOWN,
    tcp::{TcpLabels, TcpMetrics as Metrics},
};

use crate::directory::Peer;

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
