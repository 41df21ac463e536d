//! What both sources do with a changed collection of manifests: bring the model up to
//! date, log what was rejected, and publish a new [`Snapshot`] when the model changed.

use std::sync::Arc;

use ambit_api::manifests::Manifests;
use tokio::sync::watch;

use super::{ModelSource, Snapshot};
use crate::{
    mesh::{self, Built, FileChanges, Mesh},
    validate::Diagnostic,
};

/// The last build of the model and the channel its versions are published on.
#[derive(Debug)]
pub(super) struct Publisher {
    built: Built,
    trust_domain: String,
    publish: watch::Sender<Arc<Snapshot>>,
}

impl Publisher {
    /// Builds version 1 of the model from `manifests`, read from `origin` (for the log).
    pub(super) fn first(manifests: &Manifests, trust_domain: &str, origin: &str) -> Self {
        let built = mesh::build(manifests, trust_domain, &Mesh::default());
        log_findings(&built);
        tracing::info!(
            source = origin,
            workloads = built.mesh.workloads.len(),
            services = built.mesh.services.len(),
            routes = built.mesh.routes.len(),
            version = 1,
            "model loaded"
        );
        let (publish, _) = watch::channel(Arc::new(Snapshot::new(1, built.mesh.clone())));
        Self {
            built,
            trust_domain: trust_domain.to_owned(),
            publish,
        }
    }

    /// A receiver of every new snapshot, starting with the current one.
    pub(super) fn subscribe(&self) -> ModelSource {
        self.publish.subscribe()
    }

    /// Every problem the last build found.
    pub(super) fn diagnostics(&self) -> &[Diagnostic] {
        &self.built.diagnostics
    }

    /// Brings the model up to date with `manifests` after `changes`, and publishes the
    /// next version if the model changed.
    pub(super) fn update(&mut self, manifests: &Manifests, changes: &FileChanges) {
        self.built = mesh::update(manifests, &self.trust_domain, &self.built, changes);
        log_findings(&self.built);
        let current = Arc::clone(&self.publish.borrow());
        let Some(next) = current.next(self.built.mesh.clone()) else {
            tracing::debug!(
                version = current.version,
                changed = changes.files.len(),
                "manifests changed; model unchanged"
            );
            return;
        };
        tracing::info!(
            version = next.version,
            workloads = next.mesh.workloads.len(),
            services = next.mesh.services.len(),
            routes = next.mesh.routes.len(),
            "model updated"
        );
        self.publish.send_replace(Arc::new(next));
    }
}

/// Logs each diagnostic and each object kept at its last good version.
fn log_findings(built: &Built) {
    for diagnostic in &built.diagnostics {
        tracing::warn!(%diagnostic, "config rejected");
    }
    for object in &built.kept {
        tracing::warn!(%object, "invalid or unreadable now: its last good version stays in force");
    }
}
