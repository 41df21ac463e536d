//! `sk_msg`: data an app writes to a same-node socket goes straight to its peer's
//! receive queue (`bpf_msg_redirect_hash`), skipping the loopback TCP stack. Attached
//! to the `AMBIT_LOCAL_SK` SOCKHASH, so it only runs for sockets `sockops` put there.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{BPF_F_INGRESS, sk_action::SK_PASS},
    helpers::bpf_get_netns_cookie,
    macros::sk_msg,
    programs::SkMsgContext,
};
use ambit_ebpf_common::ConnKey;

use crate::{
    addr::{endpoint, port_from_be_upper, read_ip6},
    maps::LOCAL_SOCKETS,
};

#[sk_msg]
pub fn ambit_sk_msg(ctx: SkMsgContext) -> u32 {
    if let Some(mut peer) = peer_key(&ctx) {
        // On success the message is redirected; if the peer is not in the map (not
        // accelerated), SK_PASS sends it the ordinary way.
        let _ = LOCAL_SOCKETS.redirect_msg(&ctx, &mut peer, u64::from(BPF_F_INGRESS));
    }
    SK_PASS
}

/// The key under which the peer socket is stored: our remote address is its local one.
#[inline(always)]
fn peer_key(ctx: &SkMsgContext) -> Option<ConnKey> {
    let md = ctx.msg;
    // SAFETY (every read below): `md` is the kernel's valid `sk_msg_md` for this call.
    let (family, local_port, remote_port) = unsafe { ((*md).family, (*md).local_port, (*md).remote_port) };
    let remote_port = port_from_be_upper(remote_port);
    Some(ConnKey {
        // SAFETY: the helper accepts this program type's context.
        netns_cookie: unsafe { bpf_get_netns_cookie(ctx.as_ptr()) },
        src: endpoint(
            family,
            || unsafe { (*md).remote_ip4 },
            || unsafe { read_ip6(&raw const (*md).remote_ip6) },
            remote_port,
        )?,
        dst: endpoint(
            family,
            || unsafe { (*md).local_ip4 },
            || unsafe { read_ip6(&raw const (*md).local_ip6) },
            local_port as u16,
        )?,
    })
}
