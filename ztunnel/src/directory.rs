//! The mesh workloads and services ztunnel knows of, from the controller's config push:
//! IP → workload (identity, node, labels) from `PeerIdentity` resources, and service
//! VIP → service (ports, endpoints) from `Service` resources. An outbound connection to a
//! VIP is sent to one of the service's endpoints; one whose destination is a mesh
//! workload goes over HBONE; the inbound side names its peers from here.
//!
//! [`labels`]: the compact form of each peer's labels and shared strings;
//! [`ip_map`]: the address-keyed maps.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Arc, PoisonError, RwLock},
};

use ambit_api::{
    config::{ConfigUpdate, resource::Kind},
    identity::Identity,
};

pub use self::labels::Labels;
use self::{ip_map::IpMap, labels::Interner};

pub mod ip_map;
pub mod labels;

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
    #[error(
        "service {key}: address {ip:?} is not an IP address; fix the Service's clusterIP(s) or the endpoints' pods"
    )]
    BadServiceAddress { key: String, ip: String },
    #[error("peers {first} and {second} both claim {ip}; one of them is stale")]
    Conflict {
        ip: IpAddr,
        first: String,
        second: String,
    },
}

/// One mesh workload as the directory knows it (strings many peers share are shared:
/// see [`labels`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub namespace: Arc<str>,
    pub name: Box<str>,
    pub node: Arc<str>,
    pub identity: Arc<Identity>,
    pub ips: Box<[IpAddr]>,
    pub labels: Labels,
}

/// One port of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServicePort {
    pub port: u16,
    /// The endpoints' port (the service port when the manifest names none).
    pub target_port: u16,
}

/// A service as ztunnel resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    /// `<name>.<namespace>.svc.cluster.local`.
    pub hostname: String,
    pub vips: Box<[IpAddr]>,
    pub ports: Vec<ServicePort>,
    pub endpoints: Box<[IpAddr]>,
    /// The waypoint its traffic must go through (`istio.io/use-waypoint`).
    pub waypoint: Option<Waypoint>,
}

/// A waypoint, as clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waypoint {
    /// `namespace/name`.
    pub name: String,
    /// Empty while no waypoint pod runs: traffic fails closed.
    pub addresses: Box<[IpAddr]>,
    /// `None` while no waypoint pod runs.
    pub identity: Option<Identity>,
}

impl Service {
    /// An endpoint for a connection to `port` of the service, in the VIP's address
    /// family, picked by `spread` (the client's port: connections spread over the
    /// endpoints as kube-proxy's random choice does); `None` when the port is not the
    /// service's or no endpoint is ready.
    #[must_use]
    pub fn endpoint(&self, vip: SocketAddr, spread: u16) -> Option<SocketAddr> {
        let port = self.ports.iter().find(|p| p.port == vip.port())?;
        let family: Vec<IpAddr> = self
            .endpoints
            .iter()
            .copied()
            .filter(|ip| ip.is_ipv4() == vip.is_ipv4())
            .collect();
        let ip = family.get(usize::from(spread) % family.len().max(1))?;
        Some(SocketAddr::new(*ip, port.target_port))
    }
}

/// A resource key (`peer/<namespace>/<name>`, `service/<namespace>/<name>`).
type Key = Arc<str>;

/// Peers and services are shared, not copied: a delta clones the maps (reference
/// counts), never the workloads, and a lookup hands out a reference.
#[derive(Debug, Default)]
struct State {
    /// By resource key (`peer/<namespace>/<name>`).
    peers: HashMap<Key, Arc<Peer>>,
    by_ip: IpMap<Arc<Peer>>,
    /// By resource key (`service/<namespace>/<name>`).
    services: HashMap<Key, Arc<Service>>,
    by_vip: IpMap<Arc<Service>>,
    /// Endpoint IP → the first service (by key) it belongs to, for telemetry (built once
    /// per update, not per connection).
    by_endpoint: IpMap<Arc<Service>>,
    /// Endpoint IP → the first service (by key) it belongs to when every service it
    /// belongs to uses a waypoint: mesh traffic to it must come through the waypoint. An
    /// endpoint also behind a service without a waypoint may be reached directly.
    waypoint_only: IpMap<Arc<Service>>,
    /// The peers' shared strings, identities and label sets.
    interner: Interner,
    version: Option<u64>,
}

/// IP → mesh workload, replaced by full updates and patched by deltas.
#[derive(Debug, Default)]
pub struct Directory {
    state: RwLock<State>,
    /// Woken by every update applied, for [`Directory::wait_synced`].
    applied: tokio::sync::Notify,
}

impl Directory {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The mesh workload at `ip`, if any.
    #[must_use]
    pub fn lookup(&self, ip: IpAddr) -> Option<Arc<Peer>> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.by_ip.get(ip).cloned()
    }

    /// The service whose VIP is `ip`, if any.
    #[must_use]
    pub fn service_at(&self, ip: IpAddr) -> Option<Arc<Service>> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.by_vip.get(ip).cloned()
    }

    /// The service that has `ip` among its endpoints (the first by key), for telemetry.
    #[must_use]
    pub fn service_of_endpoint(&self, ip: IpAddr) -> Option<Arc<Service>> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.by_endpoint.get(ip).cloned()
    }

    /// The service whose waypoint mesh traffic to the endpoint `ip` must come through:
    /// set when every service `ip` is an endpoint of uses a waypoint (the first by key).
    #[must_use]
    pub fn waypoint_service_of_endpoint(&self, ip: IpAddr) -> Option<Arc<Service>> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.waypoint_only.get(ip).cloned()
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

    /// Waits up to `timeout` for the first update: until then an address cannot be told
    /// to be a mesh workload or not. Returns whether the directory is synced.
    pub async fn wait_synced(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let applied = self.applied.notified();
            tokio::pin!(applied);
            applied.as_mut().enable();
            if self.version().is_some() {
                return true;
            }
            if tokio::time::timeout_at(deadline, applied).await.is_err() {
                return false;
            }
        }
    }

    /// Applies one update, all or nothing: on an error the directory is unchanged.
    ///
    /// # Errors
    /// A peer with an unreadable address or identity, or two peers on one IP.
    pub fn apply(&self, update: &ConfigUpdate) -> Result<(), DirectoryError> {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        let (mut peers, mut services) = if update.full {
            (HashMap::new(), HashMap::new())
        } else {
            (state.peers.clone(), state.services.clone())
        };
        for key in &update.removed {
            peers.remove(key.as_str());
            services.remove(key.as_str());
        }
        for resource in &update.upserted {
            let key = resource.key.as_str();
            peers.remove(key);
            services.remove(key);
            match &resource.kind {
                Some(Kind::Peer(peer)) => {
                    let peer = parse_peer(key, peer, &mut state.interner)?;
                    peers.insert(key.into(), Arc::new(peer));
                }
                Some(Kind::Service(service)) => {
                    services.insert(key.into(), Arc::new(parse_service(key, service)?));
                }
                Some(_) | None => {}
            }
        }
        let by_ip = index_peers(&peers)?;
        let (by_endpoint, waypoint_only) = index_endpoints(&services);
        state.by_vip = services
            .values()
            .flat_map(|service| service.vips.iter().map(|vip| (*vip, Arc::clone(service))))
            .collect();
        state.peers = peers;
        state.by_ip = by_ip;
        state.services = services;
        state.by_endpoint = by_endpoint;
        state.waypoint_only = waypoint_only;
        state.version = Some(update.version);
        state.interner.forget_unused();
        drop(state);
        self.applied.notify_waiters();
        Ok(())
    }

    /// The peers and services, for the admin config dump.
    #[must_use]
    pub fn dump(&self) -> serde_json::Value {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let mut peers: Vec<&Arc<Peer>> = state.peers.values().collect();
        peers.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut services: Vec<&Arc<Service>> = state.services.values().collect();
        services.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        let texts = |ips: &[IpAddr]| ips.iter().map(ToString::to_string).collect::<Vec<_>>();
        serde_json::json!({
            "services": services.iter().map(|service| serde_json::json!({
                "hostname": service.hostname,
                "vips": texts(&service.vips),
                "ports": service.ports.iter().map(|p| [p.port, p.target_port]).collect::<Vec<_>>(),
                "endpoints": texts(&service.endpoints),
                "waypoint": service.waypoint.as_ref().map(|w| &w.name),
            })).collect::<Vec<_>>(),
            "version": state.version,
            "peers": peers.iter().map(|peer| serde_json::json!({
                "namespace": &*peer.namespace,
                "name": &*peer.name,
                "node": &*peer.node,
                "identity": peer.identity.to_string(),
                "ips": texts(&peer.ips),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Address → peer; two peers on one address are refused.
fn index_peers(peers: &HashMap<Key, Arc<Peer>>) -> Result<IpMap<Arc<Peer>>, DirectoryError> {
    let mut by_ip = IpMap::default();
    for peer in peers.values() {
        for ip in &peer.ips {
            if by_ip.insert(*ip, Arc::clone(peer)).is_some() {
                return Err(conflict(peers, *ip));
            }
        }
    }
    Ok(by_ip)
}

/// The two peers (first by key) that claim `ip`.
fn conflict(peers: &HashMap<Key, Arc<Peer>>, ip: IpAddr) -> DirectoryError {
    let mut claimants: Vec<&Key> = peers
        .iter()
        .filter(|(_, peer)| peer.ips.contains(&ip))
        .map(|(key, _)| key)
        .collect();
    claimants.sort();
    let name = |at: usize| {
        claimants
            .get(at)
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    DirectoryError::Conflict {
        ip,
        first: name(0),
        second: name(1),
    }
}

/// Endpoint → its first service by key; and the same for the endpoints whose every
/// service uses a waypoint.
fn index_endpoints(
    services: &HashMap<Key, Arc<Service>>,
) -> (IpMap<Arc<Service>>, IpMap<Arc<Service>>) {
    let mut by_endpoint = IpMap::default();
    let mut direct_ok: HashSet<IpAddr> = HashSet::new();
    let mut keys: Vec<&Key> = services.keys().collect();
    keys.sort();
    for key in keys {
        let service = &services[key];
        for ip in &service.endpoints {
            by_endpoint.insert_if_absent(*ip, || Arc::clone(service));
            if service.waypoint.is_none() {
                direct_ok.insert(*ip);
            }
        }
    }
    let waypoint_only = by_endpoint
        .iter()
        .filter(|(ip, _)| !direct_ok.contains(ip))
        .map(|(ip, service)| (ip, Arc::clone(service)))
        .collect();
    (by_endpoint, waypoint_only)
}

fn parse_peer(
    key: &str,
    peer: &ambit_api::config::PeerIdentity,
    interner: &mut Interner,
) -> Result<Peer, DirectoryError> {
    let identity =
        peer.identity
            .parse::<Identity>()
            .map_err(|source| DirectoryError::BadIdentity {
                key: key.to_owned(),
                source,
            })?;
    let identity = interner.identity(&identity);
    let ips = parse_ips(&peer.ips, |ip| DirectoryError::BadAddress {
        key: key.to_owned(),
        ip,
    })?;
    Ok(Peer {
        namespace: interner.intern(&peer.namespace),
        name: peer.name.as_str().into(),
        node: interner.intern(&peer.node),
        identity,
        ips,
        labels: Labels::new(&peer.labels, interner),
    })
}

fn parse_service(
    key: &str,
    service: &ambit_api::config::Service,
) -> Result<Service, DirectoryError> {
    let bad = |ip| DirectoryError::BadServiceAddress {
        key: key.to_owned(),
        ip,
    };
    let ports = service
        .ports
        .iter()
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            let target_port = u16::try_from(p.target_port).ok().filter(|t| *t != 0);
            Some(ServicePort {
                port,
                target_port: target_port.unwrap_or(port),
            })
        })
        .collect();
    let waypoint = match &service.waypoint {
        Some(waypoint) => Some(Waypoint {
            name: format!("{}/{}", waypoint.namespace, waypoint.name),
            addresses: parse_ips(&waypoint.addresses, bad)?,
            identity: (!waypoint.identity.is_empty())
                .then(|| waypoint.identity.parse::<Identity>())
                .transpose()
                .map_err(|source| DirectoryError::BadIdentity {
                    key: key.to_owned(),
                    source,
                })?,
        }),
        None => None,
    };
    Ok(Service {
        namespace: service.namespace.clone(),
        name: service.name.clone(),
        hostname: service.hostname.clone(),
        vips: parse_ips(&service.cluster_ips, bad)?,
        ports,
        endpoints: parse_ips(&service.endpoints, bad)?,
        waypoint,
    })
}

/// Addresses as text, IPv4-mapped ones as plain IPv4.
fn parse_ips(
    texts: &[String],
    bad: impl Fn(String) -> DirectoryError,
) -> Result<Box<[IpAddr]>, DirectoryError> {
    texts
        .iter()
        .map(|text| {
            text.parse::<IpAddr>()
                .map(|ip| ip.to_canonical())
                .map_err(|_| bad(text.clone()))
        })
        .collect()
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
                locality: None,
                labels: HashMap::new(),
            })),
        }
    }

    fn update(version: u64, full: bool, upserted: Vec<Resource>, removed: &[&str]) -> ConfigUpdate {
        ConfigUpdate {
            version,
            full,
            upserted,
            removed: removed.iter().map(|key| (*key).to_owned()).collect(),
            more: false,
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

    fn service(name: &str, endpoint: &str, waypoint: bool) -> Resource {
        Resource {
            key: format!("service/shop/{name}"),
            kind: Some(Kind::Service(ambit_api::config::Service {
                namespace: "shop".into(),
                name: name.into(),
                hostname: format!("{name}.shop.svc.cluster.local"),
                cluster_ips: vec![],
                ports: vec![],
                endpoints: vec![endpoint.into()],
                waypoint: waypoint.then(|| ambit_api::config::ServiceWaypoint {
                    namespace: "shop".into(),
                    name: "waypoint".into(),
                    addresses: vec!["10.0.9.9".into()],
                    identity: "spiffe://cluster.local/ns/shop/sa/waypoint".into(),
                }),
            })),
        }
    }

    #[test]
    fn an_endpoint_needs_the_waypoint_only_when_all_its_services_use_one() {
        let directory = Directory::new();
        directory
            .apply(&update(
                1,
                true,
                vec![
                    service("a-waypointed", "10.0.0.1", true),
                    service("b-direct", "10.0.0.1", false),
                    service("only-waypointed", "10.0.0.2", true),
                ],
                &[],
            ))
            .expect("applies");
        let required = |ip: &str| {
            directory
                .waypoint_service_of_endpoint(ip.parse().expect("an IP"))
                .map(|service| service.hostname.clone())
        };
        assert_eq!(
            required("10.0.0.1"),
            None,
            "also behind a service without a waypoint: reachable directly"
        );
        assert_eq!(
            required("10.0.0.2").as_deref(),
            Some("only-waypointed.shop.svc.cluster.local")
        );
        assert_eq!(required("10.0.0.3"), None, "no service: no waypoint");
    }

    #[test]
    fn a_vip_resolves_to_an_endpoint_on_the_target_port() {
        let service = Resource {
            key: "service/shop/cart".into(),
            kind: Some(Kind::Service(ambit_api::config::Service {
                namespace: "shop".into(),
                name: "cart".into(),
                hostname: "cart.shop.svc.cluster.local".into(),
                cluster_ips: vec!["10.96.0.10".into(), "fd00::10".into()],
                ports: vec![ambit_api::config::ServicePort {
                    name: "http".into(),
                    port: 80,
                    target_port: 8080,
                    protocol: "TCP".into(),
                    app_protocol: String::new(),
                }],
                endpoints: vec!["10.0.0.1".into(), "10.0.0.2".into(), "fd00::1".into()],
                waypoint: None,
            })),
        };
        let directory = Directory::new();
        directory
            .apply(&update(1, true, vec![service], &[]))
            .expect("applies");
        let cart = directory
            .service_at("10.96.0.10".parse().expect("ip"))
            .expect("the VIP is known");
        let vip: SocketAddr = "10.96.0.10:80".parse().expect("addr");
        let picked: std::collections::BTreeSet<SocketAddr> = (0..4)
            .filter_map(|spread| cart.endpoint(vip, spread))
            .collect();
        assert_eq!(
            picked
                .into_iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>(),
            ["10.0.0.1:8080", "10.0.0.2:8080"],
            "IPv4 endpoints only, on the target port, spread over both"
        );
        let v6: SocketAddr = "[fd00::10]:80".parse().expect("addr");
        assert_eq!(
            cart.endpoint(v6, 7).map(|a| a.to_string()).as_deref(),
            Some("[fd00::1]:8080")
        );
        assert!(
            cart.endpoint("10.96.0.10:81".parse().expect("addr"), 0)
                .is_none()
        );
        let owner = directory
            .service_of_endpoint("10.0.0.2".parse().expect("ip"))
            .expect("an endpoint names its service");
        assert_eq!(owner.hostname, "cart.shop.svc.cluster.local");
    }
}
