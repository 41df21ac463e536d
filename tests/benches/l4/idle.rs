//! The idle step: how much an idle ztunnel's memory grows as it learns 1,000 more
//! workloads (phantom pods on a node with no ztunnel, and Services selecting them).

use std::{
    thread,
    time::{Duration, Instant},
};

use ambit_e2e::{MeshNode, PodSpec, TestNet, wait_for};
use anyhow::{Context as _, Result, bail};
use serde_json::json;

use crate::common::proc_stats::{file_rss_kib, rss_kib};

/// The workloads added, and the Services selecting them (ten pods each).
pub const PHANTOM_PODS: u16 = 1_000;
pub const PHANTOM_SERVICES: u16 = 100;
/// The node the phantom pods claim to run on: no ztunnel serves them.
const PHANTOM_NODE: &str = "idle-node";
/// Their namespace (enrolled) and service account.
const NAMESPACE: &str = "shop";
const SERVICE_ACCOUNT: &str = "idle";
const LEARN_TIMEOUT: Duration = Duration::from_secs(60);
/// RSS counts as settled once it has not moved for this long.
const SETTLED_FOR: Duration = Duration::from_secs(2);
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Each ztunnel's RSS before and after, in KiB (in the order of the meshes), and how
/// much of the latter is code and data mapped from files (the binary and its shared
/// libraries) rather than heap and stacks.
pub struct IdleRss {
    pub before_kib: Vec<u64>,
    pub after_kib: Vec<u64>,
    pub after_file_kib: Vec<u64>,
}

/// Adds the phantom workloads, waits until every ztunnel holds them and its RSS has
/// settled, and removes them again (waiting until the ztunnels forgot them). `pids`
/// are the meshes' ztunnels.
pub fn measure(net: &TestNet, meshes: &[MeshNode], pids: &[u32]) -> Result<IdleRss> {
    let known = meshes
        .iter()
        .map(directory_size)
        .collect::<Result<Vec<_>>>()?;
    let before_kib = pids
        .iter()
        .map(|&pid| settled_rss_kib(pid))
        .collect::<Result<_>>()?;
    let files = write_phantoms(net)?;
    for (mesh, &(peers, _)) in meshes.iter().zip(&known) {
        wait_applied_peers(mesh, peers + usize::from(PHANTOM_PODS))?;
    }
    let after_kib = pids
        .iter()
        .map(|&pid| settled_rss_kib(pid))
        .collect::<Result<_>>()?;
    let after_file_kib = pids
        .iter()
        .map(|&pid| file_rss_kib(pid))
        .collect::<Result<_>>()?;
    // Only now the config dump (serialising 1,000 peers grows the RSS being measured).
    for (mesh, &(peers, services)) in meshes.iter().zip(&known) {
        let want = (
            peers + usize::from(PHANTOM_PODS),
            services + usize::from(PHANTOM_SERVICES),
        );
        let have = directory_size(mesh)?;
        if have != want {
            bail!(
                "{} holds {have:?} peers and services, expected {want:?}",
                mesh.node().name()
            );
        }
    }
    for file in &files {
        net.remove_manifest(file)?;
    }
    for (mesh, &want) in meshes.iter().zip(&known) {
        wait_for(
            &format!("{} to forget the phantom workloads", mesh.node().name()),
            LEARN_TIMEOUT,
            || directory_size(mesh).map(|have| (have == want).then_some(())),
        )?;
    }
    Ok(IdleRss {
        before_kib,
        after_kib,
        after_file_kib,
    })
}

/// Writes the Services, then the phantom pods (so the update that completes the pods
/// also brings the Services' endpoints); returns their manifests' file names.
fn write_phantoms(net: &TestNet) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for k in 0..PHANTOM_SERVICES {
        let name = service_name(k);
        let file = format!("service-{NAMESPACE}-{name}.yaml");
        net.write_manifest(
            &file,
            &json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": { "name": name, "namespace": NAMESPACE },
                "spec": {
                    // 198.19.16.0/24: clear of pods, phantom pods and the underlay.
                    "clusterIP": format!("198.19.16.{}", k + 1),
                    "selector": { "app": name },
                    "ports": [{ "name": "tcp-echo", "port": 8080, "targetPort": 8080 }],
                },
            }),
        )?;
        files.push(file);
    }
    for i in 0..PHANTOM_PODS {
        let spec = PodSpec::new(NAMESPACE, &format!("idle-{i}"))
            .service_account(SERVICE_ACCOUNT)
            .label("app", &service_name(i % PHANTOM_SERVICES));
        files.push(net.write_phantom_pod(&spec, PHANTOM_NODE, i)?.1);
    }
    Ok(files)
}

fn service_name(k: u16) -> String {
    format!("idle-svc-{k}")
}

/// Waits until ztunnel logs that it applied a config holding `peers` peers — from its
/// log, not its config dump, which would allocate what is being measured.
fn wait_applied_peers(mesh: &MeshNode, peers: usize) -> Result<()> {
    let logged_peers = |line: &str| -> Option<usize> {
        let (_, rest) = line
            .split_once("directory updated")?
            .1
            .split_once("peers=")?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    mesh.ztunnel()?
        .wait_for_log_line(LEARN_TIMEOUT, |line| logged_peers(line) == Some(peers))
        .with_context(|| format!("{} to apply a config of {peers} peers", mesh.node().name()))?;
    Ok(())
}

/// How many peers and services the ztunnel's directory holds.
fn directory_size(mesh: &MeshNode) -> Result<(usize, usize)> {
    let dump = mesh.config_dump()?;
    let count = |key: &str| dump["directory"][key].as_array().map_or(0, Vec::len);
    Ok((count("peers"), count("services")))
}

/// The process's RSS once it has not changed for [`SETTLED_FOR`].
fn settled_rss_kib(pid: u32) -> Result<u64> {
    const SAMPLE_EVERY: Duration = Duration::from_millis(200);
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut last = rss_kib(pid)?;
    let mut since = Instant::now();
    loop {
        thread::sleep(SAMPLE_EVERY);
        let now = rss_kib(pid).context("reading ztunnel's RSS")?;
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= SETTLED_FOR {
            return Ok(now);
        }
        if Instant::now() >= deadline {
            bail!("ztunnel {pid}'s RSS did not settle within {SETTLE_TIMEOUT:?} (last {now} KiB)");
        }
    }
}
