//! The mesh workloads ztunnel knows of: IP → identity and node, from the controller's
//! config push (`PeerIdentity` resources). An outbound connection whose destination is
//! here goes over HBONE, and the inbound side names its peers from it.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{PoisonError, RwLock},
};

use ambit_api::{
    config::{ConfigUpdate, resource::Kind},
    identity::Identity,
};

/// Why a config update could not be applied (the subscriber NACKs it).
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error(
        "peer {key}: address {ip:?} is not an IP address; fix the pod's status in the controller's input"
    )]
    BadAddress { key: String, ip: String },
    #[error("peer {key}: {source}")]
    BadIdentity {
        key: String,
        source: ambit_api::identity::IdentityError,
    },
    #[error("peers {first} and {second} both claim {ip}; one of them is stale")]
    Conflict {
        ip: IpAddr,
        first: String,
        second: String,
    },
}

/// One mesh workload as the directory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub identity: Identity,
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, Default)]
struct State {
    /// By resource key (`peer/<namespace>/<name>`).
    peers: HashMap<String, Peer>,
    by_ip: HashMap<IpAddr, String>,
    version: Option<u64>,
}

/// IP → mesh workload, replaced by full updates and patched by deltas.
#[derive(Debug, Default)]
pub struct Directory {
    state: RwLock<State>,
}

impl Directory {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The mesh workload at `ip`, if any.
    #[must_use]
    pub fn lookup(&self, ip: IpAddr) -> Option<Peer> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let key = state.by_ip.get(&ip.to_canonical())?;
        state.peers.get(key).cloned()
    }

    /// How many mesh workloads are known.
    #[must_use]
    pub fn len(&self) -> usize {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .peers
            .len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last version applied.
    #[must_use]
    pub fn version(&self) -> Option<u64> {
        self.state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .version
    }

    /// Applies one update, all or nothing: on an error the directory is unchanged.
    ///
    /// # Errors
    /// A peer with an unreadable address or identity, or two peers on one IP.
    pub fn apply(&self, update: &ConfigUpdate) -> Result<(), DirectoryError> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let mut peers = if update.full {
            HashMap::new()
        } else {
            state.peers.clone()
        };
        for key in &update.removed {
            peers.remove(key);
        }
        for resource in &update.upserted {
            match &resource.kind {
                Some(Kind::Peer(peer)) => {
                    peers.insert(resource.key.clone(), parse_peer(&resource.key, peer)?);
                }
                // A workload or service under a key a peer had: the peer is gone.
                Some(_) | None => {
                    peers.remove(&resource.key);
                }
            }
        }
        let mut by_ip: HashMap<IpAddr, String> = HashMap::new();
        for (key, peer) in &peers {
            for ip in &peer.ips {
                if let Some(first) = by_ip.insert(*ip, key.clone()) {
                    let (first, second) = if first < *key {
                        (first, key.clone())
                    } else {
                        (key.clone(), first)
                    };
                    return Err(DirectoryError::Conflict {
                        ip: *ip,
                        first,
                        second,
                    });
                }
            }
        }
        *state = State {
            peers,
            by_ip,
            version: Some(update.version),
        };
        Ok(())
    }

    /// The peers, for the admin config dump.
    #[must_use]
    pub fn dump(&self) -> serde_json::Value {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let mut peers: Vec<&Peer> = state.peers.values().collect();
        peers.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        serde_json::json!({
            "version": state.version,
            "peers": peers.iter().map(|peer| serde_json::json!({
                "namespace": peer.namespace,
                "name": peer.name,
                "node": peer.node,
                "identity": peer.identity.to_string(),
                "ips": peer.ips.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

fn parse_peer(key: &str, peer: &ambit_api::config::PeerIdentity) -> Result<Peer, DirectoryError> {
    let identity =
        peer.identity
            .parse::<Identity>()
            .map_err(|source| DirectoryError::BadIdentity {
                key: key.to_owned(),
                source,
            })?;
    let ips = peer
        .ips
        .iter()
        .map(|ip| {
            ip.parse::<IpAddr>()
                .map(|ip| ip.to_canonical())
                .map_err(|_| DirectoryError::BadAddress {
                    key: key.to_owned(),
                    ip: ip.clone(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Peer {
        namespace: peer.namespace.clone(),
        name: peer.name.clone(),
        node: peer.node.clone(),
        identity,
        ips,
    })
}

#[cfg(test)]
mod tests {
    use ambit_api::config::{PeerIdentity, Resource};

    use super::*;

    fn peer(name: &str, ip: &str) -> Resource {
        Resource {
            key: format!("peer/shop/{name}"),
            kind: Some(Kind::Peer(PeerIdentity {
                namespace: "shop".into(),
                name: name.into(),
                node: "n1".into(),
                ips: vec![ip.into()],
                identity: format!("spiffe://cluster.local/ns/shop/sa/{name}"),
            })),
        }
    }

    fn update(version: u64, full: bool, upserted: Vec<Resource>, removed: &[&str]) -> ConfigUpdate {
        ConfigUpdate {
            version,
            full,
            upserted,
            removed: removed.iter().map(|key| (*key).to_owned()).collect(),
        }
    }

    #[test]
    fn full_then_deltas() {
        let directory = Directory::new();
        directory
            .apply(&update(
                1,
                true,
                vec![peer("a", "10.0.0.1"), peer("b", "10.0.0.2")],
                &[],
            ))
            .expect("a full update applies");
        assert_eq!(directory.len(), 2);
        let a = directory
            .lookup("10.0.0.1".parse().expect("ip"))
            .expect("a is known");
        assert_eq!(
            a.identity.to_string(),
            "spiffe://cluster.local/ns/shop/sa/a"
        );
        // IPv4-mapped lookups find the IPv4 peer.
        assert!(
            directory
                .lookup("::ffff:10.0.0.2".parse().expect("ip"))
                .is_some()
        );

        directory
            .apply(&update(
                2,
                false,
                vec![peer("c", "10.0.0.3")],
                &["peer/shop/a"],
            ))
            .expect("a delta applies");
        assert!(directory.lookup("10.0.0.1".parse().expect("ip")).is_none());
        assert!(directory.lookup("10.0.0.3".parse().expect("ip")).is_some());
        assert_eq!(directory.version(), Some(2));

        directory
            .apply(&update(3, true, vec![peer("d", "10.0.0.4")], &[]))
            .expect("a second full update applies");
        assert_eq!(directory.len(), 1, "a full update replaces everything");
    }

    #[test]
    fn a_bad_update_changes_nothing() {
        let directory = Directory::new();
        directory
            .apply(&update(1, true, vec![peer("a", "10.0.0.1")], &[]))
            .expect("applies");
        let error = directory
            .apply(&update(2, false, vec![peer("b", "not-an-ip")], &[]))
            .expect_err("a bad address is refused")
            .to_string();
        assert!(error.contains("not-an-ip"), "{error}");
        let error = directory
            .apply(&update(3, false, vec![peer("b", "10.0.0.1")], &[]))
            .expect_err("two peers on one IP are refused")
            .to_string();
        assert!(error.contains("10.0.0.1"), "{error}");
        assert_eq!(directory.len(), 1);
        assert_eq!(directory.version(), Some(1));
    }
}
