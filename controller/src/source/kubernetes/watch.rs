//! One kind's watch: find the version the cluster serves it in, then follow a kube-rs
//! [`watcher::watcher`], turning its events into [`Update`]s of the objects' files.
//!
//! A kind whose CRD is not installed is reported once, as a warning naming the CRD and
//! how to install it, and looked for again every [`MISSING_CRD_RECHECK`]; the other
//! kinds do not wait for it. Errors back off and retry (kube-rs's default backoff). After
//! a relist (a `410 Gone`, a reconnect) the objects the new list lacks, deleted while the
//! watch was away, are deleted from the model.

use std::{collections::BTreeSet, path::PathBuf, pin::pin, time::Duration};

use ambit_api::manifests::{Object, Source};
use kube::{
    Client, ResourceExt as _,
    api::{DynamicObject, ListParams, ObjectMeta, TypeMeta},
    discovery::ApiResource,
    runtime::{
        WatchStreamExt as _,
        watcher::{self, DefaultBackoff, Event},
    },
};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;

use super::{
    kinds::Kind,
    store::{Served, Update},
};

/// How often a kind whose CRD is missing is looked for again.
pub const MISSING_CRD_RECHECK: Duration = Duration::from_secs(60);

/// What one kind's watch has to say: the updates since its last batch. A kind's first
/// batch is its whole initial list (empty when its CRD is missing).
#[derive(Debug)]
pub struct Batch {
    pub kind: Kind,
    pub updates: Vec<Update>,
}

/// Watches `kind` until `batches` closes.
pub async fn watch_kind(client: Client, kind: Kind, batches: mpsc::UnboundedSender<Batch>) {
    let Some(resource) = served_resource(&client, kind, &batches).await else {
        return;
    };
    let api = kind.api(client, &resource);
    let config = match kind.field_selector() {
        Some(selector) => watcher::Config::default().fields(&selector),
        None => watcher::Config::default(),
    };
    let mut events = pin!(watcher::watcher(api, config).default_backoff());
    let mut state = KindState::new(kind, resource);
    while let Some(event) = events.next().await {
        let updates = match event {
            Ok(event) => state.on_event(event),
            Err(error) => {
                log_watch_error(kind, &error);
                continue;
            }
        };
        if let Some(updates) = updates
            && batches.send(Batch { kind, updates }).is_err()
        {
            return;
        }
    }
}

/// The first of `kind`'s versions the cluster serves, looked for until found; `None`
/// when `batches` closed meanwhile.
async fn served_resource(
    client: &Client,
    kind: Kind,
    batches: &mpsc::UnboundedSender<Batch>,
) -> Option<ApiResource> {
    let mut reported_missing = false;
    let mut backoff = DefaultBackoff::default();
    loop {
        let delay = match first_served(client, kind).await {
            Ok(Some(resource)) => {
                if reported_missing {
                    tracing::info!(
                        crd = kind.name(),
                        version = resource.version,
                        "CRD installed: watching it"
                    );
                }
                return Some(resource);
            }
            Ok(None) => {
                if !reported_missing {
                    tracing::warn!(
                        crd = kind.name(),
                        versions = ?kind.versions,
                        install = kind.install_hint(),
                        "CRD missing from the cluster: its objects are ignored until it is installed"
                    );
                    reported_missing = true;
                    batches
                        .send(Batch {
                            kind,
                            updates: Vec::new(),
                        })
                        .ok()?;
                }
                MISSING_CRD_RECHECK
            }
            Err(error) => {
                let delay = backoff.next().unwrap_or(MISSING_CRD_RECHECK);
                tracing::warn!(kind = kind.name(), %error, retry_in = ?delay, "cannot list from the Kubernetes API — is it reachable, and may this service account list it?");
                delay
            }
        };
        if batches.is_closed() {
            return None;
        }
        tokio::time::sleep(delay).await;
    }
}

/// The first of `kind`'s versions that a list does not answer with 404.
async fn first_served(client: &Client, kind: Kind) -> Result<Option<ApiResource>, kube::Error> {
    for version in kind.versions {
        let resource = kind.resource(version);
        let api = kind.api(client.clone(), &resource);
        let mut params = ListParams::default().limit(1);
        if let Some(selector) = kind.field_selector() {
            params = params.fields(&selector);
        }
        match api.list(&params).await {
            Ok(_) => return Ok(Some(resource)),
            Err(kube::Error::Api(status)) if status.is_not_found() => {}
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}

fn log_watch_error(kind: Kind, error: &watcher::Error) {
    match error {
        watcher::Error::WatchError(status) if status.code == 410 => {
            tracing::debug!(kind = kind.name(), "watch expired (410 Gone): relisting");
        }
        error => tracing::warn!(kind = kind.name(), %error, "watch failed: retrying with backoff"),
    }
}

/// What one kind's watch knows: the files it has delivered, and a relist in progress.
#[derive(Debug)]
struct KindState {
    kind: Kind,
    resource: ApiResource,
    /// The files of the objects delivered and not deleted since.
    delivered: BTreeSet<PathBuf>,
    /// The objects of the list in progress, delivered together once it is complete.
    listing: Vec<Served>,
}

impl KindState {
    fn new(kind: Kind, resource: ApiResource) -> Self {
        Self {
            kind,
            resource,
            delivered: BTreeSet::new(),
            listing: Vec::new(),
        }
    }

    /// The updates `event` makes, when it completes some.
    fn on_event(&mut self, event: Event<DynamicObject>) -> Option<Vec<Update>> {
        match event {
            Event::Init => {
                self.listing.clear();
                None
            }
            Event::InitApply(object) => {
                self.listing.extend(self.object(object));
                None
            }
            Event::InitDone => {
                let listed: BTreeSet<PathBuf> = self
                    .listing
                    .iter()
                    .map(|served| served.object.source.file.clone())
                    .collect();
                let gone: Vec<Update> = self
                    .delivered
                    .difference(&listed)
                    .cloned()
                    .map(Update::Delete)
                    .collect();
                self.delivered = listed;
                Some(
                    self.listing
                        .drain(..)
                        .map(|served| Update::Apply(Box::new(served)))
                        .chain(gone)
                        .collect(),
                )
            }
            Event::Apply(object) => {
                let served = self.object(object)?;
                self.delivered.insert(served.object.source.file.clone());
                Some(vec![Update::Apply(Box::new(served))])
            }
            Event::Delete(object) => {
                let file = self.file(&object);
                self.delivered.remove(&file);
                Some(vec![Update::Delete(file)])
            }
        }
    }

    fn file(&self, object: &DynamicObject) -> PathBuf {
        self.kind
            .file(object.metadata.namespace.as_deref(), &object.name_any())
    }

    /// `object` as the folder source would read it from a file holding it as YAML. Of
    /// a Node only its name and labels are kept (the model reads its locality), so its
    /// status heartbeats change nothing.
    fn object(&self, mut object: DynamicObject) -> Option<Served> {
        let source = Source {
            file: self.file(&object),
            document: 1,
        };
        let resource_version = object.metadata.resource_version.take();
        if self.kind.kind == "Node" {
            object.metadata = ObjectMeta {
                name: object.metadata.name.take(),
                labels: object.metadata.labels.take(),
                ..ObjectMeta::default()
            };
            object.data = serde_json::Value::Object(serde_json::Map::new());
        }
        // A list's items may omit their type; the API server's is the one asked for.
        object.types = Some(TypeMeta {
            api_version: self.resource.api_version.clone(),
            kind: self.resource.kind.clone(),
        });
        let read = serde_yaml_ng::to_value(&object)
            .map_err(|error| error.to_string())
            .and_then(|value| Object::from_value(value, source.clone()));
        match read {
            Ok(read) => Some(Served {
                object: read,
                resource_version,
            }),
            Err(reason) => {
                tracing::warn!(object = %source.file.display(), %reason, "object from the Kubernetes API skipped: not a readable Kubernetes object");
                None
            }
        }
    }
}
