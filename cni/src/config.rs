//! What a container runtime hands the plugin: `CNI_*` environment variables and the
//! network configuration on stdin, parsed and validated.
//!
//! Nothing here reads the process environment or stdin itself: [`CniEnv::from_process`]
//! is the one place that does, so tests build a [`CniEnv`] in memory.

use std::{collections::BTreeMap, env, fmt, net::IpAddr, path::PathBuf, time::Duration};

use ambit_api::cni::{DEFAULT_AGENT_SOCKET, codes};
use serde::Deserialize;
use serde_json::{Map, Value};

/// `ADD`, `DEL`, `CHECK`, `STATUS`, `VERSION` or `GC`.
pub const ENV_COMMAND: &str = "CNI_COMMAND";
/// The sandbox's container id (required for ADD, DEL and CHECK).
pub const ENV_CONTAINER_ID: &str = "CNI_CONTAINERID";
/// Path of the sandbox's network namespace (required for ADD and CHECK).
pub const ENV_NETNS: &str = "CNI_NETNS";
/// The interface the main plugin created in the sandbox (only logged).
pub const ENV_IFNAME: &str = "CNI_IFNAME";
/// `KEY=VALUE;KEY=VALUE` pairs; Kubernetes runtimes pass the pod's identity here.
pub const ENV_ARGS: &str = "CNI_ARGS";

/// The pod's namespace in `CNI_ARGS`.
pub const ARG_POD_NAMESPACE: &str = "K8S_POD_NAMESPACE";
/// The pod's name in `CNI_ARGS`.
pub const ARG_POD_NAME: &str = "K8S_POD_NAME";
/// The pod's uid in `CNI_ARGS` (not every runtime passes it).
pub const ARG_POD_UID: &str = "K8S_POD_UID";

/// How long one exchange with the agent may take when `agentTimeoutSecs` is absent.
/// Below the 4 minutes kubelet's runtime gives a whole sandbox set-up.
pub const DEFAULT_AGENT_TIMEOUT_SECS: u64 = 30;
/// The largest `agentTimeoutSecs` accepted.
pub const MAX_AGENT_TIMEOUT_SECS: u64 = 600;

/// A CNI specification version this plugin speaks, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    /// Every supported version, oldest first (the order VERSION reports them in).
    pub const ALL: [Self; 5] = [
        Self::V0_3_0,
        Self::V0_3_1,
        Self::V0_4_0,
        Self::V1_0_0,
        Self::V1_1_0,
    ];
    /// The newest version: what VERSION answers in, and what errors are reported in
    /// when the configuration's own version is unknown.
    pub const LATEST: Self = Self::V1_1_0;
    /// CHECK exists from this version on.
    pub const FIRST_WITH_CHECK: Self = Self::V0_4_0;
    /// STATUS and GC exist from this version on.
    pub const FIRST_WITH_STATUS_AND_GC: Self = Self::V1_1_0;

    /// The version as the specification spells it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V0_3_0 => "0.3.0",
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// The supported version spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == text)
    }

    /// The version of the configuration in `stdin` if it is one this plugin speaks, else
    /// [`CniVersion::LATEST`]: what an error reply is labelled with, whatever went wrong.
    pub fn for_reply(stdin: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Probe {
            #[serde(rename = "cniVersion")]
            cni_version: String,
        }
        serde_json::from_slice::<Probe>(stdin)
            .ok()
            .and_then(|probe| Self::parse(&probe.cni_version))
            .unwrap_or(Self::LATEST)
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong reading the invocation; each variant maps to one CNI error code.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{ENV_COMMAND} is not set — ambit-cni is a CNI plugin, run by a container runtime")]
    MissingCommand,
    #[error(
        "{ENV_COMMAND}={0:?} is not a CNI command — expected ADD, DEL, CHECK, STATUS, VERSION or GC"
    )]
    UnknownCommand(String),
    #[error("{command} needs {} set by the container runtime", .missing.join(" and "))]
    MissingEnv {
        command: Command,
        missing: Vec<&'static str>,
    },
    #[error("{ENV_ARGS} holds {0:?}, which is not KEY=VALUE — fix the runtime's CNI_ARGS")]
    BadArgs(String),
    #[error(
        "cannot decode the network configuration on stdin — it must be the JSON of one plugin of a .conflist"
    )]
    Decode(#[source] serde_json::Error),
    #[error(
        "cniVersion {0:?} is not supported — use one of 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0 in the .conflist"
    )]
    UnsupportedVersion(String),
    #[error(
        "config version does not allow {command} — it needs cniVersion {needs} or later, the .conflist says {version}"
    )]
    CommandNotInVersion {
        command: Command,
        version: CniVersion,
        needs: CniVersion,
    },
    #[error("agentTimeoutSecs is {0} — it must be between 1 and {MAX_AGENT_TIMEOUT_SECS}")]
    BadTimeout(u64),
    #[error(
        "{0} without a prevResult — ambit-cni must be chained after the main plugin (e.g. bridge) in a .conflist"
    )]
    MissingPrevResult(Command),
    #[error("prevResult is not the result of a CNI plugin: {0}")]
    BadPrevResult(String),
}

impl ConfigError {
    /// The CNI error code this error is reported with.
    pub fn code(&self) -> u32 {
        match self {
            Self::MissingCommand
            | Self::UnknownCommand(_)
            | Self::MissingEnv { .. }
            | Self::BadArgs(_) => codes::INVALID_ENVIRONMENT,
            Self::Decode(_) => codes::DECODE_FAILURE,
            Self::UnsupportedVersion(_) | Self::CommandNotInVersion { .. } => {
                codes::INCOMPATIBLE_VERSION
            }
            Self::BadTimeout(_) | Self::MissingPrevResult(_) | Self::BadPrevResult(_) => {
                codes::INVALID_CONFIG
            }
        }
    }

    /// The error's `details`: the underlying cause, where there is one.
    pub fn details(&self) -> String {
        match self {
            Self::Decode(source) => source.to_string(),
            _ => String::new(),
        }
    }
}

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Version,
    Gc,
}

impl Command {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "VERSION" => Self::Version,
            "GC" => Self::Gc,
            _ => return None,
        })
    }

    /// The first specification version that defines this command.
    fn first_version(self) -> CniVersion {
        match self {
            Self::Add | Self::Del | Self::Version => CniVersion::V0_3_0,
            Self::Check => CniVersion::FIRST_WITH_CHECK,
            Self::Status | Self::Gc => CniVersion::FIRST_WITH_STATUS_AND_GC,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Status => "STATUS",
            Self::Version => "VERSION",
            Self::Gc => "GC",
        })
    }
}

/// The `CNI_*` environment variables, as given (an empty value counts as unset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: Option<String>,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`.
    pub netns: Option<String>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
    /// `CNI_ARGS`.
    pub args: Option<String>,
}

impl CniEnv {
    /// Reads the variables from this process's environment.
    pub fn from_process() -> Self {
        let var = |name| {
            env::var_os(name)
                .map(|value| value.to_string_lossy().into_owned())
                .filter(|value| !value.is_empty())
        };
        Self {
            command: var(ENV_COMMAND),
            container_id: var(ENV_CONTAINER_ID),
            netns: var(ENV_NETNS),
            ifname: var(ENV_IFNAME),
            args: var(ENV_ARGS),
        }
    }

    /// The operation asked for.
    ///
    /// # Errors
    /// [`ConfigError::MissingCommand`] or [`ConfigError::UnknownCommand`].
    pub fn command(&self) -> Result<Command, ConfigError> {
        let text = self
            .command
            .as_deref()
            .filter(|text| !text.is_empty())
            .ok_or(ConfigError::MissingCommand)?;
        Command::parse(text).ok_or_else(|| ConfigError::UnknownCommand(text.to_owned()))
    }

    /// The sandbox's container id and network namespace, checked for what `command`
    /// requires: both for ADD and CHECK, the container id for DEL (whose netns may be
    /// gone already).
    ///
    /// # Errors
    /// [`ConfigError::MissingEnv`] naming every missing variable.
    pub fn sandbox(&self, command: Command) -> Result<SandboxEnv, ConfigError> {
        let container_id = non_empty(self.container_id.as_deref());
        let netns = non_empty(self.netns.as_deref());
        let mut missing = Vec::new();
        if container_id.is_none() {
            missing.push(ENV_CONTAINER_ID);
        }
        if netns.is_none() && matches!(command, Command::Add | Command::Check) {
            missing.push(ENV_NETNS);
        }
        match container_id {
            Some(container_id) if missing.is_empty() => Ok(SandboxEnv {
                container_id: container_id.to_owned(),
                netns: netns.map(str::to_owned),
            }),
            _ => Err(ConfigError::MissingEnv { command, missing }),
        }
    }

    /// The Kubernetes pod this sandbox belongs to, or `None` when `CNI_ARGS` names no
    /// pod (the runtime is not kubelet's, so there is nothing to enrol).
    ///
    /// # Errors
    /// [`ConfigError::BadArgs`] when `CNI_ARGS` is not `KEY=VALUE;…`.
    pub fn pod(&self) -> Result<Option<PodRef>, ConfigError> {
        let mut args = parse_cni_args(self.args.as_deref().unwrap_or_default())?;
        let mut take = |key| args.remove(key).filter(|value: &String| !value.is_empty());
        let (namespace, name, uid) = (
            take(ARG_POD_NAMESPACE),
            take(ARG_POD_NAME),
            take(ARG_POD_UID),
        );
        Ok(match (namespace, name) {
            (Some(namespace), Some(name)) => Some(PodRef {
                namespace,
                name,
                uid,
            }),
            _ => None,
        })
    }
}

fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|value| !value.is_empty())
}

/// The sandbox variables a command requires, present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxEnv {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`; always `Some` for ADD and CHECK.
    pub netns: Option<String>,
}

/// A pod's identity from `CNI_ARGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Splits `CNI_ARGS` (`KEY=VALUE;KEY=VALUE`) into its pairs; empty segments are skipped
/// and a repeated key keeps its last value.
///
/// # Errors
/// [`ConfigError::BadArgs`] for a segment without `=` or with an empty key.
pub fn parse_cni_args(args: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    args.split(';')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
            _ => Err(ConfigError::BadArgs(pair.to_owned())),
        })
        .collect()
}

/// The network configuration on stdin, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`: the version every reply is written in.
    pub cni_version: CniVersion,
    /// `name`: the network's name (only logged).
    pub name: String,
    /// `agentSocket`: the agent's CNI socket ([`DEFAULT_AGENT_SOCKET`] when absent).
    pub agent_socket: PathBuf,
    /// `agentTimeoutSecs`: how long one exchange with the agent may take
    /// ([`DEFAULT_AGENT_TIMEOUT_SECS`] when absent).
    pub agent_timeout: Duration,
    /// `prevResult`: the result of the plugins before this one in the chain.
    pub prev_result: Option<Map<String, Value>>,
}

/// The configuration as written; other keys (`type`, `capabilities`, …) are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNetConf {
    cni_version: String,
    #[serde(default)]
    name: String,
    agent_socket: Option<PathBuf>,
    agent_timeout_secs: Option<u64>,
    prev_result: Option<Value>,
}

impl NetConf {
    /// Parses and validates the configuration a runtime wrote to stdin.
    ///
    /// # Errors
    /// [`ConfigError::Decode`] for anything that is not a configuration object,
    /// [`ConfigError::UnsupportedVersion`], [`ConfigError::BadTimeout`], or
    /// [`ConfigError::BadPrevResult`] when `prevResult` is not an object.
    pub fn parse(stdin: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawNetConf = serde_json::from_slice(stdin).map_err(ConfigError::Decode)?;
        let cni_version = CniVersion::parse(&raw.cni_version)
            .ok_or(ConfigError::UnsupportedVersion(raw.cni_version))?;
        let timeout_secs = raw.agent_timeout_secs.unwrap_or(DEFAULT_AGENT_TIMEOUT_SECS);
        if !(1..=MAX_AGENT_TIMEOUT_SECS).contains(&timeout_secs) {
            return Err(ConfigError::BadTimeout(timeout_secs));
        }
        let prev_result = match raw.prev_result {
            None => None,
            Some(Value::Object(result)) => Some(result),
            Some(other) => {
                return Err(ConfigError::BadPrevResult(format!(
                    "expected a JSON object, found {other}"
                )));
            }
        };
        Ok(Self {
            cni_version,
            name: raw.name,
            agent_socket: raw
                .agent_socket
                .unwrap_or_else(|| PathBuf::from(DEFAULT_AGENT_SOCKET)),
            agent_timeout: Duration::from_secs(timeout_secs),
            prev_result,
        })
    }

    /// Fails when this configuration's version does not define `command`.
    ///
    /// # Errors
    /// [`ConfigError::CommandNotInVersion`].
    pub fn allows(&self, command: Command) -> Result<(), ConfigError> {
        let needs = command.first_version();
        if self.cni_version < needs {
            return Err(ConfigError::CommandNotInVersion {
                command,
                version: self.cni_version,
                needs,
            });
        }
        Ok(())
    }

    /// `prevResult`, which `command` requires.
    ///
    /// # Errors
    /// [`ConfigError::MissingPrevResult`].
    pub fn require_prev_result(
        &self,
        command: Command,
    ) -> Result<&Map<String, Value>, ConfigError> {
        self.prev_result
            .as_ref()
            .ok_or(ConfigError::MissingPrevResult(command))
    }
}

/// The pod's addresses: `ips[].address` of a previous result, prefix lengths dropped
/// (`"198.18.1.5/24"` → `198.18.1.5`). A result without `ips` gives none.
///
/// # Errors
/// [`ConfigError::BadPrevResult`] when `ips` is malformed or holds an unparsable address.
pub fn pod_ips(prev_result: &Map<String, Value>) -> Result<Vec<IpAddr>, ConfigError> {
    #[derive(Deserialize)]
    struct IpConfig {
        address: String,
    }
    let ips = match prev_result.get("ips") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(ips) => ips,
    };
    let ips = Vec::<IpConfig>::deserialize(ips)
        .map_err(|err| ConfigError::BadPrevResult(format!("ips: {err}")))?;
    ips.iter()
        .map(|ip| {
            let address = ip
                .address
                .split_once('/')
                .map_or(ip.address.as_str(), |(a, _)| a);
            address.parse().map_err(|_| {
                ConfigError::BadPrevResult(format!(
                    "ips[].address {:?} is not an address in CIDR notation",
                    ip.address
                ))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("test fixture should be an object, is {other}"),
        }
    }

    #[test]
    fn cni_args_split_into_pairs() {
        let args = parse_cni_args(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-1;;K8S_POD_UID=u-1;X=a=b",
        )
        .expect("well-formed CNI_ARGS should parse");
        assert_eq!(
            args.get("K8S_POD_NAMESPACE").map(String::as_str),
            Some("shop")
        );
        assert_eq!(args.get("K8S_POD_NAME").map(String::as_str), Some("cart-1"));
        assert_eq!(
            args.get("X").map(String::as_str),
            Some("a=b"),
            "value keeps its '='"
        );
        assert_eq!(args.len(), 5, "{args:?}");
    }

    #[test]
    fn cni_args_without_equals_are_rejected() {
        let err = parse_cni_args("K8S_POD_NAME=a;garbage").expect_err("'garbage' is no pair");
        assert!(
            matches!(&err, ConfigError::BadArgs(pair) if pair == "garbage"),
            "{err:?}"
        );
        assert_eq!(err.code(), codes::INVALID_ENVIRONMENT);
        let err = parse_cni_args("=value").expect_err("an empty key is no pair");
        assert_eq!(err.code(), codes::INVALID_ENVIRONMENT, "{err:?}");
    }

    #[test]
    fn pod_comes_from_k8s_args() {
        let env = CniEnv {
            args: Some("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=cart-1;K8S_POD_UID=u-1".into()),
            ..CniEnv::default()
        };
        let pod = env.pod().expect("args should parse");
        assert_eq!(
            pod,
            Some(PodRef {
                namespace: "shop".into(),
                name: "cart-1".into(),
                uid: Some("u-1".into())
            })
        );
    }

    #[test]
    fn sandbox_without_pod_name_is_no_pod() {
        for args in [
            None,
            Some("IgnoreUnknown=1"),
            Some("K8S_POD_NAMESPACE=shop;K8S_POD_NAME="),
        ] {
            let env = CniEnv {
                args: args.map(str::to_owned),
                ..CniEnv::default()
            };
            let pod = env.pod().expect("args should parse");
            assert_eq!(pod, None, "CNI_ARGS {args:?} names no pod, yet got {pod:?}");
        }
    }

    #[test]
    fn command_is_parsed_or_reported() {
        let env = |command: Option<&str>| CniEnv {
            command: command.map(str::to_owned),
            ..CniEnv::default()
        };
        assert_eq!(env(Some("ADD")).command().ok(), Some(Command::Add));
        assert_eq!(env(Some("STATUS")).command().ok(), Some(Command::Status));
        let err = env(None).command().expect_err("no command");
        assert!(matches!(err, ConfigError::MissingCommand), "{err:?}");
        assert!(err.to_string().contains(ENV_COMMAND), "{err}");
        let err = env(Some("add"))
            .command()
            .expect_err("commands are upper case");
        assert!(matches!(err, ConfigError::UnknownCommand(_)), "{err:?}");
        assert_eq!(err.code(), codes::INVALID_ENVIRONMENT);
    }

    #[test]
    fn missing_sandbox_variables_are_all_named() {
        let err = CniEnv::default()
            .sandbox(Command::Add)
            .expect_err("ADD needs a container id and a netns");
        let message = err.to_string();
        assert!(
            message.contains(ENV_CONTAINER_ID) && message.contains(ENV_NETNS),
            "both variables should be named: {message}"
        );
        assert_eq!(err.code(), codes::INVALID_ENVIRONMENT);
    }

    #[test]
    fn del_needs_no_netns() {
        let env = CniEnv {
            container_id: Some("abc".into()),
            ..CniEnv::default()
        };
        let sandbox = env
            .sandbox(Command::Del)
            .expect("DEL without netns is allowed");
        assert_eq!(sandbox.netns, None);
        let err = env
            .sandbox(Command::Check)
            .expect_err("CHECK needs a netns");
        assert!(err.to_string().contains(ENV_NETNS), "{err}");
    }

    #[test]
    fn conf_defaults_apply() {
        let conf = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"k8s","type":"ambit-cni"}"#)
            .expect("minimal config should parse");
        assert_eq!(conf.cni_version, CniVersion::V1_0_0);
        assert_eq!(conf.agent_socket, PathBuf::from(DEFAULT_AGENT_SOCKET));
        assert_eq!(
            conf.agent_timeout,
            Duration::from_secs(DEFAULT_AGENT_TIMEOUT_SECS)
        );
        assert_eq!(conf.prev_result, None);
    }

    #[test]
    fn conf_reads_agent_settings() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"k8s","agentSocket":"/run/a.sock","agentTimeoutSecs":5,
                "prevResult":{"ips":[]}}"#,
        )
        .expect("config should parse");
        assert_eq!(conf.agent_socket, PathBuf::from("/run/a.sock"));
        assert_eq!(conf.agent_timeout, Duration::from_secs(5));
        assert!(conf.prev_result.is_some());
    }

    #[test]
    fn conf_that_is_not_json_is_a_decode_failure() {
        for stdin in [
            &b""[..],
            b"{",
            b"[1]",
            br#"{"name":"no version"}"#,
            br#"{"cniVersion":1}"#,
        ] {
            let err = NetConf::parse(stdin).expect_err("not a config");
            assert_eq!(
                err.code(),
                codes::DECODE_FAILURE,
                "stdin {:?} gave {err:?}",
                String::from_utf8_lossy(stdin)
            );
            assert!(
                !err.details().is_empty(),
                "details should carry the serde error"
            );
        }
    }

    #[test]
    fn unsupported_version_is_incompatible() {
        for version in ["0.2.0", "2.0.0", "1.1", ""] {
            let stdin = json!({"cniVersion": version}).to_string();
            let err = NetConf::parse(stdin.as_bytes()).expect_err("version is unsupported");
            assert_eq!(
                err.code(),
                codes::INCOMPATIBLE_VERSION,
                "{version:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn version_negotiation_follows_the_spec() {
        let conf = |version: &str| {
            NetConf::parse(json!({"cniVersion": version}).to_string().as_bytes())
                .expect("supported version")
        };
        assert!(conf("0.3.1").allows(Command::Add).is_ok());
        let err = conf("0.3.1")
            .allows(Command::Check)
            .expect_err("no CHECK before 0.4.0");
        assert_eq!(err.code(), codes::INCOMPATIBLE_VERSION);
        assert!(conf("0.4.0").allows(Command::Check).is_ok());
        let err = conf("1.0.0")
            .allows(Command::Status)
            .expect_err("no STATUS before 1.1.0");
        assert_eq!(err.code(), codes::INCOMPATIBLE_VERSION);
        assert!(conf("1.1.0").allows(Command::Status).is_ok());
        assert!(conf("1.1.0").allows(Command::Gc).is_ok());
    }

    #[test]
    fn reply_version_falls_back_to_latest() {
        assert_eq!(
            CniVersion::for_reply(br#"{"cniVersion":"0.4.0"}"#),
            CniVersion::V0_4_0
        );
        assert_eq!(
            CniVersion::for_reply(br#"{"cniVersion":"9.9.9"}"#),
            CniVersion::LATEST
        );
        assert_eq!(CniVersion::for_reply(b"not json"), CniVersion::LATEST);
    }

    #[test]
    fn bad_timeout_is_invalid_config() {
        for secs in [0, MAX_AGENT_TIMEOUT_SECS + 1, u64::MAX] {
            let stdin = json!({"cniVersion": "1.0.0", "agentTimeoutSecs": secs}).to_string();
            let err = NetConf::parse(stdin.as_bytes()).expect_err("timeout out of range");
            assert_eq!(err.code(), codes::INVALID_CONFIG, "{secs} gave {err:?}");
        }
    }

    #[test]
    fn prev_result_must_be_an_object() {
        let err = NetConf::parse(br#"{"cniVersion":"1.0.0","prevResult":"bridge"}"#)
            .expect_err("a string is no result");
        assert_eq!(err.code(), codes::INVALID_CONFIG, "{err:?}");
    }

    #[test]
    fn missing_prev_result_says_to_chain() {
        let conf = NetConf::parse(br#"{"cniVersion":"1.0.0","prevResult":null}"#)
            .expect("null prevResult parses as none");
        let err = conf
            .require_prev_result(Command::Add)
            .expect_err("no prevResult");
        assert_eq!(err.code(), codes::INVALID_CONFIG);
        assert!(err.to_string().contains(".conflist"), "{err}");
    }

    #[test]
    fn pod_ips_drop_the_prefix_length() {
        let prev = object(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0"}],
            "ips": [
                {"address": "198.18.1.5/24", "gateway": "198.18.1.1", "interface": 0},
                {"address": "fd00::5/64"}
            ]
        }));
        let ips = pod_ips(&prev).expect("well-formed ips");
        let want: Vec<IpAddr> = vec![
            "198.18.1.5".parse().expect("literal"),
            "fd00::5".parse().expect("literal"),
        ];
        assert_eq!(ips, want);
        assert_eq!(
            pod_ips(&object(json!({}))).ok(),
            Some(Vec::new()),
            "no ips, no addresses"
        );
    }

    #[test]
    fn malformed_pod_ips_are_invalid_config() {
        for prev in [
            json!({"ips": "198.18.1.5/24"}),
            json!({"ips": [{"gateway": "198.18.1.1"}]}),
            json!({"ips": [{"address": "cart-1/24"}]}),
        ] {
            let err = pod_ips(&object(prev.clone())).expect_err("malformed ips");
            assert_eq!(err.code(), codes::INVALID_CONFIG, "{prev} gave {err:?}");
        }
    }
}
