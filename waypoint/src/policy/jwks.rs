//! JSON Web Key Sets: parsed once from a rule's inline `jwks`, or fetched from its
//! `jwksUri` through the engine's [`Connect`] seam (so inside the mesh it rides HBONE
//! like any request) and cached for [`REFRESH`], as istiod refreshes them. An `https`
//! server must present a certificate for the URI's host from a root of the system's
//! store (`SSL_CERT_FILE` and `SSL_CERT_DIR` override it) or one given to
//! [`Fetcher::trust`]. A key set that cannot be fetched fails every token of its issuer
//! (401), as Istio's placeholder key does.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use ambit_api::istio::request_authentication::JwtRule;
use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{
    DecodingKey,
    jwk::{AlgorithmParameters, JwkSet},
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName},
};
use thiserror::Error;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::OnceCell,
};
use tokio_rustls::TlsConnector;

use super::PolicyError;
use crate::{gateway::tls::PROVIDER, proxy::Connect};

/// How long a fetched key set is used before it is fetched again (istiod's default
/// `PILOT_JWT_PUB_KEY_REFRESH_INTERVAL`).
pub const REFRESH: Duration = Duration::from_secs(20 * 60);
/// How long a fetch may take when the rule sets no `timeout` (Istio's default).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest key set document accepted.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// Why a key set could not be fetched.
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("resolving {host} failed: {source} (is the issuer's host name right?)")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("connecting to {uri} failed: {source}")]
    Connect {
        uri: Uri,
        #[source]
        source: std::io::Error,
    },
    #[error("requesting {uri} failed: {source}")]
    Http {
        uri: Uri,
        #[source]
        source: hyper::Error,
    },
    #[error("{uri} cannot be requested: {source}")]
    Request {
        uri: Uri,
        #[source]
        source: http::Error,
    },
    #[error("{uri} answered {status}: is the jwksUri right?")]
    Status { uri: Uri, status: http::StatusCode },
    #[error("the key set from {uri} is larger than {MAX_JWKS_BYTES} bytes or was cut short")]
    Body { uri: Uri },
    #[error("the document at {uri} is not a JSON Web Key Set: {reason}")]
    Parse { uri: Uri, reason: String },
    #[error("fetching {uri} took over {timeout:?}")]
    Timeout { uri: Uri, timeout: Duration },
    #[error(
        "no root certificate is trusted for https: install the system's CA certificates or give the waypoint the issuer's CA (--jwks-ca-file)"
    )]
    NoRoots,
    #[error("{uri}: the host is neither a DNS name nor an IP address TLS can verify")]
    ServerName { uri: Uri },
    #[error("TLS with {uri} failed: {source} (does its certificate chain to a trusted root?)")]
    Tls {
        uri: Uri,
        #[source]
        source: std::io::Error,
    },
}

/// One verification key.
pub struct Key {
    pub id: Option<String>,
    pub params: AlgorithmParameters,
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The keys of one issuer.
pub type KeySet = Arc<Vec<Key>>;

/// Where an issuer's keys come from.
#[derive(Clone)]
pub enum Source {
    Inline(KeySet),
    Remote { uri: Uri, timeout: Duration },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inline(keys) => write!(f, "Inline({} keys)", keys.len()),
            Self::Remote { uri, .. } => write!(f, "Remote({uri})"),
        }
    }
}

impl Source {
    /// The rule's `jwks`, else its `jwksUri`; `field` names the rule in errors.
    pub fn compile(field: &str, rule: &JwtRule) -> Result<Self, PolicyError> {
        if !rule.jwks.is_empty() {
            let keys = parse(&rule.jwks).map_err(|reason| PolicyError::Jwks {
                field: field.to_owned(),
                reason,
            })?;
            return Ok(Self::Inline(Arc::new(keys)));
        }
        if rule.jwks_uri.is_empty() {
            return Err(PolicyError::NoJwks {
                field: field.to_owned(),
            });
        }
        let bad = |reason: &str| PolicyError::JwksUri {
            field: field.to_owned(),
            uri: rule.jwks_uri.clone(),
            reason: reason.to_owned(),
        };
        const FORM: &str = "write it as https://host[:port]/path (or http://)";
        let uri: Uri = rule.jwks_uri.parse().map_err(|_| bad(FORM))?;
        let host = uri.host().unwrap_or_default();
        match uri.scheme_str() {
            Some("http") if !host.is_empty() => {}
            Some("https") if ServerName::try_from(host).is_ok() => {}
            _ => return Err(bad(FORM)),
        }
        Ok(Self::Remote {
            uri,
            timeout: rule.timeout.map_or(FETCH_TIMEOUT, |t| t.get()),
        })
    }

    /// The keys: the inline ones, or the cached or newly fetched remote ones; `None`
    /// when they cannot be had.
    pub async fn keys(&self, fetcher: &Fetcher) -> Option<KeySet> {
        match self {
            Self::Inline(keys) => Some(Arc::clone(keys)),
            Self::Remote { uri, timeout } => fetcher.get(uri, *timeout).await,
        }
    }
}

/// Reads a key set; the reason when it is not one.
pub fn parse(jwks: &str) -> Result<Vec<Key>, String> {
    let set: JwkSet = serde_json::from_str(jwks).map_err(|e| e.to_string())?;
    if set.keys.is_empty() {
        return Err("it has no keys".to_owned());
    }
    set.keys
        .into_iter()
        .enumerate()
        .map(|(i, jwk)| {
            let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("key {i}: {e}"))?;
            Ok(Key {
                id: jwk.common.key_id,
                params: jwk.algorithm,
                key,
            })
        })
        .collect()
}

/// Fetches remote key sets and caches them by URI. The engine keeps one across config
/// updates, so a config push does not refetch every issuer's keys.
pub struct Fetcher {
    connector: Arc<dyn Connect>,
    /// Roots trusted for `https` besides the system's.
    extra_roots: Vec<CertificateDer<'static>>,
    /// The TLS client, made at the first `https` fetch (the system's roots are read
    /// then, off the request threads, not by waypoints that never need them).
    tls: OnceCell<TlsConnector>,
    cache: Mutex<HashMap<Uri, (Instant, KeySet)>>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("connector", &self.connector)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher dialling through `connector`.
    #[must_use]
    pub fn new(connector: Arc<dyn Connect>) -> Self {
        Self {
            connector,
            extra_roots: Vec::new(),
            tls: OnceCell::new(),
            cache: Mutex::default(),
        }
    }

    /// Trusts `roots` too for `https` key sets: an issuer's private CA.
    #[must_use]
    pub fn trust(mut self, roots: Vec<CertificateDer<'static>>) -> Self {
        self.extra_roots = roots;
        self
    }

    /// The keys at `uri`, from the cache while fresh. A failed fetch is logged and not
    /// cached, so the next token tries again.
    pub async fn get(&self, uri: &Uri, timeout: Duration) -> Option<KeySet> {
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uri)
            .filter(|(fetched, _)| fetched.elapsed() < REFRESH)
            .map(|(_, keys)| Arc::clone(keys));
        if cached.is_some() {
            return cached;
        }
        let fetched = tokio::time::timeout(timeout, self.fetch(uri))
            .await
            .unwrap_or_else(|_| {
                Err(FetchError::Timeout {
                    uri: uri.clone(),
                    timeout,
                })
            });
        match fetched {
            Ok(keys) => {
                let keys = Arc::new(keys);
                self.cache
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(uri.clone(), (Instant::now(), Arc::clone(&keys)));
                Some(keys)
            }
            Err(error) => {
                tracing::warn!(%error, "cannot fetch a RequestAuthentication key set: its tokens fail");
                None
            }
        }
    }

    async fn fetch(&self, uri: &Uri) -> Result<Vec<Key>, FetchError> {
        let host = uri.host().unwrap_or_default();
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let mut addresses = tokio::net::lookup_host((host, port))
            .await
            .map_err(|source| FetchError::Resolve {
                host: host.to_owned(),
                source,
            })?;
        let address = addresses.next().ok_or_else(|| FetchError::NoAddress {
            host: host.to_owned(),
        })?;
        let stream = self
            .connector
            .connect(address, None)
            .await
            .map_err(|source| FetchError::Connect {
                uri: uri.clone(),
                source,
            })?;
        if !https {
            return request_keys(stream, uri).await;
        }
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| FetchError::ServerName { uri: uri.clone() })?;
        let tls = self
            .tls_connector()
            .await?
            .connect(name, stream)
            .await
            .map_err(|source| FetchError::Tls {
                uri: uri.clone(),
                source,
            })?;
        request_keys(tls, uri).await
    }

    /// The TLS client: the system's roots (read on a blocking thread: they are files)
    /// and the extra ones. Not kept when there are no roots, so installing them helps
    /// without a restart.
    async fn tls_connector(&self) -> Result<&TlsConnector, FetchError> {
        self.tls
            .get_or_try_init(|| async {
                let system = tokio::task::spawn_blocking(rustls_native_certs::load_native_certs)
                    .await
                    .map_err(|_| FetchError::NoRoots)?;
                for error in &system.errors {
                    tracing::warn!(%error, "reading the system's root certificates");
                }
                let mut roots = RootCertStore::empty();
                roots.add_parsable_certificates(system.certs);
                roots.add_parsable_certificates(self.extra_roots.iter().cloned());
                if roots.is_empty() {
                    return Err(FetchError::NoRoots);
                }
                let mut config = ClientConfig::builder_with_provider(Arc::clone(&PROVIDER))
                    .with_safe_default_protocol_versions()
                    .map_err(|_| FetchError::NoRoots)?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Ok(TlsConnector::from(Arc::new(config)))
            })
            .await
    }
}

/// `GET`s the key set at `uri` over `stream`.
async fn request_keys<S>(stream: S, uri: &Uri) -> Result<Vec<Key>, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |source| FetchError::Http {
        uri: uri.clone(),
        source,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let request = Request::get(path)
        .header(header::HOST, uri.authority().map_or("", |a| a.as_str()))
        .body(Empty::<Bytes>::new())
        .map_err(|source| FetchError::Request {
            uri: uri.clone(),
            source,
        })?;
    let response = sender.send_request(request).await.map_err(http)?;
    if !response.status().is_success() {
        return Err(FetchError::Status {
            uri: uri.clone(),
            status: response.status(),
        });
    }
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|_| FetchError::Body { uri: uri.clone() })?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    parse(&text).map_err(|reason| FetchError::Parse {
        uri: uri.clone(),
        reason,
    })
}
