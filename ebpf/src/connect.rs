//! `cgroup/connect4` and `cgroup/connect6`: an enrolled pod's outbound TCP connect goes
//! to ztunnel's in-pod outbound listener instead, and the original destination is
//! remembered by socket cookie. ztunnel's own sockets are left alone; the ones it
//! delivers inbound connections with (bound to the client's address) are recorded for
//! `sk_lookup`.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use aya_log_ebpf::error;
use ambit_ebpf_common::{DELIVERY_MARK, Endpoint, FlowKey, OUTBOUND_PORT, ZTUNNEL_MARK};

use crate::{
    addr::{
        IPPROTO_TCP, IPV4_LOOPBACK_BE, IPV4_MAPPED_PREFIX_BE, IPV6_LOOPBACK_BE, is_loopback_v4,
        is_loopback_v6, is_v4_mapped, read_ip6, read_user_ip6, set_user_ip6,
    },
    maps::{DELIVERIES, ENROLLED_NETNS, ORIG_DST_BY_COOKIE},
};

/// Let the connect proceed (rewritten or not).
const PROCEED: i32 = 1;
/// Refuse the connect with EPERM.
const REFUSE: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn ambit_connect4(ctx: SockAddrContext) -> i32 {
    match try_connect4(&ctx) {
        Ok(()) => PROCEED,
        Err(code) => {
            error!(&ctx, "ambit connect4: cannot record the connection ({})", code);
            REFUSE
        }
    }
}

#[cgroup_sock_addr(connect6)]
pub fn ambit_connect6(ctx: SockAddrContext) -> i32 {
    match try_connect6(&ctx) {
        Ok(()) => PROCEED,
        Err(code) => {
            error!(&ctx, "ambit connect6: cannot record the connection ({})", code);
            REFUSE
        }
    }
}

fn try_connect4(ctx: &SockAddrContext) -> Result<(), i32> {
    // SAFETY: the kernel hands the program a valid `bpf_sock_addr` for its lifetime.
    let sa = unsafe { &mut *ctx.sock_addr };
    let dst_ip = sa.user_ip4;
    if sa.protocol != IPPROTO_TCP || is_loopback_v4(dst_ip) {
        return Ok(());
    }
    let port = u16::from_be(sa.user_port as u16);
    let original = Endpoint::from_ipv4_be(dst_ip, port);
    match socket_mark(ctx) {
        ZTUNNEL_MARK => return Ok(()),
        DELIVERY_MARK => {
            // SAFETY: `sk` is the connecting socket; it is bound, so its source is set.
            let src = unsafe { Endpoint::from_ipv4_be((*sk(ctx)).src_ip4, (*sk(ctx)).src_port as u16) };
            return record_delivery(src, original);
        }
        _ if !is_enrolled(ctx) => return Ok(()),
        _ => {}
    }
    remember(ctx, &original)?;
    sa.user_ip4 = IPV4_LOOPBACK_BE;
    sa.user_port = u32::from(OUTBOUND_PORT.to_be());
    Ok(())
}

fn try_connect6(ctx: &SockAddrContext) -> Result<(), i32> {
    // SAFETY: as in `try_connect4`.
    let sa = unsafe { &mut *ctx.sock_addr };
    let dst_ip = read_user_ip6(sa);
    if sa.protocol != IPPROTO_TCP || is_loopback_v6(dst_ip) {
        return Ok(());
    }
    let port = u16::from_be(sa.user_port as u16);
    let original = Endpoint::from_ipv6_be(dst_ip, port);
    match socket_mark(ctx) {
        ZTUNNEL_MARK => return Ok(()),
        DELIVERY_MARK => {
            let sk = sk(ctx);
            // SAFETY: `sk` is the connecting socket; it is bound, so its source is set.
            let src = unsafe { Endpoint::from_ipv6_be(read_ip6(&raw const (*sk).src_ip6), (*sk).src_port as u16) };
            return record_delivery(src, original);
        }
        _ if !is_enrolled(ctx) => return Ok(()),
        _ => {}
    }
    remember(ctx, &original)?;
    // An IPv4-mapped destination must stay IPv4: it goes to 127.0.0.1 instead of ::1.
    if is_v4_mapped(dst_ip) {
        set_user_ip6(sa, [0, 0, IPV4_MAPPED_PREFIX_BE, IPV4_LOOPBACK_BE]);
    } else {
        set_user_ip6(sa, IPV6_LOOPBACK_BE);
    }
    sa.user_port = u32::from(OUTBOUND_PORT.to_be());
    Ok(())
}

/// The connecting socket (always set for connect hooks).
#[inline(always)]
fn sk(ctx: &SockAddrContext) -> *mut aya_ebpf::bindings::bpf_sock {
    // SAFETY: the kernel hands the program a valid `bpf_sock_addr`.
    unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk }
}

#[inline(always)]
fn socket_mark(ctx: &SockAddrContext) -> u32 {
    // SAFETY: `sk` points at the connecting socket for the program's duration.
    unsafe { (*sk(ctx)).mark }
}

/// Whether the connecting socket lives in an enrolled pod's network namespace.
#[inline(always)]
fn is_enrolled(ctx: &SockAddrContext) -> bool {
    // SAFETY: the helper accepts this program type's context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    ENROLLED_NETNS.get_ptr(&netns).is_some()
}

/// Lets `sk_lookup` know that ztunnel, not a client, is connecting from `src`.
#[inline(always)]
fn record_delivery(src: Endpoint, dst: Endpoint) -> Result<(), i32> {
    DELIVERIES.insert(&FlowKey { src, dst }, &1, 0)
}

#[inline(always)]
fn remember(ctx: &SockAddrContext, original: &Endpoint) -> Result<(), i32> {
    // SAFETY: the helper accepts this program type's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    ORIG_DST_BY_COOKIE.insert(&cookie, original, 0)
}
