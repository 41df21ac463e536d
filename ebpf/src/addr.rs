//! Reading addresses out of the kernel's contexts into [`Endpoint`]s.

use ambit_ebpf_common::Endpoint;

pub const AF_INET: u32 = 2;
pub const AF_INET6: u32 = 10;
pub const IPPROTO_TCP: u32 = 6;

/// 127.0.0.1 as the kernel stores it in a `u32` (network byte order).
pub const IPV4_LOOPBACK_BE: u32 = u32::from_ne_bytes([127, 0, 0, 1]);
/// ::1 as the kernel stores it: four network-order words.
pub const IPV6_LOOPBACK_BE: [u32; 4] = [0, 0, 0, u32::from_ne_bytes([0, 0, 0, 1])];
/// The third word of an IPv4-mapped IPv6 address (`::ffff:0:0/96`).
pub const IPV4_MAPPED_PREFIX_BE: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);

/// Whether an IPv4 address in network byte order is in 127.0.0.0/8.
#[inline(always)]
pub fn is_loopback_v4(addr_be: u32) -> bool {
    addr_be.to_ne_bytes()[0] == 127
}

/// Whether an IPv6 address (network-order words) is IPv4-mapped.
#[inline(always)]
pub fn is_v4_mapped(words: [u32; 4]) -> bool {
    words[0] == 0 && words[1] == 0 && words[2] == IPV4_MAPPED_PREFIX_BE
}

/// Whether an IPv6 address is ::1 or an IPv4-mapped loopback address.
#[inline(always)]
pub fn is_loopback_v6(words: [u32; 4]) -> bool {
    words == IPV6_LOOPBACK_BE || (is_v4_mapped(words) && is_loopback_v4(words[3]))
}

/// Whether an endpoint's address is loopback in either family.
#[inline(always)]
pub fn is_loopback(ep: &Endpoint) -> bool {
    if ep.is_ipv4() {
        is_loopback_v4(ep.ipv4_be())
    } else {
        ep.ipv6_be() == IPV6_LOOPBACK_BE
    }
}

/// A port the kernel stores in network byte order in the upper 16 bits of a `u32`
/// (`remote_port` of sock_ops and sk_msg), in host byte order.
#[inline(always)]
pub fn port_from_be_upper(port: u32) -> u16 {
    u16::from_be((port >> 16) as u16)
}

/// An endpoint from a family, readers of the IPv4 or IPv6 field of a context, and a
/// port in host byte order. `None` for a family other than IPv4 or IPv6. Only the
/// family's own field is read.
#[inline(always)]
pub fn endpoint(
    family: u32,
    ip4: impl FnOnce() -> u32,
    ip6: impl FnOnce() -> [u32; 4],
    port: u16,
) -> Option<Endpoint> {
    match family {
        AF_INET => Some(Endpoint::from_ipv4_be(ip4(), port)),
        AF_INET6 => Some(Endpoint::from_ipv6_be(ip6(), port)),
        _ => None,
    }
}

/// Reads a context's 16-byte address field one 4-byte load at a time: the verifier
/// only accepts context loads at a constant offset from the context pointer, which a
/// single array copy does not compile to.
///
/// # Safety
/// `words` must point at a `[u32; 4]` field of the program's live context.
#[inline(always)]
pub unsafe fn read_ip6(words: *const [u32; 4]) -> [u32; 4] {
    let first = words.cast::<u32>();
    // SAFETY: the caller guarantees `words` points at four readable u32s.
    unsafe {
        [
            core::ptr::read_volatile(first),
            core::ptr::read_volatile(first.add(1)),
            core::ptr::read_volatile(first.add(2)),
            core::ptr::read_volatile(first.add(3)),
        ]
    }
}

/// Writes an IPv6 address into a context's `user_ip6`, one 4-byte store per word: the
/// verifier rejects the single 16-byte copy the compiler would otherwise emit
/// ("dereference of modified ctx ptr").
#[inline(always)]
pub fn set_user_ip6(sa: &mut aya_ebpf::bindings::bpf_sock_addr, words: [u32; 4]) {
    // SAFETY: each pointer is to a 4-byte field of the live context.
    unsafe {
        core::ptr::write_volatile(&raw mut sa.user_ip6[0], words[0]);
        core::ptr::write_volatile(&raw mut sa.user_ip6[1], words[1]);
        core::ptr::write_volatile(&raw mut sa.user_ip6[2], words[2]);
        core::ptr::write_volatile(&raw mut sa.user_ip6[3], words[3]);
    }
}

/// A `bpf_sock_addr`'s `user_ip6`, read one word at a time (see [`read_ip6`]).
#[inline(always)]
pub fn read_user_ip6(sa: &aya_ebpf::bindings::bpf_sock_addr) -> [u32; 4] {
    // SAFETY: `user_ip6` is a `[u32; 4]` field of the live context.
    unsafe { read_ip6(&raw const sa.user_ip6) }
}
