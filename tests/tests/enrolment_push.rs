//! The agent on the controller's push: with `--controller-address`, the agent decides
//! which pods are enrolled from what the controller pushes for its node, not from the
//! folder itself. Labelling a namespace in the controller's folder moves a running pod
//! into the mesh — config folder → controller → push → agent → ztunnel — within about a
//! second, and unlabelling moves it out, without restarting anything.

use std::time::{Duration, Instant};

use ambit_e2e::{ControlPlane, MeshOptions, PodSpec, TestNet, wait_for};
use anyhow::{Result, ensure};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
/// The bound (1 s) plus the push's and the hand-off's share on a busy machine.
const MOVE_TIMEOUT: Duration = Duration::from_secs(3);
const READY_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn a_namespace_label_in_the_controllers_folder_moves_running_pods() -> Result<()> {
    let Some(net) = TestNet::new("enrolment_push") else {
        return Ok(());
    };
    net.write_namespace("shop", [AMBIENT])?;
    net.write_namespace("lab", Vec::<(String, String)>::new())?;
    let node = net.add_node("n1")?;
    let control = ControlPlane::new(&net, &node)?;
    let options = MeshOptions {
        agent_follows_controller: true,
        ..MeshOptions::default()
    };
    let meshes = control.install_with(&net, &[&node], options)?;
    let _shop = node.add_pod(PodSpec::new("shop", "cart"))?;
    let _lab = node.add_pod(PodSpec::new("lab", "bench"))?;
    let _control = control.start(&net)?;
    let served = |names: &[&str]| -> Result<Option<()>> {
        let mut now = meshes[0].served_workloads()?;
        now.sort();
        Ok((now == names).then_some(()))
    };
    wait_for(
        "the controller to enrol shop/cart only",
        READY_TIMEOUT,
        || served(&["cart"]),
    )?;

    let started = Instant::now();
    net.write_namespace("lab", [AMBIENT])?;
    wait_for("lab/bench to join the mesh", MOVE_TIMEOUT, || {
        served(&["bench", "cart"])
    })?;
    let joined = started.elapsed();

    net.write_namespace("lab", Vec::<(String, String)>::new())?;
    wait_for("lab/bench to leave the mesh", MOVE_TIMEOUT, || {
        served(&["cart"])
    })?;
    let log = meshes[0].agent()?.stdout();
    ensure!(
        log.contains("subscribed to the controller's config push") && log.contains("kind=Agent"),
        "the agent should follow the controller, not its folder:\n{log}"
    );
    eprintln!("joined the mesh {joined:?} after the label was written");
    Ok(())
}
