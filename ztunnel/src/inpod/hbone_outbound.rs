//! A captured outbound connection to a mesh workload: tunnelled over HBONE from inside
//! the source pod (marked 0x539) to the destination pod's port 15008, with the source
//! identity's certificate, expecting the destination's identity. Connections are pooled
//! per (source identity, destination identity, destination IP).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use ambit_certs::Issued;
use ambit_hbone::{ClientError, Connection, HBONE_PORT, PoolKey, TlsError, tls};
use hyper::HeaderMap;
use tokio::net::TcpStream;

use super::{HboneContext, PodContext, sockets};
use crate::{
    directory::{Labels, Peer, Waypoint},
    metrics::{Party, TcpLabels},
};

/// Why a connection could not be tunnelled (the app's connection fails: `UF`).
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error(
        "cannot reach HBONE at {0}:15008 — is ztunnel serving the destination pod, and is nothing blocking 15008?"
    )]
    Connect(std::net::IpAddr, #[source] sockets::SocketError),
    #[error("cannot use the source's certificate: {0}")]
    Config(TlsError),
    #[error("TLS to {0}:15008 failed: {1}")]
    Tls(std::net::IpAddr, #[source] TlsError),
    #[error("HBONE to {0}: {1}")]
    Hbone(SocketAddr, #[source] ClientError),
    #[error(
        "no certificate for {0} after {wait:?}: the destination is in the mesh, so the connection is refused rather than sent in plaintext — check the CA flags and the CA's log",
        wait = CERTIFICATE_WAIT
    )]
    NoCertificate(ambit_api::identity::Identity),
}

/// How long a connection to a mesh workload waits for the source's certificate (a pod
/// that just arrived, a ztunnel that just started) before it fails.
pub const CERTIFICATE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A mesh destination, and what the source holds to reach it.
#[derive(Debug)]
pub struct Route {
    /// Who answers on HBONE: the destination workload, or the waypoint in front of it.
    pub peer: Arc<Peer>,
    /// Where the HBONE connection goes (the `CONNECT` authority stays the original
    /// destination: a pod, or a service VIP behind a waypoint).
    pub address: IpAddr,
    certificate: Arc<Issued>,
    hbone: Arc<HboneContext>,
}

impl Route {
    /// The destination pod, when this ztunnel serves it too (the same-node fast path).
    #[must_use]
    pub fn local_destination(&self) -> Option<Arc<PodContext>> {
        self.hbone.local.get(self.address)
    }

    /// Sets the destination's labels and `mutual_tls`.
    pub fn label(&self, labels: &mut TcpLabels) {
        labels.connection_security_policy = "mutual_tls";
        labels.set_destination(Party::from(&*self.peer));
    }
}

/// The HBONE route to `destination` when it is a mesh workload; `None` keeps the
/// plaintext passthrough (not a mesh workload, or the source pod has no identity). A
/// mesh destination never gets plaintext: the source's certificate is waited for
/// ([`CERTIFICATE_WAIT`]), and the connection fails without one.
///
/// # Errors
/// No certificate for the source in time.
pub async fn route(
    pod: &PodContext,
    destination: SocketAddr,
) -> Result<Option<Route>, OutboundError> {
    let (Some(hbone), Some(identity)) = (pod.hbone.as_ref(), pod.identity.as_ref()) else {
        return Ok(None);
    };
    let Some(peer) = hbone.directory.lookup(destination.ip()) else {
        return Ok(None);
    };
    let certificate = hbone
        .certificates
        .wait_for(identity, CERTIFICATE_WAIT)
        .await
        .ok_or_else(|| OutboundError::NoCertificate(identity.clone()))?;
    Ok(Some(Route {
        peer,
        address: destination.ip(),
        certificate,
        hbone: Arc::clone(hbone),
    }))
}

/// The HBONE route to `waypoint` for a connection to a service VIP in `family` (an
/// address of that family, picked by `spread`), the source's certificate waited for as
/// by [`route`]; `None` when none came, or no waypoint pod runs.
pub async fn via_waypoint(
    pod: &PodContext,
    waypoint: &Waypoint,
    vip: SocketAddr,
    spread: u16,
) -> Option<Route> {
    let hbone = pod.hbone.as_ref()?;
    let certificate = hbone
        .certificates
        .wait_for(pod.identity.as_ref()?, CERTIFICATE_WAIT)
        .await?;
    let identity = waypoint.identity.clone()?;
    let family: Vec<IpAddr> = waypoint
        .addresses
        .iter()
        .copied()
        .filter(|ip| ip.is_ipv4() == vip.is_ipv4())
        .collect();
    let address = *family.get(usize::from(spread) % family.len().max(1))?;
    let (namespace, name) = waypoint
        .name
        .split_once('/')
        .unwrap_or(("", &waypoint.name));
    Some(Route {
        peer: Arc::new(Peer {
            namespace: namespace.into(),
            name: name.into(),
            node: "".into(),
            identity: Arc::new(identity),
            ips: waypoint.addresses.clone(),
            labels: Labels::default(),
        }),
        address,
        certificate,
        hbone: Arc::clone(hbone),
    })
}

/// Opens a tunnel to `destination` on a pooled (or new) connection.
///
/// # Errors
/// Dialling, TLS, the HTTP/2 handshake, or the server's refusal of `CONNECT`.
pub async fn open(
    pod: &PodContext,
    route: &Route,
    destination: SocketAddr,
) -> Result<ambit_hbone::Tunnel, OutboundError> {
    let source_identity = route
        .certificate
        .certificate
        .identity()
        .map_err(OutboundError::Config)?;
    let key = PoolKey {
        source: source_identity,
        destination: (*route.peer.identity).clone(),
        destination_ip: route.address,
    };
    let connection = route
        .hbone
        .pool
        .connection(&key, || dial(pod, route, destination))
        .await?;
    let source_ip = pod
        .ips
        .iter()
        .find(|ip| ip.is_ipv4() == destination.is_ipv4())
        .copied();
    connection
        .open(destination, source_ip, HeaderMap::new())
        .await
        .map_err(|error| OutboundError::Hbone(destination, error))
}

async fn dial(
    pod: &PodContext,
    route: &Route,
    destination: SocketAddr,
) -> Result<Connection, OutboundError> {
    route.hbone.pool.prune();
    let ip = route.address;
    let config = route
        .certificate
        .certificate
        .client_config((*route.peer.identity).clone())
        .map_err(OutboundError::Config)?;
    let stream: TcpStream = sockets::connect(&pod.netns, SocketAddr::new(ip, HBONE_PORT))
        .await
        .map_err(|error| OutboundError::Connect(ip, error))?;
    let tls = tls::connect(config, ip, stream)
        .await
        .map_err(|error| OutboundError::Tls(ip, error))?;
    Connection::handshake(tls)
        .await
        .map_err(|error| OutboundError::Hbone(destination, error))
}
