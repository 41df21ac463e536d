//! The channel a proxy opens to the controller's gRPC endpoints (the CA on 15012, the
//! config push on 15010): TLS, the controller's serving certificate verified against the
//! mesh root given with `--ca-root-file` (Istio's `root-cert.pem`), for the address's
//! host name or IP.
//!
//! An `https://` address needs the root. A plain `http://` address is refused when a
//! bearer token would travel on it: the controller serves only TLS, and a token in clear
//! is a node's identity for anyone on the path.

use std::{
    error::Error as StdError,
    path::{Path, PathBuf},
};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// The flag every proxy takes the mesh root with.
pub const ROOT_FILE_FLAG: &str = "--ca-root-file";

/// Why no channel to the controller can be set up.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("invalid address {address:?}: {reason} (expected e.g. https://198.19.255.1:15012)")]
    Address { address: String, reason: String },
    #[error(
        "{address} is https:// but no {ROOT_FILE_FLAG} is given: pass the mesh root (root-cert.pem in the controller's --ca-dir, or the ambit-root-cert ConfigMap) to verify the controller"
    )]
    NoRoot { address: String },
    #[error(
        "refusing to send a bearer token in clear to {address}: the controller serves TLS — use https://{authority} with {ROOT_FILE_FLAG}"
    )]
    PlaintextToken { address: String, authority: String },
    #[error(
        "cannot read {ROOT_FILE_FLAG} {path}: {source} — mount the mesh root (root-cert.pem) there"
    )]
    RootRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{ROOT_FILE_FLAG} {path} holds no PEM certificate: it should hold the mesh root (root-cert.pem)"
    )]
    RootEmpty { path: PathBuf },
    #[error("cannot set up TLS to {address}: {reason}")]
    Tls { address: String, reason: String },
}

/// An endpoint for `address`: with TLS verified against the PEM roots in `root_file` for
/// `https://`; plaintext for `http://` only when no token is sent (`sends_token`). The
/// root file is read now, so a new endpoint per connection follows a rotated root.
///
/// # Errors
/// A [`ChannelError`] saying what to change.
pub fn endpoint(
    address: &str,
    root_file: Option<&Path>,
    sends_token: bool,
) -> Result<Endpoint, ChannelError> {
    let endpoint = check(address, root_file.is_some(), sends_token)?;
    let Some(path) = root_file.filter(|_| endpoint.uri().scheme_str() == Some("https")) else {
        return Ok(endpoint);
    };
    let pem = std::fs::read(path).map_err(|source| ChannelError::RootRead {
        path: path.to_owned(),
        source,
    })?;
    if !pem
        .windows(CERTIFICATE_BEGIN.len())
        .any(|window| window == CERTIFICATE_BEGIN)
    {
        return Err(ChannelError::RootEmpty {
            path: path.to_owned(),
        });
    }
    endpoint
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
        .map_err(|error| ChannelError::Tls {
            address: address.to_owned(),
            reason: describe(&error),
        })
}

/// Checks `address` as [`endpoint`] does, without reading the root file: for a client
/// built before its root is mounted, which reads it at each connection.
///
/// # Errors
/// As [`endpoint`], but for the root file's contents.
pub fn check(address: &str, has_root: bool, sends_token: bool) -> Result<Endpoint, ChannelError> {
    let endpoint =
        Endpoint::from_shared(address.to_owned()).map_err(|error| ChannelError::Address {
            address: address.to_owned(),
            reason: error.to_string(),
        })?;
    let uri = endpoint.uri();
    match uri.scheme_str() {
        Some("https") if has_root => Ok(endpoint),
        Some("https") => Err(ChannelError::NoRoot {
            address: address.to_owned(),
        }),
        Some("http") if !sends_token => Ok(endpoint),
        Some("http") => Err(ChannelError::PlaintextToken {
            address: address.to_owned(),
            authority: uri
                .authority()
                .map_or_else(String::new, ToString::to_string),
        }),
        _ => Err(ChannelError::Address {
            address: address.to_owned(),
            reason: "the scheme must be https:// (or http:// without a token)".to_owned(),
        }),
    }
}

const CERTIFICATE_BEGIN: &[u8] = b"-----BEGIN CERTIFICATE-----";

/// `error` and each of its sources, joined by `: ` (tonic's transport errors say only
/// "transport error" at the top; the reason, such as a certificate the root does not
/// verify, is a few sources down). A message repeated by the next source is kept once.
#[must_use]
pub fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let text = error.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        next = error.source();
    }
    let text = parts.join(": ");
    if text.contains("certificate") {
        format!(
            "{text} — the controller's certificate does not verify: is {ROOT_FILE_FLAG} the root of the controller's CA (root-cert.pem in its --ca-dir), and is the address's host one of its --server-name?"
        )
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_what_to_change_for_each_unusable_address() {
        let error = endpoint("http://10.0.0.1:15012", None, true).unwrap_err();
        assert!(
            error.to_string().contains("https://10.0.0.1:15012")
                && error.to_string().contains(ROOT_FILE_FLAG),
            "{error}"
        );
        assert!(endpoint("http://10.0.0.1:15010", None, false).is_ok());
        let error = endpoint("https://10.0.0.1:15012", None, true).unwrap_err();
        assert!(matches!(error, ChannelError::NoRoot { .. }), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("root-cert.pem");
        let error = endpoint("https://10.0.0.1:15012", Some(&missing), true).unwrap_err();
        assert!(
            error.to_string().contains("root-cert.pem") && error.to_string().contains("mount"),
            "{error}"
        );
        std::fs::write(&missing, "not a certificate").unwrap();
        let error = endpoint("https://10.0.0.1:15012", Some(&missing), true).unwrap_err();
        assert!(matches!(error, ChannelError::RootEmpty { .. }), "{error}");
        let error = endpoint("ftp://10.0.0.1", None, false).unwrap_err();
        assert!(matches!(error, ChannelError::Address { .. }), "{error}");
    }
}

/// A test CA and a server certificate it signed, for fakes of the controller's endpoints
/// (feature `testing`): real rustls, real certificates.
#[cfg(feature = "testing")]
pub mod testing {
    use std::path::{Path, PathBuf};

    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

    /// A root, and a server certificate for `127.0.0.1` and `localhost` under it.
    #[derive(Debug)]
    pub struct TestTls {
        /// The root: what a client's `--ca-root-file` holds.
        pub root_pem: String,
        /// The root's issuer, for a fake CA that signs with it too.
        pub issuer: Issuer<'static, KeyPair>,
        /// The server's certificate and key (PEM), for tonic's `Identity::from_pem`.
        pub server_cert_pem: String,
        pub server_key_pem: String,
    }

    impl TestTls {
        /// A new root and server certificate.
        ///
        /// # Panics
        /// When rcgen cannot generate them.
        #[must_use]
        pub fn new() -> Self {
            let root_key = KeyPair::generate().expect("a root key");
            let mut params = CertificateParams::default();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let root_pem = params.self_signed(&root_key).expect("a root").pem();
            let issuer = Issuer::new(params, root_key);
            let server_key = KeyPair::generate().expect("a server key");
            let mut server = CertificateParams::default();
            server.subject_alt_names = vec![
                SanType::IpAddress([127, 0, 0, 1].into()),
                SanType::DnsName("localhost".try_into().expect("a DNS name")),
            ];
            let server_cert_pem = server
                .signed_by(&server_key, &issuer)
                .expect("a server certificate")
                .pem();
            Self {
                root_pem,
                issuer,
                server_cert_pem,
                server_key_pem: server_key.serialize_pem(),
            }
        }

        /// Writes the root to `dir/root-cert.pem` and returns that path.
        ///
        /// # Panics
        /// When the file cannot be written.
        #[must_use]
        pub fn write_root(&self, dir: &Path) -> PathBuf {
            let path = dir.join("root-cert.pem");
            std::fs::write(&path, &self.root_pem).expect("write the root");
            path
        }
    }

    impl Default for TestTls {
        fn default() -> Self {
            Self::new()
        }
    }

    /// Checks that a client trusting only another (fresh) root cannot connect to the
    /// `https://` `address`, and that the error says the certificate does not verify and
    /// names the flag.
    ///
    /// # Panics
    /// When the client connects, or the error says otherwise.
    pub async fn assert_refused_with_another_root(address: &str) {
        let dir = tempfile::tempdir().expect("a scratch folder");
        let other = TestTls::new().write_root(dir.path());
        let error = super::endpoint(address, Some(&other), true)
            .expect("an endpoint")
            .connect()
            .await
            .expect_err("a certificate another root does not verify");
        let reason = super::describe(&error);
        assert!(
            reason.contains("certificate") && reason.contains(super::ROOT_FILE_FLAG),
            "the error should say the certificate does not verify and name the flag: {reason}"
        );
    }
}
