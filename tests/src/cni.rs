//! Running CNI plugins the way a container runtime (libcni) does: one process per
//! plugin, parameters in `CNI_*` environment variables, the network configuration on
//! stdin, the result (or a JSON error) on stdout.
//!
//! [`Runtime`] always runs plugins inside a network namespace it is given (a node's),
//! never in the test's own, so a plugin can never touch the host's interfaces.
//! [`Runtime::invoke`] is the raw form, for feeding a plugin arbitrary input;
//! [`Runtime::add_list`] / [`Runtime::check_list`] / [`Runtime::del_list`] run a whole
//! conflist as a runtime would.

use std::{env, ffi::OsStr, fmt, path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{
    cmd::{self, Finished},
    prereq::CNI_PLUGIN_DIRS,
    process,
};

/// The CNI spec version the harness speaks (the newest the Debian plugins know).
pub const CNI_VERSION: &str = "1.0.0";

/// How long a plugin may run before it is killed and reported.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(30);

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Check,
    Del,
    Status,
    Version,
}

impl CniCommand {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Check => "CHECK",
            Self::Del => "DEL",
            Self::Status => "STATUS",
            Self::Version => "VERSION",
        }
    }
}

impl fmt::Display for CniCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a runtime tells a plugin about the sandbox, besides the command.
#[derive(Debug, Clone)]
pub struct CniArgs {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (unset when `None`, as a runtime may do on DEL).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `K8S_POD_NAMESPACE` in `CNI_ARGS`.
    pub pod_namespace: String,
    /// `K8S_POD_NAME` in `CNI_ARGS`.
    pub pod_name: String,
    /// `K8S_POD_UID` in `CNI_ARGS`.
    pub pod_uid: Option<String>,
}

impl CniArgs {
    /// `CNI_ARGS` as kubelet/containerd write it.
    #[must_use]
    pub fn cni_args(&self) -> String {
        let mut args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
            self.pod_namespace, self.pod_name, self.container_id
        );
        if let Some(uid) = &self.pod_uid {
            args.push_str(";K8S_POD_UID=");
            args.push_str(uid);
        }
        args
    }

    /// The complete `CNI_*` environment for `command`, with `cni_path` as `CNI_PATH`.
    #[must_use]
    pub fn env(&self, command: CniCommand, cni_path: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("CNI_COMMAND".to_owned(), command.as_str().to_owned()),
            ("CNI_CONTAINERID".to_owned(), self.container_id.clone()),
            ("CNI_IFNAME".to_owned(), self.ifname.clone()),
            ("CNI_ARGS".to_owned(), self.cni_args()),
            ("CNI_PATH".to_owned(), cni_path.to_owned()),
        ];
        if let Some(netns) = &self.netns {
            env.push(("CNI_NETNS".to_owned(), netns.display().to_string()));
        }
        env
    }
}

/// Runs plugins inside one network namespace (and optionally one cgroup).
#[derive(Debug, Clone)]
pub struct Runtime {
    netns: PathBuf,
    cgroup: Option<PathBuf>,
    cni_path: Vec<PathBuf>,
    timeout: Duration,
}

impl Runtime {
    /// A runtime whose plugins run in the network namespace at `netns` (for example
    /// [`crate::Node::netns_path`]), searching the reference plugin directories.
    #[must_use]
    pub fn new(netns: impl Into<PathBuf>) -> Self {
        Self {
            netns: netns.into(),
            cgroup: None,
            cni_path: CNI_PLUGIN_DIRS
                .iter()
                .map(PathBuf::from)
                .filter(|dir| dir.is_dir())
                .collect(),
            timeout: DEFAULT_PLUGIN_TIMEOUT,
        }
    }

    /// Also searches `dir` for plugins (after the directories already listed).
    #[must_use]
    pub fn with_plugin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        if !self.cni_path.contains(&dir) {
            self.cni_path.push(dir);
        }
        self
    }

    /// Runs plugins in the cgroup at `cgroup`.
    #[must_use]
    pub fn with_cgroup(mut self, cgroup: impl Into<PathBuf>) -> Self {
        self.cgroup = Some(cgroup.into());
        self
    }

    /// Kills a plugin that runs longer than `timeout`.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `CNI_PATH`: the plugin directories joined with `:`.
    #[must_use]
    pub fn cni_path(&self) -> String {
        self.cni_path
            .iter()
            .map(|dir| dir.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The binary for plugin type `plugin_type`: the first match in `CNI_PATH`.
    ///
    /// # Errors
    /// When no directory has it.
    pub fn find_plugin(&self, plugin_type: &str) -> Result<PathBuf> {
        if plugin_type.is_empty() || plugin_type.contains('/') {
            bail!("CNI plugin type {plugin_type:?} is not a plain file name");
        }
        self.cni_path
            .iter()
            .map(|dir| dir.join(plugin_type))
            .find(|path| path.is_file())
            .with_context(|| {
                format!(
                    "CNI plugin {plugin_type:?} not found in CNI_PATH {}",
                    self.cni_path()
                )
            })
    }

    /// Runs plugin `plugin_type` with exactly the `CNI_*` variables in `env` (inherited
    /// `CNI_*` variables are removed; the rest of the environment is inherited) and
    /// `stdin` as input. Any exit status is returned as is.
    ///
    /// # Errors
    /// When the plugin is not found, cannot start, or runs past the timeout.
    pub fn invoke<K, V>(
        &self,
        plugin_type: &str,
        env: impl IntoIterator<Item = (K, V)>,
        stdin: &[u8],
    ) -> Result<Finished>
    where
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let binary = self.find_plugin(plugin_type)?;
        let mut command = Command::new(&binary);
        for (key, _) in env::vars_os() {
            if key.to_string_lossy().starts_with("CNI_") {
                command.env_remove(key);
            }
        }
        command.envs(env);
        process::enter_in_child(&mut command, &self.netns, self.cgroup.as_deref())?;
        cmd::run_with_input(&mut command, stdin, self.timeout)
    }

    /// Runs one plugin for `command` with the standard environment built from `args`
    /// and `net_conf` (one network configuration, as [`plugin_config`] builds it) on
    /// stdin. Any exit status is returned as is.
    ///
    /// # Errors
    /// As [`Runtime::invoke`]; also when `net_conf` has no string `type`.
    pub fn exec_plugin(
        &self,
        command: CniCommand,
        net_conf: &Value,
        args: &CniArgs,
    ) -> Result<Finished> {
        let plugin_type = net_conf["type"]
            .as_str()
            .with_context(|| format!("network config has no string `type`: {net_conf}"))?;
        let stdin = serde_json::to_vec(net_conf)?;
        self.invoke(plugin_type, args.env(command, &self.cni_path()), &stdin)
    }

    /// CNI ADD through every plugin of `conflist` in order, each getting the previous
    /// one's result as `prevResult`. Returns the last plugin's result.
    ///
    /// # Errors
    /// At the first plugin that fails or prints no result, with its output.
    pub fn add_list(&self, conflist: &Value, args: &CniArgs) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for index in 0..plugin_count(conflist)? {
            let conf = plugin_config(conflist, index, prev.as_ref())?;
            let done = self.exec_plugin(CniCommand::Add, &conf, args)?;
            let what = describe_step(CniCommand::Add, conflist, index, args);
            let done = done.success().with_context(|| format!("{what} failed"))?;
            prev = Some(
                done.json()
                    .with_context(|| format!("{what} printed no valid result"))?,
            );
        }
        prev.with_context(|| format!("conflist has no plugins: {conflist}"))
    }

    /// CNI CHECK through every plugin in order, each given `result` (the ADD result) as
    /// `prevResult`, as libcni does.
    ///
    /// # Errors
    /// At the first plugin that fails, with its output.
    pub fn check_list(&self, conflist: &Value, args: &CniArgs, result: &Value) -> Result<()> {
        for index in 0..plugin_count(conflist)? {
            let conf = plugin_config(conflist, index, Some(result))?;
            self.exec_plugin(CniCommand::Check, &conf, args)?
                .success()
                .with_context(|| {
                    format!(
                        "{} failed",
                        describe_step(CniCommand::Check, conflist, index, args)
                    )
                })?;
        }
        Ok(())
    }

    /// CNI DEL through every plugin in reverse order, each given `result` (the cached ADD
    /// result, if any) as `prevResult`. Every plugin is run even when one fails.
    ///
    /// # Errors
    /// When any plugin failed; the error lists them all.
    pub fn del_list(&self, conflist: &Value, args: &CniArgs, result: Option<&Value>) -> Result<()> {
        let mut failures = Vec::new();
        for index in (0..plugin_count(conflist)?).rev() {
            let what = describe_step(CniCommand::Del, conflist, index, args);
            let outcome = plugin_config(conflist, index, result)
                .and_then(|conf| self.exec_plugin(CniCommand::Del, &conf, args))
                .and_then(Finished::success);
            if let Err(error) = outcome {
                failures.push(format!("{what} failed: {error:#}"));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            bail!(failures.join("\n"))
        }
    }
}

/// The stdin of plugin `index` of `conflist`: its own configuration plus the list's
/// `cniVersion` and `name`, and `prevResult` when given.
///
/// # Errors
/// When `conflist` has no plugin `index`, or it is not an object.
pub fn plugin_config(conflist: &Value, index: usize, prev_result: Option<&Value>) -> Result<Value> {
    let mut conf = conflist["plugins"]
        .get(index)
        .and_then(Value::as_object)
        .with_context(|| format!("conflist has no plugin object at index {index}: {conflist}"))?
        .clone();
    conf.insert("cniVersion".into(), conflist["cniVersion"].clone());
    conf.insert("name".into(), conflist["name"].clone());
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    Ok(Value::Object(conf))
}

/// The IP addresses (with prefix lengths) of a CNI result's `ips[].address`.
///
/// # Errors
/// When an address does not parse.
pub fn result_ips(result: &Value) -> Result<Vec<crate::Cidr>> {
    result["ips"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|ip| {
            ip["address"]
                .as_str()
                .with_context(|| format!("result entry without `address`: {ip}"))?
                .parse()
        })
        .collect()
}

/// A conflist: `name`, the harness's [`CNI_VERSION`], and `plugins`.
#[must_use]
pub fn conflist(name: &str, plugins: Vec<Value>) -> Value {
    json!({ "cniVersion": CNI_VERSION, "name": name, "plugins": plugins })
}

fn plugin_count(conflist: &Value) -> Result<usize> {
    conflist["plugins"]
        .as_array()
        .map(Vec::len)
        .with_context(|| format!("conflist has no `plugins` array: {conflist}"))
}

fn describe_step(command: CniCommand, conflist: &Value, index: usize, args: &CniArgs) -> String {
    format!(
        "CNI {command} of plugin {} ({} of {} in {}) for pod {}/{}",
        conflist["plugins"][index]["type"],
        index + 1,
        conflist["plugins"].as_array().map_or(0, Vec::len),
        conflist["name"],
        args.pod_namespace,
        args.pod_name,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_config_carries_version_name_and_prev_result() {
        let list = conflist(
            "net",
            vec![
                json!({"type": "bridge"}),
                json!({"type": "ambit-cni", "x": 1}),
            ],
        );
        let prev = json!({"ips": [{"address": "198.18.1.2/24"}]});
        let conf = plugin_config(&list, 1, Some(&prev)).unwrap();
        assert_eq!(
            conf,
            json!({"type": "ambit-cni", "x": 1, "cniVersion": CNI_VERSION, "name": "net", "prevResult": prev})
        );
        assert!(plugin_config(&list, 2, None).is_err());
        assert_eq!(result_ips(&prev).unwrap()[0].to_string(), "198.18.1.2/24");
    }

    #[test]
    fn cni_args_are_written_like_kubelet_does() {
        let args = CniArgs {
            container_id: "c1".into(),
            netns: None,
            ifname: "eth0".into(),
            pod_namespace: "shop".into(),
            pod_name: "cart".into(),
            pod_uid: Some("u1".into()),
        };
        assert_eq!(
            args.cni_args(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=u1"
        );
        let env = args.env(CniCommand::Del, "/usr/lib/cni");
        assert!(!env.iter().any(|(key, _)| key == "CNI_NETNS"), "{env:?}");
    }
}
