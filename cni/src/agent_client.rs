//! One round trip to the node agent: connect to its unix stream socket, write one JSON
//! line ([`CniRequest`]), read one JSON line back ([`CniReply`]), all within a deadline.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::Duration,
};

use ambit_api::cni::{CniReply, CniRequest, codes};

/// The longest reply line read; a reply is a few hundred bytes.
const MAX_REPLY_BYTES: u64 = 64 * 1024;
/// How much longer than the caller the helper thread waits on the socket.
const HELPER_LINGER: Duration = Duration::from_secs(1);

/// A failed exchange with the agent. None of these says the agent refused: a refusal is
/// a [`CniReply::Error`].
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("ambit agent not reachable at {}: {source}", .socket.display())]
    Unreachable { socket: PathBuf, source: io::Error },
    #[error("ambit agent at {} did not answer within {}s", .socket.display(), .timeout.as_secs())]
    Timeout { socket: PathBuf, timeout: Duration },
    #[error("exchange with the ambit agent at {} failed: {source}", .socket.display())]
    Exchange { socket: PathBuf, source: io::Error },
    #[error("ambit agent at {} closed the connection without a reply", .socket.display())]
    NoReply { socket: PathBuf },
    #[error("ambit agent at {} sent a reply ambit-cni cannot decode: {source}", .socket.display())]
    BadReply {
        socket: PathBuf,
        source: serde_json::Error,
    },
}

impl AgentError {
    /// The CNI error code for ADD and CHECK: everything but an undecodable reply may
    /// pass once the agent is back, so the runtime should retry.
    pub fn code(&self) -> u32 {
        match self {
            Self::BadReply { .. } => codes::DECODE_FAILURE,
            _ => codes::TRY_AGAIN_LATER,
        }
    }

    /// What the operator should look at (the error's `details`).
    pub fn hint(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } | Self::NoReply { .. } | Self::Exchange { .. } => {
                "is the ambit-agent DaemonSet running on this node?"
            }
            Self::Timeout { .. } => {
                "is the ambit-agent on this node stuck or overloaded? its log says what it was doing"
            }
            Self::BadReply { .. } => "are ambit-cni and ambit-agent from the same Ambit release?",
        }
    }
}

/// The agent's CNI socket and how long an exchange with it may take.
#[derive(Debug, Clone)]
pub struct AgentClient {
    socket: PathBuf,
    timeout: Duration,
}

impl AgentClient {
    pub fn new(socket: PathBuf, timeout: Duration) -> Self {
        Self { socket, timeout }
    }

    /// Sends `request` and waits for the reply.
    ///
    /// The exchange runs on a helper thread so that the deadline also covers `connect`,
    /// which blocks without a timeout while a stuck agent's accept backlog is full. On
    /// a timeout the helper is left behind; the process exits soon after.
    ///
    /// # Errors
    /// An [`AgentError`] when the agent cannot be reached or does not answer in time
    /// with one decodable line.
    pub fn call(&self, request: &CniRequest) -> Result<CniReply, AgentError> {
        let (done, outcome) = mpsc::channel();
        let (socket, timeout) = (self.socket.clone(), self.timeout);
        let request = request.clone();
        thread::Builder::new()
            .name("agent-call".into())
            .spawn(move || {
                // The receiver is gone only after a timeout, when nobody wants the answer.
                let _ = done.send(round_trip(&socket, timeout, &request));
            })
            .map_err(|source| AgentError::Exchange {
                socket: self.socket.clone(),
                source,
            })?;
        match outcome.recv_timeout(self.timeout) {
            Ok(reply) => reply,
            Err(RecvTimeoutError::Timeout) => Err(AgentError::Timeout {
                socket: self.socket.clone(),
                timeout: self.timeout,
            }),
            Err(RecvTimeoutError::Disconnected) => Err(AgentError::Exchange {
                socket: self.socket.clone(),
                source: io::Error::other("the exchange ended without an outcome"),
            }),
        }
    }
}

fn round_trip(
    socket: &Path,
    timeout: Duration,
    request: &CniRequest,
) -> Result<CniReply, AgentError> {
    let exchange = |source| AgentError::Exchange {
        socket: socket.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| AgentError::Unreachable {
        socket: socket.to_owned(),
        source,
    })?;
    // The caller gives up after `timeout`; these only make this thread end soon after,
    // a little later so that the caller's deadline is the one reported.
    let linger = Some(timeout + HELPER_LINGER);
    stream.set_read_timeout(linger).map_err(exchange)?;
    stream.set_write_timeout(linger).map_err(exchange)?;

    let mut line = serde_json::to_vec(request).map_err(|err| exchange(err.into()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(exchange)?;

    let mut reply = Vec::new();
    BufReader::new(stream.take(MAX_REPLY_BYTES))
        .read_until(b'\n', &mut reply)
        .map_err(exchange)?;
    if reply.iter().all(u8::is_ascii_whitespace) {
        return Err(AgentError::NoReply {
            socket: socket.to_owned(),
        });
    }
    serde_json::from_slice(&reply).map_err(|source| AgentError::BadReply {
        socket: socket.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;

    use super::*;
    use crate::testing::FakeAgent;

    #[test]
    fn request_and_reply_are_single_json_lines() {
        let agent = FakeAgent::answering(b"{\"result\":\"ok\",\"enrolled\":true}\n".to_vec());
        let client = AgentClient::new(agent.socket.clone(), Duration::from_secs(5));
        let reply = client.call(&CniRequest::Status);
        assert!(
            matches!(reply, Ok(CniReply::Ok { enrolled: true })),
            "expected ok/enrolled, got {reply:?}"
        );
        assert_eq!(agent.request_line(), "{\"command\":\"status\"}\n");
    }

    #[test]
    fn missing_socket_is_unreachable() {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let client = AgentClient::new(dir.path().join("absent.sock"), Duration::from_secs(5));
        let err = client
            .call(&CniRequest::Status)
            .expect_err("nobody listens");
        assert!(matches!(err, AgentError::Unreachable { .. }), "{err:?}");
        assert_eq!(err.code(), codes::TRY_AGAIN_LATER);
        assert!(err.to_string().contains("absent.sock"), "{err}");
    }

    #[test]
    fn silent_agent_times_out() {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let socket = dir.path().join("cni.sock");
        // Bound but never accepting: connect lands in the backlog and no reply comes.
        let _listener = UnixListener::bind(&socket).expect("bind");
        let client = AgentClient::new(socket, Duration::from_secs(1));
        let err = client.call(&CniRequest::Status).expect_err("no reply");
        assert!(matches!(err, AgentError::Timeout { .. }), "{err:?}");
        assert_eq!(err.code(), codes::TRY_AGAIN_LATER);
    }

    #[test]
    fn closed_without_reply_is_reported() {
        let agent = FakeAgent::answering(Vec::new());
        let err = AgentClient::new(agent.socket.clone(), Duration::from_secs(5))
            .call(&CniRequest::Status)
            .expect_err("no reply");
        assert!(matches!(err, AgentError::NoReply { .. }), "{err:?}");
    }

    #[test]
    fn garbage_reply_is_a_decode_failure() {
        let agent = FakeAgent::answering(b"HTTP/1.1 400 Bad Request\r\n".to_vec());
        let err = AgentClient::new(agent.socket.clone(), Duration::from_secs(5))
            .call(&CniRequest::Status)
            .expect_err("not a reply");
        assert!(matches!(err, AgentError::BadReply { .. }), "{err:?}");
        assert_eq!(err.code(), codes::DECODE_FAILURE);
    }
}
