//! The `ConfigService` gRPC service: one session task per subscriber stream, and the
//! registry of who is subscribed, what they were sent, acknowledged and rejected, and
//! how many were refused at the [`Gate`].

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use ambit_api::{
    config::{
        Ack, ConfigUpdate, SubscribeRequest, SubscriberKind,
        config_service_server::{ConfigService, ConfigServiceServer},
        subscribe_request::Request as Req,
    },
    update_parts::{self, MAX_PART_BYTES},
};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use super::{
    PushError,
    access::{Gate, Refusal},
    select::Subscriber,
    selections::Selection,
};
use crate::source::ModelSource;

/// How many updates may wait for a slow subscriber before its session waits too.
const UPDATE_BUFFER: usize = 16;

/// A rejected version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nack {
    pub version: u64,
    pub error: String,
}

/// One connected subscriber, as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriberStatus {
    /// Unique per stream.
    pub id: u64,
    pub node: String,
    pub kind: SubscriberKind,
    /// The last version sent.
    pub sent_version: u64,
    /// The last version acknowledged; what the subscriber runs.
    pub acked_version: Option<u64>,
    pub last_nack: Option<Nack>,
    pub nacks: u64,
}

/// Totals over every stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushCounts {
    pub updates: u64,
    pub acks: u64,
    pub nacks: u64,
    /// Subscriptions refused: no token, or one the authenticator does not accept.
    pub unauthenticated: u64,
    /// Subscriptions refused: another node's, or a kind the caller may not be.
    pub permission_denied: u64,
    /// Subscriptions refused because the token could not be checked now.
    pub unavailable: u64,
}

#[derive(Debug, Default)]
struct Registry {
    next_id: AtomicU64,
    subscribers: Mutex<BTreeMap<u64, SubscriberStatus>>,
    updates: AtomicU64,
    acks: AtomicU64,
    nacks: AtomicU64,
    unauthenticated: AtomicU64,
    permission_denied: AtomicU64,
    unavailable: AtomicU64,
}

impl Registry {
    fn with<R>(&self, f: impl FnOnce(&mut BTreeMap<u64, SubscriberStatus>) -> R) -> R {
        f(&mut self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner))
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut SubscriberStatus)) {
        self.with(|subscribers| subscribers.get_mut(&id).map(f));
    }

    fn count_refusal(&self, refusal: &Refusal) {
        let counter = match refusal {
            Refusal::Unauthenticated(_) => &self.unauthenticated,
            Refusal::Unavailable(_) => &self.unavailable,
            Refusal::OtherNode { .. } | Refusal::NotAProxy { .. } => &self.permission_denied,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The service. Clones share the registry.
#[derive(Debug, Clone)]
pub struct ConfigServer {
    model: ModelSource,
    gate: Gate,
    registry: Arc<Registry>,
    drain: tokio::sync::watch::Receiver<bool>,
}

impl ConfigServer {
    /// A service pushing what `model` holds to the subscribers `gate` lets in.
    #[must_use]
    pub fn new(model: ModelSource, gate: Gate) -> Self {
        // Never drained unless served through [`serve`].
        let (_, drain) = tokio::sync::watch::channel(false);
        Self {
            model,
            gate,
            registry: Arc::default(),
            drain,
        }
    }

    /// The connected subscribers.
    #[must_use]
    pub fn subscribers(&self) -> Vec<SubscriberStatus> {
        self.registry.with(|s| s.values().cloned().collect())
    }

    /// Totals since start.
    #[must_use]
    pub fn counts(&self) -> PushCounts {
        PushCounts {
            updates: self.registry.updates.load(Ordering::Relaxed),
            acks: self.registry.acks.load(Ordering::Relaxed),
            nacks: self.registry.nacks.load(Ordering::Relaxed),
            unauthenticated: self.registry.unauthenticated.load(Ordering::Relaxed),
            permission_denied: self.registry.permission_denied.load(Ordering::Relaxed),
            unavailable: self.registry.unavailable.load(Ordering::Relaxed),
        }
    }
}

type UpdateStream = ReceiverStream<Result<ConfigUpdate, Status>>;

#[tonic::async_trait]
impl ConfigService for ConfigServer {
    type SubscribeStream = UpdateStream;

    async fn subscribe(
        &self,
        request: Request<Streaming<SubscribeRequest>>,
    ) -> Result<Response<UpdateStream>, Status> {
        let peer = request.remote_addr();
        let (metadata, _, mut requests) = request.into_parts();
        let hello = match requests.message().await? {
            Some(SubscribeRequest {
                request: Some(Req::Hello(hello)),
            }) => hello,
            _ => {
                return Err(Status::invalid_argument(
                    "the first request must be a `hello` naming the node and the subscriber kind",
                ));
            }
        };
        let kind = SubscriberKind::try_from(hello.kind).unwrap_or(SubscriberKind::Unspecified);
        if kind == SubscriberKind::Unspecified || hello.node.is_empty() {
            return Err(Status::invalid_argument(
                "`hello` must name the node and a kind: AGENT, ZTUNNEL or WAYPOINT",
            ));
        }
        let subscriber = Subscriber {
            node: hello.node,
            kind,
        };
        let caller = match self.gate.admit(&metadata, &subscriber).await {
            Ok(caller) => caller.map(|caller| caller.to_string()),
            Err(refusal) => {
                self.registry.count_refusal(&refusal);
                tracing::warn!(node = %subscriber.node, kind = kind.as_str_name(), ?peer, reason = %refusal, "subscription refused");
                return Err(refusal.status());
            }
        };
        let id = self.registry.next_id.fetch_add(1, Ordering::Relaxed);
        self.registry.with(|s| {
            s.insert(
                id,
                SubscriberStatus {
                    id,
                    node: subscriber.node.clone(),
                    kind,
                    sent_version: 0,
                    acked_version: None,
                    last_nack: None,
                    nacks: 0,
                },
            )
        });
        tracing::info!(id, node = %subscriber.node, kind = kind.as_str_name(), ?peer, caller, "subscribed");
        let (updates, stream) = mpsc::channel(UPDATE_BUFFER);
        let session = Session {
            id,
            subscriber,
            registry: Arc::clone(&self.registry),
            sent_shared: Arc::default(),
            sent_node: Arc::default(),
            needs_full: true,
        };
        let span = tracing::info_span!(
            "subscriber",
            id,
            node = %session.subscriber.node,
            kind = kind.as_str_name(),
            ?peer
        );
        tokio::spawn(
            session
                .run(self.model.clone(), requests, updates, self.drain.clone())
                .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

/// One subscriber's stream.
struct Session {
    id: u64,
    subscriber: Subscriber,
    registry: Arc<Registry>,
    /// What the subscriber was last sent: the part every subscriber of its kind gets,
    /// and its node's part (shared with the snapshot, not copied).
    sent_shared: Arc<Selection>,
    sent_node: Arc<Selection>,
    /// Whether the next update must be a full state (first update, or after a NACK).
    needs_full: bool,
}

impl Session {
    async fn run(
        mut self,
        mut model: ModelSource,
        mut requests: Streaming<SubscribeRequest>,
        updates: mpsc::Sender<Result<ConfigUpdate, Status>>,
        mut drain: tokio::sync::watch::Receiver<bool>,
    ) {
        let snapshot = Arc::clone(&model.borrow_and_update());
        let mut open = self.push(&snapshot, &updates).await;
        while open {
            tokio::select! {
                changed = model.changed() => {
                    if changed.is_err() {
                        tracing::info!("model source stopped; closing the stream");
                        break;
                    }
                    let snapshot = Arc::clone(&model.borrow_and_update());
                    open = self.push(&snapshot, &updates).await;
                }
                request = requests.message() => match request {
                    Ok(Some(SubscribeRequest { request: Some(Req::Ack(ack)) })) => self.on_ack(ack),
                    Ok(Some(_)) => tracing::warn!("ignored a request that is not an ack"),
                    Ok(None) => break,
                    Err(status) => {
                        tracing::info!(%status, "subscriber stream failed");
                        break;
                    }
                },
                // A server not run by [`serve`] has no drain: the branch is disabled.
                Ok(()) = drain.changed() => break,
            }
        }
        self.registry.with(|s| s.remove(&self.id));
        tracing::info!("unsubscribed");
    }

    /// Sends what changed for this subscriber (or everything, when due); returns whether
    /// the stream is still open.
    async fn push(
        &mut self,
        snapshot: &crate::source::Snapshot,
        updates: &mpsc::Sender<Result<ConfigUpdate, Status>>,
    ) -> bool {
        let selections = &snapshot.selections;
        let shared = selections.shared(&snapshot.mesh, self.subscriber.kind);
        let node = selections.for_node(&snapshot.mesh, &self.subscriber);
        let update = if self.needs_full {
            ConfigUpdate {
                version: snapshot.version,
                full: true,
                upserted: shared
                    .resources()
                    .chain(node.resources())
                    .cloned()
                    .collect(),
                removed: Vec::new(),
                more: false,
            }
        } else {
            let (mut upserted, mut removed) = shared.delta_from(&self.sent_shared);
            let (node_upserted, node_removed) = node.delta_from(&self.sent_node);
            upserted.extend(node_upserted);
            removed.extend(node_removed);
            if upserted.is_empty() && removed.is_empty() {
                return true;
            }
            ConfigUpdate {
                version: snapshot.version,
                full: false,
                upserted,
                removed,
                more: false,
            }
        };
        tracing::debug!(
            version = update.version,
            full = update.full,
            upserted = update.upserted.len(),
            removed = update.removed.len(),
            "pushing"
        );
        for part in update_parts::split(update, MAX_PART_BYTES) {
            if updates.send(Ok(part)).await.is_err() {
                return false;
            }
        }
        self.needs_full = false;
        self.sent_shared = shared;
        self.sent_node = node;
        self.registry.updates.fetch_add(1, Ordering::Relaxed);
        self.registry
            .update(self.id, |s| s.sent_version = snapshot.version);
        true
    }

    fn on_ack(&mut self, ack: Ack) {
        if ack.error.is_empty() {
            self.registry.acks.fetch_add(1, Ordering::Relaxed);
            self.registry.update(self.id, |s| {
                s.acked_version = s.acked_version.max(Some(ack.version));
            });
            return;
        }
        self.registry.nacks.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            version = ack.version,
            error = %ack.error,
            "subscriber rejected a config version (NACK); it stays on its previous version and gets a full state with the next change"
        );
        // The subscriber still holds what it acknowledged last, not what was sent.
        self.needs_full = true;
        self.registry.update(self.id, |s| {
            s.nacks += 1;
            s.last_nack = Some(Nack {
                version: ack.version,
                error: ack.error,
            });
        });
    }
}

/// Serves `server` on `listener` over TLS (`tls`, the controller's serving certificate)
/// until `shutdown` completes; then ends every subscriber stream and finishes the
/// requests in flight.
///
/// # Errors
/// [`PushError`] when the server fails.
pub async fn serve(
    listener: TcpListener,
    mut server: ConfigServer,
    tls: TlsAcceptor,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PushError> {
    let (drain_tx, drain) = tokio::sync::watch::channel(false);
    server.drain = drain;
    let shutdown = async move {
        shutdown.await;
        let _ = drain_tx.send(true);
    };
    tonic::transport::Server::builder()
        .add_service(ConfigServiceServer::new(server))
        .serve_with_incoming_shutdown(crate::serving::incoming(listener, tls), shutdown)
        .await?;
    Ok(())
}
