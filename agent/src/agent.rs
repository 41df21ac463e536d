//! The running agent: the capture eBPF, the pods it knows, the link to ztunnel, and
//! what happens on each CNI request.
//!
//! Every pod the CNI plugin reports is remembered, in the mesh or not, so that a label
//! changed later (`kubectl label namespace shop istio.io/dataplane-mode=ambient`)
//! moves running pods in or out of the mesh ([`Agent::reconcile`], see `membership`).

mod membership;

use std::{
    collections::HashMap,
    fs, io,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use ambit_api::cni::{CniReply, PodSandbox, codes};
use ambit_netns::Netns;
use tokio::net::UnixListener;
use tokio_seqpacket::UnixSeqpacketListener;
use tracing::{info, warn};

use crate::{
    capture::{Capture, CaptureError},
    config::{Config, ZTUNNEL_ACK_TIMEOUT_SECS},
    decisions::{Decisions, Verdict},
    pods::{PodStore, PodStoreError},
    ztunnel_link::{self, ZtunnelLink},
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

/// The pods the agent knows (enrolled or not), with their open network namespaces.
#[derive(Debug)]
struct Pods {
    store: PodStore,
    netns: HashMap<String, Arc<Netns>>,
}

/// The agent's state, shared by the CNI server, the config watch and the ztunnel link.
#[derive(Debug)]
pub struct Agent {
    decisions: Arc<Decisions>,
    capture: Mutex<Capture>,
    pods: Arc<Mutex<Pods>>,
    ztunnel: ZtunnelLink,
    /// Serialises changes of membership (CNI requests and reconciliations), which wait
    /// on ztunnel's acknowledgements.
    changes: tokio::sync::Mutex<()>,
}

/// The sockets the agent serves, bound by [`Agent::start`].
#[derive(Debug)]
pub struct Listeners {
    pub cni: UnixListener,
}

impl Agent {
    /// Installs (or adopts) the capture eBPF, restores the pods known before a
    /// restart, and starts serving ztunnel.
    ///
    /// # Errors
    /// [`StartError`] naming what could not be set up.
    pub fn start(
        config: &Config,
        decisions: Arc<Decisions>,
    ) -> Result<(Arc<Self>, Listeners), StartError> {
        let mut capture = Capture::install(config)?;
        if let Some(logger) = capture.take_log_forwarder() {
            tokio::spawn(crate::capture::forward_logs(logger));
        }
        fs::create_dir_all(&config.run_dir).map_err(|source| StartError::Listen {
            path: config.run_dir.display().to_string(),
            source,
        })?;
        let store = PodStore::load(&config.state_file())?;
        let pods = Arc::new(Mutex::new(membership::restore(store, &mut capture)));

        let ztunnel_listener = bind(&config.ztunnel_socket(), |p| UnixSeqpacketListener::bind(p))?;
        let cni = bind(&config.cni_socket(), |p| UnixListener::bind(p))?;
        let snapshot_pods = Arc::clone(&pods);
        let ztunnel = ztunnel_link::spawn(
            ztunnel_listener,
            Duration::from_secs(ZTUNNEL_ACK_TIMEOUT_SECS),
            move || lock(&snapshot_pods).enrolled_workloads(),
        );
        let agent = Arc::new(Self {
            decisions,
            capture: Mutex::new(capture),
            pods,
            ztunnel,
            changes: tokio::sync::Mutex::new(()),
        });
        Ok((agent, Listeners { cni }))
    }

    /// CNI ADD: remember the pod, enrol it if it belongs in the mesh, and hand it to
    /// ztunnel. A pod that belongs in the mesh but cannot be enrolled is refused.
    pub async fn add_pod(&self, sandbox: &PodSandbox) -> CniReply {
        let _change = self.changes.lock().await;
        let decision = self
            .decisions
            .snapshot()
            .decide(&sandbox.pod_namespace, &sandbox.pod_name);
        info!(pod = %pod_name(sandbox), decision = %decision.reason, "CNI ADD");
        let uid = pod_uid(sandbox);
        if let Err(message) = self.remember(sandbox, &decision) {
            return if decision.enrols {
                enrolment_failed(message)
            } else {
                warn!(pod = %pod_name(sandbox), %message, "cannot remember a pod outside the mesh; a later label will not reach it");
                CniReply::Ok { enrolled: false }
            };
        }
        if !decision.enrols {
            return CniReply::Ok { enrolled: false };
        }
        match self.enrol(&uid).await {
            Ok(()) => CniReply::Ok { enrolled: true },
            Err(message) => {
                self.forget(&uid);
                enrolment_failed(message)
            }
        }
    }

    /// CNI DEL: un-enrol the pod if it is enrolled, and forget it.
    pub async fn delete_pod(&self, sandbox: &PodSandbox) -> CniReply {
        let _change = self.changes.lock().await;
        let uid = pod_uid(sandbox);
        if self.is_enrolled(&uid) {
            self.unenrol(&uid).await;
            info!(pod = %pod_name(sandbox), "CNI DEL: un-enrolled");
        }
        self.forget(&uid);
        CniReply::Ok { enrolled: false }
    }

    /// CNI CHECK: is the pod enrolled exactly when it should be?
    pub fn check_pod(&self, sandbox: &PodSandbox) -> CniReply {
        let decision: Verdict = self
            .decisions
            .snapshot()
            .decide(&sandbox.pod_namespace, &sandbox.pod_name);
        let uid = pod_uid(sandbox);
        let cookie = lock(&self.pods)
            .store
            .get(&uid)
            .filter(|p| p.enrolled)
            .map(|p| p.netns_cookie);
        let enrolled = cookie.is_some_and(|cookie| lock_capture(&self.capture).is_enrolled(cookie));
        if enrolled == decision.enrols {
            return CniReply::Ok { enrolled };
        }
        CniReply::Error {
            code: codes::ENROLMENT_MISMATCH,
            message: format!(
                "pod {} should be {} but is {}",
                pod_name(sandbox),
                if decision.enrols {
                    "enrolled"
                } else {
                    "outside the mesh"
                },
                if enrolled { "enrolled" } else { "not enrolled" }
            ),
            details: decision.reason,
        }
    }
}

fn enrolment_failed(message: String) -> CniReply {
    CniReply::Error {
        code: codes::ENROLMENT_FAILED,
        message,
        details: "the pod belongs in the mesh and is not started outside it".to_owned(),
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
