//! HBONE connections shared per (source identity, destination identity, destination IP),
//! as Istio's ztunnel pools them: tunnels to the same peer multiplex over one mutual-TLS
//! connection instead of paying a handshake each.

use std::{
    collections::HashMap,
    future::Future,
    net::IpAddr,
    sync::{Arc, Mutex, PoisonError},
};

use crate::{Identity, client::Connection};

/// What makes two tunnels share a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// The certificate the connection presents.
    pub source: Identity,
    /// The identity the server must present.
    pub destination: Identity,
    /// The HBONE server dialled (the destination pod, or its node's address).
    pub destination_ip: IpAddr,
}

type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

/// Open connections by [`PoolKey`]. The caller dials (it owns sockets and certificates);
/// concurrent requests for one key wait for a single dial instead of racing.
#[derive(Debug, Default)]
pub struct Pool {
    slots: Mutex<HashMap<PoolKey, Slot>>,
}

impl Pool {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The live connection for `key`, or a new one from `connect` (kept for next time).
    ///
    /// # Errors
    /// Whatever `connect` returns; nothing is kept then, so the next call dials again.
    pub async fn connection<F, Fut, E>(&self, key: &PoolKey, connect: F) -> Result<Connection, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Connection, E>>,
    {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.clone())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(connection.clone());
        }
        *slot = None;
        let connection = connect().await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Forgets closed connections (and failed dials); call now and then.
    pub fn prune(&self) {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, slot| match slot.try_lock() {
                Ok(connection) => connection.as_ref().is_some_and(|c| !c.is_closed()),
                Err(_) => true, // a dial is in progress
            });
    }

    /// How many keys hold a slot.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
