//! The inbound connections in flight, each with what its policy check saw, so that a
//! policy change can check them again and close those the new policy forbids.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio_util::sync::CancellationToken;

use super::{rules::Connection, scope::Workload};

#[derive(Debug)]
struct Entry {
    workload: Workload,
    connection: Connection,
    revoke: CancellationToken,
}

/// The admitted connections.
#[derive(Debug, Default)]
pub struct Registry {
    next_id: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
}

impl Registry {
    /// Records an admitted connection until the returned admission is dropped.
    pub fn admit(self: &Arc<Self>, workload: Workload, connection: Connection) -> Admission {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let revoke = CancellationToken::new();
        self.lock().insert(
            id,
            Entry {
                workload,
                connection,
                revoke: revoke.clone(),
            },
        );
        Admission {
            id,
            registry: Arc::clone(self),
            revoke,
        }
    }

    /// Revokes every connection for which `forbidden` says why; returns how many.
    pub fn revoke_where<E>(
        &self,
        mut forbidden: impl FnMut(&Workload, &Connection) -> Option<E>,
        mut on_revoke: impl FnMut(&Workload, &Connection, E),
    ) -> usize {
        let entries = self.lock();
        let mut revoked = 0;
        for entry in entries.values().filter(|e| !e.revoke.is_cancelled()) {
            if let Some(reason) = forbidden(&entry.workload, &entry.connection) {
                entry.revoke.cancel();
                on_revoke(&entry.workload, &entry.connection, reason);
                revoked += 1;
            }
        }
        revoked
    }

    /// How many admitted connections are open.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An admitted connection: closed by its relay when [`Admission::revoked`] fires.
#[derive(Debug)]
pub struct Admission {
    id: u64,
    registry: Arc<Registry>,
    revoke: CancellationToken,
}

impl Admission {
    /// Fires when a policy change forbids the connection.
    pub fn revoked(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.revoke.clone().cancelled_owned()
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}
