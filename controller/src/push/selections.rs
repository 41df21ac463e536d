//! What subscribers receive of one model version, computed once per version and shared
//! by every session: the part every subscriber of a kind receives, and each node's
//! workloads ([`super::select`] says what they are).
//!
//! A version is derived from the previous one through the model's [`Changes`]: only the
//! entries that changed are converted again, the other resources are shared, not copied,
//! and the keys that changed are listed, so a session that was sent the previous version
//! sends just those ([`Selection::delta_from`]).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, PoisonError, Weak},
};

use ambit_api::config::{Resource, SubscriberKind};

use super::{
    convert,
    select::{Entry, Subscriber, gateway_credentials, receives_node_workloads, shared_resource},
};
use crate::mesh::{Changes, Key, Mesh, Workload};

/// Resources by key, and what changed since the previous version's.
#[derive(Debug, Default)]
pub struct Selection {
    resources: BTreeMap<String, Arc<Resource>>,
    /// The previous version's selection, and the keys upserted or removed since.
    since: Option<(Weak<Selection>, BTreeSet<String>)>,
}

impl Selection {
    /// Every resource, in key order.
    pub fn resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources.values().map(AsRef::as_ref)
    }

    /// What changed from `sent` to `self`: resources to upsert, keys to remove, in key
    /// order.
    #[must_use]
    pub fn delta_from(&self, sent: &Arc<Selection>) -> (Vec<Resource>, Vec<String>) {
        if std::ptr::eq(self, Arc::as_ptr(sent)) {
            return (Vec::new(), Vec::new());
        }
        if let Some((previous, keys)) = &self.since
            && std::ptr::eq(previous.as_ptr(), Arc::as_ptr(sent))
        {
            let mut upserted = Vec::new();
            let mut removed = Vec::new();
            for key in keys {
                match self.resources.get(key) {
                    Some(resource) => upserted.push(Resource::clone(resource)),
                    None => removed.push(key.clone()),
                }
            }
            return (upserted, removed);
        }
        let upserted = self
            .resources
            .iter()
            .filter(|(key, now)| {
                sent.resources
                    .get(*key)
                    .is_none_or(|was| !Arc::ptr_eq(was, now) && was != *now)
            })
            .map(|(_, resource)| Resource::clone(resource))
            .collect();
        let removed = sent
            .resources
            .keys()
            .filter(|key| !self.resources.contains_key(*key))
            .cloned()
            .collect();
        (upserted, removed)
    }
}

/// A selection being derived from the previous version's.
struct Patch {
    resources: BTreeMap<String, Arc<Resource>>,
    changed: BTreeSet<String>,
    previous: Option<Weak<Selection>>,
}

impl Patch {
    fn from(previous: Option<&Arc<Selection>>) -> Self {
        Self {
            resources: previous.map(|p| p.resources.clone()).unwrap_or_default(),
            changed: BTreeSet::new(),
            previous: previous.map(Arc::downgrade),
        }
    }

    /// Puts `after` in place of `before`: what one model entry gave and gives.
    fn replace(&mut self, before: Option<Resource>, after: Option<Resource>) {
        if let Some(before) = before
            && after.as_ref().is_none_or(|after| after.key != before.key)
        {
            self.resources.remove(&before.key);
            self.changed.insert(before.key);
        }
        if let Some(after) = after
            && self
                .resources
                .get(&after.key)
                .is_none_or(|held| **held != after)
        {
            self.changed.insert(after.key.clone());
            self.resources.insert(after.key.clone(), Arc::new(after));
        }
    }

    fn finish(self) -> Selection {
        Selection {
            resources: self.resources,
            since: self.previous.map(|previous| (previous, self.changed)),
        }
    }
}

/// Each node's workloads, by node.
type Nodes = HashMap<String, Arc<Selection>>;

/// [`Selection`]s of one model version, each computed on first use or, when the previous
/// version had it, derived from it.
#[derive(Debug, Default)]
pub struct Selections {
    shared: Mutex<HashMap<i32, Arc<Selection>>>,
    nodes: Mutex<Option<Arc<Nodes>>>,
    /// What each node's gateways receive besides the shared part.
    gateways: Mutex<HashMap<String, Arc<Selection>>>,
}

impl Selections {
    /// What every subscriber of `kind` receives of `mesh`.
    pub fn shared(&self, mesh: &Mesh, kind: SubscriberKind) -> Arc<Selection> {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let selection = shared.entry(i32::from(kind)).or_insert_with(|| {
            let empty = Mesh::default();
            let all = Changes::between(&empty, mesh);
            Arc::new(shared_after(None, kind, (&empty, mesh), &all))
        });
        Arc::clone(selection)
    }

    /// What `subscriber` receives that depends on its node: the workloads on it for an
    /// agent or a ztunnel (derived version to version), and for a gateway also the TLS
    /// credentials its node's gateway pods need (computed per version: they depend on
    /// Gateways, Secrets and pods at once, and gateways are few).
    pub fn for_node(&self, mesh: &Mesh, subscriber: &Subscriber) -> Arc<Selection> {
        match subscriber.kind {
            SubscriberKind::Gateway => {
                let mut gateways = self.gateways.lock().unwrap_or_else(PoisonError::into_inner);
                let selection = gateways
                    .entry(subscriber.node.clone())
                    .or_insert_with(|| Arc::new(gateway_node(mesh, &subscriber.node)));
                Arc::clone(selection)
            }
            kind if receives_node_workloads(kind) => self.on_node(mesh, &subscriber.node),
            _ => Arc::default(),
        }
    }

    /// The workloads of `mesh` on `node`.
    pub fn on_node(&self, mesh: &Mesh, node: &str) -> Arc<Selection> {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let nodes = nodes.get_or_insert_with(|| {
            let empty = Mesh::default();
            let all: Vec<_> = mesh.workloads.keys().cloned().collect();
            Arc::new(nodes_after(&Nodes::new(), (&empty, mesh), &all))
        });
        nodes.get(node).cloned().unwrap_or_default()
    }

    /// The selections of `after`, the model that follows `before` with `changes`: each
    /// part these hold is derived now; the others are computed on first use.
    #[must_use]
    pub fn next(&self, before: &Mesh, after: &Mesh, changes: &Changes) -> Self {
        let shared = self
            .shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(&kind, previous)| {
                let kind = SubscriberKind::try_from(kind).unwrap_or(SubscriberKind::Unspecified);
                let next = shared_after(Some(previous), kind, (before, after), changes);
                (i32::from(kind), Arc::new(next))
            })
            .collect();
        let nodes = self
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|previous| Arc::new(nodes_after(previous, (before, after), &changes.workloads)));
        Self {
            shared: Mutex::new(shared),
            nodes: Mutex::new(nodes),
            gateways: Mutex::default(),
        }
    }
}

/// A copy starts empty: it is a cache, not state.
impl Clone for Selections {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// Caches never make two snapshots differ.
impl PartialEq for Selections {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// `previous`, what every subscriber of `kind` received of `before`, updated to `after`
/// through the entries `changes` lists.
fn shared_after(
    previous: Option<&Arc<Selection>>,
    kind: SubscriberKind,
    (before, after): (&Mesh, &Mesh),
    changes: &Changes,
) -> Selection {
    let mut patch = Patch::from(previous);
    let mut replace = |before: Option<Entry<'_>>, after: Option<Entry<'_>>| {
        patch.replace(
            before.and_then(|entry| shared_resource(kind, entry)),
            after.and_then(|entry| shared_resource(kind, entry)),
        );
    };
    for key in &changes.workloads {
        replace(
            before
                .workloads
                .get(key)
                .map(|entry| Entry::Workload(entry)),
            after.workloads.get(key).map(|entry| Entry::Workload(entry)),
        );
    }
    // A changed waypoint changes every service that uses it.
    let services: BTreeSet<_> = if changes.waypoints {
        before
            .services
            .keys()
            .chain(after.services.keys())
            .collect()
    } else {
        changes.services.iter().collect()
    };
    for key in services {
        replace(
            before
                .services
                .get(key)
                .map(|service| Entry::Service(service, &before.waypoints)),
            after
                .services
                .get(key)
                .map(|service| Entry::Service(service, &after.waypoints)),
        );
    }
    for key in &changes.routes {
        replace(
            before.routes.get(key).map(|entry| Entry::Route(entry)),
            after.routes.get(key).map(|entry| Entry::Route(entry)),
        );
    }
    for key in &changes.policies {
        replace(
            before.policies.get(key).map(|entry| Entry::Policy(entry)),
            after.policies.get(key).map(|entry| Entry::Policy(entry)),
        );
    }
    patch.finish()
}

/// `previous`, each node's workloads in `before`, updated to `after` through the
/// `workloads` that changed.
fn nodes_after(previous: &Nodes, (before, after): (&Mesh, &Mesh), workloads: &[Key]) -> Nodes {
    let mut patches: HashMap<&str, Patch> = HashMap::new();
    for key in workloads {
        match (placed(before, key), placed(after, key)) {
            (Some((was_on, was)), Some((now_on, now))) if was_on == now_on => {
                patch_of(&mut patches, previous, now_on).replace(Some(was), Some(now));
            }
            (was, now) => {
                if let Some((node, was)) = was {
                    patch_of(&mut patches, previous, node).replace(Some(was), None);
                }
                if let Some((node, now)) = now {
                    patch_of(&mut patches, previous, node).replace(None, Some(now));
                }
            }
        }
    }
    let mut nodes = previous.clone();
    for (node, patch) in patches {
        let selection = patch.finish();
        if selection.resources.is_empty() {
            nodes.remove(node);
        } else {
            nodes.insert(node.to_owned(), Arc::new(selection));
        }
    }
    nodes
}

/// A gateway's node part: the workloads on `node` and the credentials their Gateways
/// name ([`gateway_credentials`]).
fn gateway_node(mesh: &Mesh, node: &str) -> Selection {
    let pods: Vec<&Workload> = mesh
        .workloads
        .values()
        .filter(|w| w.node.as_deref() == Some(node))
        .map(AsRef::as_ref)
        .collect();
    let resources = pods
        .iter()
        .map(|pod| convert::workload(pod))
        .chain(gateway_credentials(mesh, &pods).map(convert::credential))
        .map(|resource| (resource.key.clone(), Arc::new(resource)))
        .collect();
    Selection {
        resources,
        since: None,
    }
}

/// The node of the workload `key` in `mesh`, and what the node's subscribers receive of it.
fn placed<'a>(mesh: &'a Mesh, key: &Key) -> Option<(&'a str, Resource)> {
    let workload = mesh.workloads.get(key)?;
    Some((workload.node.as_deref()?, convert::workload(workload)))
}

/// The patch of `node`'s selection, started from its previous one.
fn patch_of<'a, 'n>(
    patches: &'a mut HashMap<&'n str, Patch>,
    previous: &Nodes,
    node: &'n str,
) -> &'a mut Patch {
    patches
        .entry(node)
        .or_insert_with(|| Patch::from(previous.get(node)))
}

#[cfg(test)]
#[path = "selections_tests.rs"]
mod tests;
