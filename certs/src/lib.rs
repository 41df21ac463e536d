//! Workload certificates: for every identity it serves (ztunnel: each identity with a pod
//! on its node; a waypoint: its own), a proxy holds a key and a certificate from the mesh
//! CA (Istio's `IstioCertificateService`), and renews it at half its lifetime.
//!
//! # Layout
//! - [`schedule`]: when to renew, and the backoff between failed attempts;
//! - [`fetch`]: one key, one CSR, one `CreateCertificate` call;
//! - [`store`]: the certificates held, one per identity, reference-counted by pods.
//!
//! A fetch never blocks a pod's hand-off: pods register interest and the store fetches in
//! the background. When the CA is away, the certificate held keeps serving and the store
//! retries with backoff.
#![forbid(unsafe_code)]

pub mod fetch;
pub mod schedule;
pub mod store;

use std::path::PathBuf;

use ambit_api::bearer::TokenFileError;

pub use self::{
    fetch::{CaClient, Issued},
    store::{CertLease, CertificateStore},
};

/// Why a certificate could not be obtained (or the CA client not built).
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("--ca-address: {0}")]
    Channel(#[from] ambit_api::channel::ChannelError),
    #[error("the CA token (--ca-token-file): {0}")]
    Token(#[from] TokenFileError),
    #[error(
        "cannot read the mesh root {path}: {source} — check --ca-root-file (the CA's root-cert.pem)"
    )]
    RootFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate — check --ca-root-file")]
    NoRoot { path: PathBuf },
    #[error("cannot generate a key or CSR: {0}")]
    Csr(#[from] rcgen::Error),
    #[error(
        "the CA at {address} is unreachable ({message}) — is `ambit-controller serve-ca` running and --ca-address right?"
    )]
    Unreachable { address: String, message: String },
    #[error("the CA refused the request ({code:?}): {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("the CA returned no certificate chain")]
    EmptyChain,
    #[error("the CA returned a chain that is not PEM: {0}")]
    Pem(#[from] pem::PemError),
    #[error("the CA returned an unreadable certificate: {0}")]
    Certificate(String),
    #[error("the CA issued {issued} when {requested} was asked for")]
    WrongIdentity { requested: String, issued: String },
}
