//! The pods' processes pinned: clients on CPU 0, servers on CPU 1; the proxies under
//! test (ztunnels, waypoints, nginx) float.
//!
//! On this machine (2 vCPUs) waking a process on the other vCPU costs ~30 µs and on
//! the same one ~2 µs: unpinned, a closed-loop round trip on loopback came out 5 µs or
//! 70 µs depending only on where the scheduler had put the two ends, and the runs of
//! one bench flipped between the two. With the client and server apart, the direct
//! path always pays what separate machines would, and the mesh's own hops (its
//! ztunnels, left to the scheduler as on a node with spare cores) are what differs.

use std::process::Command;

use ambit_e2e::{ChildGuard, Pod, app::Place};
use anyhow::Result;

/// Where clients and servers run, when the machine has two CPUs or more.
const CLIENT_CPU: usize = 0;
const SERVER_CPU: usize = 1;

/// A pod whose processes start on one CPU (through `taskset`, so from their first
/// instruction).
pub struct Pinned<'a> {
    pod: &'a Pod,
    cpu: Option<usize>,
}

impl<'a> Pinned<'a> {
    pub fn client(pod: &'a Pod) -> Self {
        Self::on(pod, CLIENT_CPU)
    }

    pub fn server(pod: &'a Pod) -> Self {
        Self::on(pod, SERVER_CPU)
    }

    fn on(pod: &'a Pod, cpu: usize) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            pod,
            cpu: (cpus > SERVER_CPU).then_some(cpu),
        }
    }
}

impl Place for Pinned<'_> {
    fn spawn(&self, command: &mut Command) -> Result<ChildGuard> {
        let Some(cpu) = self.cpu else {
            return self.pod.spawn(command);
        };
        let mut pinned = Command::new("taskset");
        pinned
            .arg("--cpu-list")
            .arg(cpu.to_string())
            .arg(command.get_program())
            .args(command.get_args());
        for (key, value) in command.get_envs() {
            match value {
                Some(value) => pinned.env(key, value),
                None => pinned.env_remove(key),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            pinned.current_dir(dir);
        }
        self.pod.spawn(&mut pinned)
    }
}

/// What the table says about it.
pub fn describe() -> &'static str {
    if std::thread::available_parallelism().map_or(1, usize::from) > SERVER_CPU {
        "clients pinned to CPU 0, servers to CPU 1, proxies (ztunnels, waypoints, nginx) free"
    } else {
        "one CPU: nothing pinned"
    }
}
