//! The demo's cluster: two nodes running Ambit on one [`TestNet`], the control plane,
//! the pods by name, and the processes that run until the demo ends.

use std::path::PathBuf;

use ambit_e2e::{ChildGuard, ControlPlane, MeshNode, Pod, PodSpec, TestNet, workspace_dir};
use anyhow::{Context as _, Result};

use crate::components::Component;

/// The config folder shipped in the repository, relative to the workspace.
const SHIPPED_CONFIG: &str = "deploy/examples/demo";

/// Everything the steps work on.
pub struct Cluster<'n> {
    pub net: &'n TestNet,
    /// The CA and the config push, on node1.
    pub control: ControlPlane,
    /// node1 and node2, in that order.
    pub nodes: Vec<MeshNode>,
    pods: Vec<Pod>,
    /// The control plane, the apps and the gateways: stopped when the demo ends.
    processes: Vec<(Component, ChildGuard)>,
}

impl<'n> Cluster<'n> {
    /// Copies the shipped config folder's top-level manifests into `net`'s config
    /// folder, then adds node1 and node2 with Ambit's agent and ztunnel (the control
    /// plane itself starts later: see [`Cluster::keep`]).
    pub fn start(net: &'n TestNet) -> Result<Self> {
        let source = shipped(".");
        let entries =
            std::fs::read_dir(&source).with_context(|| format!("reading {}", source.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let name = path.file_name().context("a manifest's file name")?;
                std::fs::copy(&path, net.config_dir().join(name))
                    .with_context(|| format!("copying {}", path.display()))?;
            }
        }
        let first = net.add_node("node1")?;
        let second = net.add_node("node2")?;
        // The control plane (CA and config push) runs on node1, reachable over the underlay.
        let control = ControlPlane::new(net, &first)?;
        let nodes = control.install(net, &[&first, &second])?;
        Ok(Self {
            net,
            control,
            nodes,
            pods: Vec::new(),
            processes: Vec::new(),
        })
    }

    /// Creates a pod on node `node` (0 or 1).
    pub fn add_pod(&mut self, node: usize, spec: PodSpec) -> Result<()> {
        let pod = self.nodes[node].node().add_pod(spec)?;
        self.pods.push(pod);
        Ok(())
    }

    /// The pod called `name`.
    pub fn pod(&self, name: &str) -> Result<&Pod> {
        self.pods
            .iter()
            .find(|pod| pod.name() == name)
            .with_context(|| format!("no pod {name:?} in the demo"))
    }

    /// Every pod, in the order they were made.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// Keeps `process`, a part of `component`, running until the demo ends.
    pub fn keep(&mut self, component: Component, process: ChildGuard) {
        self.processes.push((component, process));
    }

    /// The (first) process of `component` the demo keeps.
    pub fn process(&self, component: Component) -> Result<&ChildGuard> {
        self.processes
            .iter()
            .find_map(|(kept, process)| (*kept == component).then_some(process))
            .with_context(|| format!("{component} is not running"))
    }

    /// Every running component's processes: the nodes' agents and ztunnels, then the
    /// processes the demo keeps.
    pub fn components(&self) -> Vec<(Component, &ChildGuard)> {
        let nodes = self.nodes.iter().enumerate().flat_map(|(index, mesh)| {
            [
                mesh.agent()
                    .ok()
                    .map(|agent| (Component::Agent(index), agent)),
                mesh.ztunnel()
                    .ok()
                    .map(|ztunnel| (Component::Ztunnel(index), ztunnel)),
            ]
        });
        nodes
            .flatten()
            .chain(self.processes.iter().map(|(c, process)| (*c, process)))
            .collect()
    }

    /// Copies `shipped` (a path in the shipped config folder) into the config folder as
    /// `file_name`, replacing what was there: the controller picks it up live.
    pub fn apply(&self, shipped_path: &str, file_name: &str) -> Result<()> {
        let from = shipped(shipped_path);
        std::fs::copy(&from, self.net.config_dir().join(file_name))
            .with_context(|| format!("copying {}", from.display()))?;
        Ok(())
    }

    /// Removes `file_name` from the config folder, as `kubectl delete -f` would.
    pub fn remove(&self, file_name: &str) -> Result<()> {
        let path = self.net.config_dir().join(file_name);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
    }
}

/// `path` in the shipped config folder.
fn shipped(path: &str) -> PathBuf {
    workspace_dir().join(SHIPPED_CONFIG).join(path)
}
