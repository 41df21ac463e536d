//! The `--kube` source: the Kubernetes API, watched with kube-rs (in-cluster config or
//! kubeconfig), giving the model the folder source would give for the same objects.
//!
//! Each kind the model reads has its own watch (`watch.rs`); each object becomes the
//! [`Object`](ambit_api::manifests::Object) a folder holding it as YAML would give, in a
//! synthetic file of its own (`kube://<group>/<Kind>/<namespace>/<name>`, `kinds.rs`),
//! so an apply or a delete is a changed file for the same incremental
//! [`mesh::update`](crate::mesh::update) the folder source uses (`store.rs`). Version 1
//! is published once every kind is listed (or found missing); later events are debounced
//! like the folder's. Each rejected object also gets a Warning Event saying why
//! (`events.rs`), once per message.
//!
//! # Layout
//! - `kinds.rs`: the kinds, the versions read, their synthetic files;
//! - `watch.rs`: one kind's watch — served version, missing CRD, relist;
//! - `store.rs`: the objects held, and the files an event batch changes;
//! - `events.rs`: the Events about rejected objects.
//!
//! # Not yet
//! It does not write status back, and reads the CA's root from a folder, not the
//! `cacerts` Secret. A CRD deleted while the controller runs leaves its objects in
//! the model until the controller restarts.

use std::collections::BTreeSet;

use kube::Client;
use tokio::{sync::mpsc, task::JoinSet};

use self::{
    events::RejectionEvents,
    kinds::{KINDS, Kind},
    store::Store,
    watch::{Batch, watch_kind},
};
use super::{DEBOUNCE, ModelSource, publish::Publisher};

mod events;
pub mod kinds;
mod store;
mod watch;

/// The watched Kubernetes API. Dropping it stops the watches; subscribers then see the
/// source end.
#[derive(Debug)]
pub struct KubeSource {
    model: ModelSource,
    _tasks: JoinSet<()>,
}

impl KubeSource {
    /// Lists every kind (version 1 of the model), then watches them. Waits, retrying,
    /// until each kind is listed or found missing; watch errors are logged as they come.
    /// Writes an Event about each object rejected.
    pub async fn start(client: Client, trust_domain: &str) -> Self {
        let mut events = RejectionEvents::start(client.clone());
        let (batches_tx, mut batches) = mpsc::unbounded_channel();
        let mut tasks = JoinSet::new();
        for kind in KINDS {
            tasks.spawn(watch_kind(client.clone(), kind, batches_tx.clone()));
        }
        drop(batches_tx);
        let mut store = Store::default();
        let mut unlisted: BTreeSet<String> = KINDS.iter().map(Kind::name).collect();
        while !unlisted.is_empty() {
            let Some(batch) = batches.recv().await else {
                break;
            };
            unlisted.remove(&batch.kind.name());
            store.apply(batch.updates);
        }
        let publisher = Publisher::first(store.manifests(), trust_domain, "Kubernetes API");
        events.report(&store, publisher.diagnostics());
        let model = publisher.subscribe();
        tasks.spawn(follow(store, publisher, events, batches));
        Self {
            model,
            _tasks: tasks,
        }
    }

    /// A receiver of every new snapshot, starting with the current one.
    #[must_use]
    pub fn subscribe(&self) -> ModelSource {
        self.model.clone()
    }
}

/// Applies each burst of batches, publishes the model it gives, and reports what it
/// rejects.
async fn follow(
    mut store: Store,
    mut publisher: Publisher,
    mut events: RejectionEvents,
    mut batches: mpsc::UnboundedReceiver<Batch>,
) {
    while let Some(first) = batches.recv().await {
        tokio::time::sleep(DEBOUNCE).await;
        let mut updates = first.updates;
        while let Ok(batch) = batches.try_recv() {
            updates.extend(batch.updates);
        }
        let changes = store.apply(updates);
        if !changes.files.is_empty() {
            publisher.update(store.manifests(), &changes);
            events.report(&store, publisher.diagnostics());
        }
    }
}
