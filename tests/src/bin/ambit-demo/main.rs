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
//! is removed when it ends — with `--keep`, once Enter is pressed, after printing
//! commands to poke at the running mesh. Each run is recorded under `/run/ambit-demo/`,
//! and `--down` removes what a killed run left behind.
//!
//! Each step prints one ✓/✗ line with its time and what it saw, and a summary table
//! closes the run. When a step fails, the demo names the component to look at (one that
//! exited, or else the one the step exercises) and keeps the logs, printing their path;
//! `--verbose` also prints the end of those logs. `--json` prints one JSON object with
//! the same for machines.
//!
//! # Layout
//! - [`cluster`]: the nodes, the control plane, the pods and the running processes;
//! - [`steps`]: what each step does and checks, in order;
//! - [`components`]: Ambit's processes by role, and what to look at after a failure;
//! - [`keep`], [`record`]: `--keep`'s poke commands, and the run records `--down` reads;
//! - [`report`]: the ✓/✗ lines, the summary and the JSON report.

mod cluster;
mod components;
mod keep;
mod record;
mod report;
mod steps;

use std::process::ExitCode;

use ambit_e2e::TestNet;
use anyhow::{Result, bail};

use crate::{cluster::Cluster, record::RunRecord, report::Report};

/// What the command line asks for.
struct Options {
    /// One JSON object on stdout instead of lines for people.
    json: bool,
    /// The end of the blamed components' logs when a step fails.
    verbose: bool,
    /// Leave the mesh running until Enter once every step passed.
    keep: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().any(|arg| arg == name);
    if flag("--down") {
        return match record::down() {
            Ok(said) => {
                println!("{said}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("ambit-demo --down: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    let options = Options {
        json: flag("--json"),
        verbose: flag("--verbose"),
        keep: flag("--keep"),
    };
    let mut report = Report::new(options.json);
    let outcome = run(&options, &mut report);
    if let Err(error) = &outcome {
        report.stopped(error);
    }
    if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs the demo on a fresh test network, which is removed when this returns.
fn run(options: &Options, report: &mut Report) -> Result<()> {
    // Declared first so it goes last: `--down` needs it until everything is removed.
    let _record;
    let Some(net) = TestNet::new("demo") else {
        bail!("the demo needs root, ip, the CNI reference plugins, cgroup2 and bpffs (see above)");
    };
    _record = RunRecord::write(&net)?;
    let cluster = walk_through(&net, options, report).inspect_err(|_| net.keep_dir())?;
    report.finish();
    if options.keep {
        keep::until_enter(&cluster)?;
    }
    Ok(())
}

/// Starts the nodes and runs every step, stopping at the first that fails.
fn walk_through<'n>(
    net: &'n TestNet,
    options: &Options,
    report: &mut Report,
) -> Result<Cluster<'n>> {
    let started = report.step_with("two nodes start Ambit's agent and ztunnel", || {
        let cluster = Cluster::start(net)?;
        let detail = format!(
            "config folder {} (namespace shop labelled istio.io/dataplane-mode=ambient, legacy unlabelled)\ncapture programs pinned under {} and {}",
            net.config_dir().display(),
            cluster.nodes[0].bpffs_dir().display(),
            cluster.nodes[1].bpffs_dir().display()
        );
        Ok((cluster, detail))
    });
    let mut cluster = started.inspect_err(|_| {
        report.diagnosis(format!(
            "the agent or ztunnel did not start; every log is in {} (kept)",
            net.logs_dir().display()
        ));
    })?;
    for step in steps::ALL {
        let outcome = report.step(step.name, || (step.run)(&mut cluster));
        if outcome.is_err() {
            report.diagnosis(components::diagnose(
                &cluster,
                step.component,
                options.verbose,
            ));
        }
        outcome?;
    }
    Ok(cluster)
}
