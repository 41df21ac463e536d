//! `sock_ops`: when an app's redirected connect completes, publish its original
//! destination under the connection's addresses (for ztunnel); put same-node socket
//! pairs into the sk_msg SOCKHASH; forget a socket's original destination when it
//! closes.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_TCP_CLOSE,
    },
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::sock_ops,
    programs::SockOpsContext,
};
use ambit_ebpf_common::{ConnKey, Endpoint};

use crate::{
    addr::{endpoint, is_loopback, port_from_be_upper, read_ip6},
    maps::{ENROLLED_NETNS, LOCAL_SOCKETS, ORIG_DST_BY_CONN, ORIG_DST_BY_COOKIE, SETTINGS},
};

// Named `ambit_sock_ops`: a function called `sockops` clashes with a symbol at link time.
#[sock_ops]
pub fn ambit_sock_ops(ctx: SockOpsContext) -> u32 {
    match ctx.op() {
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => on_active_established(&ctx),
        BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => on_passive_established(&ctx),
        BPF_SOCK_OPS_STATE_CB if ctx.arg(1) == BPF_TCP_CLOSE => on_close(&ctx),
        _ => {}
    }
    0
}

fn on_active_established(ctx: &SockOpsContext) {
    let Some(key) = enrolled_conn_key(ctx) else {
        return;
    };
    let cookie = socket_cookie(ctx);
    // SAFETY: the value is copied out at once.
    if let Some(original) = unsafe { ORIG_DST_BY_COOKIE.get(&cookie) }.copied() {
        // A failed insert leaves ztunnel without the destination: it refuses the
        // connection, which is the fail-closed outcome we want.
        let _ = ORIG_DST_BY_CONN.insert(&key, &original, 0);
        // Ask for a state callback so the cookie entry goes away with the socket.
        let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
    }
    accelerate(ctx, key);
}

fn on_passive_established(ctx: &SockOpsContext) {
    if let Some(key) = enrolled_conn_key(ctx) {
        accelerate(ctx, key);
    }
}

fn on_close(ctx: &SockOpsContext) {
    let _ = ORIG_DST_BY_COOKIE.remove(&socket_cookie(ctx));
}

/// Adds the socket to the sk_msg SOCKHASH when acceleration is on and both ends are in
/// this network namespace (loopback, or a pod connecting to its own address).
fn accelerate(ctx: &SockOpsContext, mut key: ConnKey) {
    let enabled = SETTINGS.get(0).is_some_and(|s| s.sockmap_acceleration != 0);
    let same_node_pair = (is_loopback(&key.src) && is_loopback(&key.dst))
        || key.src.addr == key.dst.addr;
    if enabled && same_node_pair {
        // SAFETY: `ops` is the kernel's valid context for this invocation.
        let _ = LOCAL_SOCKETS.update(&mut key, unsafe { &mut *ctx.ops }, 0);
    }
}

/// The socket's connection key (local address as `src`), if its network namespace is
/// enrolled.
#[inline(always)]
fn enrolled_conn_key(ctx: &SockOpsContext) -> Option<ConnKey> {
    // SAFETY: the helper accepts this program type's context.
    let netns_cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    ENROLLED_NETNS.get_ptr(&netns_cookie)?;
    let ops = ctx.ops;
    let family = ctx.family();
    let local_port = ctx.local_port() as u16;
    let remote_port = port_from_be_upper(ctx.remote_port());
    // SAFETY (both readers): `ops` is the kernel's valid context for this invocation.
    let src: Endpoint = endpoint(
        family,
        || ctx.local_ip4(),
        || unsafe { read_ip6(&raw const (*ops).local_ip6) },
        local_port,
    )?;
    let dst: Endpoint = endpoint(
        family,
        || ctx.remote_ip4(),
        || unsafe { read_ip6(&raw const (*ops).remote_ip6) },
        remote_port,
    )?;
    Some(ConnKey {
        netns_cookie,
        src,
        dst,
    })
}

#[inline(always)]
fn socket_cookie(ctx: &SockOpsContext) -> u64 {
    // SAFETY: the helper accepts this program type's context.
    unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }
}
