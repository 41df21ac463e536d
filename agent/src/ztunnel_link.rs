//! The agent's side of the pod hand-off to ztunnel (`api/proto/handoff.proto`): a
//! SOCK_SEQPACKET listener; ztunnel connects and says hello, the agent sends every
//! enrolled pod (each with its network-namespace fd) and `snapshot_sent`, then each
//! pod added or deleted as it happens. Every message waits for ztunnel's ack.
//!
//! One ztunnel is served at a time; when it goes away the agent waits for the next and
//! starts again with a full snapshot. Pods enrolled meanwhile stay captured (and so
//! fail closed) until ztunnel is back.

use std::{os::fd::AsFd as _, sync::Arc, time::Duration};

use ambit_api::handoff::{
    AddWorkload, AgentMessage, DeleteWorkload, PROTOCOL_VERSION, SnapshotSent, WorkloadInfo,
    ZtunnelMessage, agent_message, ztunnel_message,
};
use ambit_netns::Netns;
use prost::Message as _;
use tokio::{
    sync::{mpsc, oneshot},
    time::timeout,
};
use tokio_seqpacket::{UnixSeqpacket, UnixSeqpacketListener, ancillary::AncillaryMessageWriter};
use tracing::{Instrument as _, info, info_span, warn};

/// Largest message either side sends.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A pod as ztunnel needs it.
#[derive(Debug, Clone)]
pub struct Workload {
    pub info: WorkloadInfo,
    pub netns: Arc<Netns>,
    /// See `pod_network`: ztunnel may deliver from the client's address.
    pub transparent_delivery: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(
        "ztunnel is not connected — the pod stays captured and is handed over when ztunnel connects"
    )]
    NotConnected,
    #[error("ztunnel refused: {0}")]
    Rejected(String),
    #[error("ztunnel did not answer within {0:?}")]
    Timeout(Duration),
    #[error("ztunnel link: {0}")]
    Io(#[from] std::io::Error),
    #[error("ztunnel spoke out of turn: {0}")]
    Protocol(String),
}

enum Command {
    Add(Workload),
    Delete(String),
}

type Request = (Command, oneshot::Sender<Result<(), LinkError>>);

/// A handle for telling the connected ztunnel about pods.
#[derive(Debug, Clone)]
pub struct ZtunnelLink {
    requests: mpsc::Sender<Request>,
}

impl ZtunnelLink {
    /// Hands a pod to ztunnel and waits for its ack.
    ///
    /// # Errors
    /// [`LinkError`]; [`LinkError::NotConnected`] when no ztunnel is connected.
    pub async fn add(&self, workload: Workload) -> Result<(), LinkError> {
        self.request(Command::Add(workload)).await
    }

    /// Tells ztunnel a pod is gone and waits for its ack.
    ///
    /// # Errors
    /// As [`ZtunnelLink::add`].
    pub async fn delete(&self, uid: String) -> Result<(), LinkError> {
        self.request(Command::Delete(uid)).await
    }

    async fn request(&self, command: Command) -> Result<(), LinkError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((command, reply))
            .await
            .map_err(|_| LinkError::NotConnected)?;
        answer.await.unwrap_or(Err(LinkError::NotConnected))
    }
}

/// Starts serving ztunnel on `listener`. `snapshot` lists every enrolled pod; it is
/// called each time a ztunnel connects.
pub fn spawn(
    listener: UnixSeqpacketListener,
    ack_timeout: Duration,
    snapshot: impl Fn() -> Vec<Workload> + Send + Sync + 'static,
) -> ZtunnelLink {
    let (requests, receiver) = mpsc::channel(64);
    tokio::spawn(serve(listener, ack_timeout, snapshot, receiver));
    ZtunnelLink { requests }
}

async fn serve(
    mut listener: UnixSeqpacketListener,
    ack_timeout: Duration,
    snapshot: impl Fn() -> Vec<Workload>,
    mut requests: mpsc::Receiver<Request>,
) {
    let mut connection_id = 0u64;
    loop {
        // While no ztunnel is connected, answer requests at once.
        let socket = loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(socket) => break socket,
                    Err(error) => warn!(%error, "cannot accept a ztunnel connection"),
                },
                Some((_, reply)) = requests.recv() => {
                    let _ = reply.send(Err(LinkError::NotConnected));
                }
            }
        };
        connection_id += 1;
        let connection = Connection {
            socket,
            ack_timeout,
        };
        let span = info_span!("ztunnel", id = connection_id);
        let result = async {
            connection.handshake(snapshot()).await?;
            info!("ztunnel connected and has every enrolled pod");
            connection.relay(&mut requests).await
        }
        .instrument(span.clone())
        .await;
        span.in_scope(|| match result {
            Ok(()) => info!("ztunnel disconnected"),
            Err(error) => warn!(%error, "ztunnel link closed"),
        });
    }
}

struct Connection {
    socket: UnixSeqpacket,
    ack_timeout: Duration,
}

impl Connection {
    async fn handshake(&self, pods: Vec<Workload>) -> Result<(), LinkError> {
        match self.receive().await? {
            Some(ztunnel_message::Payload::Hello(hello)) if hello.version == PROTOCOL_VERSION => {}
            Some(ztunnel_message::Payload::Hello(hello)) => {
                return Err(LinkError::Protocol(format!(
                    "ztunnel speaks hand-off version {}, this agent {PROTOCOL_VERSION}",
                    hello.version
                )));
            }
            other => {
                return Err(LinkError::Protocol(format!(
                    "expected hello, got {other:?}"
                )));
            }
        }
        for pod in pods {
            let uid = pod.info.uid.clone();
            if let Err(error) = self.send_add(&pod).await {
                // One bad pod must not keep the others from ztunnel.
                warn!(%uid, %error, "ztunnel did not take a pod from the snapshot");
                if !matches!(error, LinkError::Rejected(_)) {
                    return Err(error);
                }
            }
        }
        self.send(&agent_message::Payload::SnapshotSent(SnapshotSent {}), None)
            .await
    }

    /// Forwards requests until ztunnel disconnects.
    async fn relay(&self, requests: &mut mpsc::Receiver<Request>) -> Result<(), LinkError> {
        let mut probe = [0u8; 1];
        loop {
            tokio::select! {
                request = requests.recv() => {
                    let Some((command, reply)) = request else { return Ok(()) };
                    let result = match command {
                        Command::Add(pod) => self.send_add(&pod).await,
                        Command::Delete(uid) => {
                            self.send(&agent_message::Payload::Delete(DeleteWorkload { uid }), None).await
                        }
                    };
                    let broken = matches!(result, Err(LinkError::Io(_) | LinkError::Timeout(_) | LinkError::Protocol(_)));
                    let _ = reply.send(result);
                    if broken {
                        return Err(LinkError::Protocol("the link broke during a request".to_owned()));
                    }
                }
                // ztunnel only speaks when asked; a readable socket means it closed.
                read = self.socket.peek(&mut probe) => {
                    return match read {
                        Ok(info) if info.bytes_read() == 0 => Ok(()),
                        Ok(_) => Err(LinkError::Protocol("unexpected message".to_owned())),
                        Err(error) => Err(error.into()),
                    };
                }
            }
        }
    }

    async fn send_add(&self, pod: &Workload) -> Result<(), LinkError> {
        let add = agent_message::Payload::Add(AddWorkload {
            workload: Some(pod.info.clone()),
            transparent_delivery: pod.transparent_delivery,
        });
        self.send(&add, Some(&pod.netns)).await
    }

    /// Sends one message (with a namespace fd for `add`) and waits for its ack.
    async fn send(
        &self,
        payload: &agent_message::Payload,
        netns: Option<&Netns>,
    ) -> Result<(), LinkError> {
        let bytes = AgentMessage {
            payload: Some(payload.clone()),
        }
        .encode_to_vec();
        let mut control = [0u8; 64];
        let mut ancillary = AncillaryMessageWriter::new(&mut control);
        if let Some(netns) = netns {
            ancillary
                .add_fds([netns.as_fd()])
                .map_err(|e| LinkError::Protocol(format!("cannot attach the netns fd: {e:?}")))?;
        }
        self.socket
            .send_with_ancillary(&bytes, &mut ancillary)
            .await?;
        match timeout(self.ack_timeout, self.receive()).await {
            Err(_) => Err(LinkError::Timeout(self.ack_timeout)),
            Ok(Ok(Some(ztunnel_message::Payload::Ack(ack)))) if ack.error.is_empty() => Ok(()),
            Ok(Ok(Some(ztunnel_message::Payload::Ack(ack)))) => Err(LinkError::Rejected(ack.error)),
            Ok(Ok(other)) => Err(LinkError::Protocol(format!(
                "expected an ack, got {other:?}"
            ))),
            Ok(Err(error)) => Err(error),
        }
    }

    async fn receive(&self) -> Result<Option<ztunnel_message::Payload>, LinkError> {
        let mut buffer = vec![0u8; MAX_MESSAGE_BYTES];
        let info = self.socket.recv(&mut buffer).await?;
        if info.bytes_read() == 0 {
            return Err(LinkError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        let message = ZtunnelMessage::decode(&buffer[..info.bytes_read()])
            .map_err(|e| LinkError::Protocol(format!("undecodable message: {e}")))?;
        Ok(message.payload)
    }
}
