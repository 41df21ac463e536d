//! The waypoint's HBONE server: mutual TLS with its own certificate (client certificates
//! required, from the mesh's root), then each `CONNECT` — the client's ztunnel sends the
//! service VIP as the authority — served by the engine on the HBONE stream itself (no
//! pipe, no task in between), routed for the service behind that VIP: as HTTP, or
//! relayed as bytes by its `tcp:` routes when the service declares the port TCP (or
//! another protocol the waypoint does not parse).

use std::{
    net::SocketAddr,
    sync::{Arc, PoisonError, RwLock},
};

use ambit_certs::CertificateStore;
use ambit_hbone::{ConnectRequest, Identity, Refusal, Tunnel, tls};
use ambit_workers::Workers;
use tokio::net::{TcpListener, TcpStream};
use tracing::{Instrument as _, debug};

use super::state::MeshView;
use crate::proxy::{Downstream, Engine, Peer, relay_connection, serve_connection};

/// Why an HBONE connection to the waypoint was dropped.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("no certificate for {0} yet: the CA has not answered — check the CA flags")]
    NoCertificate(String),
    #[error("cannot use the waypoint's certificate: {0}")]
    Config(ambit_hbone::TlsError),
    #[error("TLS with {peer} failed: {source}")]
    Handshake {
        peer: SocketAddr,
        source: ambit_hbone::TlsError,
    },
    #[error("HBONE with {peer} failed: {source}")]
    Serve {
        peer: SocketAddr,
        source: ambit_hbone::ServerError,
    },
    #[error("cannot hand the connection to a worker thread: {0}")]
    Worker(std::io::Error),
    #[error("the connection's worker thread stopped serving it: {0}")]
    WorkerGone(#[from] tokio::task::JoinError),
}

/// What serving HBONE needs.
#[derive(Debug)]
pub struct Inbound {
    pub identity: Identity,
    pub certificates: Arc<CertificateStore>,
    pub engine: Arc<Engine>,
    pub view: Arc<RwLock<Arc<MeshView>>>,
}

/// Accepts HBONE connections on `listener` forever, each served on one of `workers`.
pub async fn accept_loop(listener: TcpListener, inbound: Arc<Inbound>, workers: Arc<Workers>) {
    ambit_hbone::accept_loop(listener, |stream, peer| {
        let inbound = Arc::clone(&inbound);
        let span = tracing::Span::current();
        let served = workers.spawn_connection(stream, move |stream| {
            serve(stream, peer, inbound).instrument(span)
        });
        async move { served.map_err(InboundError::Worker)?.await? }
    })
    .await;
}

async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    inbound: Arc<Inbound>,
) -> Result<(), InboundError> {
    let issued = inbound
        .certificates
        .get(&inbound.identity)
        .ok_or_else(|| InboundError::NoCertificate(inbound.identity.to_string()))?;
    let config = issued
        .certificate
        .server_config()
        .map_err(InboundError::Config)?;
    let _ = stream.set_nodelay(true);
    let (tls, peer_identity) = tls::accept(config, stream)
        .await
        .map_err(|source| InboundError::Handshake { peer, source })?;
    debug!(%peer_identity, "HBONE peer authenticated");
    ambit_hbone::serve_tunnels(tls, peer_identity, move |request| {
        let stream = EngineStream::new(&request, peer, &inbound);
        async move { Ok::<_, Refusal>(move |tunnel| stream.serve(tunnel)) }
    })
    .await
    .map_err(|source| InboundError::Serve { peer, source })
}

/// The engine's side of one `CONNECT`: what it serves the stream as, and for whom.
struct EngineStream {
    engine: Arc<Engine>,
    downstream: Downstream,
    /// Relayed as bytes by `tcp:` routes, not parsed as HTTP.
    relayed: bool,
}

impl EngineStream {
    /// The engine's side of `request`, received over TLS from `tls_peer`.
    fn new(request: &ConnectRequest, tls_peer: SocketAddr, inbound: &Inbound) -> Self {
        let view = Arc::clone(&inbound.view.read().unwrap_or_else(PoisonError::into_inner));
        let destination = request.authority;
        let service = view.services.get(&destination.ip().to_canonical()).cloned();
        debug!(%destination, service = service.as_deref().unwrap_or("-"), peer = %request.peer, "CONNECT");
        let engine = Arc::clone(&inbound.engine);
        let relayed = service
            .as_deref()
            .is_some_and(|service| engine.table().relays_tcp(service, destination.port()));
        let downstream = Downstream::new(
            destination,
            service,
            Peer {
                ip: request
                    .forwarded_for
                    .unwrap_or_else(|| tls_peer.ip())
                    .to_canonical(),
                identity: Some(request.peer.clone()),
            },
        );
        Self {
            engine,
            downstream,
            relayed,
        }
    }

    /// Serves the accepted stream until it ends.
    async fn serve(self, tunnel: Tunnel) {
        let Self {
            engine,
            downstream,
            relayed,
        } = self;
        if relayed {
            relay_connection(tunnel, engine, downstream).await;
        } else if let Err(error) = serve_connection(tunnel, engine, downstream).await {
            debug!(%error, "HTTP over HBONE ended with an error");
        }
    }
}
