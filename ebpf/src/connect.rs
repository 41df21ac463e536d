//! `cgroup/connect4` and `cgroup/connect6`: an enrolled pod's outbound TCP connect goes
//! to ztunnel's in-pod outbound listener instead, and the original destination is
//! remembered by socket cookie.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use aya_log_ebpf::error;
use ambit_ebpf_common::{Endpoint, OUTBOUND_PORT, ZTUNNEL_MARK};

use crate::{
    addr::{
        IPPROTO_TCP, IPV4_LOOPBACK_BE, IPV4_MAPPED_PREFIX_BE, IPV6_LOOPBACK_BE, is_loopback_v4,
        is_loopback_v6, is_v4_mapped, set_user_ip6,
    },
    maps::{ENROLLED_NETNS, ORIG_DST_BY_COOKIE},
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
            error!(&ctx, "ambit connect4: cannot record original destination ({})", code);
            REFUSE
        }
    }
}

#[cgroup_sock_addr(connect6)]
pub fn ambit_connect6(ctx: SockAddrContext) -> i32 {
    match try_connect6(&ctx) {
        Ok(()) => PROCEED,
        Err(code) => {
            error!(&ctx, "ambit connect6: cannot record original destination ({})", code);
            REFUSE
        }
    }
}

fn try_connect4(ctx: &SockAddrContext) -> Result<(), i32> {
    // SAFETY: the kernel hands the program a valid `bpf_sock_addr` for its lifetime.
    let sa = unsafe { &mut *ctx.sock_addr };
    let dst_ip = sa.user_ip4;
    if sa.protocol != IPPROTO_TCP || is_loopback_v4(dst_ip) || !should_capture(ctx) {
        return Ok(());
    }
    let port = u16::from_be(sa.user_port as u16);
    remember(ctx, &Endpoint::from_ipv4_be(dst_ip, port))?;
    sa.user_ip4 = IPV4_LOOPBACK_BE;
    sa.user_port = u32::from(OUTBOUND_PORT.to_be());
    Ok(())
}

fn try_connect6(ctx: &SockAddrContext) -> Result<(), i32> {
    // SAFETY: as in `try_connect4`.
    let sa = unsafe { &mut *ctx.sock_addr };
    let dst_ip = sa.user_ip6;
    if sa.protocol != IPPROTO_TCP || is_loopback_v6(dst_ip) || !should_capture(ctx) {
        return Ok(());
    }
    let port = u16::from_be(sa.user_port as u16);
    remember(ctx, &Endpoint::from_ipv6_be(dst_ip, port))?;
    // An IPv4-mapped destination must stay IPv4: it goes to 127.0.0.1 instead of ::1.
    if is_v4_mapped(dst_ip) {
        set_user_ip6(sa, [0, 0, IPV4_MAPPED_PREFIX_BE, IPV4_LOOPBACK_BE]);
    } else {
        set_user_ip6(sa, IPV6_LOOPBACK_BE);
    }
    sa.user_port = u32::from(OUTBOUND_PORT.to_be());
    Ok(())
}

/// Whether the socket belongs to an enrolled pod and is not one of ztunnel's own.
#[inline(always)]
fn should_capture(ctx: &SockAddrContext) -> bool {
    // SAFETY: `sk` is always set for connect hooks and points at the connecting socket.
    let mark = unsafe { (*(*ctx.sock_addr).__bindgen_anon_1.sk).mark };
    if mark == ZTUNNEL_MARK {
        return false;
    }
    // SAFETY: the helper accepts this program type's context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    ENROLLED_NETNS.get_ptr(&netns).is_some()
}

#[inline(always)]
fn remember(ctx: &SockAddrContext, original: &Endpoint) -> Result<(), i32> {
    // SAFETY: the helper accepts this program type's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    ORIG_DST_BY_COOKIE.insert(&cookie, original, 0)
}
