//! The subscription to the controller's config push as this node's ztunnel: every
//! `ConfigUpdate` applied to the [`Directory`] and the [`Policies`], all or nothing (the
//! loop, acknowledgements and reconnects are [`ambit_api::subscribe`]'s).

use std::{path::PathBuf, sync::Arc};

use ambit_api::{
    config::{ConfigUpdate, SubscriberKind},
    subscribe::{self, Subscription},
};
use tracing::info;

use crate::{directory::Directory, heap, policy::Policies};

/// What the push keeps up to date.
#[derive(Debug, Clone)]
pub struct Targets {
    pub directory: Arc<Directory>,
    pub policies: Arc<Policies>,
}

impl Targets {
    /// Applies `update` to both, or to neither; then frees it, and the heap the
    /// previous state held, for good ([`heap::release_freed`]).
    pub(crate) fn apply(&self, update: ConfigUpdate) -> Result<String, String> {
        let result = self.apply_update(&update);
        drop(update);
        heap::release_freed();
        result
    }

    fn apply_update(&self, update: &ConfigUpdate) -> Result<String, String> {
        let staged = self.policies.stage(update).map_err(|e| e.to_string())?;
        self.directory.apply(update).map_err(|e| e.to_string())?;
        let closed = self.policies.commit(staged);
        if closed > 0 {
            info!(closed, "closed connections the new policy forbids");
        }
        let peers = self.directory.len();
        info!(version = update.version, peers, "directory updated");
        Ok(format!("{peers} peers"))
    }
}

/// Keeps `targets` in step with the controller, forever, presenting the token in
/// `token_file` (the CA's, `--ca-token-file`) when there is one, and verifying the
/// controller against the mesh root in `root_file` (`--ca-root-file`).
pub async fn run(
    address: String,
    node: String,
    token_file: Option<PathBuf>,
    root_file: Option<PathBuf>,
    targets: Targets,
) {
    let subscription = Subscription {
        address,
        root_file,
        node,
        kind: SubscriberKind::Ztunnel,
        token_file,
    };
    subscribe::run(subscription, &mut |update| targets.apply(update)).await;
}

#[cfg(test)]
#[path = "subscribe_tests.rs"]
mod tests;
