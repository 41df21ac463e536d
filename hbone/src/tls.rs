//! Mutual TLS 1.3 with ALPN `h2`, as HBONE needs it, on rustls with the ring provider.
//!
//! - The **server** requires a client certificate chain that verifies against the mesh
//!   roots; the client's SPIFFE identity is read from it after the handshake ([`accept`]).
//! - The **client** verifies the server's chain against the same roots but without DNS
//!   name checks (workload certificates carry only a URI SAN), then requires the server's
//!   SPIFFE identity to be the one expected for the destination; anything else fails the
//!   handshake with [`TlsError::WrongIdentity`] ([`connect`]).
//!
//! The crypto provider is passed to every builder, never installed process-wide, so two
//! libraries in one process cannot race over the default.

use std::{
    fmt, io,
    net::IpAddr,
    sync::{Arc, LazyLock},
};

use ambit_api::identity::Identity;
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, OtherError, RootCertStore,
    ServerConfig, SignatureScheme,
    client::{
        Resumption,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        verify_server_cert_signed_by_trust_anchor,
    },
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    server::{
        NoServerSessionStorage, ParsedCertificate, VerifierBuilderError, WebPkiClientVerifier,
    },
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::identity::{self, CertificateIdentityError};

/// The ALPN protocol HBONE negotiates.
pub const ALPN_H2: &[u8] = b"h2";

/// rustls with ring, TLS 1.3 only (set on each builder).
static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));

/// Why a TLS config could not be built or a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the workload certificate chain is empty; pass the leaf first, then intermediates")]
    EmptyChain,
    #[error("no trust roots were given; pass the mesh CA's root certificate(s)")]
    NoRoots,
    #[error("a trust root is not a usable CA certificate ({0}); check root-cert.pem")]
    BadRoot(rustls::Error),
    #[error(
        "the workload key does not match its certificate or is not supported by ring \
         (ECDSA P-256/P-384, Ed25519, RSA): {0}"
    )]
    BadKey(rustls::Error),
    #[error("cannot build the client-certificate verifier: {0}")]
    Verifier(#[from] VerifierBuilderError),
    #[error("the workload certificate does not name a workload: {0}")]
    OwnIdentity(CertificateIdentityError),
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    #[error(
        "the server presented {presented} but {expected} was expected; \
         is the destination's workload identity in the control plane stale?"
    )]
    WrongIdentity {
        expected: Box<Identity>,
        presented: Box<Identity>,
    },
    #[error("the peer's certificate does not name a workload: {0}")]
    PeerIdentity(CertificateIdentityError),
    #[error("the peer presented no certificate; HBONE requires mutual TLS")]
    NoPeerCertificate,
}

/// A workload's certificate, key and the mesh roots it trusts.
#[derive(Debug)]
pub struct WorkloadCertificate {
    /// The leaf first, then any intermediates up to (not including) a root.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Trust anchors for peers' chains.
    pub roots: Vec<CertificateDer<'static>>,
}

impl WorkloadCertificate {
    /// The SPIFFE identity in the leaf.
    ///
    /// # Errors
    /// An empty chain, or a leaf that names no single SPIFFE identity.
    pub fn identity(&self) -> Result<Identity, TlsError> {
        let leaf = self.chain.first().ok_or(TlsError::EmptyChain)?;
        identity::from_certificate(leaf).map_err(TlsError::OwnIdentity)
    }

    /// A server config: TLS 1.3, ALPN `h2`, client certificate required and verified
    /// against [`Self::roots`]. Build once per certificate (it parses the key) and share.
    ///
    /// # Errors
    /// An empty chain, unusable roots, or a key that does not fit.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.root_store()?, PROVIDER.clone())
                .build()?;
        let mut config = ServerConfig::builder_with_provider(PROVIDER.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::BadKey)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.checked_chain()?, self.key.clone_key())
            .map_err(TlsError::BadKey)?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        // No resumption: see `client_config`. Otherwise each handshake would end with
        // two tickets, each kept with the client's chain in a cache of this config's.
        config.send_tls13_tickets = 0;
        config.session_storage = Arc::new(NoServerSessionStorage {});
        Ok(Arc::new(config))
    }

    /// A client config that accepts only a server presenting `expected`: TLS 1.3, ALPN
    /// `h2`, this certificate presented. Build once per destination identity and share.
    ///
    /// # Errors
    /// An empty chain, unusable roots, or a key that does not fit.
    pub fn client_config(&self, expected: Identity) -> Result<Arc<ClientConfig>, TlsError> {
        let verifier = Arc::new(SpiffeServerVerifier {
            roots: self.root_store()?,
            expected,
            provider: PROVIDER.clone(),
        });
        let mut config = ClientConfig::builder_with_provider(PROVIDER.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::BadKey)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.checked_chain()?, self.key.clone_key())
            .map_err(TlsError::BadKey)?;
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        // HBONE connections are pooled and long-lived, and a config is built per
        // connection (so that a renewed certificate applies to the next one): a session
        // cache would never serve a resumption, yet rustls's default one allocates
        // ~30 KB up front and holds every ticket the server sends.
        config.resumption = Resumption::disabled();
        Ok(Arc::new(config))
    }

    fn checked_chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        if self.chain.is_empty() {
            return Err(TlsError::EmptyChain);
        }
        Ok(self.chain.clone())
    }

    fn root_store(&self) -> Result<Arc<RootCertStore>, TlsError> {
        if self.roots.is_empty() {
            return Err(TlsError::NoRoots);
        }
        let mut store = RootCertStore::empty();
        for root in &self.roots {
            store.add(root.clone()).map_err(TlsError::BadRoot)?;
        }
        Ok(Arc::new(store))
    }
}

/// Server side of the handshake; returns the stream and the client's identity.
///
/// # Errors
/// The handshake failed (no or untrusted client certificate, no common protocol), or the
/// client's certificate names no workload.
pub async fn accept<IO>(
    config: Arc<ServerConfig>,
    io: IO,
) -> Result<(tokio_rustls::server::TlsStream<IO>, Identity), TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let stream = tokio_rustls::TlsAcceptor::from(config)
        .accept(io)
        .await
        .map_err(TlsError::Handshake)?;
    let peer = peer_identity(stream.get_ref().1)?;
    Ok((stream, peer))
}

/// Client side of the handshake to `destination` (the address dialled; no SNI is sent for
/// an IP, and the server's identity is checked by the config's expected identity).
///
/// # Errors
/// The handshake failed; [`TlsError::WrongIdentity`] when the server is not the expected
/// workload.
pub async fn connect<IO>(
    config: Arc<ClientConfig>,
    destination: IpAddr,
    io: IO,
) -> Result<tokio_rustls::client::TlsStream<IO>, TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::IpAddress(destination.into()), io)
        .await
        .map_err(handshake_error)
}

/// The SPIFFE identity of the peer of a finished handshake.
///
/// # Errors
/// No peer certificate, or one that names no single workload.
pub fn peer_identity(state: &CommonState) -> Result<Identity, TlsError> {
    let leaf = state
        .peer_certificates()
        .and_then(<[_]>::first)
        .ok_or(TlsError::NoPeerCertificate)?;
    identity::from_certificate(leaf).map_err(TlsError::PeerIdentity)
}

/// Lifts the verifier's own errors out of the `io::Error` tokio-rustls wraps them in.
fn handshake_error(error: io::Error) -> TlsError {
    let custom = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|tls| match tls {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
                Some(inner)
            }
            _ => None,
        });
    if let Some(inner) = custom {
        if let Some(IdentityMismatch {
            expected,
            presented,
        }) = inner.downcast_ref()
        {
            return TlsError::WrongIdentity {
                expected: Box::new(expected.clone()),
                presented: Box::new(presented.clone()),
            };
        }
        if let Some(error) = inner.downcast_ref::<CertificateIdentityError>() {
            return TlsError::PeerIdentity(error.clone());
        }
    }
    TlsError::Handshake(error)
}

#[derive(Debug, thiserror::Error)]
#[error("the server presented {presented} but {expected} was expected")]
struct IdentityMismatch {
    expected: Identity,
    presented: Identity,
}

/// webpki chain verification without a DNS name check, then the SPIFFE identity check.
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: Identity,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("roots", &self.roots.len())
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

fn other(error: impl std::error::Error + Send + Sync + 'static) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let presented = identity::from_certificate(end_entity).map_err(other)?;
        if presented != self.expected {
            return Err(other(IdentityMismatch {
                expected: self.expected.clone(),
                presented,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
