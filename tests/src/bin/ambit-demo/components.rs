//! The demo's components — Ambit's processes and the test apps — and, when a step
//! fails, which of them to look at and where their logs are.

use std::{fmt, fmt::Write as _, path::Path};

use ambit_e2e::ChildGuard;

use crate::cluster::Cluster;

/// How many log lines `--verbose` prints of each component it blames.
const LOG_TAIL_LINES: usize = 30;

/// One of the demo's components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The agent on node `n` (0 is node1): eBPF programs, enrolment through CNI.
    Agent(usize),
    /// ztunnel on node `n` (0 is node1).
    Ztunnel(usize),
    Ca,
    ConfigPush,
    Waypoint,
    IngressGateway,
    /// The test programs in the pods (`pod-app`).
    TestApps,
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Agent(node) => write!(f, "the agent on node{}", node + 1),
            Self::Ztunnel(node) => write!(f, "ztunnel on node{}", node + 1),
            Self::Ca => f.write_str("the CA (ambit-controller serve-ca)"),
            Self::ConfigPush => f.write_str("the config push (ambit-controller serve)"),
            Self::Waypoint => f.write_str("the waypoint (ambit-waypoint in shop/waypoint-0)"),
            Self::IngressGateway => f.write_str(
                "the ingress gateway (ambit-waypoint --ingress in istio-system/ingress-0)",
            ),
            Self::TestApps => f.write_str("the test apps (pod-app)"),
        }
    }
}

/// What to tell a person when the step exercising `suspect` failed: any component
/// that exited (the likely cause), `suspect` and its log, and where every log is; with
/// `verbose`, the end of those logs.
pub fn diagnose(cluster: &Cluster<'_>, suspect: Component, verbose: bool) -> String {
    let mut text = String::new();
    let all = cluster.components();
    for (component, process) in &all {
        if let Ok(Some(status)) = process.try_status() {
            let _ = writeln!(
                text,
                "{component} exited ({status}): it is the likely cause"
            );
            describe_log(&mut text, process, verbose);
        }
    }
    let suspects: Vec<_> = all.iter().filter(|(c, _)| *c == suspect).collect();
    if suspects.is_empty() {
        let _ = writeln!(text, "the step exercises {suspect}, which had not started");
    }
    for (component, process) in suspects {
        if matches!(process.try_status(), Ok(None)) {
            let _ = writeln!(text, "the step exercises {component}, still running");
            describe_log(&mut text, process, verbose);
        }
    }
    let _ = write!(
        text,
        "every component's log is in {} (kept)",
        cluster.net.logs_dir().display()
    );
    if !verbose {
        text.push_str("; --verbose prints the end of the logs above");
    }
    text
}

fn describe_log(text: &mut String, process: &ChildGuard, verbose: bool) {
    let _ = writeln!(
        text,
        "  its log: {} (and {})",
        process.stdout_path().display(),
        file_name(process.stderr_path())
    );
    if verbose {
        let log = process.stdout() + &process.stderr();
        let lines: Vec<&str> = log.lines().collect();
        for line in &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..] {
            let _ = writeln!(text, "  | {line}");
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
