//! A test CA, an echo server and an HBONE server on loopback, all real sockets.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use ambit_hbone::{
    ConnectRequest, Connection, Identity, Refusal, TlsError, WorkloadCertificate, serve, tls,
};
use http::StatusCode;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

pub const CLIENT: &str = "spiffe://cluster.local/ns/shop/sa/client";
pub const SERVER: &str = "spiffe://cluster.local/ns/shop/sa/server";

pub fn identity(uri: &str) -> Identity {
    uri.parse()
        .unwrap_or_else(|error| panic!("{uri} should parse: {error}"))
}

/// A root CA that issues workload leaves with one SPIFFE URI SAN.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
}

impl TestCa {
    pub fn new() -> Self {
        let key = KeyPair::generate().expect("generate the root key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "ambit test root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let root = params.self_signed(&key).expect("self-sign the root");
        Self {
            issuer: Issuer::new(params, key),
            root: root.der().clone(),
        }
    }

    /// A leaf for `uri` trusting this CA.
    pub fn leaf(&self, uri: &str) -> WorkloadCertificate {
        self.leaf_valid(uri, CertificateParams::default())
    }

    /// This CA's root certificate.
    pub fn root(&self) -> CertificateDer<'static> {
        self.root.clone()
    }

    /// A leaf for `uri` with the validity period of `validity` (its `not_before` and
    /// `not_after`), trusting this CA.
    pub fn leaf_valid(&self, uri: &str, validity: CertificateParams) -> WorkloadCertificate {
        let key = KeyPair::generate().expect("generate a leaf key");
        let mut params = CertificateParams::default();
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("a SPIFFE URI is IA5"))];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let leaf = params.signed_by(&key, &self.issuer).expect("sign the leaf");
        WorkloadCertificate {
            chain: vec![leaf.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            roots: vec![self.root.clone()],
        }
    }
}

/// Echoes every byte back and shuts down its write side at the client's EOF.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the echo server");
    let addr = listener.local_addr().expect("echo server address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                tokio::io::copy(&mut read, &mut write)
                    .await
                    .expect("echo copy");
                tokio::io::AsyncWriteExt::shutdown(&mut write)
                    .await
                    .expect("echo shutdown");
            });
        }
    });
    addr
}

/// An address nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a probe listener");
    listener.local_addr().expect("probe address")
}

/// The HBONE server side: what its handler saw and which handshakes it rejected.
pub struct HboneServer {
    pub addr: SocketAddr,
    pub requests: mpsc::UnboundedReceiver<ConnectRequest>,
    pub rejected: mpsc::UnboundedReceiver<TlsError>,
    /// TCP connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
}

impl HboneServer {
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// An HBONE server with `certificate` whose handler dials the authority (503 if that
/// fails).
pub async fn hbone_server(certificate: &WorkloadCertificate) -> HboneServer {
    let config = certificate.server_config().expect("server config");
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the HBONE server");
    let addr = listener.local_addr().expect("HBONE server address");
    let (requests_tx, requests) = mpsc::unbounded_channel();
    let (rejected_tx, rejected) = mpsc::unbounded_channel();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let config = config.clone();
            let requests_tx = requests_tx.clone();
            let rejected_tx = rejected_tx.clone();
            tokio::spawn(async move {
                let (stream, peer) = match tls::accept(config, tcp).await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        let _ = rejected_tx.send(error);
                        return;
                    }
                };
                let handler = move |request: ConnectRequest| {
                    let _ = requests_tx.send(request.clone());
                    async move {
                        TcpStream::connect(request.authority)
                            .await
                            .map_err(|error| {
                                Refusal::new(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
                            })
                    }
                };
                if let Err(error) = serve(stream, peer, handler).await {
                    eprintln!("HBONE server connection failed: {error}");
                }
            });
        }
    });
    HboneServer {
        addr,
        requests,
        rejected,
        accepted,
    }
}

/// TCP + mutual TLS (expecting `expected` on the server) + h2 handshake.
pub async fn connect(
    certificate: &WorkloadCertificate,
    server: SocketAddr,
    expected: &str,
) -> Result<Connection, String> {
    let config = certificate
        .client_config(identity(expected))
        .map_err(|error| error.to_string())?;
    let tls = connect_tls(config, server)
        .await
        .map_err(|e| e.to_string())?;
    Connection::handshake(tls)
        .await
        .map_err(|error| error.to_string())
}

pub async fn connect_tls(
    config: Arc<rustls::ClientConfig>,
    server: SocketAddr,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TlsError> {
    let tcp = TcpStream::connect(server)
        .await
        .expect("TCP connect to the HBONE server");
    tls::connect(config, server.ip(), tcp).await
}
