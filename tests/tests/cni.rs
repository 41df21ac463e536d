//! `ambit-cni` driven the way a container runtime drives it, against the real agent.

use std::time::Duration;

use ambit_e2e::{
    MeshNode, MeshOptions, Pod, PodSpec, TestNet,
    cmd::{self, Finished},
    cni::CniCommand,
    wait_until,
};
use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");

fn one_node(test: &str) -> Result<Option<(TestNet, MeshNode)>> {
    let Some(net) = TestNet::new(test) else {
        return Ok(None);
    };
    net.write_namespace("shop", [AMBIENT])?;
    let node = net.add_node("n1")?;
    let mesh = MeshNode::install(&net, &node, MeshOptions::default())?;
    Ok(Some((net, mesh)))
}

/// Runs `ambit-cni` for `pod` with `command` and `config` on stdin, as a runtime would.
fn invoke(mesh: &MeshNode, pod: &Pod, command: CniCommand, stdin: &[u8]) -> Result<Finished> {
    let runtime = mesh.node().cni_runtime();
    runtime.invoke(
        "ambit-cni",
        pod.cni_args().env(command, &runtime.cni_path()),
        stdin,
    )
}

fn config(mesh: &MeshNode, prev_result: Option<&Value>) -> Value {
    let mut config = json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "ambit-cni",
        "agentSocket": mesh.run_dir().join("cni.sock"),
    });
    if let Some(prev) = prev_result {
        config["prevResult"] = prev.clone();
    }
    config
}

/// The CNI error object a failed call printed, checked for the expected code.
fn expect_error(done: &Finished, code: u64) -> Result<Value> {
    ensure!(
        !done.status.success(),
        "expected a CNI error with code {code}, the plugin succeeded: {done}"
    );
    let error = done
        .json()
        .with_context(|| format!("a CNI error must be JSON on stdout: {done}"))?;
    ensure!(error["code"] == code, "expected code {code}, got {error}");
    ensure!(
        error["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "a CNI error needs a msg: {error}"
    );
    Ok(error)
}

#[test]
fn add_check_and_del_enrol_and_release_a_pod() -> Result<()> {
    let Some((_net, mesh)) = one_node("cni_lifecycle")? else {
        return Ok(());
    };
    let pod = mesh.node().add_pod(PodSpec::new("shop", "app"))?;
    ensure!(
        mesh.served_workloads()? == ["app"],
        "after ADD ztunnel should serve the pod: {:?}",
        mesh.served_workloads()?
    );
    pod.cni_check().context("CHECK right after ADD")?;

    pod.remove()?;
    wait_until(
        "ztunnel to stop serving the deleted pod",
        Duration::from_secs(5),
        || mesh.served_workloads().is_ok_and(|w| w.is_empty()),
    )?;
    let state = std::fs::read_to_string(mesh.run_dir().join("pods.json"))?;
    ensure!(
        !state.contains("\"app\""),
        "the agent should forget the deleted pod: {state}"
    );
    Ok(())
}

#[test]
fn check_reports_a_pod_whose_enrolment_was_lost() -> Result<()> {
    let Some((_net, mesh)) = one_node("cni_check_mismatch")? else {
        return Ok(());
    };
    let pod = mesh.node().add_pod(PodSpec::new("shop", "app"))?;
    // Take the pod out of the capture map behind the agent's back (as a lost pin would):
    // the namespace still says ambient, so CHECK must report the mismatch. (Unlabelling
    // the namespace instead races the agent's own reconciliation.)
    let cookie = pod.netns()?.cookie()?;
    let key: Vec<String> = cookie
        .to_le_bytes()
        .iter()
        .map(|b| format!("0x{b:02x}"))
        .collect();
    let map = mesh.bpffs_dir().join("maps").join("AMBIT_ENROLLED");
    cmd::run_with_input(
        std::process::Command::new("bpftool")
            .args(["map", "delete", "pinned"])
            .arg(&map)
            .arg("key")
            .args(&key),
        b"",
        Duration::from_secs(10),
    )?
    .success()?;
    let stdin = serde_json::to_vec(&config(&mesh, Some(&pod.cni_result())))?;
    let error = expect_error(&invoke(&mesh, &pod, CniCommand::Check, &stdin)?, 101)?;
    ensure!(
        error["msg"]
            .as_str()
            .is_some_and(|m| m.contains("shop/app")),
        "the error should name the pod: {error}"
    );
    Ok(())
}

#[test]
fn version_and_bad_requests_get_cni_answers() -> Result<()> {
    let Some((_net, mut mesh)) = one_node("cni_errors")? else {
        return Ok(());
    };
    let pod = mesh.node().add_pod(PodSpec::new("shop", "app"))?;

    let version = invoke(
        &mesh,
        &pod,
        CniCommand::Version,
        br#"{"cniVersion":"1.0.0"}"#,
    )?
    .success()?;
    let versions = version.json()?;
    ensure!(
        versions["supportedVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!("1.0.0"))),
        "VERSION should list 1.0.0: {versions}"
    );

    expect_error(
        &invoke(&mesh, &pod, CniCommand::Add, b"{this is not json")?,
        6,
    )?;
    let no_prev = serde_json::to_vec(&config(&mesh, None))?;
    expect_error(&invoke(&mesh, &pod, CniCommand::Add, &no_prev)?, 7)?;

    mesh.stop_agent()?;
    let with_prev = serde_json::to_vec(&config(&mesh, Some(&pod.cni_result())))?;
    let error = expect_error(&invoke(&mesh, &pod, CniCommand::Add, &with_prev)?, 11)?;
    ensure!(
        error["msg"]
            .as_str()
            .is_some_and(|m| m.contains("cni.sock")),
        "the error should say which socket was unreachable: {error}"
    );
    // DEL must not wedge pod deletion when the agent is away.
    invoke(&mesh, &pod, CniCommand::Del, &with_prev)?.success()?;
    Ok(())
}
