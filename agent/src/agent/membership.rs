//! Moving pods in and out of the mesh: remembering every pod the runtime reports,
//! enrolling (netns prepared, eBPF enrolment, hand-off to ztunnel), un-enrolling, and
//! reconciling every known pod with the config folder when it changes.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use ambit_api::{cni::PodSandbox, handoff::WorkloadInfo};
use ambit_netns::Netns;
use tracing::{info, warn};

use super::{Agent, Pods, lock, lock_capture, pod_uid};
use crate::{
    capture::Capture,
    decisions::Verdict,
    pod_network::prepare_transparent_delivery,
    pods::{PodRecord, PodStore},
    ztunnel_link::{LinkError, Workload},
};

impl Agent {
    /// Records a pod the runtime reported, not yet enrolled.
    pub(super) fn remember(&self, sandbox: &PodSandbox, verdict: &Verdict) -> Result<(), String> {
        let netns_path = sandbox
            .netns
            .as_deref()
            .filter(|p| !p.is_empty())
            .ok_or("CNI_NETNS is empty: cannot enrol a pod without its network namespace")?;
        let netns = Netns::open(netns_path).map_err(|e| e.to_string())?;
        let netns_cookie = netns.cookie().map_err(|e| e.to_string())?;
        let service_account = verdict.service_account.clone();
        let record = PodRecord {
            uid: pod_uid(sandbox),
            container_id: sandbox.container_id.clone(),
            name: sandbox.pod_name.clone(),
            namespace: sandbox.pod_namespace.clone(),
            service_account,
            ips: sandbox.ips.clone(),
            netns_path: netns_path.to_owned(),
            netns_cookie,
            enrolled: false,
            transparent_delivery: false,
        };
        let mut pods = lock(&self.pods);
        pods.store
            .insert(record.clone())
            .map_err(|e| e.to_string())?;
        pods.netns.insert(record.uid, Arc::new(netns));
        Ok(())
    }

    /// Enrols a remembered pod and hands it to ztunnel (if ztunnel is away, it gets
    /// the pod in its next snapshot; the pod fails closed meanwhile). If ztunnel
    /// refuses the pod, the enrolment is undone.
    pub(super) async fn enrol(&self, uid: &str) -> Result<(), String> {
        let (record, netns) = self
            .known(uid)
            .ok_or_else(|| format!("pod {uid} is not known"))?;
        let transparent_delivery = match prepare_transparent_delivery(&netns).await {
            Ok(()) => true,
            Err(error) => {
                warn!(pod = %uid, %error, "the app will see ztunnel's deliveries come from its own address");
                false
            }
        };
        lock_capture(&self.capture)
            .enrol(&netns, record.netns_cookie)
            .map_err(|e| e.to_string())?;
        let record = PodRecord {
            enrolled: true,
            transparent_delivery,
            ..record
        };
        if let Err(error) = lock(&self.pods).store.insert(record.clone()) {
            let _ = lock_capture(&self.capture).unenrol(record.netns_cookie);
            return Err(error.to_string());
        }
        let workload = Workload {
            info: workload_info(&record),
            netns,
            transparent_delivery,
        };
        match self.ztunnel.add(workload).await {
            Ok(()) | Err(LinkError::NotConnected) => {
                info!(pod = %uid, name = %format!("{}/{}", record.namespace, record.name), "enrolled");
                Ok(())
            }
            Err(link_error) => {
                self.leave(&record);
                Err(format!(
                    "ztunnel could not take pod {}/{}: {link_error}",
                    record.namespace, record.name
                ))
            }
        }
    }

    /// Takes an enrolled pod out of the mesh and tells ztunnel.
    pub(super) async fn unenrol(&self, uid: &str) {
        let Some((record, _)) = self.known(uid) else {
            return;
        };
        self.leave(&record);
        match self.ztunnel.delete(uid.to_owned()).await {
            Ok(()) | Err(LinkError::NotConnected) => {}
            Err(link_error) => {
                warn!(pod = %uid, error = %link_error, "ztunnel did not confirm the pod left");
            }
        }
        info!(pod = %uid, name = %format!("{}/{}", record.namespace, record.name), "un-enrolled");
    }

    /// Forgets a pod (after un-enrolling it, if it was enrolled).
    pub(super) fn forget(&self, uid: &str) {
        let mut pods = lock(&self.pods);
        if let Some(record) = pods.store.get(uid).cloned() {
            if record.enrolled {
                let _ = lock_capture(&self.capture).unenrol(record.netns_cookie);
            }
            if let Err(error) = pods.store.remove(uid) {
                warn!(pod = %uid, %error, "cannot persist forgetting the pod");
            }
        }
        pods.netns.remove(uid);
    }

    pub(super) fn is_enrolled(&self, uid: &str) -> bool {
        lock(&self.pods).store.get(uid).is_some_and(|p| p.enrolled)
    }

    /// Brings every known pod in line with the decisions (the config folder, or the
    /// controller's push): pods whose namespace or own label now says `ambient` join,
    /// pods that should no longer be in the mesh leave. Runs after every change and once
    /// at start.
    pub async fn reconcile(&self) {
        let _change = self.changes.lock().await;
        let decisions = self.decisions.snapshot();
        let records: Vec<PodRecord> = lock(&self.pods).store.iter().cloned().collect();
        for record in records {
            let decision = decisions.decide(&record.namespace, &record.name);
            let name = format!("{}/{}", record.namespace, record.name);
            match (decision.enrols, record.enrolled) {
                (true, false) => {
                    info!(pod = %name, decision = %decision.reason, "joining the mesh");
                    if let Err(error) = self.enrol(&record.uid).await {
                        warn!(pod = %name, %error, "cannot enrol");
                    }
                }
                (false, true) => {
                    info!(pod = %name, decision = %decision.reason, "leaving the mesh");
                    self.unenrol(&record.uid).await;
                }
                _ => {}
            }
        }
    }

    /// Removes the pod's eBPF enrolment and records it as outside the mesh.
    fn leave(&self, record: &PodRecord) {
        if let Err(error) = lock_capture(&self.capture).unenrol(record.netns_cookie) {
            warn!(pod = %record.uid, %error, "cannot fully un-enrol");
        }
        let outside = PodRecord {
            enrolled: false,
            ..record.clone()
        };
        if let Err(error) = lock(&self.pods).store.insert(outside) {
            warn!(pod = %record.uid, %error, "cannot persist the un-enrolment");
        }
    }

    fn known(&self, uid: &str) -> Option<(PodRecord, Arc<Netns>)> {
        let pods = lock(&self.pods);
        Some((
            pods.store.get(uid)?.clone(),
            Arc::clone(pods.netns.get(uid)?),
        ))
    }
}

impl Pods {
    /// Every enrolled pod, for ztunnel's snapshot.
    pub(super) fn enrolled_workloads(&self) -> Vec<Workload> {
        self.store
            .iter()
            .filter(|record| record.enrolled)
            .filter_map(|record| {
                Some(Workload {
                    info: workload_info(record),
                    netns: Arc::clone(self.netns.get(&record.uid)?),
                    transparent_delivery: record.transparent_delivery,
                })
            })
            .collect()
    }
}

/// Keeps the pods whose namespace still exists (re-asserting the enrolment of the
/// enrolled ones) and forgets, un-enrolling, the ones that went away while the agent
/// was down.
pub(super) fn restore(mut store: PodStore, capture: &mut Capture) -> Pods {
    let mut netns = HashMap::new();
    let records: Vec<PodRecord> = store.iter().cloned().collect();
    for record in records {
        let alive = Netns::open(&record.netns_path)
            .ok()
            .filter(|ns| ns.cookie().ok() == Some(record.netns_cookie));
        match alive {
            Some(ns) => {
                if record.enrolled
                    && let Err(error) = capture.enrol(&ns, record.netns_cookie)
                {
                    warn!(pod = %record.uid, %error, "cannot re-enrol a restored pod");
                }
                netns.insert(record.uid.clone(), Arc::new(ns));
            }
            None => {
                info!(pod = %record.uid, "pod went away while the agent was down: forgetting it");
                if record.enrolled
                    && let Err(error) = capture.unenrol(record.netns_cookie)
                {
                    warn!(pod = %record.uid, %error, "cannot un-enrol a vanished pod");
                }
                if let Err(error) = store.remove(&record.uid) {
                    warn!(pod = %record.uid, %error, "cannot forget a vanished pod");
                }
            }
        }
    }
    Pods { store, netns }
}

fn workload_info(record: &PodRecord) -> WorkloadInfo {
    WorkloadInfo {
        uid: record.uid.clone(),
        name: record.name.clone(),
        namespace: record.namespace.clone(),
        service_account: record.service_account.clone(),
        ips: record.ips.iter().map(IpAddr::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_holds_only_enrolled_pods() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = PodStore::load(&dir.path().join("pods.json")).unwrap();
        let mut netns = HashMap::new();
        for (uid, enrolled) in [("in", true), ("out", false)] {
            store
                .insert(PodRecord {
                    uid: uid.to_owned(),
                    container_id: uid.to_owned(),
                    name: uid.to_owned(),
                    namespace: "shop".to_owned(),
                    service_account: "default".to_owned(),
                    ips: vec![],
                    netns_path: "/proc/self/ns/net".to_owned(),
                    netns_cookie: 1,
                    enrolled,
                    transparent_delivery: false,
                })
                .unwrap();
            netns.insert(uid.to_owned(), Arc::new(Netns::current().unwrap()));
        }
        let pods = Pods { store, netns };
        let uids: Vec<String> = pods
            .enrolled_workloads()
            .into_iter()
            .map(|w| w.info.uid)
            .collect();
        assert_eq!(uids, ["in"]);
    }
}
