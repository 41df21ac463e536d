//! A key set served over HTTP or HTTPS (a RequestAuthentication's `jwksUri`), counting
//! requests.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer as CaIssuer, KeyPair};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::issuer::Issuer;

/// A server answering every request with a key set, counting requests.
#[derive(Debug)]
pub struct JwksServer {
    /// `http://<address>/jwks`, or `https://`.
    pub uri: String,
    hits: Arc<AtomicU64>,
}

/// Where the key server listens.
const ADDRESS: &str = "127.0.0.13";

impl JwksServer {
    /// Serves `issuer`'s key set over HTTP on [`ADDRESS`] until the test ends.
    pub async fn start(issuer: &Issuer) -> Self {
        Self::serve(issuer, None).await
    }

    /// Serves it over HTTPS, with a certificate for [`ADDRESS`] from a CA of its own:
    /// the server and that CA's root.
    pub async fn start_tls(issuer: &Issuer) -> (Self, CertificateDer<'static>) {
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = ca.self_signed(&ca_key).expect("a CA").der().clone();
        let key = KeyPair::generate().expect("a key");
        let leaf = CertificateParams::new(vec![ADDRESS.to_owned()])
            .expect("params")
            .signed_by(&key, &CaIssuer::new(ca, ca_key))
            .expect("a certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(vec![leaf.der().clone()], key)
                .expect("a server config");
        let server = Self::serve(issuer, Some(TlsAcceptor::from(Arc::new(config)))).await;
        (server, root)
    }

    async fn serve(issuer: &Issuer, tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind((ADDRESS, 0))
            .await
            .expect("binding the key server");
        let scheme = if tls.is_some() { "https" } else { "http" };
        let address = listener.local_addr().expect("an address");
        let uri = format!("{scheme}://{address}/jwks");
        let hits = Arc::new(AtomicU64::new(0));
        let jwks = Bytes::from(issuer.jwks());
        let counted = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (jwks, counted, tls) = (jwks.clone(), Arc::clone(&counted), tls.clone());
                let service = service_fn(move |_request| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let response = Response::new(Full::new(jwks.clone()));
                    async move { Ok::<_, Infallible>(response) }
                });
                tokio::spawn(async move {
                    let http = auto::Builder::new(TokioExecutor::new());
                    // A handshake the client gives up on ends only this connection.
                    let _ = match tls {
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => {
                                http.serve_connection(TokioIo::new(stream), service).await
                            }
                            Err(_) => return,
                        },
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                    };
                });
            }
        });
        Self { uri, hits }
    }

    /// How many times the key set was asked for.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}
