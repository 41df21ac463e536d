//! The error a CNI plugin reports: the specification's error object, printed on stdout
//! with a non-zero exit status.

use std::io::{self, Write};

use ambit_api::cni::codes;
use serde::Serialize;

use crate::{
    agent_client::AgentError,
    config::{CniVersion, ConfigError},
};

/// A failed command, as the runtime will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// A CNI error code (`ambit_api::cni::codes`).
    pub code: u32,
    /// What went wrong and what to do about it.
    pub msg: String,
    /// The underlying cause or a hint; may be empty.
    pub details: String,
}

impl CniError {
    /// An exchange with the agent failed; `code` depends on the command (`TRY_AGAIN_LATER`
    /// for ADD, `PLUGIN_NOT_AVAILABLE` for STATUS, …).
    pub fn agent(err: &AgentError, code: u32) -> Self {
        Self {
            code,
            msg: err.to_string(),
            details: err.hint().to_owned(),
        }
    }

    /// The agent answered with an error: passed on as it is.
    pub fn from_agent_reply(code: u32, message: String, details: String) -> Self {
        Self {
            code,
            msg: message,
            details,
        }
    }

    /// stdin could not be read at all.
    pub fn stdin_unreadable(err: &io::Error) -> Self {
        Self {
            code: codes::IO_FAILURE,
            msg: "cannot read the network configuration from stdin".to_owned(),
            details: err.to_string(),
        }
    }

    /// Writes the error object, labelled with `version`, as one line.
    ///
    /// # Errors
    /// When `out` cannot be written.
    pub fn write_to(&self, version: CniVersion, out: &mut impl Write) -> io::Result<()> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        let wire = Wire {
            cni_version: version.as_str(),
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        serde_json::to_writer(&mut *out, &wire)?;
        out.write_all(b"\n")
    }
}

impl From<ConfigError> for CniError {
    fn from(err: ConfigError) -> Self {
        Self {
            code: err.code(),
            details: err.details(),
            msg: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    #[test]
    fn error_object_follows_the_spec() {
        let err = CniError {
            code: codes::TRY_AGAIN_LATER,
            msg: "agent away".into(),
            details: "start it".into(),
        };
        let mut out = Vec::new();
        err.write_to(CniVersion::V1_0_0, &mut out)
            .expect("write to a Vec");
        let printed: Value = serde_json::from_slice(&out).expect("the error is JSON");
        assert_eq!(
            printed,
            json!({"cniVersion": "1.0.0", "code": 11, "msg": "agent away", "details": "start it"})
        );
        assert!(
            out.ends_with(b"}\n"),
            "one line: {:?}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn empty_details_are_left_out() {
        let err = CniError::from(ConfigError::MissingCommand);
        let mut out = Vec::new();
        err.write_to(CniVersion::LATEST, &mut out)
            .expect("write to a Vec");
        let printed: Value = serde_json::from_slice(&out).expect("the error is JSON");
        assert_eq!(printed.get("details"), None, "{printed}");
        assert_eq!(
            printed["code"],
            json!(codes::INVALID_ENVIRONMENT),
            "{printed}"
        );
    }
}
