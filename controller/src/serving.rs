//! The controller's own TLS on its two gRPC ports (the push, 15010; the CA, 15012), as
//! istiod serves 15012: a serving certificate issued by the mesh CA itself, for the names
//! clients use (`--server-name`, and defaults), which they verify against the mesh root
//! (`--ca-root-file`, the CA folder's `root-cert.pem`).
//!
//! The certificate is renewed at half its lifetime while the server runs: every new
//! handshake asks [`ServingCert`] (a rustls [`ResolvesServerCert`]) for the current one,
//! and connections already open keep theirs.
//!
//! [`incoming`] turns a listener into TLS connections for tonic's
//! `serve_with_incoming_shutdown`, each handshake in its own task so a slow or plaintext
//! client holds up nobody.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{Arc, RwLock},
    time::Duration,
};

use rcgen::SanType;
use rustls::{
    ServerConfig,
    crypto::ring as provider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;

use crate::ca::sign::{SignError, Signer};

/// The serving certificate's lifetime by default (renewed at half of it).
pub const DEFAULT_SERVING_CERT_TTL_SECS: u64 = 24 * 60 * 60;
/// The name every serving certificate carries (the Service's short name).
pub const DEFAULT_SERVER_NAME: &str = "ambit-controller";
/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// How long to wait before trying again when a renewal fails.
pub const RENEWAL_RETRY_SECS: u64 = 10;

/// Why the controller cannot serve TLS.
#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error("--server-name {0:?} is neither a DNS name nor an IP address")]
    Name(String),
    #[error("cannot issue the controller's serving certificate: {0}")]
    Sign(#[from] SignError),
    #[error("the controller's serving certificate is unusable: {0}")]
    Certificate(String),
}

/// The names a serving certificate carries: [`DEFAULT_SERVER_NAME`], `localhost`, in
/// Kubernetes the Service's names in `namespace`, the listener's IP when it is not a
/// wildcard, and each of `extra` (DNS names or IPs), without repeats.
#[must_use]
pub fn server_names(extra: &[String], namespace: Option<&str>, listen: SocketAddr) -> Vec<String> {
    let mut names = vec![DEFAULT_SERVER_NAME.to_owned(), "localhost".to_owned()];
    if let Some(namespace) = namespace {
        names.push(format!("{DEFAULT_SERVER_NAME}.{namespace}"));
        names.push(format!("{DEFAULT_SERVER_NAME}.{namespace}.svc"));
    }
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|name| seen.insert(name.clone()));
    names
}

/// The controller's serving certificate, issued by the mesh CA and renewed at half-life.
pub struct ServingCert {
    signer: Arc<Signer>,
    names: Vec<SanType>,
    ttl: Duration,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCert")
            .field("names", &self.names)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl ServingCert {
    /// Issues the first certificate for `names`, valid `ttl`.
    ///
    /// # Errors
    /// A name that is neither a DNS name nor an IP, or a failure to sign.
    pub fn issue(
        signer: Arc<Signer>,
        names: &[String],
        ttl: Duration,
    ) -> Result<Arc<Self>, ServingError> {
        let names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                // What a client can ask for (rustls checks the syntax), as rcgen writes it.
                Err(_) => DnsName::try_from(name.as_str())
                    .ok()
                    .and_then(|_| name.as_str().try_into().ok())
                    .map(SanType::DnsName)
                    .ok_or_else(|| ServingError::Name(name.clone())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let current = certified_key(&signer, &names, ttl)?;
        Ok(Arc::new(Self {
            signer,
            names,
            ttl,
            current: RwLock::new(current),
        }))
    }

    /// The certificate new handshakes get: the leaf first, then the CA chain.
    #[must_use]
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Renews the certificate at half its lifetime, forever; a failed renewal keeps the
    /// current one and is tried again after [`RENEWAL_RETRY_SECS`].
    pub async fn renew(self: Arc<Self>) {
        let mut wait = self.ttl / 2;
        loop {
            tokio::time::sleep(wait).await;
            match certified_key(&self.signer, &self.names, self.ttl) {
                Ok(renewed) => {
                    match self.current.write() {
                        Ok(mut current) => *current = renewed,
                        Err(poisoned) => *poisoned.into_inner() = renewed,
                    }
                    tracing::info!(ttl = ?self.ttl, "renewed the serving certificate");
                    wait = self.ttl / 2;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in_secs = RENEWAL_RETRY_SECS, "cannot renew the serving certificate; the current one keeps serving");
                    wait = Duration::from_secs(RENEWAL_RETRY_SECS);
                }
            }
        }
    }

    /// A TLS acceptor (TLS 1.2 and 1.3, ALPN `h2`) serving this certificate.
    ///
    /// # Errors
    /// When rustls refuses the configuration.
    pub fn acceptor(self: &Arc<Self>) -> Result<TlsAcceptor, ServingError> {
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|error| ServingError::Certificate(error.to_string()))?
                .with_no_client_auth()
                .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A fresh key and certificate for `names`, as rustls serves them.
fn certified_key(
    signer: &Signer,
    names: &[SanType],
    ttl: Duration,
) -> Result<Arc<CertifiedKey>, ServingError> {
    let (chain, key) = signer.sign_server(names.to_vec(), ttl)?;
    let mut certs = Vec::with_capacity(chain.len());
    for pem in &chain {
        let block =
            pem::parse(pem).map_err(|error| ServingError::Certificate(error.to_string()))?;
        certs.push(CertificateDer::from(block.into_contents()));
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let key = provider::sign::any_supported_type(&key)
        .map_err(|error| ServingError::Certificate(error.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(certs, key)))
}

/// The TLS connections accepted on `listener`, for tonic's `serve_with_incoming…`. Each
/// handshake runs in its own task, bounded by [`HANDSHAKE_TIMEOUT_SECS`]; a failed one
/// is logged (a plaintext client on a TLS port ends here) and never ends the stream. The
/// accept loop stops when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> ReceiverStream<std::io::Result<TlsStream<tokio::net::TcpStream>>> {
    let (connections, stream) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = connections.closed() => return,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: let some close.
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (connections, acceptor) = (connections.clone(), acceptor.clone());
            tokio::spawn(async move {
                let timeout = Duration::from_secs(HANDSHAKE_TIMEOUT_SECS);
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = connections.send(Ok(tls)).await;
                    }
                    Ok(Err(error)) => tracing::info!(
                        %peer,
                        %error,
                        "TLS handshake failed (a client must connect with https:// and the mesh root)"
                    ),
                    Err(_) => tracing::info!(%peer, ?timeout, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(stream)
}

#[cfg(test)]
#[path = "serving_tests.rs"]
mod tests;
