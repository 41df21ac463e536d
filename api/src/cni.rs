//! The protocol between the `ambit-cni` plugin and the node agent: one JSON request and
//! one JSON reply per connection on the agent's unix stream socket, each a single line.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// The agent's CNI socket when the plugin configuration names none.
pub const DEFAULT_AGENT_SOCKET: &str = "/var/run/ambit/cni.sock";

/// What the plugin asks of the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum CniRequest {
    /// A pod sandbox was created: enrol it if it belongs in the mesh.
    Add(PodSandbox),
    /// A pod sandbox is going away: un-enrol it. Succeeds for an unknown pod.
    Del(PodSandbox),
    /// Is the pod enrolled exactly when it should be?
    Check(PodSandbox),
    /// Is the agent ready to enrol pods?
    Status,
}

/// A pod sandbox as the container runtime describes it to a CNI plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSandbox {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: path of the sandbox's network namespace (may be absent on DEL).
    pub netns: Option<String>,
    /// `K8S_POD_NAMESPACE` from `CNI_ARGS`.
    pub pod_namespace: String,
    /// `K8S_POD_NAME` from `CNI_ARGS`.
    pub pod_name: String,
    /// `K8S_POD_UID` from `CNI_ARGS`, when the runtime passes it.
    pub pod_uid: Option<String>,
    /// The pod's addresses from the previous plugin's result.
    pub ips: Vec<IpAddr>,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum CniReply {
    /// Done. `enrolled` says whether the pod is now in the mesh.
    Ok { enrolled: bool },
    /// Not done; `code` is a CNI error code (the plugin passes it on unchanged).
    Error {
        code: u32,
        message: String,
        details: String,
    },
}

/// CNI error codes (CNI spec 1.1, "Error"), the ones Ambit uses.
pub mod codes {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Invalid necessary environment variables.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin is not available.
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// Ambit-specific: the pod belongs in the mesh but could not be enrolled.
    pub const ENROLMENT_FAILED: u32 = 100;
    /// Ambit-specific: CHECK found the pod's enrolment differs from what it should be.
    pub const ENROLMENT_MISMATCH: u32 = 101;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_as_one_json_line() {
        let request = CniRequest::Add(PodSandbox {
            container_id: "abc".into(),
            netns: Some("/var/run/netns/p1".into()),
            pod_namespace: "shop".into(),
            pod_name: "cart-1".into(),
            pod_uid: None,
            ips: vec!["198.18.1.5".parse().unwrap()],
        });
        let line = serde_json::to_string(&request).unwrap();
        assert!(
            !line.contains('\n'),
            "a request must fit on one line: {line}"
        );
        assert!(line.contains(r#""command":"add""#), "{line}");
        assert_eq!(serde_json::from_str::<CniRequest>(&line).unwrap(), request);
    }
}
