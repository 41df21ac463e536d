//! How the engine reaches an endpoint from the waypoint: over HBONE to the endpoint's
//! ztunnel (its port 15008, `CONNECT endpoint:port`), with the waypoint's certificate,
//! expecting the endpoint's identity; connections pooled per (own identity, peer
//! identity, peer IP) and worker thread (see [`crate::proxy`]'s upstream pools). An endpoint outside the mesh is dialled in plain TCP. An ingress
//! gateway reaches a service with a waypoint through it: `CONNECT vip:port` to the
//! waypoint, expecting the waypoint's identity.

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError, RwLock},
};

use ambit_certs::CertificateStore;
use ambit_hbone::{Connection, HBONE_PORT, Identity, Pool, PoolKey, tls};
use ambit_workers::WorkerId;
use http::HeaderMap;
use tokio::net::TcpStream;

use super::state::MeshView;
use crate::{
    proxy::{Connect, ConnectFuture, TcpConnector, UpstreamStream},
    table::Keepalive,
};

/// HBONE towards mesh endpoints.
#[derive(Debug)]
pub struct HboneConnector {
    identity: Identity,
    certificates: Arc<CertificateStore>,
    view: Arc<RwLock<Arc<MeshView>>>,
    pools: Mutex<HashMap<Option<WorkerId>, Arc<Pool>>>,
}

impl HboneConnector {
    /// Connects as `identity` (its certificate from `certificates`), knowing endpoints
    /// from `view`.
    #[must_use]
    pub fn new(
        identity: Identity,
        certificates: Arc<CertificateStore>,
        view: Arc<RwLock<Arc<MeshView>>>,
    ) -> Self {
        Self {
            identity,
            certificates,
            view,
            pools: Mutex::default(),
        }
    }

    /// The pool of the worker thread this runs on.
    fn pool(&self) -> Arc<Pool> {
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(pools.entry(ambit_workers::current()).or_default())
    }
}

impl Connect for HboneConnector {
    /// `keepalive` applies to an endpoint outside the mesh only: an HBONE connection is
    /// shared by every cluster reaching that node.
    fn connect(&self, endpoint: SocketAddr, keepalive: Option<Keepalive>) -> ConnectFuture {
        let view = Arc::clone(&self.view.read().unwrap_or_else(PoisonError::into_inner));
        let ip = endpoint.ip().to_canonical();
        // A service VIP behind a waypoint (an ingress gateway's endpoint): tunnel to the
        // waypoint, which routes it; else a mesh pod: tunnel to its ztunnel.
        let (hbone_ip, peer) = match (view.waypoints.get(&ip), view.identities.get(&ip)) {
            (Some(waypoint), _) => (waypoint.ip, waypoint.identity.clone()),
            (None, Some(identity)) => (ip, identity.clone()),
            (None, None) => return TcpConnector.connect(endpoint, keepalive),
        };
        let identity = self.identity.clone();
        let certificates = Arc::clone(&self.certificates);
        let pool = self.pool();
        Box::pin(async move {
            let certificate = certificates.get(&identity).ok_or_else(|| {
                io::Error::other(format!(
                    "no certificate for {identity} yet: the CA has not answered"
                ))
            })?;
            let key = PoolKey {
                source: identity,
                destination: peer.clone(),
                destination_ip: hbone_ip,
            };
            let connection = pool
                .connection(&key, || async {
                    pool.prune();
                    let config = certificate
                        .certificate
                        .client_config(peer)
                        .map_err(io::Error::other)?;
                    let hbone = SocketAddr::new(hbone_ip, HBONE_PORT);
                    let tcp = TcpStream::connect(hbone).await?;
                    tcp.set_nodelay(true)?;
                    let tls = tls::connect(config, hbone.ip(), tcp)
                        .await
                        .map_err(io::Error::other)?;
                    Connection::handshake(tls).await.map_err(io::Error::other)
                })
                .await?;
            let tunnel = connection
                .open(endpoint, None, HeaderMap::new())
                .await
                .map_err(io::Error::other)?;
            Ok(UpstreamStream::new(tunnel))
        })
    }
}
