//! The waypoint's HBONE server: mutual TLS with its own certificate (client certificates
//! required, from the mesh's root), then each `CONNECT` — the client's ztunnel sends the
//! service VIP as the authority — handed to the engine through an in-memory pipe,
//! routed for the service behind that VIP: served as HTTP, or relayed as bytes by its
//! `tcp:` routes when the service declares the port TCP (or another protocol the
//! waypoint does not parse).

use std::{
    net::SocketAddr,
    sync::{Arc, PoisonError, RwLock},
};

use ambit_certs::CertificateStore;
use ambit_hbone::{ConnectRequest, Identity, Refusal, tls};
use tokio::{
    io::DuplexStream,
    net::{TcpListener, TcpStream},
};
use tracing::debug;

use super::state::MeshView;
use crate::proxy::{Downstream, Engine, Peer, relay_connection, serve_connection};

/// The in-memory pipe between an HBONE stream and the engine.
const PIPE_BYTES: usize = 256 * 1024;

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
}

/// What serving HBONE needs.
#[derive(Debug)]
pub struct Inbound {
    pub identity: Identity,
    pub certificates: Arc<CertificateStore>,
    pub engine: Arc<Engine>,
    pub view: Arc<RwLock<Arc<MeshView>>>,
}

/// Accepts HBONE connections on `listener` forever.
pub async fn accept_loop(listener: TcpListener, inbound: Arc<Inbound>) {
    ambit_hbone::accept_loop(listener, |stream, peer| {
        serve(stream, peer, Arc::clone(&inbound))
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
    ambit_hbone::serve(tls, peer_identity, move |request| {
        let inbound = Arc::clone(&inbound);
        async move { Ok::<_, Refusal>(stream_to_engine(&request, peer, &inbound)) }
    })
    .await
    .map_err(|source| InboundError::Serve { peer, source })
}

/// Starts the engine (HTTP, or the TCP relay) on one end of a pipe for this `CONNECT`
/// (from `tls_peer`) and returns the other end for the HBONE stream.
fn stream_to_engine(
    request: &ConnectRequest,
    tls_peer: SocketAddr,
    inbound: &Inbound,
) -> DuplexStream {
    let view = Arc::clone(&inbound.view.read().unwrap_or_else(PoisonError::into_inner));
    let destination = request.authority;
    let service = view.services.get(&destination.ip().to_canonical()).cloned();
    debug!(%destination, service = service.as_deref().unwrap_or("-"), peer = %request.peer, "CONNECT");
    let engine = Arc::clone(&inbound.engine);
    let relayed = service
        .as_deref()
        .is_some_and(|service| engine.table().relays_tcp(service, destination.port()));
    let downstream = Downstream {
        destination,
        service,
        peer: Peer {
            ip: request
                .forwarded_for
                .unwrap_or_else(|| tls_peer.ip())
                .to_canonical(),
            identity: Some(request.peer.clone()),
        },
    };
    let (engine_side, hbone_side) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(async move {
        if relayed {
            relay_connection(engine_side, engine, downstream).await;
        } else if let Err(error) = serve_connection(engine_side, engine, downstream).await {
            debug!(%error, "HTTP over HBONE ended with an error");
        }
    });
    hbone_side
}
