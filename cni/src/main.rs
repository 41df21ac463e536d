//! `ambit-cni`: Ambit's chained CNI plugin. The container runtime runs it after the
//! cluster's main plugin (bridge, Calico, …) for every pod sandbox; it tells the node
//! agent about the sandbox so that the pod is enrolled in the mesh before its
//! containers start, and passes the main plugin's result on unchanged.
//!
//! It speaks CNI 0.3.0 to 1.1.0: ADD, DEL, CHECK, STATUS, VERSION (and GC, which has
//! nothing to do). Each command is one round trip to the agent over its unix socket
//! (`agentSocket` in the plugin's configuration, `/var/run/ambit/cni.sock` by default):
//! one JSON line of `ambit_api::cni::CniRequest` out, one of `CniReply` back.
//!
//! # Layout
//! - `config`: the `CNI_*` environment and the network configuration on stdin, parsed
//!   and validated, each problem mapped to a CNI error code;
//! - `agent_client`: the round trip to the agent, bounded by `agentTimeoutSecs`;
//! - `commands`: what each command asks and prints; `commands::run` is the whole plugin
//!   with the process's environment, stdin and stdout passed in;
//! - `error`: the CNI error object printed on failure.
//! - `testing` (tests only): a stand-in for the agent.
//!
//! # What it does not do
//! It never touches networking: no interfaces, routes, addresses or eBPF (the agent
//! enrols the pod by its netns), and it never changes the previous result. It keeps no
//! state between invocations and does not decide whether a pod belongs in the mesh;
//! the agent does. An agent that cannot be reached fails ADD (the runtime retries) but
//! never DEL, so that pod deletion cannot wedge on a node whose agent is down.

#![forbid(unsafe_code)]

mod agent_client;
mod commands;
mod config;
mod error;
#[cfg(test)]
mod testing;

use std::{
    io::{self, Read},
    process::ExitCode,
};

use crate::{config::CniEnv, error::CniError};

fn main() -> ExitCode {
    let env = CniEnv::from_process();
    let (mut stdout, mut stderr) = (io::stdout().lock(), io::stderr().lock());
    let mut stdin = Vec::new();
    let status = match io::stdin().lock().read_to_end(&mut stdin) {
        Ok(_) => commands::run(&env, &stdin, &mut stdout, &mut stderr),
        Err(err) => commands::report(
            &CniError::stdin_unreadable(&err),
            config::CniVersion::LATEST,
            &mut stdout,
            &mut stderr,
        ),
    };
    ExitCode::from(status)
}
