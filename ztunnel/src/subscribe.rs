//! The subscription to the controller's config push: `Hello` as this node's ztunnel, then
//! every `ConfigUpdate` applied to the [`Directory`] and the [`Policies`], all or nothing,
//! and acknowledged (or NACKed with the reason it could not be applied). Reconnects with backoff; each new stream starts with
//! a full state.

use std::{sync::Arc, time::Duration};

use ambit_api::config::{
    Ack, ConfigUpdate, Hello, SubscribeRequest, SubscriberKind,
    config_service_client::ConfigServiceClient, subscribe_request::Request,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use tracing::{info, warn};

use crate::{directory::Directory, policy::Policies};

/// First wait after a failed or ended subscription.
pub const MIN_RESUBSCRIBE_DELAY_MS: u64 = 200;
/// Longest wait between subscription attempts.
pub const MAX_RESUBSCRIBE_DELAY_MS: u64 = 5_000;
/// How long connecting to the controller may take.
pub const CONTROLLER_CONNECT_TIMEOUT_SECS: u64 = 5;

/// Why one subscription ended.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error(
        "invalid --controller-address {address:?}: {reason} (expected e.g. http://198.19.255.1:15010)"
    )]
    Address { address: String, reason: String },
    #[error(
        "the controller at {address} is unreachable ({source}) — is `ambit-controller serve` running and --controller-address right?"
    )]
    Unreachable {
        address: String,
        source: tonic::transport::Error,
    },
    #[error("the controller refused the subscription: {0}")]
    Refused(tonic::Status),
    #[error("the config stream failed: {0}")]
    Stream(tonic::Status),
    #[error("the controller closed the config stream")]
    Closed,
}

/// What the push keeps up to date.
#[derive(Debug, Clone)]
pub struct Targets {
    pub directory: Arc<Directory>,
    pub policies: Arc<Policies>,
}

impl Targets {
    /// Applies `update` to both, or to neither.
    fn apply(&self, update: &ConfigUpdate) -> Result<(), String> {
        let staged = self.policies.stage(update).map_err(|e| e.to_string())?;
        self.directory.apply(update).map_err(|e| e.to_string())?;
        let closed = self.policies.commit(staged);
        if closed > 0 {
            info!(closed, "closed connections the new policy forbids");
        }
        Ok(())
    }
}

/// Keeps `targets` in step with the controller, forever.
pub async fn run(address: String, node: String, targets: Targets) {
    let mut delay = Duration::from_millis(MIN_RESUBSCRIBE_DELAY_MS);
    loop {
        match subscribe_once(&address, &node, &targets).await {
            Ok(()) => {}
            Err(error @ SubscribeError::Address { .. }) => {
                warn!(%error, "not subscribing to the controller");
                return;
            }
            Err(error) => warn!(%error, retry_in = ?delay, "config subscription ended"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(MAX_RESUBSCRIBE_DELAY_MS));
    }
}

async fn subscribe_once(
    address: &str,
    node: &str,
    targets: &Targets,
) -> Result<(), SubscribeError> {
    let endpoint = Endpoint::from_shared(address.to_owned())
        .map_err(|error| SubscribeError::Address {
            address: address.to_owned(),
            reason: error.to_string(),
        })?
        .connect_timeout(Duration::from_secs(CONTROLLER_CONNECT_TIMEOUT_SECS));
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| SubscribeError::Unreachable {
            address: address.to_owned(),
            source,
        })?;
    let (requests, receiver) = mpsc::channel(16);
    let hello = SubscribeRequest {
        request: Some(Request::Hello(Hello {
            node: node.to_owned(),
            kind: SubscriberKind::Ztunnel.into(),
        })),
    };
    requests
        .send(hello)
        .await
        .map_err(|_| SubscribeError::Closed)?;
    let mut updates = ConfigServiceClient::new(channel)
        .subscribe(ReceiverStream::new(receiver))
        .await
        .map_err(SubscribeError::Refused)?
        .into_inner();
    info!(%address, %node, "subscribed to the controller's config push");
    while let Some(update) = updates.message().await.map_err(SubscribeError::Stream)? {
        let error = match targets.apply(&update) {
            Ok(()) => {
                info!(
                    version = update.version,
                    full = update.full,
                    peers = targets.directory.len(),
                    "applied config"
                );
                String::new()
            }
            Err(error) => {
                warn!(version = update.version, %error, "rejected config (NACK)");
                error
            }
        };
        let ack = SubscribeRequest {
            request: Some(Request::Ack(Ack {
                version: update.version,
                error,
            })),
        };
        if requests.send(ack).await.is_err() {
            return Err(SubscribeError::Closed);
        }
    }
    Err(SubscribeError::Closed)
}

#[cfg(test)]
#[path = "subscribe_tests.rs"]
mod tests;
