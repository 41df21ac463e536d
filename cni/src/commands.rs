//! The CNI commands: what each asks of the agent and what it prints.
//!
//! [`run`] is the whole plugin minus the process: it takes the environment and stdin
//! as values and writes the reply to `stdout` (and notes to `log`), so tests call it
//! directly.

use std::{
    fmt,
    io::{self, Write},
    net::IpAddr,
};

use ambit_api::cni::{CniReply, CniRequest, PodSandbox, codes};
use serde_json::{Map, Value, json};

use crate::{
    agent_client::AgentClient,
    config::{CniEnv, CniVersion, Command, ConfigError, NetConf, PodRef, SandboxEnv, pod_ips},
    error::CniError,
};

/// Exit status of a command that succeeded.
pub const EXIT_SUCCESS: u8 = 0;
/// Exit status of a command that failed (its error object is on stdout).
pub const EXIT_FAILURE: u8 = 1;

/// What a successful command prints.
#[derive(Debug)]
enum Output {
    /// A JSON object: ADD's result, VERSION's answer.
    Json(Map<String, Value>),
    /// Nothing: DEL, CHECK, STATUS, GC.
    Silent,
}

/// Runs the command `env` names on the network configuration in `stdin`, writes the
/// result or the CNI error object to `stdout`, and returns the exit status.
pub fn run(env: &CniEnv, stdin: &[u8], stdout: &mut impl Write, log: &mut impl Write) -> u8 {
    match execute(env, stdin, log) {
        Ok(Output::Json(object)) => {
            let written = serde_json::to_writer(&mut *stdout, &object)
                .map_err(io::Error::from)
                .and_then(|()| stdout.write_all(b"\n"))
                .and_then(|()| stdout.flush());
            match written {
                Ok(()) => EXIT_SUCCESS,
                Err(err) => {
                    note(
                        log,
                        format_args!("cannot write the result to stdout: {err}"),
                    );
                    EXIT_FAILURE
                }
            }
        }
        Ok(Output::Silent) => EXIT_SUCCESS,
        Err(err) => report(&err, CniVersion::for_reply(stdin), stdout, log),
    }
}

/// Prints `err` as the CNI error object and returns the failing exit status.
pub fn report(
    err: &CniError,
    version: CniVersion,
    stdout: &mut impl Write,
    log: &mut impl Write,
) -> u8 {
    let written = err.write_to(version, stdout).and_then(|()| stdout.flush());
    if let Err(write_err) = written {
        note(
            log,
            format_args!(
                "cannot write the error to stdout ({write_err}); the error was: {}",
                err.msg
            ),
        );
    }
    EXIT_FAILURE
}

fn execute(env: &CniEnv, stdin: &[u8], log: &mut impl Write) -> Result<Output, CniError> {
    match env.command()? {
        Command::Add => add(env, stdin, log),
        Command::Del => del(env, stdin, log),
        Command::Check => check(env, stdin),
        Command::Status => status(stdin),
        Command::Version => version(stdin),
        Command::Gc => {
            conf_for(stdin, Command::Gc)?;
            note(
                log,
                format_args!("GC: nothing to do, the agent forgets pods whose netns is gone"),
            );
            Ok(Output::Silent)
        }
    }
}

/// A new sandbox: enrol it, then pass the previous result on unchanged.
fn add(env: &CniEnv, stdin: &[u8], log: &mut impl Write) -> Result<Output, CniError> {
    let sandbox = env.sandbox(Command::Add)?;
    let conf = conf_for(stdin, Command::Add)?;
    let prev_result = conf.require_prev_result(Command::Add)?;
    let result = Output::Json(with_version(prev_result, conf.cni_version));
    let Some(pod) = env.pod()? else {
        note(
            log,
            format_args!(
                "ADD container {}: not a Kubernetes pod (no K8S_POD_NAMESPACE/K8S_POD_NAME in CNI_ARGS), nothing to enrol",
                sandbox.container_id
            ),
        );
        return Ok(result);
    };
    let ips = pod_ips(prev_result)?;
    let what = format!(
        "ADD {pod} (container {}, {} on {})",
        sandbox.container_id,
        env.ifname.as_deref().unwrap_or("no CNI_IFNAME"),
        sandbox.netns.as_deref().unwrap_or_default(),
    );
    let agent = agent_for(&conf);
    match agent.call(&CniRequest::Add(pod_sandbox(sandbox, pod, ips))) {
        Ok(CniReply::Ok { enrolled }) => {
            let verdict = if enrolled {
                "enrolled in the mesh"
            } else {
                "not in the mesh"
            };
            note(log, format_args!("{what}: {verdict}"));
            Ok(result)
        }
        Ok(CniReply::Error {
            code,
            message,
            details,
        }) => Err(CniError::from_agent_reply(code, message, details)),
        Err(err) => Err(CniError::agent(&err, err.code())),
    }
}

/// A sandbox going away: un-enrol it. Only the agent's refusal fails DEL; an agent
/// that cannot be reached does not, since a failing DEL wedges pod deletion in kubelet
/// and the agent forgets pods whose netns is gone when it starts.
fn del(env: &CniEnv, stdin: &[u8], log: &mut impl Write) -> Result<Output, CniError> {
    let sandbox = env.sandbox(Command::Del)?;
    let conf = conf_for(stdin, Command::Del)?;
    let Some(pod) = env.pod()? else {
        return Ok(Output::Silent);
    };
    // DEL must succeed on a sandbox half torn down: addresses are a courtesy here.
    let ips = conf
        .prev_result
        .as_ref()
        .and_then(|prev_result| pod_ips(prev_result).ok())
        .unwrap_or_default();
    let what = format!("DEL {pod} (container {})", sandbox.container_id);
    match agent_for(&conf).call(&CniRequest::Del(pod_sandbox(sandbox, pod, ips))) {
        Ok(reply) => silent_unless_refused(reply),
        Err(err) => {
            note(
                log,
                format_args!(
                    "{what}: {err} — not failing DEL; the agent forgets pods whose netns is gone when it starts"
                ),
            );
            Ok(Output::Silent)
        }
    }
}

/// Is the pod enrolled exactly when it should be? Silent when it is.
fn check(env: &CniEnv, stdin: &[u8]) -> Result<Output, CniError> {
    let sandbox = env.sandbox(Command::Check)?;
    let conf = conf_for(stdin, Command::Check)?;
    let prev_result = conf.require_prev_result(Command::Check)?;
    let Some(pod) = env.pod()? else {
        return Ok(Output::Silent);
    };
    let ips = pod_ips(prev_result)?;
    match agent_for(&conf).call(&CniRequest::Check(pod_sandbox(sandbox, pod, ips))) {
        Ok(reply) => silent_unless_refused(reply),
        Err(err) => Err(CniError::agent(&err, err.code())),
    }
}

/// Can the plugin serve ADD now? Only if the agent answers and says so.
fn status(stdin: &[u8]) -> Result<Output, CniError> {
    let conf = conf_for(stdin, Command::Status)?;
    match agent_for(&conf).call(&CniRequest::Status) {
        Ok(reply) => silent_unless_refused(reply),
        Err(err) => Err(CniError::agent(&err, codes::PLUGIN_NOT_AVAILABLE)),
    }
}

/// Nothing to print when the agent agreed; its refusal, code and all, when it did not.
fn silent_unless_refused(reply: CniReply) -> Result<Output, CniError> {
    match reply {
        CniReply::Ok { .. } => Ok(Output::Silent),
        CniReply::Error {
            code,
            message,
            details,
        } => Err(CniError::from_agent_reply(code, message, details)),
    }
}

/// The versions this plugin speaks. stdin (`{"cniVersion": …}`) may be empty.
fn version(stdin: &[u8]) -> Result<Output, CniError> {
    if !stdin.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_slice::<Map<String, Value>>(stdin).map_err(ConfigError::Decode)?;
    }
    let supported: Vec<&str> = CniVersion::ALL.iter().map(|v| v.as_str()).collect();
    let mut answer = Map::new();
    answer.insert("cniVersion".into(), json!(CniVersion::LATEST.as_str()));
    answer.insert("supportedVersions".into(), json!(supported));
    Ok(Output::Json(answer))
}

/// The configuration, checked to define `command`.
fn conf_for(stdin: &[u8], command: Command) -> Result<NetConf, CniError> {
    let conf = NetConf::parse(stdin)?;
    conf.allows(command)?;
    Ok(conf)
}

fn agent_for(conf: &NetConf) -> AgentClient {
    AgentClient::new(conf.agent_socket.clone(), conf.agent_timeout)
}

/// The previous result relabelled with the configuration's version, as the spec asks
/// of a plugin that passes a result on.
fn with_version(prev_result: &Map<String, Value>, version: CniVersion) -> Map<String, Value> {
    let mut result = prev_result.clone();
    result.insert("cniVersion".into(), json!(version.as_str()));
    result
}

fn pod_sandbox(sandbox: SandboxEnv, pod: PodRef, ips: Vec<IpAddr>) -> PodSandbox {
    PodSandbox {
        container_id: sandbox.container_id,
        netns: sandbox.netns,
        pod_namespace: pod.namespace,
        pod_name: pod.name,
        pod_uid: pod.uid,
        ips,
    }
}

/// One line for the runtime's log (stderr); a lost log line is not worth failing for.
fn note(log: &mut impl Write, line: fmt::Arguments<'_>) {
    let _ = writeln!(log, "ambit-cni: {line}");
}

#[cfg(test)]
mod tests;
