//! The pod's HBONE server on [::]:15008: mutual TLS with the pod identity's current
//! certificate (client certificates required), then one `CONNECT` per tunnelled
//! connection, delivered to the app inside the pod — from the original source's address
//! (`Forwarded: for=`, else the TLS peer) when the pod is prepared for transparent
//! delivery.
//!
//! Before delivery each `CONNECT` is checked, and refused with 401 and the reason:
//! - against spoofing: a peer whose address belongs to a mesh workload must present that
//!   workload's identity, not another certificate the CA signed;
//! - against L4 policy ([`crate::policy`]), naming the policy that denied.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use ambit_hbone::{ConnectRequest, Refusal, TlsError, tls};
use hyper::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use super::{
    PodContext,
    deliver::{self, DeliveryError},
    metered::Metered,
};

/// Why an HBONE connection to this pod was dropped before serving.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("the pod names no workload identity, so it cannot serve HBONE")]
    NoIdentity,
    #[error(
        "no certificate yet for {0}; the CA has not answered — check ztunnel's certificate log"
    )]
    NoCertificate(String),
    #[error("cannot use the pod's certificate: {0}")]
    Config(TlsError),
    #[error("TLS with {peer} failed: {source}")]
    Handshake { peer: SocketAddr, source: TlsError },
    #[error("HBONE with {peer} failed: {source}")]
    Serve {
        peer: SocketAddr,
        source: ambit_hbone::ServerError,
    },
}

/// Accepts HBONE connections for one pod until the pod stops being served.
pub async fn accept_loop(listener: TcpListener, pod: Arc<PodContext>) {
    ambit_hbone::accept_loop(listener, |stream, peer| {
        serve_connection(stream, peer, Arc::clone(&pod))
    })
    .await;
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    pod: Arc<PodContext>,
) -> Result<(), InboundError> {
    let Some(hbone) = pod.hbone.clone() else {
        return Ok(());
    };
    let identity = pod.identity.as_ref().ok_or(InboundError::NoIdentity)?;
    // The current certificate, read per connection: renewals apply to new connections.
    let issued = hbone
        .certificates
        .get(identity)
        .ok_or_else(|| InboundError::NoCertificate(identity.to_string()))?;
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
        handle_connect(request, peer, Arc::clone(&pod))
    })
    .await
    .map_err(|source| InboundError::Serve { peer, source })
}

async fn handle_connect(
    request: ConnectRequest,
    tls_peer: SocketAddr,
    pod: Arc<PodContext>,
) -> Result<Metered, Refusal> {
    let destination = SocketAddr::new(
        request.authority.ip().to_canonical(),
        request.authority.port(),
    );
    if !pod.ips.contains(&destination.ip()) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("{destination} is not an address of this pod"),
        ));
    }
    if let Some(refusal) = spoofed(&pod, &request, tls_peer) {
        return Err(refusal);
    }
    let client_ip: IpAddr = request
        .forwarded_for
        .map_or(tls_peer.ip(), |ip| ip.to_canonical());
    let source = deliver::Source {
        ip: client_ip,
        identity: &request.peer,
        hbone: true,
    };
    deliver::deliver(pod, source, destination)
        .await
        .map_err(|error| {
            let status = match &error {
                DeliveryError::Denied(_) => StatusCode::UNAUTHORIZED,
                DeliveryError::App { .. } | DeliveryError::NoIdentity => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            Refusal::new(status, error.to_string())
        })
}

/// A refusal when the TLS peer's address is a mesh workload's and the certificate names
/// another identity: a valid certificate used from the wrong pod.
fn spoofed(pod: &PodContext, request: &ConnectRequest, tls_peer: SocketAddr) -> Option<Refusal> {
    let owner = pod.hbone.as_ref()?.directory.lookup(tls_peer.ip())?;
    if *owner.identity == request.peer {
        return None;
    }
    let reason = format!(
        "the client certificate names {} but {} is {}/{}, whose identity is {}",
        request.peer,
        tls_peer.ip(),
        owner.namespace,
        owner.name,
        owner.identity
    );
    warn!(
        target: "access",
        direction = "Inbound",
        hbone = true,
        src = %tls_peer,
        src_principal = %request.peer,
        response_flags = "RBAC",
        %reason,
        "connection denied: identity does not match the source workload"
    );
    Some(Refusal::new(StatusCode::UNAUTHORIZED, reason))
}
