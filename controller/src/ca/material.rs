//! The CA's signing key and certificates, in Istio's plug-in CA folder layout.
//!
//! | file             | holds                                                       |
//! |------------------|-------------------------------------------------------------|
//! | `ca-cert.pem`    | the certificate that signs workload certificates            |
//! | `ca-key.pem`     | its private key (PKCS#8)                                    |
//! | `cert-chain.pem` | the chain from `ca-cert` up towards the root                |
//! | `root-cert.pem`  | the trust root every workload trusts                        |
//!
//! A folder holding none of these files gets a freshly generated self-signed root
//! (ECDSA P-256, ten years), written back in the same layout so a restart keeps the same
//! trust root. A folder holding only some of them is an error: guessing would silently
//! change the mesh's trust root.
//!
//! `serve` and `serve-ca` both read the folder (`serve` issues its own serving
//! certificate from it), possibly at the same start: each takes an exclusive lock on
//! `.lock` in it while it reads or generates, so only one generates a root and the
//! other reads it.

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;

pub const CA_CERT_FILE: &str = "ca-cert.pem";
pub const CA_KEY_FILE: &str = "ca-key.pem";
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";
pub const ROOT_CERT_FILE: &str = "root-cert.pem";
/// Locked while a process reads or generates the material.
pub const LOCK_FILE: &str = ".lock";
/// The four files, in the order they are reported.
pub const LAYOUT: [&str; 4] = [CA_CERT_FILE, CA_KEY_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE];

/// How long a generated root lives.
pub const GENERATED_ROOT_TTL_DAYS: i64 = 3650;

/// Why the CA folder could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error(
        "CA folder {dir} holds {present:?} but not {missing:?}: provide all four plug-in CA files (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem), or empty the folder to generate a new root"
    )]
    Incomplete {
        dir: PathBuf,
        present: Vec<&'static str>,
        missing: Vec<&'static str>,
    },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source} — is the CA folder writable?")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot generate the root certificate: {0}")]
    Generate(rcgen::Error),
}

/// Where the material came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Read from a plug-in CA folder (possibly one Ambit generated on an earlier start).
    Loaded,
    /// Generated on this start and written to the folder.
    Generated,
}

/// The signing key, its certificate and the chain up to the trust root.
pub struct CaMaterial {
    issuer: Issuer<'static, KeyPair>,
    /// PEM certificates above a leaf, one per element: `ca-cert` first, the root last.
    chain: Vec<String>,
    root_pem: String,
    /// When `ca-cert` expires: no leaf outlives it.
    not_after: OffsetDateTime,
    origin: Origin,
}

impl std::fmt::Debug for CaMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaMaterial")
            .field("chain_len", &self.chain.len())
            .field("not_after", &self.not_after)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl CaMaterial {
    /// Uses the plug-in CA files in `dir`, or generates a root with subject
    /// `O=<organization>` (the trust domain, as Istio does) and writes it there when `dir`
    /// is missing or holds none of them.
    ///
    /// # Errors
    /// [`MaterialError::Incomplete`] for half a layout, and read, parse, consistency or
    /// write errors naming the file.
    pub fn load_or_create(dir: &Path, organization: &str) -> Result<Self, MaterialError> {
        fs::create_dir_all(dir).map_err(|source| MaterialError::Write {
            path: dir.to_owned(),
            source,
        })?;
        // A read-only folder (a mounted Secret) cannot be generated into: no lock needed.
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))
            .ok();
        if let Some(lock) = &lock {
            lock.lock().map_err(|source| MaterialError::Write {
                path: dir.join(LOCK_FILE),
                source,
            })?;
        }
        let (present, missing): (Vec<_>, Vec<_>) =
            LAYOUT.into_iter().partition(|file| dir.join(file).exists());
        if present.is_empty() {
            return Self::generate(dir, organization);
        }
        if !missing.is_empty() {
            return Err(MaterialError::Incomplete {
                dir: dir.to_owned(),
                present,
                missing,
            });
        }
        Self::load(dir)
    }

    /// The certificates to send after a leaf: `ca-cert` first, the root last.
    #[must_use]
    pub fn chain(&self) -> &[String] {
        &self.chain
    }

    /// The trust root, PEM.
    #[must_use]
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// When the signing certificate expires.
    #[must_use]
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    #[must_use]
    pub fn origin(&self) -> Origin {
        self.origin
    }

    pub(super) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    fn load(dir: &Path) -> Result<Self, MaterialError> {
        let key_path = dir.join(CA_KEY_FILE);
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(|e| MaterialError::Invalid {
            path: key_path.clone(),
            reason: format!(
                "unusable private key ({e}): use an unencrypted PKCS#8 ECDSA P-256/P-384, Ed25519 or RSA key (convert with `openssl pkcs8 -topk8 -nocrypt`)"
            ),
        })?;

        let ca_path = dir.join(CA_CERT_FILE);
        let ca_pems = read_certs(&ca_path)?;
        let [ca_der] = ca_pems.as_slice() else {
            return Err(invalid(&ca_path, "expected exactly one certificate"));
        };
        let ca = parse(&ca_path, ca_der)?;
        if !ca.is_ca() {
            return Err(invalid(
                &ca_path,
                "not a CA certificate (basicConstraints CA:TRUE is missing)",
            ));
        }
        if ca.public_key().subject_public_key.as_ref() != key.public_key_raw() {
            return Err(invalid(
                &key_path,
                "this key does not belong to ca-cert.pem: put the matching pair in the folder",
            ));
        }
        let not_after = ca.validity().not_after.to_datetime();
        if not_after <= OffsetDateTime::now_utc() {
            return Err(invalid(
                &ca_path,
                &format!("expired on {not_after}: renew the intermediate"),
            ));
        }

        let root_path = dir.join(ROOT_CERT_FILE);
        let root_pems = read_certs(&root_path)?;
        let [root_der] = root_pems.as_slice() else {
            return Err(invalid(&root_path, "expected exactly one certificate"));
        };

        // ca-cert, then cert-chain without a repeated ca-cert, then the root if missing.
        let chain_path = dir.join(CERT_CHAIN_FILE);
        let mut chain = vec![ca_der.clone()];
        for der in read_certs(&chain_path)? {
            if !chain.contains(&der) {
                chain.push(der);
            }
        }
        if chain.last() != Some(root_der) {
            chain.push(root_der.clone());
        }
        check_chain(&chain, &chain_path)?;

        let issuer = Issuer::from_ca_cert_der(&ca_der.as_slice().into(), key)
            .map_err(|e| invalid(&ca_path, &format!("cannot sign with this certificate: {e}")))?;
        Ok(Self {
            issuer,
            chain: chain.iter().map(|der| to_pem(der)).collect(),
            root_pem: to_pem(root_der),
            not_after,
            origin: Origin::Loaded,
        })
    }

    fn generate(dir: &Path, organization: &str) -> Result<Self, MaterialError> {
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(MaterialError::Generate)?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, organization);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(1);
        params.not_after = now + Duration::days(GENERATED_ROOT_TTL_DAYS);
        params.serial_number = Some(super::sign::random_serial().map_err(MaterialError::Generate)?);
        let cert = params.self_signed(&key).map_err(MaterialError::Generate)?;
        let cert_pem = cert.pem();

        // The key first: a crash after it leaves a half layout, reported on restart,
        // rather than certificates whose key is lost.
        write_file(&dir.join(CA_KEY_FILE), &key.serialize_pem(), 0o600)?;
        for file in [CA_CERT_FILE, CERT_CHAIN_FILE, ROOT_CERT_FILE] {
            write_file(&dir.join(file), &cert_pem, 0o644)?;
        }
        Ok(Self {
            issuer: Issuer::new(params, key),
            chain: vec![cert_pem.clone()],
            root_pem: cert_pem,
            not_after: now + Duration::days(GENERATED_ROOT_TTL_DAYS),
            origin: Origin::Generated,
        })
    }
}

fn invalid(path: &Path, reason: &str) -> MaterialError {
    MaterialError::Invalid {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

fn read(path: &Path) -> Result<String, MaterialError> {
    fs::read_to_string(path).map_err(|source| MaterialError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The DER contents of the `CERTIFICATE` blocks of a PEM file; at least one.
fn read_certs(path: &Path) -> Result<Vec<Vec<u8>>, MaterialError> {
    let blocks =
        pem::parse_many(read(path)?).map_err(|e| invalid(path, &format!("not PEM: {e}")))?;
    let certs: Vec<_> = blocks
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if certs.is_empty() {
        return Err(invalid(path, "holds no CERTIFICATE block"));
    }
    Ok(certs)
}

fn parse<'a>(path: &Path, der: &'a [u8]) -> Result<X509Certificate<'a>, MaterialError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| invalid(path, &format!("not an X.509 certificate: {e}")))
}

/// Each certificate must be signed by the next; the last (the root) by itself.
fn check_chain(chain: &[Vec<u8>], chain_path: &Path) -> Result<(), MaterialError> {
    let certs = chain
        .iter()
        .map(|der| parse(chain_path, der))
        .collect::<Result<Vec<_>, _>>()?;
    for (index, cert) in certs.iter().enumerate() {
        let signer = certs.get(index + 1).unwrap_or(cert);
        cert.verify_signature(Some(signer.public_key()))
            .map_err(|e| {
                invalid(
                    chain_path,
                    &format!(
                        "`{}` is not signed by `{}` ({e}): ca-cert.pem, cert-chain.pem and root-cert.pem must form one chain up to the root",
                        cert.subject(),
                        signer.subject()
                    ),
                )
            })?;
    }
    Ok(())
}

/// Encodes DER as a PEM `CERTIFICATE` block with `\n` line endings.
pub(super) fn to_pem(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Writes `text` to `path` with `mode`, through a temporary file and a rename.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), MaterialError> {
    let error = |source| MaterialError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("pem.tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(error)?;
    // `mode` applies only when the file is created; a stale temporary keeps its own.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)?;
    file.sync_all().map_err(error)?;
    fs::rename(&tmp, path).map_err(error)
}

#[cfg(test)]
#[path = "material_tests.rs"]
mod tests;
