//! One certificate from the CA: a fresh ECDSA P-256 key, a CSR naming the identity as its
//! SPIFFE URI SAN, and Istio's `CreateCertificate` call authenticated with the node's
//! bootstrap token (in Kubernetes, the pod's projected service-account token), asking
//! for the identity with `ImpersonatedIdentity` as Istio's ztunnel does.
//!
//! The token file is read again for every request: the kubelet rotates a projected
//! token by swapping the file, and an old token expires. The CA is reached over TLS, its
//! certificate verified against the mesh root (`--ca-root-file`, [`ambit_api::channel`]),
//! which is also read at every request: it may be mounted after ztunnel starts, and a
//! rotated root takes effect (the channel is rebuilt when the file changes).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use ambit_api::{
    bearer::{AUTHORIZATION, authorization},
    ca::{
        IMPERSONATED_IDENTITY_KEY, IstioCertificateRequest,
        istio_certificate_service_client::IstioCertificateServiceClient,
    },
    channel,
    identity::Identity,
};
use ambit_hbone::tls::WorkloadCertificate;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tonic::transport::{Channel, Endpoint};

use super::CertError;

/// How long connecting to the CA may take.
pub const CA_CONNECT_TIMEOUT_SECS: u64 = 5;
/// How long one `CreateCertificate` call may take.
pub const CA_REQUEST_TIMEOUT_SECS: u64 = 10;

/// A certificate obtained from the CA, with what the store shows of it.
#[derive(Debug)]
pub struct Issued {
    pub certificate: WorkloadCertificate,
    /// The leaf's serial number, lowercase hex.
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// When ztunnel received it.
    pub fetched_at: SystemTime,
}

/// The gRPC client, and the root file's contents its channel verifies the CA with.
type Connected = (Vec<u8>, IstioCertificateServiceClient<Channel>);

/// The CA as ztunnel calls it.
#[derive(Debug, Clone)]
pub struct CaClient {
    address: String,
    token_file: PathBuf,
    /// `--ca-root-file`: the mesh root the CA's certificate chains to, and the
    /// workloads' trust root.
    root_file: PathBuf,
    /// `validity_duration` asked for, in seconds; 0 lets the CA choose.
    ttl_secs: i64,
    connected: Arc<Mutex<Option<Connected>>>,
}

impl CaClient {
    /// A client for the CA at `address` (connected lazily, reconnecting as needed).
    ///
    /// # Errors
    /// An address that is not a URL, an `http://` one (the token would travel in clear),
    /// or an `https://` one without a root file (which is read at each request).
    pub fn new(
        address: &str,
        token_file: PathBuf,
        ttl: Option<Duration>,
        root_file: Option<&Path>,
    ) -> Result<Self, CertError> {
        channel::check(address, root_file.is_some(), true)?;
        let root_file = root_file.map(Path::to_owned).unwrap_or_default();
        Ok(Self {
            address: address.to_owned(),
            token_file,
            root_file,
            ttl_secs: ttl.map_or(0, |ttl| i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            connected: Arc::default(),
        })
    }

    /// The client for the root file as it is now, and the roots it holds; the channel is
    /// kept while the file does not change.
    fn client(
        &self,
    ) -> Result<
        (
            IstioCertificateServiceClient<Channel>,
            Vec<CertificateDer<'static>>,
        ),
        CertError,
    > {
        let pem = std::fs::read(&self.root_file).map_err(|source| CertError::RootFile {
            path: self.root_file.clone(),
            source,
        })?;
        let roots = parse_roots(&self.root_file, &pem)?;
        let mut connected = self
            .connected
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((built_with, client)) = connected.as_ref()
            && *built_with == pem
        {
            return Ok((client.clone(), roots));
        }
        let endpoint: Endpoint = channel::endpoint(&self.address, Some(&self.root_file), true)?
            .connect_timeout(Duration::from_secs(CA_CONNECT_TIMEOUT_SECS))
            .timeout(Duration::from_secs(CA_REQUEST_TIMEOUT_SECS));
        let client = IstioCertificateServiceClient::new(endpoint.connect_lazy());
        *connected = Some((pem, client.clone()));
        Ok((client, roots))
    }

    /// Generates a key and obtains a certificate for `identity`.
    ///
    /// # Errors
    /// The token file cannot be read, the CA is unreachable or refuses, or what it returns
    /// is not a certificate for `identity`.
    pub async fn fetch(&self, identity: &Identity) -> Result<Issued, CertError> {
        let bearer = authorization(&self.token_file)?;
        let (mut client, roots) = self.client()?;
        let uri = identity.to_string();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri.as_str().try_into()?)];
        let csr = params.serialize_request(&key)?.pem()?;

        let metadata = prost_types::Struct {
            fields: BTreeMap::from([(
                IMPERSONATED_IDENTITY_KEY.to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(uri.clone())),
                },
            )]),
        };
        let mut request = tonic::Request::new(IstioCertificateRequest {
            csr,
            validity_duration: self.ttl_secs,
            metadata: Some(metadata),
        });
        request.metadata_mut().insert(AUTHORIZATION, bearer);
        let response =
            client
                .create_certificate(request)
                .await
                .map_err(|status| match status.code() {
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                        CertError::Unreachable {
                            address: self.address.clone(),
                            message: match std::error::Error::source(&status) {
                                Some(source) => {
                                    format!("{}: {}", status.message(), channel::describe(source))
                                }
                                None => status.message().to_owned(),
                            },
                        }
                    }
                    code => CertError::Refused {
                        code,
                        message: status.message().to_owned(),
                    },
                })?;
        let fetched_at = SystemTime::now();
        let mut certs = Vec::new();
        for pem in &response.get_ref().cert_chain {
            for block in pem::parse_many(pem)? {
                certs.push(CertificateDer::from(block.into_contents()));
            }
        }
        // The chain's root is not trusted for being there: the mesh root is the file's.
        match certs.len() {
            0 => return Err(CertError::EmptyChain),
            1 => {}
            _ => {
                certs.pop();
            }
        }
        let (serial, not_before, not_after) = leaf_facts(&certs[0])?;
        let certificate = WorkloadCertificate {
            chain: certs,
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            roots,
        };
        let issued = certificate
            .identity()
            .map_err(|error| CertError::Certificate(error.to_string()))?;
        if issued != *identity {
            return Err(CertError::WrongIdentity {
                requested: uri,
                issued: issued.to_string(),
            });
        }
        Ok(Issued {
            certificate,
            serial,
            not_before,
            not_after,
            fetched_at,
        })
    }
}

/// The leaf's serial (hex) and validity.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(String, SystemTime, SystemTime), CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|error| CertError::Certificate(error.to_string()))?;
    let serial = cert
        .raw_serial()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let validity = cert.validity();
    Ok((
        serial,
        unix_time(validity.not_before.timestamp()),
        unix_time(validity.not_after.timestamp()),
    ))
}

fn unix_time(secs: i64) -> SystemTime {
    match u64::try_from(secs) {
        Ok(secs) => SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}

fn parse_roots(path: &Path, text: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let roots: Vec<_> = pem::parse_many(text)?
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(|block| CertificateDer::from(block.into_contents()))
        .collect();
    if roots.is_empty() {
        return Err(CertError::NoRoot {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

#[cfg(test)]
#[path = "fetch_tests.rs"]
mod tests;
