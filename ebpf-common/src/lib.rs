//! Map keys, values and constants shared by Ambit's eBPF programs (`ebpf/`) and the
//! user-space code that fills and reads their maps (agent, ztunnel).
//!
//! Every type is `#[repr(C)]` with explicit padding so both sides agree on the layout
//! byte for byte; a `const` assertion pins each size. Addresses are always 16 bytes:
//! an IPv4 address is stored IPv4-mapped (`::ffff:a.b.c.d`), so one key type serves both
//! families.
//!
//! # Layout
//! - constants: ports of ztunnel's in-pod listeners, ztunnel's socket mark, map names;
//! - [`Endpoint`], [`ConnKey`], [`FlowKey`], [`Settings`]: map keys and values.
//!
//! With the `user` feature the types implement `aya::Pod` for use in user space. This
//! crate holds no logic: what the maps mean is documented in `ebpf/src/maps.rs`.
#![no_std]

/// Mark ztunnel puts on its own sockets (`SO_MARK`); the programs never capture them.
pub const ZTUNNEL_MARK: u32 = 0x539;
/// Mark of the sockets with which ztunnel delivers inbound connections to the app from
/// the client's own address (`IP_TRANSPARENT`). Never captured either; the app's side
/// inherits it (`tcp_fwmark_accept`) and a policy route in the pod sends the replies
/// back to ztunnel.
pub const DELIVERY_MARK: u32 = 0x1539;
/// The pod routing table that holds `local default dev lo` for [`DELIVERY_MARK`].
pub const DELIVERY_ROUTE_TABLE: u32 = 133;
/// ztunnel's in-pod outbound listener (127.0.0.1 and ::1).
pub const OUTBOUND_PORT: u16 = 15001;
/// ztunnel's in-pod inbound plaintext listener (all pod addresses).
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
/// ztunnel's in-pod inbound HBONE listener; never steered.
pub const HBONE_PORT: u16 = 15008;

/// Names of the pinned maps, as the eBPF object declares them (see `ebpf/src/maps.rs`).
pub mod map_names {
    /// Network-namespace cookies of enrolled pods.
    pub const ENROLLED_NETNS: &str = "AMBIT_ENROLLED";
    /// Original destination of a redirected connect, by the app socket's cookie.
    pub const ORIG_DST_BY_COOKIE: &str = "AMBIT_ODST_CK";
    /// Original destination of a redirected connection, by [`crate::ConnKey`].
    pub const ORIG_DST_BY_CONN: &str = "AMBIT_ODST_CN";
    /// ztunnel's inbound listener per pod address (SOCKHASH).
    pub const INBOUND_LISTENERS: &str = "AMBIT_INBOUND";
    /// Established same-node sockets eligible for sk_msg redirection (SOCKHASH).
    pub const LOCAL_SOCKETS: &str = "AMBIT_LOCAL_SK";
    /// Run-time switches ([`crate::Settings`]), one entry at index 0.
    pub const SETTINGS: &str = "AMBIT_SETTINGS";
    /// ztunnel's inbound deliveries in progress, by [`crate::FlowKey`].
    pub const DELIVERIES: &str = "AMBIT_DELIVERY";
}

/// Value stored in [`map_names::ENROLLED_NETNS`] for an enrolled pod.
pub const NETNS_ENROLLED: u32 = 1;

/// An IP address and TCP port.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Address in network byte order, IPv4 stored IPv4-mapped (`::ffff:a.b.c.d`).
    pub addr: [u8; 16],
    /// Port in host byte order.
    pub port: u16,
    /// Always zero.
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<Endpoint>() == 20);

impl Endpoint {
    /// An endpoint from an IPv4 address in network byte order as the kernel stores it
    /// in a `u32` (first octet in the lowest byte on little-endian machines).
    #[must_use]
    pub const fn from_ipv4_be(addr: u32, port: u16) -> Self {
        let o = addr.to_ne_bytes();
        Self {
            addr: [
                0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, o[0], o[1], o[2], o[3],
            ],
            port,
            _pad: 0,
        }
    }

    /// An endpoint from an IPv6 address as the kernel stores it: four `u32` words, each
    /// in network byte order.
    #[must_use]
    pub const fn from_ipv6_be(words: [u32; 4], port: u16) -> Self {
        let mut addr = [0u8; 16];
        let mut i = 0;
        while i < 4 {
            let w = words[i].to_ne_bytes();
            addr[i * 4] = w[0];
            addr[i * 4 + 1] = w[1];
            addr[i * 4 + 2] = w[2];
            addr[i * 4 + 3] = w[3];
            i += 1;
        }
        Self {
            addr,
            port,
            _pad: 0,
        }
    }

    /// Whether the address is IPv4-mapped.
    #[must_use]
    pub const fn is_ipv4(&self) -> bool {
        let a = &self.addr;
        a[0] == 0
            && a[1] == 0
            && a[2] == 0
            && a[3] == 0
            && a[4] == 0
            && a[5] == 0
            && a[6] == 0
            && a[7] == 0
            && a[8] == 0
            && a[9] == 0
            && a[10] == 0xff
            && a[11] == 0xff
    }

    /// The IPv4 address in network byte order as a `u32` for the kernel (only meaningful
    /// when [`Self::is_ipv4`]).
    #[must_use]
    pub const fn ipv4_be(&self) -> u32 {
        let a = &self.addr;
        u32::from_ne_bytes([a[12], a[13], a[14], a[15]])
    }

    /// The address as four `u32` words in network byte order, as the kernel stores IPv6.
    #[must_use]
    pub const fn ipv6_be(&self) -> [u32; 4] {
        let a = &self.addr;
        [
            u32::from_ne_bytes([a[0], a[1], a[2], a[3]]),
            u32::from_ne_bytes([a[4], a[5], a[6], a[7]]),
            u32::from_ne_bytes([a[8], a[9], a[10], a[11]]),
            u32::from_ne_bytes([a[12], a[13], a[14], a[15]]),
        ]
    }
}

/// A TCP connection as seen from one of its sockets, within one network namespace.
///
/// In [`map_names::ORIG_DST_BY_CONN`] `src` is the connecting (app) socket's address and
/// `dst` the address it ended up connected to (ztunnel's outbound listener). In
/// [`map_names::LOCAL_SOCKETS`] `src` is the socket's local and `dst` its remote address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    /// `bpf_get_netns_cookie` / `SO_NETNS_COOKIE` of the namespace the sockets live in.
    pub netns_cookie: u64,
    pub src: Endpoint,
    pub dst: Endpoint,
}
const _: () = assert!(core::mem::size_of::<ConnKey>() == 48);

/// A TCP connection by its two addresses: `src` the connecting side, `dst` the
/// address it connects to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: Endpoint,
    pub dst: Endpoint,
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);

/// Run-time switches read by the programs, stored at index 0 of [`map_names::SETTINGS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Non-zero: same-node socket pairs are joined with sk_msg redirection.
    pub sockmap_acceleration: u32,
}
const _: () = assert!(core::mem::size_of::<Settings>() == 4);

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data without implicit padding or pointers; every bit
    // pattern is a valid value.
    unsafe impl aya::Pod for super::Endpoint {}
    // SAFETY: as above; `netns_cookie` is 8-aligned and the struct is 48 bytes with no gap.
    unsafe impl aya::Pod for super::ConnKey {}
    // SAFETY: a single `u32`.
    unsafe impl aya::Pod for super::Settings {}
    // SAFETY: two `Endpoint`s (2-aligned, 20 bytes each), no gap.
    unsafe impl aya::Pod for super::FlowKey {}
}
