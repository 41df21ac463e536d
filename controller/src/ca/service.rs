//! The gRPC service: Istio's `IstioCertificateService.CreateCertificate`.
//!
//! Each request goes through the same steps, and the first that fails decides the
//! answer: authenticate the caller (`Unauthenticated`), parse the CSR and the lifetime
//! (`InvalidArgument`), find the identity asked for (`ImpersonatedIdentity` metadata, else
//! the CSR's URI SAN), check the caller may obtain it — a workload on its node, or its
//! own service account's (`PermissionDenied`), sign. A
//! token that cannot be checked now (the Kubernetes API unreachable) is `Unavailable`,
//! counted with the internal errors. Every
//! outcome is logged with its reason and counted in [`CaMetrics`].

use std::{
    future::Future,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ambit_api::ca::{
    IMPERSONATED_IDENTITY_KEY, IstioCertificateRequest, IstioCertificateResponse,
    istio_certificate_service_server::{IstioCertificateService, IstioCertificateServiceServer},
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::{Request, Response, Status, metadata::MetadataMap};

use super::{
    auth::{AuthError, Authenticator, Caller, Placement, request_token},
    identity::{Identity, IdentityError},
    sign::{Csr, DEFAULT_CERT_TTL_SECS, SignError, Signer, check_ttl},
};

/// Why a certificate request was refused; each maps to one gRPC status code.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Unauthenticated(AuthError),
    #[error("{0}")]
    PermissionDenied(AuthError),
    #[error("{0}")]
    BadRequest(#[from] SignError),
    #[error("the requested identity is not valid: {0}")]
    BadIdentity(#[from] IdentityError),
    #[error("validity_duration {0} s is negative: ask for 1 s or more, or 0 for the default")]
    NegativeTtl(i64),
    #[error("the placement of workloads is unavailable: {0}")]
    Internal(String),
    #[error("{0}")]
    AuthUnavailable(AuthError),
}

impl Refusal {
    fn status(&self) -> Status {
        let message = self.to_string();
        match self {
            Self::Unauthenticated(_) => Status::unauthenticated(message),
            Self::PermissionDenied(_) => Status::permission_denied(message),
            Self::BadRequest(e) if !e.is_caller_error() => Status::internal(message),
            Self::BadRequest(_) | Self::BadIdentity(_) | Self::NegativeTtl(_) => {
                Status::invalid_argument(message)
            }
            Self::Internal(_) => Status::internal(message),
            Self::AuthUnavailable(_) => Status::unavailable(message),
        }
    }
}

/// How many requests ended each way.
#[derive(Debug, Default)]
pub struct CaMetrics {
    issued: AtomicU64,
    unauthenticated: AtomicU64,
    permission_denied: AtomicU64,
    invalid_argument: AtomicU64,
    internal: AtomicU64,
}

/// A copy of [`CaMetrics`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaCounts {
    pub issued: u64,
    pub unauthenticated: u64,
    pub permission_denied: u64,
    pub invalid_argument: u64,
    pub internal: u64,
}

impl CaMetrics {
    #[must_use]
    pub fn snapshot(&self) -> CaCounts {
        CaCounts {
            issued: self.issued.load(Ordering::Relaxed),
            unauthenticated: self.unauthenticated.load(Ordering::Relaxed),
            permission_denied: self.permission_denied.load(Ordering::Relaxed),
            invalid_argument: self.invalid_argument.load(Ordering::Relaxed),
            internal: self.internal.load(Ordering::Relaxed),
        }
    }

    fn count(&self, status: &Status) {
        let counter = match status.code() {
            tonic::Code::Unauthenticated => &self.unauthenticated,
            tonic::Code::PermissionDenied => &self.permission_denied,
            tonic::Code::InvalidArgument => &self.invalid_argument,
            _ => &self.internal,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The certificate service: a signer, an authenticator, and where workloads run.
#[derive(Debug)]
pub struct CaService<A> {
    signer: Arc<Signer>,
    authenticator: Arc<A>,
    placement: Arc<RwLock<Arc<Placement>>>,
    metrics: Arc<CaMetrics>,
}

impl<A> Clone for CaService<A> {
    fn clone(&self) -> Self {
        Self {
            signer: Arc::clone(&self.signer),
            authenticator: Arc::clone(&self.authenticator),
            placement: Arc::clone(&self.placement),
            metrics: Arc::clone(&self.metrics),
        }
    }
}

impl<A: Authenticator> CaService<A> {
    #[must_use]
    pub fn new(signer: Signer, authenticator: A, placement: Placement) -> Self {
        Self {
            signer: Arc::new(signer),
            authenticator: Arc::new(authenticator),
            placement: Arc::new(RwLock::new(Arc::new(placement))),
            metrics: Arc::default(),
        }
    }

    /// Replaces where workloads run (when the model changes).
    pub fn set_placement(&self, placement: Placement) {
        let placement = Arc::new(placement);
        match self.placement.write() {
            Ok(mut slot) => *slot = placement,
            Err(poisoned) => *poisoned.into_inner() = placement,
        }
    }

    #[must_use]
    pub fn metrics(&self) -> Arc<CaMetrics> {
        Arc::clone(&self.metrics)
    }

    #[must_use]
    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
    }

    async fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, Refusal> {
        let token = request_token(metadata).map_err(Refusal::Unauthenticated)?;
        self.authenticator
            .authenticate(token)
            .await
            .map_err(|error| match error {
                // Not the caller's fault: it may try again.
                AuthError::ReviewFailed(_) => Refusal::AuthUnavailable(error),
                error => Refusal::Unauthenticated(error),
            })
    }

    async fn issue(
        &self,
        metadata: &MetadataMap,
        request: &IstioCertificateRequest,
        caller: &mut Option<Caller>,
    ) -> Result<(Identity, Vec<String>), Refusal> {
        let caller: &Caller = caller.insert(self.authenticate(metadata).await?);
        let csr = Csr::parse(&request.csr)?;
        let ttl = match request.validity_duration {
            // proto3 cannot tell 0 from absent: Istio's CA reads both as "the default".
            0 => Duration::from_secs(DEFAULT_CERT_TTL_SECS),
            secs => {
                let secs = u64::try_from(secs).map_err(|_| Refusal::NegativeTtl(secs))?;
                check_ttl(Duration::from_secs(secs))?
            }
        };
        let identity: Identity = match impersonated(request) {
            Some(uri) => uri.parse()?,
            None => csr.requested_uri()?.parse()?,
        };
        let placement = match self.placement.read() {
            Ok(placement) => Arc::clone(&placement),
            Err(_) => return Err(Refusal::Internal("a lock was poisoned".into())),
        };
        placement
            .authorize(caller, &identity)
            .map_err(Refusal::PermissionDenied)?;
        let chain = self.signer.sign_csr(&csr, &identity, ttl)?;
        Ok((identity, chain))
    }
}

/// The `ImpersonatedIdentity` metadata value, if the request has one.
fn impersonated(request: &IstioCertificateRequest) -> Option<&str> {
    let value = request
        .metadata
        .as_ref()?
        .fields
        .get(IMPERSONATED_IDENTITY_KEY)?;
    match value.kind.as_ref()? {
        prost_types::value::Kind::StringValue(uri) => Some(uri),
        _ => None,
    }
}

#[tonic::async_trait]
impl<A: Authenticator> IstioCertificateService for CaService<A> {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let peer = request.remote_addr();
        let mut caller = None;
        let outcome = self
            .issue(request.metadata(), request.get_ref(), &mut caller)
            .await;
        let caller = caller.as_ref().map(ToString::to_string);
        let caller = caller.as_deref();
        match outcome {
            Ok((identity, cert_chain)) => {
                self.metrics.issued.fetch_add(1, Ordering::Relaxed);
                tracing::info!(?peer, caller, %identity, ttl_secs = request.get_ref().validity_duration, "certificate issued");
                Ok(Response::new(IstioCertificateResponse { cert_chain }))
            }
            Err(refusal) => {
                let status = refusal.status();
                self.metrics.count(&status);
                tracing::warn!(?peer, caller, code = ?status.code(), reason = %refusal, "certificate refused");
                Err(status)
            }
        }
    }
}

/// Why the server stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the CA's gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Serves `service` on `listener` over TLS (`tls`, the controller's serving certificate)
/// until `shutdown` completes, then finishes the requests in flight.
///
/// # Errors
/// [`ServeError`] when the server fails.
pub async fn serve<A: Authenticator>(
    listener: TcpListener,
    service: CaService<A>,
    tls: TlsAcceptor,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    tonic::transport::Server::builder()
        .add_service(IstioCertificateServiceServer::new(service))
        .serve_with_incoming_shutdown(crate::serving::incoming(listener, tls), shutdown)
        .await?;
    Ok(())
}
