//! Where the agent's enrolment decisions come from: the config folder (the embedded
//! default with no cluster, and a debugging aid), or — with `--controller-address` —
//! the controller's push, subscribed as this node's AGENT: the node's pods with the
//! decision the controller made for each.
//!
//! A pod the push does not name yet is left outside the mesh, and joins as soon as the
//! push names it enrolled (the agent reconciles after every update). In Kubernetes the
//! controller sees a pod before its sandbox exists, so the window is the push's latency.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, PoisonError, RwLock},
};

use ambit_api::{
    config::{ConfigUpdate, resource::Kind},
    enrolment::decide_from_manifests,
    manifests::Manifests,
};
use tracing::warn;

/// Whether a pod belongs in the mesh, and why (for logs and CNI CHECK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub enrols: bool,
    pub reason: String,
    /// The pod's service account (its workload identity), `default` when unnamed.
    pub service_account: String,
}

/// Kubernetes' service account for a pod that names none.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// A pod, `(namespace, name)`.
type Pod = (String, String);

/// The pushed decisions, by pod.
type Pushed = HashMap<Pod, Verdict>;

/// What the push has said so far: which resource key names which pod, and the
/// decisions (shared with snapshots).
#[derive(Debug, Default)]
pub struct PushedState {
    pods: HashMap<String, Pod>,
    decisions: Arc<Pushed>,
}

/// The source of decisions.
#[derive(Debug)]
pub enum Decisions {
    /// Decide from the manifests in this folder.
    Folder(PathBuf),
    /// Decide as the controller pushed.
    Controller(RwLock<PushedState>),
}

impl Decisions {
    /// Decisions from the controller's push, none received yet.
    #[must_use]
    pub fn from_controller() -> Self {
        Self::Controller(RwLock::new(PushedState::default()))
    }

    /// The decisions as they stand now, to decide for several pods consistently.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        match self {
            Self::Folder(dir) => {
                let manifests = Manifests::load_dir(dir).unwrap_or_else(|error| {
                    warn!(%error, "cannot read the config folder; deciding as if it were empty");
                    Manifests::default()
                });
                for problem in &manifests.errors {
                    warn!(%problem, "skipping a manifest");
                }
                Snapshot::Folder(manifests)
            }
            Self::Controller(state) => Snapshot::Pushed(Arc::clone(
                &state
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .decisions,
            )),
        }
    }

    /// Applies one pushed update (full or delta); a folder source ignores it.
    pub fn apply(&self, update: &ConfigUpdate) {
        let Self::Controller(state) = self else {
            return;
        };
        let mut state = state.write().unwrap_or_else(PoisonError::into_inner);
        let mut next: Pushed = if update.full {
            state.pods.clear();
            HashMap::new()
        } else {
            (*state.decisions).clone()
        };
        for key in &update.removed {
            if let Some(pod) = state.pods.remove(key) {
                next.remove(&pod);
            }
        }
        for resource in &update.upserted {
            if let Some(Kind::Workload(workload)) = &resource.kind {
                let pod = (workload.namespace.clone(), workload.name.clone());
                state.pods.insert(resource.key.clone(), pod.clone());
                next.insert(
                    pod,
                    Verdict {
                        enrols: workload.enrolled,
                        reason: workload.enrolment_reason.clone(),
                        service_account: workload.service_account.clone(),
                    },
                );
            }
        }
        state.decisions = Arc::new(next);
    }
}

/// Decisions frozen at one moment.
#[derive(Debug)]
pub enum Snapshot {
    Folder(Manifests),
    Pushed(Arc<Pushed>),
}

impl Snapshot {
    /// The decision for the pod `namespace/name`.
    #[must_use]
    pub fn decide(&self, namespace: &str, name: &str) -> Verdict {
        match self {
            Self::Folder(manifests) => {
                let decision = decide_from_manifests(manifests, namespace, name);
                Verdict {
                    enrols: decision.enrols(),
                    reason: decision.to_string(),
                    service_account: manifests
                        .pod(namespace, name)
                        .and_then(|pod| pod.spec_str("serviceAccountName"))
                        .unwrap_or(DEFAULT_SERVICE_ACCOUNT)
                        .to_owned(),
                }
            }
            Self::Pushed(pushed) => pushed
                .get(&(namespace.to_owned(), name.to_owned()))
                .cloned()
                .unwrap_or_else(|| Verdict {
                    enrols: false,
                    reason: "not enrolled: the controller has not named this pod yet".to_owned(),
                    service_account: DEFAULT_SERVICE_ACCOUNT.to_owned(),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use ambit_api::config::{Resource, Workload};

    use super::*;

    fn workload(name: &str, enrolled: bool) -> Resource {
        Resource {
            key: format!("workload/shop/{name}"),
            kind: Some(Kind::Workload(Workload {
                namespace: "shop".into(),
                name: name.into(),
                enrolled,
                enrolment_reason: format!("because {enrolled}"),
                service_account: "web".into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn pushed_decisions_follow_full_updates_and_deltas() {
        let decisions = Decisions::from_controller();
        assert!(
            !decisions.snapshot().decide("shop", "a").enrols,
            "unknown: outside"
        );
        decisions.apply(&ConfigUpdate {
            version: 1,
            full: true,
            upserted: vec![workload("a", true), workload("b", false)],
            removed: Vec::new(),
            more: false,
        });
        let now = decisions.snapshot();
        assert_eq!(
            now.decide("shop", "a"),
            Verdict {
                enrols: true,
                reason: "because true".into(),
                service_account: "web".into(),
            }
        );
        assert!(!now.decide("shop", "b").enrols);
        decisions.apply(&ConfigUpdate {
            version: 2,
            full: false,
            upserted: vec![workload("b", true)],
            removed: vec!["workload/shop/a".into()],
            more: false,
        });
        let now = decisions.snapshot();
        assert!(now.decide("shop", "b").enrols, "a delta changes one pod");
        assert!(!now.decide("shop", "a").enrols, "a removed pod is outside");
    }
}
