//! The relay of captured connections: an outbound connection goes to its original
//! destination — over HBONE when that is a mesh workload and the pod holds a certificate
//! ([`super::hbone_outbound`]), else in plaintext; a captured inbound (plaintext)
//! connection goes to the app it was addressed to if L4 policy admits it (and is closed
//! when a policy change forbids it). Each connection gets one access-log line and Istio's
//! TCP metrics.

use std::{io, net::SocketAddr, os::fd::AsRawFd as _, sync::Arc, time::Instant};

use tokio::{io::copy_bidirectional_with_sizes, net::TcpStream};
use tracing::{info, warn};

use super::{PodContext, deliver::DeliveryError, hbone_outbound, local, sockets};
use crate::{
    config::RELAY_BUFFER_BYTES,
    metrics::{Party, TcpLabels},
    policy::{self, Admission},
};

/// Which way a captured connection goes, from the pod's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

/// Which side failed, for the access log and `response_flags`.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("no original destination recorded for this connection (was it captured?)")]
    NoOriginalDestination,
    #[error("service {service} has no ready endpoint for port {port}")]
    NoEndpoint { service: String, port: u16 },
    #[error("upstream connect to {destination} failed: {source}")]
    UpstreamConnect {
        destination: SocketAddr,
        source: sockets::SocketError,
    },
    #[error("downstream: {0}")]
    Downstream(io::Error),
    #[error(transparent)]
    HboneConnect(#[from] hbone_outbound::OutboundError),
    #[error("the HBONE tunnel failed: {0}")]
    HboneTunnel(io::Error),
    #[error("closed: a policy change forbids this connection")]
    Revoked,
    #[error("same-node delivery: {0}")]
    Local(DeliveryError),
    #[error(
        "the service's waypoint {0} cannot be reached: no waypoint pod runs, or this pod has no certificate yet"
    )]
    NoWaypoint(String),
}

impl RelayError {
    /// Istio's response flag for the failure.
    fn response_flag(&self) -> &'static str {
        match self {
            Self::NoOriginalDestination => "NR",
            Self::NoEndpoint { .. } | Self::NoWaypoint(_) => "UH",
            Self::UpstreamConnect { .. } => "UF",
            Self::Downstream(_) => "DC",
            Self::HboneConnect(_) => "UF",
            Self::HboneTunnel(_) => "UC",
            Self::Revoked | Self::Local(DeliveryError::Denied(_)) => "RBAC",
            Self::Local(_) => "UF",
        }
    }
}

/// How long an outbound connection waits for ztunnel's first config (just started).
const CONFIG_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Relays one accepted connection until both sides are done.
pub async fn handle(
    mut downstream: TcpStream,
    peer: SocketAddr,
    pod: Arc<PodContext>,
    direction: Direction,
) {
    let _in_flight = pod.drain.track();
    let started = Instant::now();
    let peer = canonical(peer);
    let destination = match direction {
        Direction::Outbound => original_destination(&downstream, peer, &pod),
        Direction::Inbound => downstream.local_addr().ok().map(canonical),
    };
    let admission = match (direction, destination) {
        (Direction::Inbound, Some(destination)) => match admit_plaintext(&pod, peer, destination) {
            Some(admission) => Some(admission),
            None => return,
        },
        _ => None,
    };
    // Until the first config arrives no address is known to be in the mesh: wait for it
    // rather than send a mesh destination's traffic in plaintext.
    if let (Direction::Outbound, Some(hbone)) = (direction, &pod.hbone)
        && !hbone.directory.wait_synced(CONFIG_WAIT).await
    {
        warn!(wait = ?CONFIG_WAIT, "no config from the controller yet: relaying as if no destination were in the mesh");
    }
    // A service VIP: one of the service's endpoints, on its target port.
    let service = match (direction, destination) {
        (Direction::Outbound, Some(destination)) => pod.service_at(destination.ip()),
        _ => None,
    };
    // A service with a waypoint: the waypoint picks the endpoint; it gets the VIP.
    let waypoint = service.as_ref().and_then(|s| s.waypoint.clone());
    let target = match (destination, &service) {
        (None, _) => Err(RelayError::NoOriginalDestination),
        (Some(vip), Some(_)) if waypoint.is_some() => Ok(vip),
        (Some(vip), Some(service)) => {
            service
                .endpoint(vip, peer.port())
                .ok_or_else(|| RelayError::NoEndpoint {
                    service: service.hostname.clone(),
                    port: vip.port(),
                })
        }
        (Some(destination), None) => Ok(destination),
    };
    let upstream_addr = target.as_ref().ok().copied();
    let (route, route_error) = match (direction, upstream_addr, &waypoint) {
        (Direction::Outbound, Some(vip), Some(waypoint)) => (
            hbone_outbound::via_waypoint(&pod, waypoint, vip, peer.port()).await,
            None,
        ),
        (Direction::Outbound, Some(target), None) => {
            match hbone_outbound::route(&pod, target).await {
                Ok(route) => (route, None),
                Err(error) => (None, Some(error)),
            }
        }
        _ => (None, None),
    };
    // Both ends served here: no TLS between them (the same-node fast path).
    let same_node = route
        .as_ref()
        .and_then(hbone_outbound::Route::local_destination);
    let hbone = route.is_some() && same_node.is_none();
    let fast_path = same_node.is_some();
    let mut labels = labels(&pod, direction);
    if let Some(route) = &route {
        route.label(&mut labels);
    }
    let addressed_service = service.or_else(|| match (direction, upstream_addr) {
        (Direction::Outbound, Some(target)) => pod.service_of(target.ip()),
        _ => None,
    });
    if let Some(service) = &addressed_service {
        labels.set_service(&service.hostname);
    }
    pod.metrics.connections_opened.get_or_create(&labels).inc();
    let _ = downstream.set_nodelay(true);
    let result = async {
        let destination = target?;
        if let Some(error) = route_error {
            return Err(error.into());
        }
        if let (Some(waypoint), None) = (&waypoint, &route) {
            return Err(RelayError::NoWaypoint(waypoint.name.clone()));
        }
        if let Some(local_pod) = same_node {
            let mut upstream = local::connect(&pod, local_pod, destination)
                .await
                .map_err(RelayError::Local)?;
            return copy_bidirectional_with_sizes(
                &mut downstream,
                &mut upstream,
                RELAY_BUFFER_BYTES,
                RELAY_BUFFER_BYTES,
            )
            .await
            .map_err(RelayError::Downstream);
        }
        if let Some(route) = &route {
            let tunnel = hbone_outbound::open(&pod, route, destination).await?;
            let transferred = tunnel
                .relay(&mut downstream)
                .await
                .map_err(|error| match error {
                    ambit_hbone::RelayError::Plain(error) => RelayError::Downstream(error),
                    ambit_hbone::RelayError::Tunnel(error) => RelayError::HboneTunnel(error),
                })?;
            return Ok((transferred.into_tunnel, transferred.from_tunnel));
        }
        let upstream = match direction {
            // Deliver from the client's own address where the pod is set up for it.
            Direction::Inbound if pod.transparent_delivery => {
                sockets::deliver_as(&pod.netns, peer, destination).await
            }
            Direction::Inbound | Direction::Outbound => {
                sockets::connect(&pod.netns, destination).await
            }
        };
        let mut upstream = upstream.map_err(|source| RelayError::UpstreamConnect {
            destination,
            source,
        })?;
        let relay = copy_bidirectional_with_sizes(
            &mut downstream,
            &mut upstream,
            RELAY_BUFFER_BYTES,
            RELAY_BUFFER_BYTES,
        );
        let Some(admission) = &admission else {
            return relay.await.map_err(RelayError::Downstream);
        };
        tokio::select! {
            result = relay => result.map_err(RelayError::Downstream),
            () = admission.revoked() => Err(RelayError::Revoked),
        }
    }
    .await;
    let (sent_upstream, sent_downstream) = *result.as_ref().unwrap_or(&(0, 0));
    if let Err(error) = &result {
        labels.response_flags = error.response_flag();
    }
    // Istio's bytes are from the reporter's point of view: received from the peer that
    // opened the connection, sent back to it.
    pod.metrics
        .received_bytes
        .get_or_create(&labels)
        .inc_by(sent_upstream);
    pod.metrics
        .sent_bytes
        .get_or_create(&labels)
        .inc_by(sent_downstream);
    pod.metrics.connections_closed.get_or_create(&labels).inc();
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    match result {
        Ok(_) => info!(
            target: "access",
            ?direction,
            hbone,
            same_node = fast_path,
            src = %peer,
            dst = ?destination,
            upstream = ?upstream_addr,
            dst_principal = %labels.destination_principal,
            bytes_received = sent_upstream,
            bytes_sent = sent_downstream,
            duration_ms,
            "connection complete"
        ),
        Err(error) => warn!(
            target: "access",
            ?direction,
            hbone,
            same_node = fast_path,
            src = %peer,
            dst = ?destination,
            duration_ms,
            response_flags = error.response_flag(),
            %error,
            "connection failed"
        ),
    }
}

/// Checks a plaintext inbound connection against L4 policy; a denial is logged and the
/// connection dropped (`None`).
fn admit_plaintext(
    pod: &PodContext,
    peer: SocketAddr,
    destination: SocketAddr,
) -> Option<Admission> {
    let connection = policy::Connection {
        source_ip: peer.ip(),
        source_identity: None,
        destination_ip: destination.ip(),
        destination_port: destination.port(),
    };
    match pod.policies.admit(pod.policy_workload(), connection) {
        Ok(admission) => Some(admission),
        Err(denial) => {
            warn!(
                target: "access",
                direction = "Inbound",
                hbone = false,
                src = %peer,
                dst = %destination,
                response_flags = "RBAC",
                %denial,
                "connection denied"
            );
            None
        }
    }
}

/// Where a captured outbound connection was going: from the eBPF map, or — when the
/// connection was redirected by iptables instead (the benchmark baseline) — from
/// `SO_ORIGINAL_DST`.
fn original_destination(
    stream: &TcpStream,
    peer: SocketAddr,
    pod: &PodContext,
) -> Option<SocketAddr> {
    let local = canonical(stream.local_addr().ok()?);
    pod.maps
        .take_original_destination(pod.netns_cookie, peer, local)
        .or_else(|| so_original_dst(stream))
}

/// `getsockopt(SOL_IP, SO_ORIGINAL_DST)`, answered by conntrack for iptables REDIRECT.
fn so_original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    // SAFETY: an all-zero sockaddr_in is a valid value for the kernel to overwrite.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>()).ok()?;
    // SAFETY: `addr`/`len` are valid for writes of the given size; the fd is live.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_IP,
            libc::SO_ORIGINAL_DST,
            (&raw mut addr).cast(),
            &raw mut len,
        )
    };
    (rc == 0).then(|| {
        SocketAddr::from((
            std::net::Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
            u16::from_be(addr.sin_port),
        ))
    })
}

/// IPv4-mapped IPv6 addresses (from dual-stack listeners) as plain IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The labels of a plaintext connection from `pod`'s point of view (the peer unknown).
pub(super) fn labels(pod: &PodContext, direction: Direction) -> TcpLabels {
    let mut labels = match direction {
        Direction::Outbound => TcpLabels::new("source", pod.party(), Party::unknown(), "unknown"),
        Direction::Inbound => TcpLabels::new("destination", Party::unknown(), pod.party(), "none"),
    };
    if direction == Direction::Inbound
        && let Some(service) = pod.own_service()
    {
        labels.set_service(&service.hostname);
    }
    labels
}
