//! `ambit-controller snapshot`: what the push would send one subscriber, written to a
//! file as a full `ConfigUpdate` in protobuf — for `ambit-ztunnel --local-config` (a
//! node without a controller, or a controller's view replayed while debugging).

use std::path::{Path, PathBuf};

use ambit_api::{
    config::{ConfigUpdate, SubscriberKind},
    manifests::{ManifestError, Manifests},
};
use prost::Message as _;

use crate::{
    mesh::{self, Mesh},
    push::select::{Subscriber, select},
    validate::Diagnostic,
};

/// Why no snapshot was written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Manifests(#[from] ManifestError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Builds the model of `config_dir`, selects what `subscriber` would receive and writes
/// it to `out`; returns the problems found in the folder and how many resources went in.
///
/// # Errors
/// The folder cannot be read, or the file written.
pub fn write(
    config_dir: &Path,
    trust_domain: &str,
    subscriber: &Subscriber,
    out: &Path,
) -> Result<(Vec<Diagnostic>, usize), SnapshotError> {
    let manifests = Manifests::load_dir(config_dir)?;
    let built = mesh::build(&manifests, trust_domain, &Mesh::default());
    let resources = select(&built.mesh, subscriber);
    let update = ConfigUpdate {
        version: 1,
        full: true,
        upserted: resources.into_values().collect(),
        removed: Vec::new(),
        more: false,
    };
    let count = update.upserted.len();
    std::fs::write(out, update.encode_to_vec()).map_err(|source| SnapshotError::Write {
        path: out.to_owned(),
        source,
    })?;
    Ok((built.diagnostics, count))
}

/// A subscriber kind's name on the command line and in metrics.
#[must_use]
pub fn kind_name(kind: SubscriberKind) -> &'static str {
    match kind {
        SubscriberKind::Agent => "agent",
        SubscriberKind::Ztunnel => "ztunnel",
        SubscriberKind::Waypoint => "waypoint",
        SubscriberKind::Gateway => "gateway",
        SubscriberKind::Unspecified => "unspecified",
    }
}

/// A subscriber kind as the command line names it.
///
/// # Errors
/// A name other than `agent`, `ztunnel`, `waypoint` or `gateway`.
pub fn kind(name: &str) -> Result<SubscriberKind, String> {
    match name {
        "agent" => Ok(SubscriberKind::Agent),
        "ztunnel" => Ok(SubscriberKind::Ztunnel),
        "waypoint" => Ok(SubscriberKind::Waypoint),
        "gateway" => Ok(SubscriberKind::Gateway),
        other => Err(format!(
            "unknown subscriber kind `{other}`: use agent, ztunnel, waypoint or gateway"
        )),
    }
}
