//! `--local-config FILE`: the config push read from a file instead of the controller —
//! a `ConfigUpdate` in protobuf, as `ambit-controller snapshot` writes it — applied like
//! a pushed full state, and applied again whenever the file changes.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use ambit_api::config::ConfigUpdate;
use prost::Message as _;
use tracing::{info, warn};

use crate::subscribe::Targets;

/// How often the file is checked for a change.
pub const POLL_INTERVAL_MS: u64 = 500;

/// Why the file could not be applied (the previous config stays).
#[derive(Debug, thiserror::Error)]
enum LocalConfigError {
    #[error("cannot read {path}: {source} — write it with `ambit-controller snapshot`")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a config snapshot ({source}) — write it with `ambit-controller snapshot`"
    )]
    Decode {
        path: PathBuf,
        source: prost::DecodeError,
    },
    #[error("{path}: {reason}")]
    Apply { path: PathBuf, reason: String },
}

/// Applies `path` to `targets` now and after every change, forever.
pub async fn follow(path: PathBuf, targets: Targets) {
    let mut applied: Option<SystemTime> = None;
    let mut reported = false;
    loop {
        let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        if modified.is_some() && modified != applied {
            match apply(&path, &targets) {
                Ok(summary) => {
                    info!(path = %path.display(), %summary, "applied the local config");
                    applied = modified;
                    reported = false;
                }
                Err(error) if !reported => {
                    warn!(%error, "local config not applied; the previous one stays");
                    reported = true;
                }
                Err(_) => {}
            }
        } else if modified.is_none() && !reported {
            warn!(path = %path.display(), "no local config yet; waiting for the file");
            reported = true;
        }
        tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
    }
}

fn apply(path: &PathBuf, targets: &Targets) -> Result<String, LocalConfigError> {
    let bytes = std::fs::read(path).map_err(|source| LocalConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let mut update =
        ConfigUpdate::decode(bytes.as_slice()).map_err(|source| LocalConfigError::Decode {
            path: path.clone(),
            source,
        })?;
    // Whatever the snapshot says, it replaces everything held.
    update.full = true;
    targets
        .apply(update)
        .map_err(|reason| LocalConfigError::Apply {
            path: path.clone(),
            reason,
        })
}
