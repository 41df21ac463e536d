//! The certificate authority: signs every workload's certificate, as istiod does.
//!
//! A node's ztunnel calls `CreateCertificate` (Istio's own gRPC API, so Istio's ztunnel
//! can call it too) with a CSR and the identity it wants; the CA checks who is calling
//! and that the identity belongs to a workload on the caller's node (or, for a pod
//! presenting its own service-account token, is its own), then issues an X.509
//! certificate whose only name is the SPIFFE URI SAN
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! # Layout
//! - [`material`]: the root and signing key, from Istio's plug-in CA folder or generated
//!   and persisted on first start;
//! - [`identity`]: SPIFFE identities;
//! - [`sign`]: CSR parsing and certificate issuance, lifetimes;
//! - [`auth`]: caller authentication (bootstrap token files) and authorization (node
//!   placement, or a service account's own identity);
//! - [`token_review`]: caller authentication in Kubernetes mode (`TokenReview`);
//! - [`service`]: the gRPC service, its metrics and [`service::serve`];
//! - [`follow_placement`]: placement kept in step with the watched model (folder or
//!   Kubernetes API).

pub mod auth;
pub use ambit_api::identity;
pub mod material;
pub mod service;
pub mod sign;
pub mod token_review;

use std::{fmt::Debug, path::PathBuf};

use ambit_api::manifests::{ManifestError, Manifests};

use self::{
    auth::{Authenticator, Placement},
    identity::{IdentityError, check_trust_domain},
    material::{CaMaterial, MaterialError},
    service::CaService,
    sign::Signer,
};

/// Why the CA could not start.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Material(#[from] MaterialError),
    #[error(transparent)]
    Config(#[from] ManifestError),
    #[error(transparent)]
    TrustDomain(#[from] IdentityError),
    #[error(transparent)]
    TokenReview(#[from] token_review::TokenReviewError),
}

/// What `ambit-controller serve-ca` needs besides its listener and its authenticator.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// Istio's plug-in CA folder; generated into when empty.
    pub ca_dir: PathBuf,
    /// The Kubernetes manifests that say which pods run on which node; `None` when the
    /// placement comes from the Kubernetes API (`--kube`), through
    /// [`follow_placement`] only.
    pub config_dir: Option<PathBuf>,
    /// The SPIFFE trust domain (`cluster.local` by default).
    pub trust_domain: String,
}

/// Gives `service` the placement of the model's current version now, and returns the
/// task that keeps it in step with each later version, until the model source ends.
pub fn follow_placement<A: Authenticator>(
    mut model: crate::source::ModelSource,
    service: CaService<A>,
    trust_domain: String,
) -> impl Future<Output = ()> {
    let place = move |model: &mut crate::source::ModelSource| {
        let placement = Placement::from_mesh(&model.borrow_and_update().mesh, &trust_domain);
        tracing::info!(
            nodes_with_workloads = placement.node_count(),
            "workload placement updated"
        );
        service.set_placement(placement);
    };
    place(&mut model);
    async move {
        while model.changed().await.is_ok() {
            place(&mut model);
        }
    }
}

/// Reads the CA material and the config folder if any, and builds the service, which
/// authenticates callers with `authenticator`.
/// Logs the effective configuration, and each manifest that could not be read.
///
/// # Errors
/// A [`CaError`] naming the file or value at fault.
pub fn build<A: Authenticator + Debug>(
    config: &CaConfig,
    authenticator: A,
) -> Result<CaService<A>, CaError> {
    check_trust_domain(&config.trust_domain)?;
    let material = CaMaterial::load_or_create(&config.ca_dir, &config.trust_domain)?;
    let placement = match &config.config_dir {
        Some(config_dir) => {
            let manifests = Manifests::load_dir(config_dir)?;
            for error in &manifests.errors {
                tracing::warn!(%error, "manifest skipped");
            }
            Placement::from_manifests(&manifests, &config.trust_domain)
        }
        None => Placement::from_manifests(&Manifests::default(), &config.trust_domain),
    };
    tracing::info!(
        ca_dir = %config.ca_dir.display(),
        root = ?material.origin(),
        ca_not_after = %material.not_after(),
        ?authenticator,
        config_dir = ?config.config_dir,
        nodes_with_workloads = placement.node_count(),
        trust_domain = %config.trust_domain,
        "certificate authority configured"
    );
    Ok(CaService::new(
        Signer::new(material, &config.trust_domain),
        authenticator,
        placement,
    ))
}
