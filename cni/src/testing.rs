//! Test helpers shared by the unit tests: a stand-in for the agent.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixListener,
    path::PathBuf,
    sync::mpsc,
    thread,
};

use ambit_api::cni::{CniReply, CniRequest};

/// Serves one connection on a socket in its own temp dir: reads the request line,
/// keeps it for the test, and writes a canned answer.
#[derive(Debug)]
pub struct FakeAgent {
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
    requests: mpsc::Receiver<String>,
}

impl FakeAgent {
    /// Answers with `reply` as one JSON line.
    pub fn replying(reply: &CniReply) -> Self {
        let mut answer = serde_json::to_vec(reply).expect("encode the reply");
        answer.push(b'\n');
        Self::answering(answer)
    }

    /// Answers with `answer` as it is (malformed replies included).
    pub fn answering(answer: Vec<u8>) -> Self {
        let dir = tempfile::tempdir().expect("create a temp dir");
        let socket = dir.path().join("cni.sock");
        let listener = UnixListener::bind(&socket).expect("bind the fake agent socket");
        let (seen, requests) = mpsc::channel();
        thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept the plugin's connection");
            let mut line = String::new();
            BufReader::new(&stream)
                .read_line(&mut line)
                .expect("read the request line");
            // Sent before the answer, so it is waiting by the time the caller returns.
            seen.send(line)
                .expect("the test is waiting for the request");
            (&stream).write_all(&answer).expect("write the answer");
        });
        Self {
            _dir: dir,
            socket,
            requests,
        }
    }

    /// The request line the plugin sent; fails the test when it sent none.
    pub fn request_line(&self) -> String {
        self.requests
            .try_recv()
            .expect("the plugin should have sent the agent a request")
    }

    /// The request the plugin sent, decoded.
    pub fn request(&self) -> CniRequest {
        let line = self.request_line();
        serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("request {line:?} is not a CniRequest: {err}"))
    }
}
