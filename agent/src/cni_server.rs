//! Answers the `ambit-cni` plugin: one JSON request line, one JSON reply line, per
//! connection on the agent's unix stream socket (see `ambit_api::cni`).

use std::sync::Arc;

use ambit_api::cni::{CniReply, CniRequest, codes};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};
use tracing::{Instrument as _, debug, info_span, warn};

use crate::agent::Agent;

/// Longest request accepted; a pod sandbox description is far smaller.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// Serves CNI requests until `shutdown` completes.
pub async fn serve(listener: UnixListener, agent: Arc<Agent>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut request_id = 0u64;
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    request_id += 1;
                    let agent = Arc::clone(&agent);
                    tokio::spawn(
                        handle(stream, agent).instrument(info_span!("cni", id = request_id)),
                    );
                }
                Err(error) => warn!(%error, "cannot accept a CNI connection"),
            },
        }
    }
}

async fn handle(stream: UnixStream, agent: Arc<Agent>) {
    let (reader, mut writer) = stream.into_split();
    let mut line = String::new();
    let read = BufReader::new(reader.take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .await;
    let reply = match read {
        Err(error) => CniReply::Error {
            code: codes::IO_FAILURE,
            message: format!("cannot read the request: {error}"),
            details: String::new(),
        },
        Ok(_) => match serde_json::from_str::<CniRequest>(&line) {
            Err(error) => CniReply::Error {
                code: codes::DECODE_FAILURE,
                message: "the agent could not decode the plugin's request".to_owned(),
                details: error.to_string(),
            },
            Ok(request) => {
                debug!(?request, "request");
                dispatch(&agent, &request).await
            }
        },
    };
    let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
    bytes.push(b'\n');
    if let Err(error) = writer.write_all(&bytes).await {
        warn!(%error, "cannot answer the CNI plugin");
    }
}

async fn dispatch(agent: &Agent, request: &CniRequest) -> CniReply {
    match request {
        CniRequest::Add(sandbox) => agent.add_pod(sandbox).await,
        CniRequest::Del(sandbox) => agent.delete_pod(sandbox).await,
        CniRequest::Check(sandbox) => agent.check_pod(sandbox),
        CniRequest::Status => CniReply::Ok { enrolled: false },
    }
}
