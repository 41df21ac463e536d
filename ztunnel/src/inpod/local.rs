//! The same-node fast path: when the destination of a mesh connection is a pod this
//! ztunnel serves too, both ends are known to this process, so the TLS round trip buys
//! nothing. The connection is delivered straight into the destination pod, through the
//! same policy check and destination telemetry as HBONE inbound ([`super::deliver`]);
//! the source side reports it as mutual TLS, as Istio's ztunnel does.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError, Weak},
};

use super::{
    PodContext,
    deliver::{self, DeliveryError},
    metered::Metered,
};

/// The pods this ztunnel serves, by address.
#[derive(Debug, Default)]
pub struct LocalPods(Mutex<HashMap<IpAddr, Weak<PodContext>>>);

impl LocalPods {
    /// Makes `pod` reachable by its addresses.
    pub fn register(&self, pod: &Arc<PodContext>) {
        let mut pods = self.lock();
        for ip in &pod.ips {
            pods.insert(*ip, Arc::downgrade(pod));
        }
    }

    /// Forgets `pod`'s addresses, unless another pod has taken them since.
    pub fn unregister(&self, pod: &Arc<PodContext>) {
        let mut pods = self.lock();
        for ip in &pod.ips {
            if pods
                .get(ip)
                .is_some_and(|held| std::ptr::eq(held.as_ptr(), Arc::as_ptr(pod)))
            {
                pods.remove(ip);
            }
        }
    }

    /// The served pod at `ip`.
    #[must_use]
    pub fn get(&self, ip: IpAddr) -> Option<Arc<PodContext>> {
        self.lock().get(&ip.to_canonical())?.upgrade()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Weak<PodContext>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Delivers a connection from `source` (which holds an identity) to `destination` in
/// the local pod `target`.
///
/// # Errors
/// As [`deliver::deliver`].
pub async fn connect(
    source: &PodContext,
    target: Arc<PodContext>,
    destination: SocketAddr,
) -> Result<Metered, DeliveryError> {
    let identity = source.identity.as_ref().ok_or(DeliveryError::NoIdentity)?;
    let ip = source
        .ips
        .iter()
        .copied()
        .find(|ip| ip.is_ipv4() == destination.is_ipv4())
        .or_else(|| source.ips.first().copied())
        .ok_or(DeliveryError::NoIdentity)?;
    let source = deliver::Source {
        ip,
        identity,
        hbone: false,
    };
    deliver::deliver(target, source, destination).await
}
