//! `ambit-demo` (run it with `cargo xtask demo`): Ambit on two simulated nodes, step by
//! step, on the config folder `deploy/examples/demo/`.
//!
//! It builds two nodes out of network namespaces, starts the real agent and ztunnel on
//! each, creates pods through the real CNI plugins (with `ambit-cni` chained), and
//! shows: pods joining the mesh by namespace label, no firewall rule anywhere, same-node
//! and cross-node traffic captured transparently, inbound capture from outside the mesh,
//! fail-closed behaviour while ztunnel is down; then at a waypoint, load balancing, a
//! VirtualService and a measured canary split, and an AuthorizationPolicy's denial in the
//! access log and metrics; the ingress gateway serving a client outside the mesh over
//! HTTP and HTTPS; and what the mesh costs in latency and throughput. Everything it made
//! is removed when it ends. `--json` prints the results for machines.
//!
//! # Layout
//! - [`cluster`]: the nodes, the control plane, the pods and the running processes;
//! - [`steps`]: what each step does and checks, in order;
//! - [`report`]: the ✓/✗ lines, the summary and the JSON report.

mod cluster;
mod report;
mod steps;

use std::process::ExitCode;

use ambit_e2e::TestNet;
use anyhow::{Result, bail};

use crate::{cluster::Cluster, report::Report};

fn main() -> ExitCode {
    let json = std::env::args().skip(1).any(|arg| arg == "--json");
    let mut report = Report::new(json);
    let outcome = run(&mut report);
    report.finish(&outcome);
    if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(report: &mut Report) -> Result<()> {
    let Some(net) = TestNet::new("demo") else {
        bail!("the demo needs root, ip, the CNI reference plugins, cgroup2 and bpffs (see above)");
    };
    let mut cluster = report.step_with("two nodes start Ambit's agent and ztunnel", || {
        let cluster = Cluster::start(&net)?;
        let detail = format!(
            "config folder {} (namespace shop labelled istio.io/dataplane-mode=ambient, legacy unlabelled)\ncapture programs pinned under {} and {}",
            net.config_dir().display(),
            cluster.nodes[0].bpffs_dir().display(),
            cluster.nodes[1].bpffs_dir().display()
        );
        Ok((cluster, detail))
    })?;
    for step in steps::ALL {
        report.step(step.name, || (step.run)(&mut cluster))?;
    }
    Ok(())
}
