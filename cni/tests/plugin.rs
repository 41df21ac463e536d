//! The `ambit-cni` binary run the way a container runtime runs it: `CNI_*` variables in
//! a clean environment, the network configuration on stdin, the result or error on
//! stdout, the exit status. A thread in the test stands in for the agent.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
};

use ambit_api::cni::{CniReply, CniRequest, PodSandbox, codes};
use serde_json::{Value, json};

const NETNS: &str = "/var/run/netns/cni-4f1c";
const POD_ARGS: &str = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=7d0e";

/// The agent's stand-in: serves one connection on a socket in its own temp dir with a
/// canned reply, and keeps the request for the test.
struct FakeAgent {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    requests: mpsc::Receiver<CniRequest>,
}

impl FakeAgent {
    fn replying(reply: CniReply) -> Self {
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
            assert!(
                line.ends_with('\n'),
                "the request should be one line: {line:?}"
            );
            let request = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("request {line:?} is not a CniRequest: {err}"));
            // Sent before the reply, so it is waiting by the time the plugin exits.
            seen.send(request)
                .expect("the test is waiting for the request");
            let mut answer = serde_json::to_vec(&reply).expect("encode the reply");
            answer.push(b'\n');
            (&stream).write_all(&answer).expect("write the reply");
        });
        Self {
            _dir: dir,
            socket,
            requests,
        }
    }

    /// The request the plugin sent; fails the test when it sent none.
    fn request(&self) -> CniRequest {
        self.requests
            .try_recv()
            .expect("the plugin should have sent the agent one request")
    }
}

/// A socket path in a fresh temp dir that nobody listens on.
fn no_agent() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let socket = dir.path().join("cni.sock");
    (dir, socket)
}

fn prev_result() -> Value {
    json!({
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
            {"name": "eth0", "mac": "aa:bb:cc:dd:ee:02", "sandbox": NETNS}
        ],
        "ips": [{"address": "198.18.1.5/24", "gateway": "198.18.1.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {}
    })
}

/// One plugin entry of a .conflist as the runtime passes it, `prevResult` filled in.
fn net_conf(version: &str, socket: &Path, prev_result: Option<Value>) -> String {
    let mut conf = json!({
        "cniVersion": version,
        "name": "k8s-pod-network",
        "type": "ambit-cni",
        "agentSocket": socket,
        "agentTimeoutSecs": 10,
    });
    if let Some(prev_result) = prev_result {
        conf["prevResult"] = prev_result;
    }
    conf.to_string()
}

/// The variables a runtime sets for `command` on the pod sandbox.
fn pod_env(command: &str) -> Vec<(&str, &str)> {
    vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "abc"),
        ("CNI_NETNS", NETNS),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", POD_ARGS),
        ("CNI_PATH", "/opt/cni/bin"),
    ]
}

#[derive(Debug)]
struct Ran {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn stdout_json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout should be one JSON object ({err}): {self:#?}"))
    }

    /// Asserts the run failed with CNI error `code`; returns the error object.
    fn error(&self, code: u32) -> Value {
        assert_eq!(
            self.status,
            Some(1),
            "expected exit status 1, got {self:#?}"
        );
        let error = self.stdout_json();
        assert_eq!(
            error["code"],
            json!(code),
            "expected CNI error code {code}, got {self:#?}"
        );
        assert!(error["msg"].is_string(), "a CNI error has a msg: {self:#?}");
        error
    }

    fn succeeded(&self) {
        assert_eq!(
            self.status,
            Some(0),
            "expected exit status 0, got {self:#?}"
        );
    }
}

/// Runs the plugin binary with only `env` set and `stdin` piped in.
fn run_plugin(env: &[(&str, &str)], stdin: &str) -> Ran {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ambit-cni"))
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ambit-cni");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("write the configuration to the plugin's stdin");
    let output = child.wait_with_output().expect("wait for ambit-cni");
    Ran {
        status: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn add_enrols_the_pod_and_prints_prev_result() {
    let agent = FakeAgent::replying(CniReply::Ok { enrolled: true });
    let ran = run_plugin(
        &pod_env("ADD"),
        &net_conf("1.1.0", &agent.socket, Some(prev_result())),
    );
    ran.succeeded();
    assert_eq!(
        ran.stdout_json(),
        prev_result(),
        "stdout should be prevResult unchanged: {ran:#?}"
    );
    assert_eq!(
        agent.request(),
        CniRequest::Add(PodSandbox {
            container_id: "abc".into(),
            netns: Some(NETNS.into()),
            pod_namespace: "shop".into(),
            pod_name: "cart-1".into(),
            pod_uid: Some("7d0e".into()),
            ips: vec!["198.18.1.5".parse().expect("literal address")],
        })
    );
}

#[test]
fn add_passes_the_agents_error_code_on() {
    let agent = FakeAgent::replying(CniReply::Error {
        code: codes::ENROLMENT_FAILED,
        message: "cannot hand the pod's netns to ztunnel".into(),
        details: "ztunnel is not connected to the agent".into(),
    });
    let ran = run_plugin(
        &pod_env("ADD"),
        &net_conf("1.0.0", &agent.socket, Some(prev_result())),
    );
    let error = ran.error(codes::ENROLMENT_FAILED);
    assert_eq!(
        error,
        json!({
            "cniVersion": "1.0.0",
            "code": codes::ENROLMENT_FAILED,
            "msg": "cannot hand the pod's netns to ztunnel",
            "details": "ztunnel is not connected to the agent"
        }),
        "{ran:#?}"
    );
    assert!(
        matches!(agent.request(), CniRequest::Add(_)),
        "the plugin should have asked for ADD"
    );
}

#[test]
fn add_with_no_agent_listening_asks_to_try_again() {
    let (_dir, socket) = no_agent();
    let ran = run_plugin(
        &pod_env("ADD"),
        &net_conf("1.0.0", &socket, Some(prev_result())),
    );
    let error = ran.error(codes::TRY_AGAIN_LATER);
    let want_prefix = format!("ambit agent not reachable at {}: ", socket.display());
    assert!(
        error["msg"]
            .as_str()
            .is_some_and(|msg| msg.starts_with(&want_prefix)),
        "msg should start with {want_prefix:?}: {ran:#?}"
    );
    assert_eq!(
        error["details"],
        json!("is the ambit-agent DaemonSet running on this node?"),
        "{ran:#?}"
    );
}

#[test]
fn malformed_json_is_a_decode_failure() {
    let (_dir, socket) = no_agent();
    let mut conf = net_conf("1.0.0", &socket, Some(prev_result()));
    conf.truncate(conf.len() / 2);
    let error = run_plugin(&pod_env("ADD"), &conf).error(codes::DECODE_FAILURE);
    assert!(
        error["details"].as_str().is_some_and(|d| !d.is_empty()),
        "details should carry the parser's error: {error}"
    );
}

#[test]
fn missing_prev_result_says_to_chain_the_plugin() {
    let (_dir, socket) = no_agent();
    let ran = run_plugin(&pod_env("ADD"), &net_conf("1.0.0", &socket, None));
    let error = ran.error(codes::INVALID_CONFIG);
    let msg = error["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("chained after the main plugin") && msg.contains(".conflist"),
        "msg should say to chain ambit-cni in a .conflist: {ran:#?}"
    );
}

#[test]
fn unsupported_cni_version_is_incompatible() {
    let (_dir, socket) = no_agent();
    let ran = run_plugin(
        &pod_env("ADD"),
        &net_conf("0.2.0", &socket, Some(prev_result())),
    );
    ran.error(codes::INCOMPATIBLE_VERSION);
}

#[test]
fn del_with_unreachable_agent_succeeds() {
    let (_dir, socket) = no_agent();
    let env: Vec<_> = pod_env("DEL")
        .into_iter()
        .filter(|(name, _)| *name != "CNI_NETNS")
        .collect();
    let ran = run_plugin(&env, &net_conf("1.0.0", &socket, None));
    ran.succeeded();
    assert_eq!(ran.stdout, "", "DEL prints nothing: {ran:#?}");
    assert!(
        ran.stderr.contains("not failing DEL"),
        "stderr should note the unreachable agent: {ran:#?}"
    );
}

#[test]
fn version_lists_the_supported_versions() {
    let want = json!({
        "cniVersion": "1.1.0",
        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    });
    for stdin in ["", r#"{"cniVersion":"1.0.0"}"#] {
        let ran = run_plugin(&[("CNI_COMMAND", "VERSION")], stdin);
        ran.succeeded();
        assert_eq!(ran.stdout_json(), want, "stdin {stdin:?}: {ran:#?}");
    }
}

#[test]
fn status_with_unreachable_agent_is_plugin_not_available() {
    let (_dir, socket) = no_agent();
    let ran = run_plugin(
        &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")],
        &net_conf("1.1.0", &socket, None),
    );
    ran.error(codes::PLUGIN_NOT_AVAILABLE);
}

#[test]
fn missing_command_names_the_variable() {
    let ran = run_plugin(&[], "");
    let error = ran.error(codes::INVALID_ENVIRONMENT);
    assert!(
        error["msg"]
            .as_str()
            .is_some_and(|msg| msg.contains("CNI_COMMAND")),
        "{ran:#?}"
    );
}
