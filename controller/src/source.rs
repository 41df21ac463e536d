//! Where the model comes from, as versioned [`Snapshot`]s of the [`Mesh`]: a folder of
//! Kubernetes YAML (`--config-dir`, [`FolderSource`]), watched with `notify`, or the
//! Kubernetes API (`--kube`, [`KubeSource`]), watched with kube-rs. Both hold what they
//! read as a [`Manifests`](ambit_api::manifests::Manifests) collection and rebuild the
//! model within tens of milliseconds of a change, the same way.
//!
//! Changes are debounced ([`DEBOUNCE`]): an editor's write-rename-chmod burst, or a
//! relist, is one rebuild. Only the files whose text changed are parsed again
//! (`folder.rs`; for the Kubernetes source each object is its own file), and only what
//! they can affect is resolved again ([`mesh::update`](crate::mesh::update)). Each
//! rebuild starts from the previous model, so an object that turns invalid keeps its last
//! good version; its diagnostics are logged with the object and the field path. The
//! version increases only when the model changes (`publish.rs`).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use ambit_api::manifests::ManifestError;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::{mpsc, watch};

pub use self::kubernetes::KubeSource;
use self::{folder::Folder, publish::Publisher};
use crate::{
    mesh::{Changes, Mesh},
    push::selections::Selections,
};

pub(crate) mod folder;
pub mod kubernetes;
mod publish;

/// How long to wait after a change for the rest of its burst (an editor's
/// write-rename-chmod comes within a millisecond) before rebuilding; a rebuild costs tens
/// of milliseconds, so a burst split in two costs one extra version, not a stall.
pub const DEBOUNCE: Duration = Duration::from_millis(25);

/// Why the folder cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Read(#[from] ManifestError),
    #[error(
        "cannot watch config folder {path}: {source} — does it exist, and is the inotify watch limit (fs.inotify.max_user_watches) reached?"
    )]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
}

/// One version of the model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Starts at 1; increases with every change of [`Snapshot::mesh`].
    pub version: u64,
    pub mesh: Mesh,
    /// What subscribers receive of this version, computed once for all of them.
    pub selections: Selections,
}

impl Snapshot {
    /// Version `version` of the model `mesh`.
    #[must_use]
    pub fn new(version: u64, mesh: Mesh) -> Self {
        Self {
            version,
            mesh,
            selections: Selections::default(),
        }
    }

    /// The version after this one, holding `mesh`, with what subscribers receive derived
    /// from this version's where `mesh` differs; `None` when `mesh` is the same model.
    #[must_use]
    pub fn next(&self, mesh: Mesh) -> Option<Self> {
        let changes = Changes::between(&self.mesh, &mesh);
        if changes.is_empty() {
            return None;
        }
        let selections = self.selections.next(&self.mesh, &mesh, &changes);
        Some(Self {
            version: self.version + 1,
            mesh,
            selections,
        })
    }
}

/// What the push server reads: the current snapshot, and a wake-up on each new one.
pub type ModelSource = watch::Receiver<Arc<Snapshot>>;

/// A watched config folder. Dropping it stops the watch; subscribers then see the source
/// end.
#[derive(Debug)]
pub struct FolderSource {
    model: ModelSource,
    _watcher: RecommendedWatcher,
}

impl FolderSource {
    /// Reads `dir` once (version 1), then watches it. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// [`SourceError`] when `dir` cannot be read or watched.
    pub fn start(dir: &Path, trust_domain: &str) -> Result<Self, SourceError> {
        let folder = Folder::load(dir)?;
        let publisher = Publisher::first(
            folder.manifests(),
            trust_domain,
            &format!("config folder {}", dir.display()),
        );
        let model = publisher.subscribe();
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Reading the folder generates access events; only changes matter.
                if event.is_ok_and(|e| !matches!(e.kind, EventKind::Access(_))) {
                    let _ = events_tx.send(());
                }
            })
            .map_err(|source| SourceError::Watch {
                path: dir.to_owned(),
                source,
            })?;
        watcher
            .watch(dir, RecursiveMode::Recursive)
            .map_err(|source| SourceError::Watch {
                path: dir.to_owned(),
                source,
            })?;
        tokio::spawn(reload_loop(folder, publisher, events));
        Ok(Self {
            model,
            _watcher: watcher,
        })
    }

    /// A receiver of every new snapshot, starting with the current one.
    #[must_use]
    pub fn subscribe(&self) -> ModelSource {
        self.model.clone()
    }
}

async fn reload_loop(
    mut folder: Folder,
    mut publisher: Publisher,
    mut events: mpsc::UnboundedReceiver<()>,
) {
    while events.recv().await.is_some() {
        tokio::time::sleep(DEBOUNCE).await;
        while events.try_recv().is_ok() {}
        match folder.reread() {
            Ok(changes) if changes.files.is_empty() => {
                tracing::debug!("config folder touched; no file changed");
            }
            Ok(changes) => publisher.update(folder.manifests(), &changes),
            Err(error) => {
                tracing::warn!(%error, "config folder unreadable; the model stays as it is");
            }
        }
    }
}
