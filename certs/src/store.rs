//! The certificates ztunnel holds: one per identity, shared by every pod with that
//! identity, each kept fresh by its own task until the identity's last pod goes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use ambit_api::identity::Identity;
use tokio::{sync::Notify, task::JoinHandle};
use tracing::{Instrument as _, info, info_span, warn};

use super::{CaClient, Issued, schedule};

/// What is known of one identity's certificate.
#[derive(Debug, Default)]
struct CertState {
    current: Option<Arc<Issued>>,
    /// Why the last attempt failed, until one succeeds.
    last_error: Option<String>,
}

#[derive(Debug)]
struct Entry {
    pods: usize,
    state: Arc<Mutex<CertState>>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Every identity's certificate on this node.
#[derive(Debug)]
pub struct CertificateStore {
    /// `None` in tests of the bookkeeping alone: nothing is fetched.
    client: Option<CaClient>,
    entries: Mutex<HashMap<Identity, Entry>>,
    /// Woken whenever a certificate is obtained, for [`CertificateStore::wait_for`].
    obtained: Arc<Notify>,
}

impl CertificateStore {
    /// A store fetching from `client`.
    #[must_use]
    pub fn new(client: CaClient) -> Self {
        Self {
            client: Some(client),
            entries: Mutex::new(HashMap::new()),
            obtained: Arc::default(),
        }
    }

    /// A store that counts pods but fetches nothing (tests).
    #[cfg(test)]
    fn without_ca() -> Self {
        Self {
            client: None,
            entries: Mutex::new(HashMap::new()),
            obtained: Arc::default(),
        }
    }

    /// A pod with `identity` arrived: the first one starts fetching and renewing its
    /// certificate in the background (call inside a tokio runtime). Dropping the lease
    /// says the pod left.
    pub fn acquire(self: &Arc<Self>, identity: Identity) -> CertLease {
        let mut entries = self.lock();
        let entry = entries.entry(identity.clone()).or_insert_with(|| {
            let state = Arc::new(Mutex::new(CertState::default()));
            let task = self.client.clone().map(|client| {
                let span = info_span!("certificate", identity = %identity);
                let obtained = Arc::clone(&self.obtained);
                tokio::spawn(
                    maintain(client, identity.clone(), Arc::clone(&state), obtained)
                        .instrument(span),
                )
            });
            Entry {
                pods: 0,
                state,
                task,
            }
        });
        entry.pods += 1;
        CertLease {
            store: Arc::clone(self),
            identity,
        }
    }

    fn release(&self, identity: &Identity) {
        let mut entries = self.lock();
        let last = entries.get_mut(identity).is_some_and(|entry| {
            entry.pods = entry.pods.saturating_sub(1);
            entry.pods == 0
        });
        if last {
            entries.remove(identity);
            info!(%identity, "last pod with this identity left; certificate dropped");
        }
    }

    /// The certificate currently held for `identity`, if any.
    #[must_use]
    pub fn get(&self, identity: &Identity) -> Option<Arc<Issued>> {
        let entries = self.lock();
        let entry = entries.get(identity)?;
        lock(&entry.state).current.clone()
    }

    /// The certificate for `identity`, waiting up to `timeout` for the CA when none is
    /// held yet (a pod that just arrived, a ztunnel that just started); `None` if none
    /// came in time.
    pub async fn wait_for(&self, identity: &Identity, timeout: Duration) -> Option<Arc<Issued>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let obtained = self.obtained.notified();
            tokio::pin!(obtained);
            obtained.as_mut().enable();
            if let Some(issued) = self.get(identity) {
                return Some(issued);
            }
            tokio::time::timeout_at(deadline, obtained).await.ok()?;
        }
    }

    /// How many pods hold `identity` (0 when it is not held).
    #[must_use]
    pub fn pods(&self, identity: &Identity) -> usize {
        self.lock().get(identity).map_or(0, |entry| entry.pods)
    }

    /// The certificates held, for the admin config dump, sorted by identity:
    /// `{identity, serial, pem, notBefore, notAfter, state, pods, lastError}` (`pem`: the
    /// leaf certificate, times in Unix seconds) with `state` `pending`, `valid` or
    /// `failed: <reason>`; `lastError` says why the last attempt failed even while a held
    /// certificate is still `valid`.
    #[must_use]
    pub fn dump(&self) -> serde_json::Value {
        let entries = self.lock();
        let mut identities: Vec<&Identity> = entries.keys().collect();
        identities.sort();
        let now = SystemTime::now();
        let dump: Vec<serde_json::Value> = identities
            .into_iter()
            .filter_map(|identity| {
                let entry = entries.get(identity)?;
                let state = lock(&entry.state);
                let current = state.current.as_deref();
                let status = match (current, &state.last_error) {
                    (Some(issued), _) if issued.not_after > now => "valid".to_owned(),
                    (Some(_), Some(error)) => format!("failed: expired; renewal failing: {error}"),
                    (Some(_), None) => "failed: expired".to_owned(),
                    (None, Some(error)) => format!("failed: {error}"),
                    (None, None) => "pending".to_owned(),
                };
                Some(serde_json::json!({
                    "identity": identity.to_string(),
                    "serial": current.map(|issued| issued.serial.clone()),
                    "pem": current.and_then(|issued| issued.certificate.chain.first()).map(|leaf| {
                        pem::encode(&pem::Pem::new("CERTIFICATE", leaf.to_vec()))
                    }),
                    "notBefore": current.map(|issued| unix_secs(issued.not_before)),
                    "notAfter": current.map(|issued| unix_secs(issued.not_after)),
                    "state": status,
                    "pods": entry.pods,
                    "lastError": state.last_error,
                }))
            })
            .collect();
        serde_json::Value::Array(dump)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Identity, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One pod's interest in an identity's certificate; dropping it releases the interest.
#[derive(Debug)]
pub struct CertLease {
    store: Arc<CertificateStore>,
    identity: Identity,
}

impl CertLease {
    #[must_use]
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The certificate currently held for this lease's identity, if any.
    #[must_use]
    pub fn certificate(&self) -> Option<Arc<Issued>> {
        self.store.get(&self.identity)
    }
}

impl Drop for CertLease {
    fn drop(&mut self) {
        self.store.release(&self.identity);
    }
}

/// Fetches `identity`'s certificate, then renews it at half-life, for as long as the task
/// runs; failed attempts back off and leave the certificate held in place.
async fn maintain(
    client: CaClient,
    identity: Identity,
    state: Arc<Mutex<CertState>>,
    obtained: Arc<Notify>,
) {
    let mut backoff = schedule::Backoff::default();
    loop {
        let wait = match client.fetch(&identity).await {
            Ok(issued) => {
                let renew_at =
                    schedule::renew_at(issued.not_before, issued.not_after, issued.fetched_at);
                info!(
                    serial = %issued.serial,
                    not_after = unix_secs(issued.not_after),
                    renew_in = ?renew_at.duration_since(SystemTime::now()).unwrap_or_default(),
                    "certificate obtained"
                );
                {
                    let mut state = lock(&state);
                    state.current = Some(Arc::new(issued));
                    state.last_error = None;
                }
                obtained.notify_waiters();
                backoff.reset();
                renew_at
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
            }
            Err(error) => {
                let wait = backoff.next_delay();
                warn!(%error, retry_in = ?wait, "cannot obtain the certificate; the one held (if any) keeps serving");
                lock(&state).last_error = Some(error.to_string());
                wait
            }
        };
        tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
    }
}

fn lock(state: &Mutex<CertState>) -> std::sync::MutexGuard<'_, CertState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(sa: &str) -> Identity {
        Identity::new("cluster.local", "default", sa).expect("a valid identity")
    }

    #[test]
    fn one_certificate_per_identity_counted_by_pods() {
        let store = Arc::new(CertificateStore::without_ca());
        let a = identity("a");
        let first = store.acquire(a.clone());
        let second = store.acquire(a.clone());
        let other = store.acquire(identity("b"));
        assert_eq!(store.pods(&a), 2, "two pods share one entry");
        assert_eq!(
            store.dump().as_array().map(Vec::len),
            Some(2),
            "one entry per identity"
        );
        assert_eq!(store.dump()[0]["state"], "pending");

        drop(first);
        assert_eq!(store.pods(&a), 1, "the other pod keeps the certificate");
        drop(second);
        assert_eq!(store.pods(&a), 0, "the last pod's departure drops it");
        assert_eq!(store.dump().as_array().map(Vec::len), Some(1));
        assert_eq!(other.identity(), &identity("b"));
        drop(other);
        assert_eq!(store.dump(), serde_json::json!([]));
    }
}
