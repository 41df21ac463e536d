//! What an ingress gateway's tests and the demo need on the outside: a throwaway PKI
//! (a CA and a server certificate for one host), the Secret that hands the certificate
//! to the gateway, and clients that send one request from inside a pod's network
//! namespace — over HTTPS trusting only that CA, or plain.
//!
//! The clients run in a thread of the calling process that entered the pod's network
//! namespace, not in the pod's cgroup: they stand for a client outside the mesh and
//! are never captured.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, Result};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use serde_json::{Value, json};

use crate::Pod;

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// How long a client waits to connect, then for the answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A CA made for one run and a certificate for `host` signed by it, PEM.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub host: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    /// A new CA and a certificate for `host`.
    ///
    /// # Errors
    /// When rcgen cannot make the keys or certificates.
    pub fn generate(host: &str) -> Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec![host.to_owned()])?.signed_by(&key, &issuer)?;
        Ok(Self {
            host: host.to_owned(),
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The `kubernetes.io/tls` Secret `namespace/name` holding the certificate.
    #[must_use]
    pub fn secret(&self, namespace: &str, name: &str) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": { "name": name, "namespace": namespace },
            "type": "kubernetes.io/tls",
            "stringData": { "tls.crt": self.cert_pem, "tls.key": self.key_pem },
        })
    }

    /// `GET path` for the certificate's host over TLS from `pod` to `to`, trusting only
    /// this CA: the whole response.
    ///
    /// # Errors
    /// When the connection, the handshake (the certificate included) or the exchange
    /// fails.
    pub fn get(&self, pod: &Pod, to: SocketAddr, path: &str) -> Result<String> {
        let request = request(&self.host, path);
        self.over_tls(pod, to, move |stream| exchange(stream, &request))
    }

    /// Sends `text` over TLS as [`TestPki::get`] does, ends its side (TLS
    /// `close_notify`) and reads until the server closes: all the server sent.
    ///
    /// # Errors
    /// As [`TestPki::get`].
    pub fn send(&self, pod: &Pod, to: SocketAddr, text: &str) -> Result<String> {
        let text = text.to_owned();
        self.over_tls(pod, to, move |mut stream| {
            stream.write_all(text.as_bytes())?;
            stream.conn.send_close_notify();
            stream.flush()?;
            let mut received = String::new();
            stream.read_to_string(&mut received)?;
            Ok(received)
        })
    }

    /// Runs `exchange` from `pod` on a TLS connection to `to` for [`TestPki::host`],
    /// trusting only this CA.
    fn over_tls(
        &self,
        pod: &Pod,
        to: SocketAddr,
        exchange: impl FnOnce(TlsStream) -> Result<String> + Send + 'static,
    ) -> Result<String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes())?)?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from(self.host.clone())?;
        pod.run_in(move || -> Result<String> {
            let connection = rustls::ClientConnection::new(Arc::new(config), name)?;
            let stream = rustls::StreamOwned::new(connection, connect(to)?);
            exchange(stream).context("the exchange over TLS")
        })?
    }
}

/// `GET path` for `host` in plain HTTP/1.1 from `pod` to `to`: the whole response.
///
/// # Errors
/// When the connection or the exchange fails.
pub fn plain_get(pod: &Pod, to: SocketAddr, host: &str, path: &str) -> Result<String> {
    let request = request(host, path);
    pod.run_in(move || -> Result<String> { exchange(connect(to)?, &request) })?
}

fn request(host: &str, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

fn connect(to: SocketAddr) -> Result<TcpStream> {
    let tcp = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT)
        .with_context(|| format!("connecting to {to}"))?;
    tcp.set_read_timeout(Some(READ_TIMEOUT))?;
    Ok(tcp)
}

/// Sends `request` and reads until the server closes.
fn exchange(mut stream: impl Read + Write, request: &str) -> Result<String> {
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}
