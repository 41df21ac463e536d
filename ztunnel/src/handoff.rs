//! ztunnel's side of the pod hand-off (`api/proto/handoff.proto`): connect to the
//! agent, say hello, then apply each message — serve a pod, stop serving one, or
//! reconcile after a snapshot — and acknowledge it. Reconnects with backoff; pods
//! being served keep being served while the agent is away.

use std::{collections::HashSet, sync::Arc, time::Duration};

use ambit_api::handoff::{
    Ack, AgentMessage, Hello, PROTOCOL_VERSION, ZtunnelMessage, agent_message, ztunnel_message,
};
use ambit_netns::Netns;
use prost::Message as _;
use tokio_seqpacket::{UnixSeqpacket, ancillary::OwnedAncillaryMessage};
use tracing::{debug, info, warn};

use crate::{
    config::{Config, MAX_RECONNECT_DELAY_MS},
    inpod::InPod,
};

const MAX_MESSAGE_BYTES: usize = 64 * 1024;
const FIRST_RECONNECT_DELAY_MS: u64 = 50;

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("agent link: {0}")]
    Io(#[from] std::io::Error),
    #[error("undecodable message from the agent: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Talks to the agent for as long as ztunnel runs.
pub async fn run(config: Arc<Config>, inpod: Arc<InPod>) {
    let mut delay = Duration::from_millis(FIRST_RECONNECT_DELAY_MS);
    loop {
        match UnixSeqpacket::connect(&config.agent_socket).await {
            Ok(socket) => {
                info!(socket = %config.agent_socket.display(), "connected to the agent");
                delay = Duration::from_millis(FIRST_RECONNECT_DELAY_MS);
                match session(&socket, &inpod).await {
                    Ok(()) => info!("the agent closed the link; pods stay served"),
                    Err(error) => warn!(%error, "agent link failed; pods stay served"),
                }
            }
            Err(error) => debug!(%error, "agent not reachable yet"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(MAX_RECONNECT_DELAY_MS));
    }
}

async fn session(socket: &UnixSeqpacket, inpod: &InPod) -> Result<(), SessionError> {
    reply(
        socket,
        ztunnel_message::Payload::Hello(Hello {
            version: PROTOCOL_VERSION,
        }),
    )
    .await?;
    let mut in_snapshot: Option<HashSet<String>> = Some(HashSet::new());
    let mut buffer = vec![0u8; MAX_MESSAGE_BYTES];
    let mut control = [0u8; 128];
    loop {
        let (info, ancillary) = socket
            .recv_with_ancillary(&mut buffer, &mut control)
            .await?;
        if info.bytes_read() == 0 {
            return Ok(());
        }
        let mut fds = Vec::new();
        for message in ancillary.into_messages() {
            if let OwnedAncillaryMessage::FileDescriptors(received) = message {
                fds.extend(received);
            }
        }
        let message = AgentMessage::decode(&buffer[..info.bytes_read()])?;
        let outcome = match message.payload {
            Some(agent_message::Payload::Add(add)) => match (add.workload, fds.pop()) {
                (Some(workload), Some(fd)) => {
                    if let Some(seen) = in_snapshot.as_mut() {
                        seen.insert(workload.uid.clone());
                    }
                    inpod
                        .add(workload, Netns::from_fd(fd), add.transparent_delivery)
                        .map_err(|e| e.to_string())
                }
                (None, _) => Err("add without a workload".to_owned()),
                (_, None) => Err("add without the pod's network-namespace fd".to_owned()),
            },
            Some(agent_message::Payload::Delete(delete)) => {
                inpod.remove(&delete.uid);
                Ok(())
            }
            Some(agent_message::Payload::SnapshotSent(_)) => {
                inpod.reconcile(&in_snapshot.take().unwrap_or_default());
                info!("applied the agent's snapshot");
                Ok(())
            }
            None => Err("empty message".to_owned()),
        };
        if let Err(error) = &outcome {
            warn!(%error, "refused a message from the agent");
        }
        let error = outcome.err().unwrap_or_default();
        reply(socket, ztunnel_message::Payload::Ack(Ack { error })).await?;
    }
}

async fn reply(socket: &UnixSeqpacket, payload: ztunnel_message::Payload) -> std::io::Result<()> {
    let bytes = ZtunnelMessage {
        payload: Some(payload),
    }
    .encode_to_vec();
    socket.send(&bytes).await.map(drop)
}
