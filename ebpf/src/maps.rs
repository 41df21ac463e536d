//! Every map the programs use, in one place. All are pinned by name under the agent's
//! bpffs directory (default `/sys/fs/bpf/ambit`) so that an agent restart keeps them.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, SockHash},
};
use ambit_ebpf_common::{ConnKey, Endpoint, FlowKey, Settings};

/// Enrolled pods. Key: network-namespace cookie. Value: `NETNS_ENROLLED`.
/// Written by the agent; read by `connect`, `getpeername` and `sockops`.
#[map(name = "AMBIT_ENROLLED")]
pub static ENROLLED_NETNS: HashMap<u64, u32> = HashMap::pinned(65_536, 0);

/// Where a redirected connect was going. Key: the app socket's cookie. Value: the
/// original destination. Written by `connect`, read by `getpeername` and `sockops`,
/// deleted by `sockops` when the socket closes (LRU as a backstop).
#[map(name = "AMBIT_ODST_CK")]
pub static ORIG_DST_BY_COOKIE: LruHashMap<u64, Endpoint> = LruHashMap::pinned(262_144, 0);

/// Where a redirected connection was going, by connection. Key: `ConnKey` with the
/// app's address as `src` and ztunnel's outbound listener as `dst`. Value: the original
/// destination. Written by `sockops` when the app's connect completes; read by ztunnel
/// when it accepts the connection; deleted by `sockops` when the app's socket closes.
#[map(name = "AMBIT_ODST_CN")]
pub static ORIG_DST_BY_CONN: LruHashMap<ConnKey, Endpoint> = LruHashMap::pinned(262_144, 0);

/// ztunnel's inbound plaintext listener (15006) for each pod address. Key: the pod
/// address, 16 bytes, IPv4-mapped. Filled by ztunnel; read by `sk_lookup`.
#[map(name = "AMBIT_INBOUND")]
pub static INBOUND_LISTENERS: SockHash<[u8; 16]> = SockHash::pinned(65_536, 0);

/// Established same-node sockets (app ↔ ztunnel in-pod listener) for sk_msg
/// redirection. Key: `ConnKey` (socket's local address as `src`, remote as `dst`).
/// Filled by `sockops`; the kernel removes a socket when it closes.
#[map(name = "AMBIT_LOCAL_SK")]
pub static LOCAL_SOCKETS: SockHash<ConnKey> = SockHash::pinned(262_144, 0);

/// Run-time switches, index 0. Written by the agent.
#[map(name = "AMBIT_SETTINGS")]
pub static SETTINGS: Array<Settings> = Array::pinned(1, 0);

/// ztunnel's inbound deliveries in progress. Key: `FlowKey` (the client's address that
/// ztunnel's delivery socket is bound to, the app's address). Value: 1. Written by
/// `connect` for sockets marked `DELIVERY_MARK`; read by `sk_lookup`, which lets these
/// connections reach the app instead of steering them back to ztunnel. LRU: entries
/// age out.
#[map(name = "AMBIT_DELIVERY")]
pub static DELIVERIES: LruHashMap<FlowKey, u32> = LruHashMap::pinned(65_536, 0);
