//! ztunnel's pods: for each pod the agent hands over, listeners inside the pod's
//! network namespace (127.0.0.1:15001 and [::1]:15001 outbound, [::]:15006 inbound)
//! and the relay behind them. With HBONE on (certificates and the controller's
//! directory), also [::]:15008 for mutual-TLS tunnels from other nodes.
//!
//! # Layout
//! - [`sockets`]: creating listeners and upstream sockets inside a pod's namespace;
//! - [`relay`]: what happens to each captured connection (plaintext, or handed to
//!   [`hbone_outbound`] for a mesh destination);
//! - [`hbone_outbound`]: a captured connection to a mesh workload, tunnelled over HBONE;
//! - [`hbone_inbound`]: the pod's HBONE server on 15008, delivering to the app;
//! - [`deliver`]: the destination side of a mesh connection (policy, delivery,
//!   destination telemetry), for HBONE inbound and the same-node fast path;
//! - [`local`]: the same-node fast path (no TLS between two pods of this ztunnel);
//! - [`metered`]: an upstream socket that reports Istio's metrics and the access log
//!   when the tunnel relaying it closes.

pub mod deliver;
pub mod hbone_inbound;
pub mod hbone_outbound;
pub mod local;
pub mod metered;
pub mod relay;
pub mod sockets;

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
};

use ambit_api::{handoff::WorkloadInfo, identity::Identity};
use ambit_certs::{CertLease, CertificateStore};
use ambit_hbone::Pool;
use ambit_netns::{Netns, NetnsError};
use ambit_workers::{Assignment, Workers};
use tokio::{
    net::TcpListener,
    task::{JoinHandle, JoinSet},
};
use tracing::{Instrument as _, info, info_span, warn};

use crate::{
    capture_maps::{CaptureMaps, CaptureMapsError},
    directory::{Directory, Service},
    drain::Drain,
    metrics::{Metrics, Party},
    policy::{self, Policies},
};

#[derive(Debug, thiserror::Error)]
pub enum InPodError {
    #[error("pod {uid}: address {ip:?} is not an IP address")]
    BadAddress { uid: String, ip: String },
    #[error("pod {uid}: {source}")]
    Netns { uid: String, source: NetnsError },
    #[error("pod {uid}: cannot listen on {addr} inside the pod: {source}")]
    Listen {
        uid: String,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("pod {uid}: {source}")]
    CaptureMaps {
        uid: String,
        source: Box<CaptureMapsError>,
    },
}

/// What HBONE needs, shared by every pod: the mesh workloads, the certificates, and the
/// pooled connections to other nodes.
#[derive(Debug)]
pub struct HboneContext {
    pub directory: Arc<Directory>,
    pub certificates: Arc<CertificateStore>,
    pub pool: Pool,
    /// The pods served here, for the same-node fast path.
    pub local: local::LocalPods,
}

/// What a connection handler needs to know about its pod.
#[derive(Debug)]
pub struct PodContext {
    pub info: WorkloadInfo,
    /// The pod's addresses (IPv4 as plain IPv4).
    pub ips: Vec<IpAddr>,
    pub netns: Netns,
    /// The agent set the pod up for delivery from the client's own address.
    pub transparent_delivery: bool,
    pub netns_cookie: u64,
    /// The pod's SPIFFE identity; `None` when its namespace or service account cannot
    /// form one.
    pub identity: Option<Identity>,
    pub maps: Arc<CaptureMaps>,
    pub metrics: Arc<Metrics>,
    pub drain: Arc<Drain>,
    /// `None`: plaintext only (no controller or no CA).
    pub hbone: Option<Arc<HboneContext>>,
    /// The L4 policies every inbound connection is checked against.
    pub policies: Arc<Policies>,
}

impl PodContext {
    /// The pod as telemetry names it, with its labels from the directory when known.
    #[must_use]
    pub fn party(&self) -> Party {
        let peer = self
            .hbone
            .as_ref()
            .and_then(|hbone| self.ips.iter().find_map(|ip| hbone.directory.lookup(*ip)));
        let labels = peer.map(|peer| peer.labels.clone()).unwrap_or_default();
        Party::workload(
            &self.info.name,
            &self.info.namespace,
            self.principal(),
            &labels,
        )
    }

    /// The service the pod is an endpoint of (the first by name), for telemetry.
    #[must_use]
    pub fn own_service(&self) -> Option<Arc<Service>> {
        self.ips.iter().find_map(|ip| self.service_of(*ip))
    }

    /// The service whose waypoint the pod takes mesh traffic only through: set when every
    /// service the pod is an endpoint of uses a waypoint.
    #[must_use]
    pub fn waypoint_service(&self) -> Option<Arc<Service>> {
        let directory = &self.hbone.as_ref()?.directory;
        self.ips
            .iter()
            .find_map(|ip| directory.waypoint_service_of_endpoint(*ip))
    }

    /// The service whose VIP is `ip` (from the controller's push).
    #[must_use]
    pub fn service_at(&self, ip: IpAddr) -> Option<Arc<Service>> {
        self.hbone.as_ref()?.directory.service_at(ip)
    }

    /// The service `ip` is an endpoint of (the first by name).
    #[must_use]
    pub fn service_of(&self, ip: IpAddr) -> Option<Arc<Service>> {
        self.hbone.as_ref()?.directory.service_of_endpoint(ip)
    }

    /// The pod as policies select it (labels come from the controller's push).
    #[must_use]
    pub fn policy_workload(&self) -> policy::Workload {
        policy::Workload {
            namespace: self.info.namespace.clone(),
            name: self.info.name.clone(),
            labels: std::collections::BTreeMap::new(),
        }
    }

    /// The pod's SPIFFE identity.
    #[must_use]
    pub fn principal(&self) -> String {
        if let Some(identity) = &self.identity {
            return identity.to_string();
        }
        format!(
            "spiffe://cluster.local/ns/{}/sa/{}",
            self.info.namespace, self.info.service_account
        )
    }
}

#[derive(Debug)]
struct PodProxy {
    context: Arc<PodContext>,
    ips: Vec<IpAddr>,
    /// The pod's accept loops, on its worker.
    serving: JoinHandle<()>,
    _worker: Assignment,
    /// Keeps the identity's certificate held and renewed while the pod is served.
    _certificate: Option<CertLease>,
}

impl Drop for PodProxy {
    fn drop(&mut self) {
        // Closing the listeners also takes them out of the inbound SOCKHASH, so the
        // pod fails closed until it is served again.
        self.serving.abort();
        self.context.maps.unregister_inbound(&self.ips);
        if let Some(hbone) = &self.context.hbone {
            hbone.local.unregister(&self.context);
        }
    }
}

/// Every pod this ztunnel serves.
#[derive(Debug)]
pub struct InPod {
    bpffs_dir: PathBuf,
    maps: Mutex<Option<Arc<CaptureMaps>>>,
    pods: Mutex<HashMap<String, PodProxy>>,
    synced: AtomicBool,
    metrics: Arc<Metrics>,
    drain: Arc<Drain>,
    workers: Workers,
    trust_domain: String,
    certificates: Option<Arc<CertificateStore>>,
    hbone: Option<Arc<HboneContext>>,
    policies: Arc<Policies>,
}

impl InPod {
    #[must_use]
    pub fn new(
        bpffs_dir: PathBuf,
        metrics: Arc<Metrics>,
        drain: Arc<Drain>,
        workers: Workers,
    ) -> Self {
        Self {
            bpffs_dir,
            maps: Mutex::new(None),
            pods: Mutex::new(HashMap::new()),
            synced: AtomicBool::new(false),
            metrics,
            drain,
            workers,
            trust_domain: ambit_api::identity::DEFAULT_TRUST_DOMAIN.to_owned(),
            certificates: None,
            hbone: None,
            policies: Arc::new(Policies::new()),
        }
    }

    /// Checks inbound connections against `policies` (by default: none, so every
    /// connection is allowed).
    #[must_use]
    pub fn with_policies(mut self, policies: Arc<Policies>) -> Self {
        self.policies = policies;
        self
    }

    /// Names pods' identities in `trust_domain` and, with a store, holds a certificate
    /// for each identity served.
    #[must_use]
    pub fn with_identities(
        mut self,
        trust_domain: String,
        certificates: Option<Arc<CertificateStore>>,
    ) -> Self {
        self.trust_domain = trust_domain;
        self.certificates = certificates;
        self
    }

    /// Turns HBONE on for mesh destinations in `directory` (needs certificates: without
    /// [`Self::with_identities`] given a store, this does nothing).
    #[must_use]
    pub fn with_directory(mut self, directory: Arc<Directory>) -> Self {
        self.hbone = self.certificates.as_ref().map(|certificates| {
            Arc::new(HboneContext {
                directory,
                certificates: Arc::clone(certificates),
                pool: Pool::new(),
                local: local::LocalPods::default(),
            })
        });
        self
    }

    /// Starts serving a pod (again, if it was served: the old listeners close).
    ///
    /// # Errors
    /// [`InPodError`] saying what could not be set up; the pod is not served then.
    pub fn add(
        &self,
        info: WorkloadInfo,
        netns: Netns,
        transparent_delivery: bool,
    ) -> Result<(), InPodError> {
        let uid = info.uid.clone();
        let ips = info
            .ips
            .iter()
            .map(|ip| {
                ip.parse::<IpAddr>().map_err(|_| InPodError::BadAddress {
                    uid: uid.clone(),
                    ip: ip.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let maps = self.maps().map_err(|source| InPodError::CaptureMaps {
            uid: uid.clone(),
            source: Box::new(source),
        })?;
        let netns_cookie = netns.cookie().map_err(|source| InPodError::Netns {
            uid: uid.clone(),
            source,
        })?;
        // The same pod again (a new snapshot after the agent restarted): keep serving
        // it as is. A different namespace under the same uid (a re-created sandbox)
        // replaces it; removing first keeps the old proxy's cleanup from taking the new
        // listener's SOCKHASH entries.
        {
            let mut pods = self.lock_pods();
            if pods
                .get(&uid)
                .is_some_and(|pod| pod.context.netns_cookie == netns_cookie)
            {
                return Ok(());
            }
            pods.remove(&uid);
        }
        let listeners =
            sockets::bind_pod_listeners(&netns).map_err(|(addr, source)| match source {
                sockets::SocketError::Netns(source) => InPodError::Netns {
                    uid: uid.clone(),
                    source,
                },
                sockets::SocketError::Io(source) => InPodError::Listen {
                    uid: uid.clone(),
                    addr,
                    source,
                },
            })?;
        let hbone_listener = match &self.hbone {
            Some(_) => Some(
                sockets::bind_hbone_listener(&netns).map_err(|(addr, source)| match source {
                    sockets::SocketError::Netns(source) => InPodError::Netns {
                        uid: uid.clone(),
                        source,
                    },
                    sockets::SocketError::Io(source) => InPodError::Listen {
                        uid: uid.clone(),
                        addr,
                        source,
                    },
                })?,
            ),
            None => None,
        };
        maps.register_inbound(&ips, &listeners.inbound)
            .map_err(|source| InPodError::CaptureMaps {
                uid: uid.clone(),
                source: Box::new(source),
            })?;
        let identity = match Identity::new(
            self.trust_domain.clone(),
            info.namespace.clone(),
            info.service_account.clone(),
        ) {
            Ok(identity) => Some(identity),
            Err(error) => {
                warn!(%uid, %error, "pod names no workload identity; it gets no certificate");
                None
            }
        };
        // Registers interest only: the certificate is fetched in the background.
        let certificate = self
            .certificates
            .as_ref()
            .zip(identity.clone())
            .map(|(store, identity)| store.acquire(identity));
        let context = Arc::new(PodContext {
            info,
            ips: ips.iter().map(|ip| ip.to_canonical()).collect(),
            netns,
            transparent_delivery,
            netns_cookie,
            identity,
            maps,
            metrics: Arc::clone(&self.metrics),
            drain: Arc::clone(&self.drain),
            hbone: self.hbone.clone(),
            policies: Arc::clone(&self.policies),
        });
        let span = info_span!("pod", uid = %uid, name = %format!("{}/{}", context.info.namespace, context.info.name));
        let worker = self.workers.assign();
        let serving = worker
            .runtime
            .spawn(serve(listeners, hbone_listener, Arc::clone(&context)).instrument(span.clone()));
        if let Some(hbone) = &context.hbone {
            hbone.local.register(&context);
        }
        span.in_scope(|| info!(ips = ?ips, hbone = context.hbone.is_some(), "serving pod"));
        self.lock_pods().insert(
            uid,
            PodProxy {
                context,
                ips,
                serving,
                _worker: worker,
                _certificate: certificate,
            },
        );
        Ok(())
    }

    /// Stops serving a pod; connections in flight carry on.
    pub fn remove(&self, uid: &str) {
        if self.lock_pods().remove(uid).is_some() {
            info!(%uid, "stopped serving pod");
        }
    }

    /// Stops serving every pod (shutdown): listeners close, connections in flight
    /// carry on.
    pub fn stop_all(&self) {
        self.lock_pods().clear();
    }

    /// After a snapshot: stops serving every pod it did not name, and reports ready.
    pub fn reconcile(&self, keep: &HashSet<String>) {
        let stale: Vec<String> = self
            .lock_pods()
            .keys()
            .filter(|uid| !keep.contains(*uid))
            .cloned()
            .collect();
        for uid in stale {
            self.remove(&uid);
        }
        self.synced.store(true, Ordering::Release);
    }

    /// Whether the agent's snapshot has been applied at least once.
    #[must_use]
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// The pods served and the certificates held (see [`CertificateStore::dump`]), as
    /// JSON, for the admin endpoint.
    #[must_use]
    pub fn config_dump(&self) -> String {
        let pods = self.lock_pods();
        let mut workloads: Vec<serde_json::Value> = pods
            .values()
            .map(|pod| {
                let info = &pod.context.info;
                serde_json::json!({
                    "uid": info.uid,
                    "name": info.name,
                    "namespace": info.namespace,
                    "serviceAccount": info.service_account,
                    "principal": pod.context.principal(),
                    "ips": info.ips,
                    "netnsCookie": pod.context.netns_cookie,
                    "transparentDelivery": pod.context.transparent_delivery,
                })
            })
            .collect();
        workloads.sort_by(|a, b| a["uid"].as_str().cmp(&b["uid"].as_str()));
        drop(pods);
        let certificates = self
            .certificates
            .as_ref()
            .map_or_else(|| serde_json::json!([]), |store| store.dump());
        let peers = self
            .hbone
            .as_ref()
            .map_or(serde_json::Value::Null, |hbone| hbone.directory.dump());
        serde_json::json!({
            "synced": self.is_synced(),
            "workloads": workloads,
            "certificates": certificates,
            "directory": peers,
            "policies": self.policies.dump(),
        })
        .to_string()
    }

    fn maps(&self) -> Result<Arc<CaptureMaps>, CaptureMapsError> {
        let mut maps = self.maps.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(maps) = maps.as_ref() {
            return Ok(Arc::clone(maps));
        }
        let opened = Arc::new(CaptureMaps::open(&self.bpffs_dir)?);
        *maps = Some(Arc::clone(&opened));
        Ok(opened)
    }

    fn lock_pods(&self) -> std::sync::MutexGuard<'_, HashMap<String, PodProxy>> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a pod's listener accepts.
#[derive(Debug, Clone, Copy)]
enum Accepting {
    /// Captured plaintext connections (15001 outbound, 15006 inbound).
    Plain(relay::Direction),
    /// HBONE tunnels from other nodes (15008).
    Hbone,
}

/// Runs a pod's accept loops on the worker this is spawned on (the listeners join its
/// reactor here, and every connection they accept is served there), until aborted.
async fn serve(
    listeners: sockets::PodListeners,
    hbone: Option<std::net::TcpListener>,
    pod: Arc<PodContext>,
) {
    let all = listeners
        .outbound
        .into_iter()
        .map(|listener| (listener, Accepting::Plain(relay::Direction::Outbound)))
        .chain([(
            listeners.inbound,
            Accepting::Plain(relay::Direction::Inbound),
        )])
        .chain(hbone.map(|listener| (listener, Accepting::Hbone)));
    let mut loops = JoinSet::new();
    for (listener, accepting) in all {
        let listener = match TcpListener::from_std(listener) {
            Ok(listener) => listener,
            Err(error) => {
                warn!(%error, ?accepting, "cannot serve one of the pod's listeners");
                continue;
            }
        };
        let pod = Arc::clone(&pod);
        match accepting {
            Accepting::Plain(direction) => {
                loops.spawn(accept_loop(listener, pod, direction).in_current_span())
            }
            Accepting::Hbone => {
                loops.spawn(hbone_inbound::accept_loop(listener, pod).in_current_span())
            }
        };
    }
    loops.join_all().await;
}

async fn accept_loop(listener: TcpListener, pod: Arc<PodContext>, direction: relay::Direction) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let pod = Arc::clone(&pod);
                tokio::spawn(relay::handle(stream, peer, pod, direction).in_current_span());
            }
            Err(error) => {
                warn!(%error, ?direction, "accept failed");
                tokio::task::yield_now().await;
            }
        }
    }
}
