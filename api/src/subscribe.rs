//! The client side of Ambit's config push: subscribe as a node's agent, ztunnel or a
//! waypoint, apply every `ConfigUpdate` with the caller's function and acknowledge it
//! (or NACK it with the reason it could not be applied) once all its parts arrived
//! ([`crate::update_parts`]). Reconnects with backoff; each new stream starts with a
//! full state. The one place a subscriber's loop is written.
//!
//! With a token file, each (re)connection reads it again (projected tokens rotate) and
//! presents it as `authorization: Bearer <token>`: the controller refuses a subscriber it
//! cannot authenticate, or one asking for another node's config. The connection is TLS
//! verified against the mesh root ([`crate::channel`]), read again at each connection.

use std::{path::PathBuf, time::Duration};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{info, warn};

use crate::{
    bearer::{self, AUTHORIZATION, TokenFileError},
    channel::{self, ChannelError},
    config::{
        Ack, ConfigUpdate, Hello, SubscribeRequest, SubscriberKind,
        config_service_client::ConfigServiceClient, subscribe_request::Request,
    },
    update_parts::{Assembler, PartMismatch},
};

/// First wait after a failed or ended subscription.
pub const MIN_RESUBSCRIBE_DELAY_MS: u64 = 200;
/// Longest wait between subscription attempts.
pub const MAX_RESUBSCRIBE_DELAY_MS: u64 = 5_000;
/// How long connecting to the controller may take.
pub const CONTROLLER_CONNECT_TIMEOUT_SECS: u64 = 5;

/// Why one subscription ended.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("--controller-address: {0}")]
    Address(ChannelError),
    #[error("--controller-address {address}: {source}")]
    Root {
        address: String,
        source: ChannelError,
    },
    #[error(
        "the controller at {address} is unreachable ({reason}) — is `ambit-controller serve` running and --controller-address right?"
    )]
    Unreachable { address: String, reason: String },
    #[error("no token for the controller: {0}")]
    Token(#[from] TokenFileError),
    #[error("the controller refused the subscription ({:?}): {}", .0.code(), .0.message())]
    Refused(tonic::Status),
    #[error("the config stream failed: {0}")]
    Stream(tonic::Status),
    #[error("the config stream is out of step: {0}")]
    Parts(#[from] PartMismatch),
    #[error("the controller closed the config stream")]
    Closed,
}

/// Who subscribes, and where.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The controller, e.g. `https://198.19.255.1:15010`.
    pub address: String,
    /// The mesh root the controller's certificate must chain to (`--ca-root-file`).
    pub root_file: Option<PathBuf>,
    pub node: String,
    pub kind: SubscriberKind,
    /// The token to present (the node's bootstrap token, or the pod's projected
    /// service-account token); `None` presents none, for a controller that checks none.
    pub token_file: Option<PathBuf>,
}

/// Applies one update: `Ok` with a line for the log, or `Err` with the NACK's reason
/// (the subscriber keeps what it had). The update is the subscriber's: it may move out
/// of it, and it is freed before the function returns (so a subscriber can hand the
/// memory of a large update back to the system once it is applied).
pub type Apply<'a> = dyn FnMut(ConfigUpdate) -> Result<String, String> + Send + 'a;

/// Keeps the subscriber in step with the controller through `apply`, forever (or until
/// the address turns out unusable).
pub async fn run(subscription: Subscription, apply: &mut Apply<'_>) {
    let mut delay = Duration::from_millis(MIN_RESUBSCRIBE_DELAY_MS);
    loop {
        match subscribe_once(&subscription, apply).await {
            Ok(()) => {}
            Err(error @ SubscribeError::Address(_)) => {
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
    subscription: &Subscription,
    apply: &mut Apply<'_>,
) -> Result<(), SubscribeError> {
    let (address, node) = (subscription.address.as_str(), subscription.node.as_str());
    let endpoint = channel::endpoint(
        address,
        subscription.root_file.as_deref(),
        subscription.token_file.is_some(),
    )
    .map_err(|error| match error {
        // A root file may be mounted late, or rotated: try again.
        ChannelError::RootRead { .. } | ChannelError::RootEmpty { .. } => SubscribeError::Root {
            address: address.to_owned(),
            source: error,
        },
        error => SubscribeError::Address(error),
    })?
    .connect_timeout(Duration::from_secs(CONTROLLER_CONNECT_TIMEOUT_SECS));
    let channel = endpoint
        .connect()
        .await
        .map_err(|error| SubscribeError::Unreachable {
            address: address.to_owned(),
            reason: channel::describe(&error),
        })?;
    let (requests, receiver) = mpsc::channel(16);
    let hello = SubscribeRequest {
        request: Some(Request::Hello(Hello {
            node: node.to_owned(),
            kind: subscription.kind.into(),
        })),
    };
    requests
        .send(hello)
        .await
        .map_err(|_| SubscribeError::Closed)?;
    let mut request = tonic::Request::new(ReceiverStream::new(receiver));
    if let Some(token_file) = &subscription.token_file {
        let token = bearer::authorization(token_file)?;
        request.metadata_mut().insert(AUTHORIZATION, token);
    }
    let mut updates = ConfigServiceClient::new(channel)
        .subscribe(request)
        .await
        .map_err(SubscribeError::Refused)?
        .into_inner();
    info!(%address, %node, kind = ?subscription.kind, "subscribed to the controller's config push");
    let mut parts = Assembler::default();
    while let Some(part) = updates.message().await.map_err(SubscribeError::Stream)? {
        let Some(update) = parts.add(part)? else {
            continue;
        };
        let (version, full) = (update.version, update.full);
        let error = match apply(update) {
            Ok(summary) => {
                info!(version, full, %summary, "applied config");
                String::new()
            }
            Err(error) => {
                warn!(version, %error, "rejected config (NACK)");
                error
            }
        };
        let ack = SubscribeRequest {
            request: Some(Request::Ack(Ack { version, error })),
        };
        if requests.send(ack).await.is_err() {
            return Err(SubscribeError::Closed);
        }
    }
    Err(SubscribeError::Closed)
}
