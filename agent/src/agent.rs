//! The running agent: the capture eBPF, the enrolled pods, the link to ztunnel, and
//! what happens on each CNI request.

use std::{
    collections::HashMap,
    fs, io,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use ambit_api::{
    cni::{CniReply, PodSandbox, codes},
    enrolment::{Decision, decide_from_manifests},
    handoff::WorkloadInfo,
    manifests::Manifests,
};
use ambit_netns::Netns;
use tokio::net::UnixListener;
use tokio_seqpacket::UnixSeqpacketListener;
use tracing::{info, warn};

use crate::{
    capture::{Capture, CaptureError},
    config::{Config, ZTUNNEL_ACK_TIMEOUT_SECS},
    pod_network::prepare_transparent_delivery,
    pods::{PodRecord, PodStore, PodStoreError},
    ztunnel_link::{self, LinkError, Workload, ZtunnelLink},
};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error(transparent)]
    PodStore(#[from] PodStoreError),
    #[error("cannot listen on {path}: {source}")]
    Listen { path: String, source: io::Error },
}

/// Enrolled pods with their open network namespaces.
#[derive(Debug)]
struct Pods {
    store: PodStore,
    netns: HashMap<String, Arc<Netns>>,
}

/// The agent's state, shared by the CNI server and the ztunnel link.
#[derive(Debug)]
pub struct Agent {
    config: Config,
    capture: Mutex<Capture>,
    pods: Arc<Mutex<Pods>>,
    ztunnel: ZtunnelLink,
}

/// The sockets the agent serves, bound by [`Agent::start`].
#[derive(Debug)]
pub struct Listeners {
    pub cni: UnixListener,
}

impl Agent {
    /// Installs (or adopts) the capture eBPF, restores the pods enrolled before a
    /// restart, and starts serving ztunnel.
    ///
    /// # Errors
    /// [`StartError`] naming what could not be set up.
    pub fn start(config: Config) -> Result<(Arc<Self>, Listeners), StartError> {
        let mut capture = Capture::install(&config)?;
        if let Some(logger) = capture.take_log_forwarder() {
            tokio::spawn(crate::capture::forward_logs(logger));
        }
        fs::create_dir_all(&config.run_dir).map_err(|source| StartError::Listen {
            path: config.run_dir.display().to_string(),
            source,
        })?;
        let store = PodStore::load(&config.state_file())?;
        let pods = Arc::new(Mutex::new(restore_pods(store, &mut capture)));

        let ztunnel_listener = bind(&config.ztunnel_socket(), |p| UnixSeqpacketListener::bind(p))?;
        let cni = bind(&config.cni_socket(), |p| UnixListener::bind(p))?;
        let snapshot_pods = Arc::clone(&pods);
        let ztunnel = ztunnel_link::spawn(
            ztunnel_listener,
            Duration::from_secs(ZTUNNEL_ACK_TIMEOUT_SECS),
            move || lock(&snapshot_pods).workloads(),
        );
        let agent = Arc::new(Self {
            config,
            capture: Mutex::new(capture),
            pods,
            ztunnel,
        });
        Ok((agent, Listeners { cni }))
    }

    /// CNI ADD: enrol the pod if it belongs in the mesh, and hand it to ztunnel.
    pub async fn add_pod(&self, sandbox: &PodSandbox) -> CniReply {
        let decision = self.decide(sandbox);
        info!(pod = %pod_name(sandbox), %decision, "CNI ADD");
        if !decision.enrols() {
            return CniReply::Ok { enrolled: false };
        }
        let workload = match self.prepare_and_enrol(sandbox).await {
            Ok(workload) => workload,
            Err(message) => {
                return error(
                    codes::ENROLMENT_FAILED,
                    message,
                    "the pod belongs in the mesh and is not started outside it",
                );
            }
        };
        match self.ztunnel.add(workload).await {
            Ok(()) | Err(LinkError::NotConnected) => CniReply::Ok { enrolled: true },
            Err(link_error) => {
                // ztunnel could not serve the pod: do not start it half in the mesh.
                self.unenrol(&pod_uid(sandbox));
                error(
                    codes::ENROLMENT_FAILED,
                    format!(
                        "ztunnel could not take pod {}: {link_error}",
                        pod_name(sandbox)
                    ),
                    "the runtime will retry the sandbox",
                )
            }
        }
    }

    /// CNI DEL: un-enrol the pod if it is enrolled.
    pub async fn delete_pod(&self, sandbox: &PodSandbox) -> CniReply {
        let uid = pod_uid(sandbox);
        if self.unenrol(&uid).is_none() {
            return CniReply::Ok { enrolled: false };
        }
        info!(pod = %pod_name(sandbox), "CNI DEL: un-enrolled");
        if let Err(link_error) = self.ztunnel.delete(uid).await
            && !matches!(link_error, LinkError::NotConnected)
        {
            warn!(pod = %pod_name(sandbox), error = %link_error, "ztunnel did not confirm the deletion");
        }
        CniReply::Ok { enrolled: false }
    }

    /// CNI CHECK: is the pod enrolled exactly when it should be?
    pub fn check_pod(&self, sandbox: &PodSandbox) -> CniReply {
        let decision = self.decide(sandbox);
        let recorded = lock(&self.pods)
            .store
            .get(&pod_uid(sandbox))
            .map(|p| p.netns_cookie);
        let enrolled =
            recorded.is_some_and(|cookie| lock_capture(&self.capture).is_enrolled(cookie));
        if enrolled == decision.enrols() {
            CniReply::Ok { enrolled }
        } else {
            error(
                codes::ENROLMENT_MISMATCH,
                format!(
                    "pod {} should be {} but is {}",
                    pod_name(sandbox),
                    if decision.enrols() {
                        "enrolled"
                    } else {
                        "outside the mesh"
                    },
                    if enrolled { "enrolled" } else { "not enrolled" }
                ),
                decision.to_string(),
            )
        }
    }

    fn decide(&self, sandbox: &PodSandbox) -> Decision {
        let manifests = Manifests::load_dir(&self.config.config_dir).unwrap_or_else(|error| {
            warn!(%error, "cannot read the config folder; deciding as if it were empty");
            Manifests::default()
        });
        for problem in &manifests.errors {
            warn!(%problem, "skipping a manifest");
        }
        decide_from_manifests(&manifests, &sandbox.pod_namespace, &sandbox.pod_name)
    }

    /// Prepares the pod's namespace for transparent delivery (best effort), then
    /// enrols it.
    async fn prepare_and_enrol(&self, sandbox: &PodSandbox) -> Result<Workload, String> {
        let netns_path = sandbox
            .netns
            .as_deref()
            .filter(|p| !p.is_empty())
            .ok_or("CNI_NETNS is empty: cannot enrol a pod without its network namespace")?;
        let netns = Netns::open(netns_path).map_err(|e| e.to_string())?;
        let transparent_delivery = match prepare_transparent_delivery(&netns).await {
            Ok(()) => true,
            Err(network_error) => {
                warn!(pod = %pod_name(sandbox), error = %network_error, "the app will see ztunnel's delivery come from its own address");
                false
            }
        };
        self.enrol(sandbox, netns_path, netns, transparent_delivery)
    }

    fn enrol(
        &self,
        sandbox: &PodSandbox,
        netns_path: &str,
        netns: Netns,
        transparent_delivery: bool,
    ) -> Result<Workload, String> {
        let cookie = netns.cookie().map_err(|e| e.to_string())?;
        lock_capture(&self.capture)
            .enrol(&netns, cookie)
            .map_err(|e| e.to_string())?;
        let record = PodRecord {
            uid: pod_uid(sandbox),
            container_id: sandbox.container_id.clone(),
            name: sandbox.pod_name.clone(),
            namespace: sandbox.pod_namespace.clone(),
            service_account: self.service_account(sandbox),
            ips: sandbox.ips.clone(),
            netns_path: netns_path.to_owned(),
            netns_cookie: cookie,
            transparent_delivery,
        };
        let netns = Arc::new(netns);
        let workload = Workload {
            info: workload_info(&record),
            netns: Arc::clone(&netns),
            transparent_delivery,
        };
        let mut pods = lock(&self.pods);
        if let Err(store_error) = pods.store.insert(record) {
            let _ = lock_capture(&self.capture).unenrol(cookie);
            return Err(store_error.to_string());
        }
        pods.netns.insert(workload.info.uid.clone(), netns);
        Ok(workload)
    }

    /// Removes the pod from the eBPF maps and the store; returns its record.
    fn unenrol(&self, uid: &str) -> Option<PodRecord> {
        let mut pods = lock(&self.pods);
        let record = pods.store.get(uid)?.clone();
        if let Err(capture_error) = lock_capture(&self.capture).unenrol(record.netns_cookie) {
            warn!(pod = %uid, error = %capture_error, "cannot fully un-enrol");
        }
        if let Err(store_error) = pods.store.remove(uid) {
            warn!(pod = %uid, error = %store_error, "cannot persist the un-enrolment");
        }
        pods.netns.remove(uid);
        Some(record)
    }

    fn service_account(&self, sandbox: &PodSandbox) -> String {
        Manifests::load_dir(&self.config.config_dir)
            .ok()
            .and_then(|m| {
                m.pod(&sandbox.pod_namespace, &sandbox.pod_name)
                    .and_then(|pod| pod.spec_str("serviceAccountName").map(str::to_owned))
            })
            .unwrap_or_else(|| "default".to_owned())
    }
}

impl Pods {
    fn workloads(&self) -> Vec<Workload> {
        self.store
            .iter()
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

/// Keeps the pods whose namespace still exists (re-asserting their enrolment) and
/// un-enrols the ones that went away while the agent was down.
fn restore_pods(mut store: PodStore, capture: &mut Capture) -> Pods {
    let mut netns = HashMap::new();
    let records: Vec<PodRecord> = store.iter().cloned().collect();
    for record in records {
        let alive = Netns::open(&record.netns_path)
            .ok()
            .filter(|ns| ns.cookie().ok() == Some(record.netns_cookie));
        match alive {
            Some(ns) => match capture.enrol(&ns, record.netns_cookie) {
                Ok(()) => {
                    netns.insert(record.uid.clone(), Arc::new(ns));
                }
                Err(error) => warn!(pod = %record.uid, %error, "cannot re-enrol a restored pod"),
            },
            None => {
                info!(pod = %record.uid, "pod went away while the agent was down: un-enrolling");
                if let Err(error) = capture.unenrol(record.netns_cookie) {
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

fn pod_uid(sandbox: &PodSandbox) -> String {
    sandbox
        .pod_uid
        .clone()
        .filter(|uid| !uid.is_empty())
        .unwrap_or_else(|| sandbox.container_id.clone())
}

fn pod_name(sandbox: &PodSandbox) -> String {
    format!("{}/{}", sandbox.pod_namespace, sandbox.pod_name)
}

fn error(code: u32, message: impl Into<String>, details: impl Into<String>) -> CniReply {
    CniReply::Error {
        code,
        message: message.into(),
        details: details.into(),
    }
}

fn bind<T>(
    path: &std::path::Path,
    bind: impl FnOnce(&std::path::Path) -> io::Result<T>,
) -> Result<T, StartError> {
    let listen_error = |source| StartError::Listen {
        path: path.display().to_string(),
        source,
    };
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(listen_error(error)),
    }
    bind(path).map_err(listen_error)
}

fn lock(pods: &Mutex<Pods>) -> std::sync::MutexGuard<'_, Pods> {
    pods.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lock_capture(capture: &Mutex<Capture>) -> std::sync::MutexGuard<'_, Capture> {
    capture.lock().unwrap_or_else(PoisonError::into_inner)
}
