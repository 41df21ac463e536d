//! Each command end to end through [`run`], against a stand-in agent.

use std::{
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
};

use super::*;
use crate::testing::FakeAgent;

const NETNS: &str = "/var/run/netns/cni-p1";

/// A socket path nobody listens on.
fn no_agent() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let socket = dir.path().join("absent.sock");
    (dir, socket)
}

fn pod_env(command: &str) -> CniEnv {
    CniEnv {
        command: Some(command.into()),
        container_id: Some("abc".into()),
        netns: Some(NETNS.into()),
        ifname: Some("eth0".into()),
        args: Some(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-1;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1"
                .into(),
        ),
    }
}

fn prev_result() -> Value {
    json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": NETNS}],
        "ips": [{"address": "198.18.1.5/24", "gateway": "198.18.1.1", "interface": 0}],
        "dns": {}
    })
}

fn conf(version: &str, socket: &Path, prev_result: Option<Value>) -> Vec<u8> {
    let mut conf = json!({
        "cniVersion": version,
        "name": "k8s-pod-network",
        "type": "ambit-cni",
        "agentSocket": socket,
        "agentTimeoutSecs": 5,
    });
    if let Some(prev_result) = prev_result {
        conf["prevResult"] = prev_result;
    }
    conf.to_string().into_bytes()
}

#[derive(Debug)]
struct Ran {
    status: u8,
    stdout: String,
    log: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|err| panic!("stdout should be JSON ({err}): {self:?}"))
    }

    /// Asserts a failure with CNI error `code` and returns the error object.
    fn error(&self, code: u32) -> Value {
        assert_eq!(
            self.status, EXIT_FAILURE,
            "expected a failure, got {self:?}"
        );
        let error = self.json();
        assert_eq!(
            error["code"],
            json!(code),
            "expected error code {code}, got {self:?}"
        );
        assert!(error["msg"].is_string(), "an error has a msg: {self:?}");
        error
    }

    fn succeeded_silently(&self) {
        assert_eq!(self.status, EXIT_SUCCESS, "expected success, got {self:?}");
        assert_eq!(self.stdout, "", "expected no output, got {self:?}");
    }
}

fn invoke(env: &CniEnv, stdin: &[u8]) -> Ran {
    let (mut stdout, mut log) = (Vec::new(), Vec::new());
    let status = run(env, stdin, &mut stdout, &mut log);
    Ran {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        log: String::from_utf8_lossy(&log).into_owned(),
    }
}

fn expected_sandbox(netns: Option<&str>) -> PodSandbox {
    PodSandbox {
        container_id: "abc".into(),
        netns: netns.map(str::to_owned),
        pod_namespace: "shop".into(),
        pod_name: "cart-1".into(),
        pod_uid: Some("u-1".into()),
        ips: vec!["198.18.1.5".parse().expect("literal")],
    }
}

#[test]
fn add_enrols_the_pod_and_passes_prev_result_on() {
    let agent = FakeAgent::replying(&CniReply::Ok { enrolled: true });
    let ran = invoke(
        &pod_env("ADD"),
        &conf("1.1.0", &agent.socket, Some(prev_result())),
    );
    assert_eq!(ran.status, EXIT_SUCCESS, "{ran:?}");
    let mut want = prev_result();
    want["cniVersion"] = json!("1.1.0");
    assert_eq!(
        ran.json(),
        want,
        "stdout should be prevResult relabelled: {ran:?}"
    );
    assert_eq!(
        agent.request(),
        CniRequest::Add(expected_sandbox(Some(NETNS)))
    );
    assert!(
        ran.log.contains("shop/cart-1") && ran.log.contains("enrolled"),
        "{ran:?}"
    );
}

#[test]
fn add_passes_the_agents_error_on() {
    let agent = FakeAgent::replying(&CniReply::Error {
        code: codes::ENROLMENT_FAILED,
        message: "cannot hand the netns to ztunnel".into(),
        details: "ztunnel is not connected".into(),
    });
    let ran = invoke(
        &pod_env("ADD"),
        &conf("1.0.0", &agent.socket, Some(prev_result())),
    );
    let error = ran.error(codes::ENROLMENT_FAILED);
    assert_eq!(
        error["msg"],
        json!("cannot hand the netns to ztunnel"),
        "{ran:?}"
    );
    assert_eq!(
        error["details"],
        json!("ztunnel is not connected"),
        "{ran:?}"
    );
    assert_eq!(error["cniVersion"], json!("1.0.0"), "{ran:?}");
}

#[test]
fn add_without_agent_asks_to_try_again() {
    let (_dir, socket) = no_agent();
    let ran = invoke(
        &pod_env("ADD"),
        &conf("1.0.0", &socket, Some(prev_result())),
    );
    let error = ran.error(codes::TRY_AGAIN_LATER);
    let msg = error["msg"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("ambit agent not reachable at") && msg.contains("absent.sock"),
        "{ran:?}"
    );
    assert_eq!(
        error["details"],
        json!("is the ambit-agent DaemonSet running on this node?"),
        "{ran:?}"
    );
}

#[test]
fn add_with_silent_agent_times_out() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let socket = dir.path().join("cni.sock");
    let _never_accepts = UnixListener::bind(&socket).expect("bind");
    let mut stdin: Value =
        serde_json::from_slice(&conf("1.0.0", &socket, Some(prev_result()))).expect("conf");
    stdin["agentTimeoutSecs"] = json!(1);
    let ran = invoke(&pod_env("ADD"), stdin.to_string().as_bytes());
    let error = ran.error(codes::TRY_AGAIN_LATER);
    assert!(
        error["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("did not answer within 1s"),
        "{ran:?}"
    );
}

#[test]
fn add_for_a_sandbox_that_is_no_pod_skips_the_agent() {
    let (_dir, socket) = no_agent();
    let env = CniEnv {
        args: Some("IgnoreUnknown=1".into()),
        ..pod_env("ADD")
    };
    let ran = invoke(&env, &conf("1.0.0", &socket, Some(prev_result())));
    assert_eq!(ran.status, EXIT_SUCCESS, "{ran:?}");
    assert_eq!(ran.json(), prev_result(), "{ran:?}");
    assert!(ran.log.contains("not a Kubernetes pod"), "{ran:?}");
}

#[test]
fn add_without_prev_result_says_to_chain() {
    let (_dir, socket) = no_agent();
    let ran = invoke(&pod_env("ADD"), &conf("1.0.0", &socket, None));
    let error = ran.error(codes::INVALID_CONFIG);
    assert!(
        error["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("chained after the main plugin"),
        "{ran:?}"
    );
}

#[test]
fn add_with_unparsable_pod_ip_is_invalid_config() {
    let (_dir, socket) = no_agent();
    let prev = json!({"ips": [{"address": "not-an-ip/24"}]});
    let ran = invoke(&pod_env("ADD"), &conf("1.0.0", &socket, Some(prev)));
    ran.error(codes::INVALID_CONFIG);
}

#[test]
fn missing_sandbox_variables_are_invalid_environment() {
    let (_dir, socket) = no_agent();
    let env = CniEnv {
        container_id: None,
        netns: None,
        ..pod_env("ADD")
    };
    let ran = invoke(&env, &conf("1.0.0", &socket, Some(prev_result())));
    let error = ran.error(codes::INVALID_ENVIRONMENT);
    let msg = error["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("CNI_CONTAINERID") && msg.contains("CNI_NETNS"),
        "{ran:?}"
    );
}

#[test]
fn missing_or_unknown_command_is_invalid_environment() {
    let (_dir, socket) = no_agent();
    let stdin = conf("1.0.0", &socket, Some(prev_result()));
    for command in [None, Some("ATTACH")] {
        let env = CniEnv {
            command: command.map(str::to_owned),
            ..pod_env("ADD")
        };
        let error = invoke(&env, &stdin).error(codes::INVALID_ENVIRONMENT);
        assert_eq!(
            error["cniVersion"],
            json!("1.0.0"),
            "command {command:?}: {error}"
        );
    }
}

#[test]
fn malformed_cni_args_are_invalid_environment() {
    let (_dir, socket) = no_agent();
    let env = CniEnv {
        args: Some("K8S_POD_NAMESPACE=shop;oops".into()),
        ..pod_env("ADD")
    };
    invoke(&env, &conf("1.0.0", &socket, Some(prev_result()))).error(codes::INVALID_ENVIRONMENT);
}

#[test]
fn malformed_json_is_a_decode_failure_with_details() {
    let ran = invoke(&pod_env("ADD"), br#"{"cniVersion": "1.0.0", "name": "#);
    let error = ran.error(codes::DECODE_FAILURE);
    assert!(
        error["details"].as_str().is_some_and(|d| d.contains("EOF")),
        "details should carry the serde error: {ran:?}"
    );
    assert_eq!(
        error["cniVersion"],
        json!("1.1.0"),
        "unknown version reports as 1.1.0"
    );
}

#[test]
fn unsupported_version_is_incompatible() {
    let (_dir, socket) = no_agent();
    let ran = invoke(
        &pod_env("ADD"),
        &conf("0.2.0", &socket, Some(prev_result())),
    );
    let error = ran.error(codes::INCOMPATIBLE_VERSION);
    assert_eq!(error["cniVersion"], json!("1.1.0"), "{ran:?}");
}

#[test]
fn check_needs_version_0_4_0() {
    let (_dir, socket) = no_agent();
    let ran = invoke(
        &pod_env("CHECK"),
        &conf("0.3.1", &socket, Some(prev_result())),
    );
    let error = ran.error(codes::INCOMPATIBLE_VERSION);
    assert_eq!(error["cniVersion"], json!("0.3.1"), "{ran:?}");
}

#[test]
fn del_un_enrols_even_without_netns() {
    let agent = FakeAgent::replying(&CniReply::Ok { enrolled: false });
    let env = CniEnv {
        netns: None,
        ..pod_env("DEL")
    };
    invoke(&env, &conf("1.0.0", &agent.socket, Some(prev_result()))).succeeded_silently();
    assert_eq!(agent.request(), CniRequest::Del(expected_sandbox(None)));
}

#[test]
fn del_with_unreachable_agent_succeeds_with_a_note() {
    let (_dir, socket) = no_agent();
    let ran = invoke(&pod_env("DEL"), &conf("1.0.0", &socket, None));
    ran.succeeded_silently();
    assert!(ran.log.contains("not failing DEL"), "{ran:?}");
}

#[test]
fn del_passes_the_agents_refusal_on() {
    let agent = FakeAgent::replying(&CniReply::Error {
        code: codes::IO_FAILURE,
        message: "cannot update the enrolment map".into(),
        details: String::new(),
    });
    invoke(&pod_env("DEL"), &conf("1.0.0", &agent.socket, None)).error(codes::IO_FAILURE);
}

#[test]
fn del_of_a_sandbox_that_is_no_pod_succeeds() {
    let (_dir, socket) = no_agent();
    let env = CniEnv {
        args: None,
        ..pod_env("DEL")
    };
    let ran = invoke(&env, &conf("1.0.0", &socket, None));
    ran.succeeded_silently();
    assert_eq!(ran.log, "", "nothing to say about a non-pod DEL: {ran:?}");
}

#[test]
fn check_asks_the_agent_and_is_silent_when_all_is_well() {
    let agent = FakeAgent::replying(&CniReply::Ok { enrolled: true });
    invoke(
        &pod_env("CHECK"),
        &conf("1.0.0", &agent.socket, Some(prev_result())),
    )
    .succeeded_silently();
    assert_eq!(
        agent.request(),
        CniRequest::Check(expected_sandbox(Some(NETNS)))
    );
}

#[test]
fn check_passes_a_mismatch_on() {
    let agent = FakeAgent::replying(&CniReply::Error {
        code: codes::ENROLMENT_MISMATCH,
        message: "pod should be enrolled but is not".into(),
        details: String::new(),
    });
    let ran = invoke(
        &pod_env("CHECK"),
        &conf("1.0.0", &agent.socket, Some(prev_result())),
    );
    let error = ran.error(codes::ENROLMENT_MISMATCH);
    assert_eq!(
        error.get("details"),
        None,
        "empty details are left out: {ran:?}"
    );
}

#[test]
fn check_without_prev_result_or_agent_fails() {
    let (_dir, socket) = no_agent();
    invoke(&pod_env("CHECK"), &conf("1.0.0", &socket, None)).error(codes::INVALID_CONFIG);
    invoke(
        &pod_env("CHECK"),
        &conf("1.0.0", &socket, Some(prev_result())),
    )
    .error(codes::TRY_AGAIN_LATER);
}

#[test]
fn status_asks_the_agent() {
    let agent = FakeAgent::replying(&CniReply::Ok { enrolled: false });
    let env = CniEnv {
        command: Some("STATUS".into()),
        ..CniEnv::default()
    };
    invoke(&env, &conf("1.1.0", &agent.socket, None)).succeeded_silently();
    assert_eq!(agent.request(), CniRequest::Status);
}

#[test]
fn status_without_agent_is_plugin_not_available() {
    let (_dir, socket) = no_agent();
    let env = CniEnv {
        command: Some("STATUS".into()),
        ..CniEnv::default()
    };
    invoke(&env, &conf("1.1.0", &socket, None)).error(codes::PLUGIN_NOT_AVAILABLE);
    invoke(&env, &conf("1.0.0", &socket, None)).error(codes::INCOMPATIBLE_VERSION);
}

#[test]
fn version_answers_with_or_without_stdin() {
    let env = CniEnv {
        command: Some("VERSION".into()),
        ..CniEnv::default()
    };
    let want = json!({
        "cniVersion": "1.1.0",
        "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
    });
    for stdin in [
        &b""[..],
        b"\n",
        br#"{"cniVersion":"0.4.0"}"#,
        br#"{"cniVersion":"9.0.0"}"#,
    ] {
        let ran = invoke(&env, stdin);
        assert_eq!(ran.status, EXIT_SUCCESS, "{ran:?}");
        assert_eq!(ran.json(), want, "{ran:?}");
    }
    invoke(&env, b"{not json").error(codes::DECODE_FAILURE);
}

#[test]
fn gc_has_nothing_to_do() {
    let env = CniEnv {
        command: Some("GC".into()),
        ..CniEnv::default()
    };
    let (_dir, socket) = no_agent();
    invoke(&env, &conf("1.1.0", &socket, None)).succeeded_silently();
    invoke(&env, &conf("1.0.0", &socket, None)).error(codes::INCOMPATIBLE_VERSION);
}

/// Whatever the runtime passes, the plugin answers with a status and, on failure,
/// an error object.
#[test]
fn odd_input_gets_an_answer_not_a_panic() {
    let (_dir, socket) = no_agent();
    // Configurations that get far enough name a socket nobody listens on.
    let with_socket = |mut conf: Value| {
        conf["agentSocket"] = json!(socket);
        conf.to_string().into_bytes()
    };
    let stdins: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\xff\xfe".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        br#"{"cniVersion":null}"#.to_vec(),
        with_socket(json!({"cniVersion": "1.0.0", "prevResult": []})),
        with_socket(json!({"cniVersion": "1.0.0", "prevResult": {"ips": [{"address": ""}]}})),
        with_socket(json!({"cniVersion": "1.0.0", "agentTimeoutSecs": -1})),
        with_socket(json!({"cniVersion": "1.1.0", "prevResult": {"ips": null}})),
    ];
    for command in ["ADD", "DEL", "CHECK", "STATUS", "VERSION", "GC", ""] {
        for stdin in &stdins {
            let ran = invoke(&pod_env(command), stdin);
            if ran.status != EXIT_SUCCESS {
                let error = ran.json();
                assert!(
                    error["code"].is_u64(),
                    "{command} on {:?}: {ran:?}",
                    String::from_utf8_lossy(stdin)
                );
            }
        }
    }
}
