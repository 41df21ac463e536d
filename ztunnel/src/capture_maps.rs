//! The agent's pinned capture maps, as ztunnel uses them: the original destination of
//! each captured outbound connection, and the SOCKHASH `sk_lookup` steers inbound
//! connections through (ztunnel puts each pod's 15006 listener there).

use std::{net::SocketAddr, os::fd::AsRawFd, path::Path, sync::Mutex};

use ambit_ebpf_common::{ConnKey, Endpoint, map_names};
use aya::maps::{HashMap, Map, MapData, MapError, SockHash};

#[derive(Debug, thiserror::Error)]
pub enum CaptureMapsError {
    #[error(
        "cannot open the pinned map {path}: {source} — is the agent running with the same --bpffs-dir?"
    )]
    Open { path: String, source: MapError },
    #[error("cannot register the inbound listener for {addr} in {map}: {source}", map = map_names::INBOUND_LISTENERS)]
    Register {
        addr: std::net::IpAddr,
        source: MapError,
    },
}

/// Handles to the two maps ztunnel reads and writes.
pub struct CaptureMaps {
    orig_dst: Mutex<HashMap<MapData, ConnKey, Endpoint>>,
    inbound: Mutex<SockHash<MapData, [u8; 16]>>,
}

impl std::fmt::Debug for CaptureMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureMaps").finish_non_exhaustive()
    }
}

impl CaptureMaps {
    /// Opens the maps the agent pinned under `bpffs_dir`.
    ///
    /// # Errors
    /// [`CaptureMapsError::Open`] when a pin is missing.
    pub fn open(bpffs_dir: &Path) -> Result<Self, CaptureMapsError> {
        let open = |name: &str| {
            let path = bpffs_dir.join("maps").join(name);
            MapData::from_pin(&path)
                .and_then(Map::from_map_data)
                .map_err(|source| CaptureMapsError::Open {
                    path: path.display().to_string(),
                    source,
                })
        };
        let orig_dst = HashMap::try_from(open(map_names::ORIG_DST_BY_CONN)?).map_err(|source| {
            CaptureMapsError::Open {
                path: map_names::ORIG_DST_BY_CONN.to_owned(),
                source,
            }
        })?;
        let inbound =
            SockHash::try_from(open(map_names::INBOUND_LISTENERS)?).map_err(|source| {
                CaptureMapsError::Open {
                    path: map_names::INBOUND_LISTENERS.to_owned(),
                    source,
                }
            })?;
        Ok(Self {
            orig_dst: Mutex::new(orig_dst),
            inbound: Mutex::new(inbound),
        })
    }

    /// Takes the original destination of a captured connection that ztunnel accepted
    /// from `peer` on `local`, in the namespace `netns_cookie`. The entry is removed:
    /// each connection is accepted once.
    pub fn take_original_destination(
        &self,
        netns_cookie: u64,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Option<SocketAddr> {
        let key = ConnKey {
            netns_cookie,
            src: endpoint(peer),
            dst: endpoint(local),
        };
        let mut map = self
            .orig_dst
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let original = map.get(&key, 0).ok()?;
        let _ = map.remove(&key);
        Some(socket_addr(&original))
    }

    /// Makes `listener` the inbound listener for every address in `ips`.
    ///
    /// # Errors
    /// [`CaptureMapsError::Register`] for the first address that could not be set.
    pub fn register_inbound(
        &self,
        ips: &[std::net::IpAddr],
        listener: &impl AsRawFd,
    ) -> Result<(), CaptureMapsError> {
        let mut map = self
            .inbound
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ip in ips {
            map.insert(ip_key(*ip), listener.as_raw_fd(), 0)
                .map_err(|source| CaptureMapsError::Register { addr: *ip, source })?;
        }
        Ok(())
    }

    /// Forgets the inbound listener of each address (closing the listener also does).
    pub fn unregister_inbound(&self, ips: &[std::net::IpAddr]) {
        let mut map = self
            .inbound
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for ip in ips {
            let _ = map.remove(&ip_key(*ip));
        }
    }
}

fn ip_key(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

fn endpoint(addr: SocketAddr) -> Endpoint {
    Endpoint {
        addr: ip_key(addr.ip()),
        port: addr.port(),
        _pad: 0,
    }
}

fn socket_addr(endpoint: &Endpoint) -> SocketAddr {
    let v6 = std::net::Ipv6Addr::from(endpoint.addr);
    let ip = v6
        .to_ipv4_mapped()
        .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4);
    SocketAddr::new(ip, endpoint.port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_round_trip_for_both_families() {
        for text in ["198.18.1.5:8080", "[2001:2::5]:443"] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(socket_addr(&endpoint(addr)), addr, "{text}");
        }
    }
}
