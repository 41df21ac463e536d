//! Watches the config folder and reconciles the pods with it after each change, so a
//! namespace labelled (or unlabelled) while its pods run moves them in (or out of)
//! the mesh within a moment.

use std::{path::Path, sync::Arc, time::Duration};

use notify::{RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::agent::Agent;

/// Changes closer together than this are applied together (an editor's save is
/// several events).
const SETTLE_MS: u64 = 100;

/// Starts watching; the returned watcher stops when dropped.
///
/// # Errors
/// When the folder cannot be watched (inotify limits, a missing folder).
pub fn spawn(folder: &Path, agent: &Arc<Agent>) -> notify::Result<RecommendedWatcher> {
    let (changed, mut changes) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if event.kind.is_access() => {}
            Ok(_) => {
                let _ = changed.send(());
            }
            Err(error) => warn!(%error, "config folder watch"),
        })?;
    watcher.watch(folder, RecursiveMode::Recursive)?;
    let agent = Arc::clone(agent);
    tokio::spawn(async move {
        while changes.recv().await.is_some() {
            tokio::time::sleep(Duration::from_millis(SETTLE_MS)).await;
            while changes.try_recv().is_ok() {}
            debug!("config folder changed");
            agent.reconcile().await;
        }
    });
    Ok(watcher)
}
