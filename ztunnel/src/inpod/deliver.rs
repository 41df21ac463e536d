//! The destination side of a mesh connection, shared by HBONE inbound and the same-node
//! fast path: refuse a source that bypasses the workload's waypoint, check L4 policy for
//! the authenticated source, connect to the app inside
//! the pod (from the source's own address where the pod is prepared for it), and count
//! the connection as the destination reports it.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use ambit_api::identity::Identity;
use tracing::warn;

use super::{PodContext, metered::Metered, relay, sockets};
use crate::{
    metrics::Party,
    policy::{self, Denial},
};

/// Why a connection was not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Denied(Denial),
    #[error("the source pod has no identity or address to deliver from")]
    NoIdentity,
    #[error("the app at {destination} refused: {source}")]
    App {
        destination: SocketAddr,
        source: sockets::SocketError,
    },
}

/// Who is connecting, as authenticated.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub ip: IpAddr,
    pub identity: &'a Identity,
    /// How it arrived, for the access log.
    pub hbone: bool,
}

/// Delivers a connection from `source` to `destination` in `pod`; the returned socket
/// reports the connection when dropped and fails once a policy change revokes it.
///
/// # Errors
/// A policy denial (logged and counted) or the app refusing (logged, counted `UF`).
pub async fn deliver(
    pod: Arc<PodContext>,
    source: Source<'_>,
    destination: SocketAddr,
) -> Result<Metered, DeliveryError> {
    let client = SocketAddr::new(source.ip, 0);
    let admission = match admit(&pod, source, destination) {
        Ok(admission) => admission,
        Err(denial) => {
            warn!(
                target: "access",
                direction = "Inbound",
                hbone = source.hbone,
                src = %client,
                dst = %destination,
                src_principal = %source.identity,
                response_flags = "RBAC",
                %denial,
                "connection denied"
            );
            return Err(DeliveryError::Denied(denial));
        }
    };
    let upstream = if pod.transparent_delivery && source.ip.is_ipv4() == destination.is_ipv4() {
        sockets::deliver_as(&pod.netns, client, destination).await
    } else {
        sockets::connect(&pod.netns, destination).await
    };
    let mut labels = relay::labels(&pod, relay::Direction::Inbound);
    labels.connection_security_policy = "mutual_tls";
    let known = pod
        .hbone
        .as_ref()
        .and_then(|hbone| hbone.directory.lookup(source.ip))
        .filter(|peer| *peer.identity == *source.identity);
    labels.set_source(known.as_ref().map_or_else(
        || Party {
            principal: source.identity.to_string(),
            namespace: source.identity.namespace.clone(),
            ..Party::unknown()
        },
        |peer| Party::from(&**peer),
    ));
    pod.metrics.connections_opened.get_or_create(&labels).inc();
    match upstream {
        Ok(upstream) => Ok(Metered::new(
            upstream,
            pod,
            labels,
            (client, destination),
            admission,
        )),
        Err(error) => {
            labels.response_flags = "UF";
            pod.metrics.connections_closed.get_or_create(&labels).inc();
            warn!(
                target: "access",
                direction = "Inbound",
                hbone = source.hbone,
                src = %client,
                dst = %destination,
                src_principal = %source.identity,
                response_flags = "UF",
                %error,
                "connection failed"
            );
            Err(DeliveryError::App {
                destination,
                source: error,
            })
        }
    }
}

/// Admits the connection, or says who refused it (counted): the workload's waypoint,
/// then L4 policy.
fn admit(
    pod: &PodContext,
    source: Source<'_>,
    destination: SocketAddr,
) -> Result<policy::Admission, Denial> {
    if let Some(denial) = bypassed_waypoint(pod, source.identity) {
        pod.policies.count(&pod.policy_workload(), &denial);
        return Err(denial);
    }
    let connection = policy::Connection {
        source_ip: source.ip,
        source_identity: Some(source.identity.clone()),
        destination_ip: destination.ip(),
        destination_port: destination.port(),
    };
    pod.policies.admit(pod.policy_workload(), connection)
}

/// A denial when every service `pod` serves uses a waypoint and the source is not that
/// waypoint: such a workload takes mesh traffic only through it. A pod also behind a
/// service without a waypoint may be reached directly (by that service's clients, or an
/// ingress gateway routing to it).
fn bypassed_waypoint(pod: &PodContext, source: &Identity) -> Option<Denial> {
    let service = pod.waypoint_service()?;
    let waypoint = service.waypoint.as_ref()?;
    let required = waypoint.identity.as_ref()?;
    (required != source).then(|| Denial::BypassedWaypoint {
        waypoint: waypoint.name.clone(),
        source_identity: source.to_string(),
    })
}
