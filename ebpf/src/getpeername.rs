//! `cgroup/getpeername4` and `cgroup/getpeername6`: an app whose connect was redirected
//! to ztunnel sees the peer it asked for, not ztunnel's listener.

use aya_ebpf::{
    EbpfContext as _, helpers::bpf_get_socket_cookie, macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use ambit_ebpf_common::Endpoint;

use crate::{
    addr::{IPV4_MAPPED_PREFIX_BE, set_user_ip6},
    maps::ORIG_DST_BY_COOKIE,
};

/// getpeername hooks must return 1; anything else fails the call.
const PROCEED: i32 = 1;

#[cgroup_sock_addr(getpeername4)]
pub fn ambit_getpeername4(ctx: SockAddrContext) -> i32 {
    if let Some(original) = original_destination(&ctx) {
        if original.is_ipv4() {
            // SAFETY: the kernel hands the program a valid `bpf_sock_addr`.
            let sa = unsafe { &mut *ctx.sock_addr };
            sa.user_ip4 = original.ipv4_be();
            sa.user_port = u32::from(original.port.to_be());
        }
    }
    PROCEED
}

#[cgroup_sock_addr(getpeername6)]
pub fn ambit_getpeername6(ctx: SockAddrContext) -> i32 {
    if let Some(original) = original_destination(&ctx) {
        // SAFETY: the kernel hands the program a valid `bpf_sock_addr`.
        let sa = unsafe { &mut *ctx.sock_addr };
        let words = if original.is_ipv4() {
            [0, 0, IPV4_MAPPED_PREFIX_BE, original.ipv4_be()]
        } else {
            original.ipv6_be()
        };
        set_user_ip6(sa, words);
        sa.user_port = u32::from(original.port.to_be());
    }
    PROCEED
}

#[inline(always)]
fn original_destination(ctx: &SockAddrContext) -> Option<Endpoint> {
    // SAFETY: the helper accepts this program type's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied out at once; a concurrent delete can at worst make
    // us read a stale endpoint, never an invalid one.
    unsafe { ORIG_DST_BY_COOKIE.get(&cookie) }.copied()
}
