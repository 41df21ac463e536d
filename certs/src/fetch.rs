//! One certificate from the CA: a fresh ECDSA P-256 key, a CSR naming the identity as its
//! SPIFFE URI SAN, and Istio's `CreateCertificate` call authenticated with the node's
//! bootstrap token (in Kubernetes, the pod's projected service-account token), asking
//! for the identity with `ImpersonatedIdentity` as Istio's ztunnel does.
//!
//! The token file is read again for every request: the kubelet rotates a projected
//! token by swapping the file, and an old token expires.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use ambit_api::{
    bearer::{AUTHORIZATION, authorization},
    ca::{
        IMPERSONATED_IDENTITY_KEY, IstioCertificateRequest,
        istio_certificate_service_client::IstioCertificateServiceClient,
    },
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

/// The CA as ztunnel calls it.
#[derive(Debug, Clone)]
pub struct CaClient {
    address: String,
    client: IstioCertificateServiceClient<Channel>,
    token_file: PathBuf,
    /// `validity_duration` asked for, in seconds; 0 lets the CA choose.
    ttl_secs: i64,
    /// Trust roots pinned with `--ca-root-file`; else the last certificate of each chain.
    pinned_roots: Option<Vec<CertificateDer<'static>>>,
}

impl CaClient {
    /// A client for the CA at `address` (connected lazily, reconnecting as needed).
    ///
    /// # Errors
    /// An address that is not a URL, or an unreadable or empty pinned root file.
    pub fn new(
        address: &str,
        token_file: PathBuf,
        ttl: Option<Duration>,
        root_file: Option<&Path>,
    ) -> Result<Self, CertError> {
        let endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(|error| CertError::Address {
                address: address.to_owned(),
                reason: error.to_string(),
            })?
            .connect_timeout(Duration::from_secs(CA_CONNECT_TIMEOUT_SECS))
            .timeout(Duration::from_secs(CA_REQUEST_TIMEOUT_SECS));
        let pinned_roots = root_file.map(read_roots).transpose()?;
        Ok(Self {
            address: address.to_owned(),
            client: IstioCertificateServiceClient::new(endpoint.connect_lazy()),
            token_file,
            ttl_secs: ttl.map_or(0, |ttl| i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
            pinned_roots,
        })
    }

    /// Generates a key and obtains a certificate for `identity`.
    ///
    /// # Errors
    /// The token file cannot be read, the CA is unreachable or refuses, or what it returns
    /// is not a certificate for `identity`.
    pub async fn fetch(&self, identity: &Identity) -> Result<Issued, CertError> {
        let bearer = authorization(&self.token_file)?;
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
        let response = self
            .client
            .clone()
            .create_certificate(request)
            .await
            .map_err(|status| match status.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    CertError::Unreachable {
                        address: self.address.clone(),
                        message: status.message().to_owned(),
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
        let root = match certs.len() {
            0 => return Err(CertError::EmptyChain),
            1 => None,
            _ => certs.pop(),
        };
        let roots = match (&self.pinned_roots, root) {
            (Some(pinned), _) => pinned.clone(),
            (None, Some(root)) => vec![root],
            (None, None) => return Err(CertError::NoTrustRoot),
        };
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

fn read_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let text = std::fs::read(path).map_err(|source| CertError::RootFile {
        path: path.to_owned(),
        source,
    })?;
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
