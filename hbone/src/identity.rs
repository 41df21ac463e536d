//! Reading a workload's SPIFFE identity (`ambit_api::identity::Identity`) out of its
//! certificate: the one `spiffe://` URI SAN.

use ambit_api::identity::{Identity, IdentityError};
use rustls::pki_types::CertificateDer;
use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer as _};

const SCHEME: &str = "spiffe://";

/// Why a certificate does not name a workload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateIdentityError {
    #[error("the certificate is not valid DER X.509 ({reason}); check the CA that issued it")]
    Certificate { reason: String },
    #[error(
        "the certificate has no spiffe:// URI SAN; was it issued by the mesh CA for a workload?"
    )]
    NoSpiffeSan,
    #[error(
        "the certificate carries more than one spiffe:// URI SAN ({first}, {second}); \
         a workload certificate must name exactly one identity"
    )]
    SeveralSpiffeSans { first: String, second: String },
    #[error(transparent)]
    Malformed(#[from] IdentityError),
}

/// The identity in the single `spiffe://` URI SAN of a DER certificate (other URI SANs
/// are ignored, as Istio's ztunnel does).
///
/// # Errors
/// The certificate does not parse, names no SPIFFE identity, names several, or names a
/// malformed one.
pub fn from_certificate(
    certificate: &CertificateDer<'_>,
) -> Result<Identity, CertificateIdentityError> {
    let (_, parsed) = X509Certificate::from_der(certificate.as_ref()).map_err(|error| {
        CertificateIdentityError::Certificate {
            reason: error.to_string(),
        }
    })?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|error| CertificateIdentityError::Certificate {
            reason: error.to_string(),
        })?
        .ok_or(CertificateIdentityError::NoSpiffeSan)?;
    let mut spiffe = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(SCHEME) => Some(*uri),
            _ => None,
        });
    let first = spiffe.next().ok_or(CertificateIdentityError::NoSpiffeSan)?;
    if let Some(second) = spiffe.next() {
        return Err(CertificateIdentityError::SeveralSpiffeSans {
            first: first.to_owned(),
            second: second.to_owned(),
        });
    }
    Ok(first.parse()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_not_a_certificate() {
        let error = from_certificate(&CertificateDer::from(vec![1, 2, 3]))
            .expect_err("three bytes are not a certificate");
        assert!(
            matches!(error, CertificateIdentityError::Certificate { .. }),
            "got: {error:?}"
        );
    }
}
