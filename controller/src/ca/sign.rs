//! Issuing workload certificates from certificate signing requests.
//!
//! Only the CSR's public key is copied into the certificate. Everything else comes from
//! the CA: the SPIFFE URI SAN of the *authorized* identity, the key usages, the validity.
//! A CSR that asks for a different URI SAN than the identity being issued is refused
//! rather than silently rewritten, so a confused client finds out at once.

use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;
use x509_parser::{
    certification_request::X509CertificationRequest, extensions::GeneralName, prelude::FromDer,
};

use super::{identity::Identity, material::CaMaterial};

/// Certificate lifetime when the caller asks for none (Istio's default).
pub const DEFAULT_CERT_TTL_SECS: u64 = 24 * 60 * 60;
/// The longest lifetime the CA issues: 90 days.
pub const MAX_CERT_TTL_SECS: u64 = 90 * 24 * 60 * 60;
/// How far in the past a certificate starts, so a peer whose clock is a little behind
/// accepts it.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Why a certificate was not issued.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the CSR is not a PEM `CERTIFICATE REQUEST`: {0}")]
    CsrPem(String),
    #[error("the CSR does not parse as PKCS#10: {0}")]
    CsrDer(String),
    #[error("the CSR signature does not verify: the CSR must be signed by the key it carries")]
    CsrSignature,
    #[error(
        "the CSR asks for {requested} but the certificate would be issued for {authorized}: put the identity you ask for in the CSR's URI SAN"
    )]
    SanMismatch {
        requested: String,
        authorized: String,
    },
    #[error("the CSR carries no URI SAN and no identity was named: put the SPIFFE ID in the CSR")]
    NoIdentity,
    #[error("the CSR carries several URI SANs ({0:?}): ask for one identity per certificate")]
    SeveralIdentities(Vec<String>),
    #[error("the CSR's public key is not supported ({0}): use ECDSA P-256/P-384, Ed25519 or RSA")]
    PublicKey(String),
    #[error("a certificate lifetime of 0 s is not allowed: ask for 1 s to {max} s, or omit it for {default} s", max = MAX_CERT_TTL_SECS, default = DEFAULT_CERT_TTL_SECS)]
    TtlZero,
    #[error("a certificate lifetime of {0} s is above the maximum of {max} s (90 days): ask for less", max = MAX_CERT_TTL_SECS)]
    TtlTooLong(u64),
    #[error("the CA could not sign: {0}")]
    Sign(rcgen::Error),
}

impl SignError {
    /// Whether the caller sent something wrong (as opposed to the CA failing).
    #[must_use]
    pub fn is_caller_error(&self) -> bool {
        !matches!(self, Self::Sign(_))
    }
}

/// A parsed certificate signing request whose signature verified.
#[derive(Debug, Clone)]
pub struct Csr {
    /// The request's `SubjectPublicKeyInfo`, DER.
    spki: Vec<u8>,
    /// The URI SANs it asks for.
    uris: Vec<String>,
}

impl Csr {
    /// Parses a PEM CSR and verifies its self-signature.
    ///
    /// # Errors
    /// [`SignError::CsrPem`], [`SignError::CsrDer`] or [`SignError::CsrSignature`].
    pub fn parse(csr_pem: &str) -> Result<Self, SignError> {
        let block = pem::parse(csr_pem).map_err(|e| SignError::CsrPem(e.to_string()))?;
        if !matches!(
            block.tag(),
            "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
        ) {
            return Err(SignError::CsrPem(format!(
                "found a `{}` block",
                block.tag()
            )));
        }
        let (_, csr) = X509CertificationRequest::from_der(block.contents())
            .map_err(|e| SignError::CsrDer(e.to_string()))?;
        csr.verify_signature()
            .map_err(|_| SignError::CsrSignature)?;
        let mut uris = Vec::new();
        for extension in csr.requested_extensions().into_iter().flatten() {
            if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = extension
            {
                for name in &san.general_names {
                    if let GeneralName::URI(uri) = name {
                        uris.push((*uri).to_owned());
                    }
                }
            }
        }
        Ok(Self {
            spki: csr.certification_request_info.subject_pki.raw.to_vec(),
            uris,
        })
    }

    /// The URI SANs the CSR asks for.
    #[must_use]
    pub fn uris(&self) -> &[String] {
        &self.uris
    }

    /// The one URI SAN the CSR asks for.
    ///
    /// # Errors
    /// [`SignError::NoIdentity`] or [`SignError::SeveralIdentities`].
    pub fn requested_uri(&self) -> Result<&str, SignError> {
        match self.uris.as_slice() {
            [uri] => Ok(uri),
            [] => Err(SignError::NoIdentity),
            many => Err(SignError::SeveralIdentities(many.to_vec())),
        }
    }
}

/// Turns a requested lifetime into the one to issue.
///
/// # Errors
/// [`SignError::TtlZero`] or [`SignError::TtlTooLong`].
pub fn check_ttl(ttl: Duration) -> Result<Duration, SignError> {
    if ttl.is_zero() {
        return Err(SignError::TtlZero);
    }
    if ttl.as_secs() > MAX_CERT_TTL_SECS
        || (ttl.as_secs() == MAX_CERT_TTL_SECS && ttl.subsec_nanos() > 0)
    {
        return Err(SignError::TtlTooLong(ttl.as_secs()));
    }
    Ok(ttl)
}

/// Signs workload certificates with the CA material.
#[derive(Debug)]
pub struct Signer {
    material: CaMaterial,
    trust_domain: String,
}

impl Signer {
    #[must_use]
    pub fn new(material: CaMaterial, trust_domain: &str) -> Self {
        Self {
            material,
            trust_domain: trust_domain.to_owned(),
        }
    }

    #[must_use]
    pub fn material(&self) -> &CaMaterial {
        &self.material
    }

    #[must_use]
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Issues a certificate for `identity` to the key in `csr_pem`, valid for `ttl`.
    /// Returns PEM certificates, one per element: the leaf, then the CA chain up to the
    /// root (the order Istio's `IstioCertificateResponse.cert_chain` uses).
    ///
    /// # Errors
    /// Any [`SignError`]: a bad CSR, a CSR asking for another identity, a bad `ttl`.
    pub fn sign(
        &self,
        csr_pem: &str,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<Vec<String>, SignError> {
        self.sign_csr(&Csr::parse(csr_pem)?, identity, ttl)
    }

    /// [`Signer::sign`] for a CSR already parsed.
    ///
    /// # Errors
    /// As [`Signer::sign`].
    pub fn sign_csr(
        &self,
        csr: &Csr,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<Vec<String>, SignError> {
        let uri = identity.to_string();
        if let Some(other) = csr.uris.iter().find(|requested| **requested != uri) {
            return Err(SignError::SanMismatch {
                requested: other.clone(),
                authorized: uri,
            });
        }
        let public_key = SubjectPublicKeyInfo::from_der(&csr.spki)
            .map_err(|e| SignError::PublicKey(e.to_string()))?;
        let san = SanType::URI(uri.as_str().try_into().map_err(SignError::Sign)?);
        self.issue(vec![san], &public_key, ttl)
    }

    /// Issues the controller's own serving certificate, for `names`, to a fresh P-256 key,
    /// valid for `ttl`: the chain (leaf first, as [`Signer::sign`]) and the key.
    ///
    /// # Errors
    /// A name that is not a DNS name, a bad `ttl`, or a failure to sign.
    pub fn sign_server(
        &self,
        names: Vec<SanType>,
        ttl: Duration,
    ) -> Result<(Vec<String>, KeyPair), SignError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(SignError::Sign)?;
        let chain = self.issue(names, &key, ttl)?;
        Ok((chain, key))
    }

    /// A leaf naming only `sans` for `public_key`, and the CA chain after it.
    fn issue(
        &self,
        sans: Vec<SanType>,
        public_key: &impl PublicKeyData,
        ttl: Duration,
    ) -> Result<Vec<String>, SignError> {
        let ttl = check_ttl(ttl)?;
        let mut params = CertificateParams::default();
        // An empty subject, as Istio issues: the names are in the SAN (marked critical).
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::seconds(skew_secs());
        params.not_after = (now + ttl).min(self.material.not_after());
        params.serial_number = Some(random_serial().map_err(SignError::Sign)?);

        let leaf = params
            .signed_by(public_key, self.material.issuer())
            .map_err(SignError::Sign)?;
        let mut chain = Vec::with_capacity(1 + self.material.chain().len());
        chain.push(leaf.pem());
        chain.extend(self.material.chain().iter().cloned());
        Ok(chain)
    }
}

fn skew_secs() -> i64 {
    i64::try_from(CLOCK_SKEW_SECS).unwrap_or(i64::MAX)
}

/// A random, positive 16-byte serial number (RFC 5280 §4.1.2.2).
pub(super) fn random_serial() -> Result<SerialNumber, rcgen::Error> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| rcgen::Error::RingUnspecified)?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
#[path = "sign_tests.rs"]
mod tests;
