//! `sk_lookup`, attached to each enrolled pod's network namespace: TCP arriving for the
//! pod on any port but ztunnel's own goes to ztunnel's in-pod inbound listener (15006).
//! The accepted socket keeps the original destination as its local address.
//!
//! ztunnel delivers to the app by connecting from the client's address (recorded in
//! `AMBIT_DELIVERY` by `connect`) or, where the pod is not set up for that, from the
//! pod's own address; both are left alone so they are not captured a second time. If ztunnel has no listener for the pod, the connection is
//! refused: an enrolled pod fails closed.

use aya_ebpf::{
    bindings::sk_action::{SK_DROP, SK_PASS},
    macros::sk_lookup,
    programs::SkLookupContext,
};
use ambit_ebpf_common::{FlowKey, HBONE_PORT, INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT};

use crate::{
    addr::{IPPROTO_TCP, endpoint, is_loopback, read_ip6},
    maps::{DELIVERIES, INBOUND_LISTENERS},
};

#[sk_lookup]
pub fn ambit_sk_lookup(ctx: SkLookupContext) -> u32 {
    try_sk_lookup(&ctx)
}

fn try_sk_lookup(ctx: &SkLookupContext) -> u32 {
    let lk = ctx.lookup;
    // SAFETY (every read below): `lk` is the kernel's valid `bpf_sk_lookup` for this call.
    let (family, protocol, local_port, remote_port) =
        unsafe { ((*lk).family, (*lk).protocol, (*lk).local_port as u16, (*lk).remote_port) };
    if protocol != IPPROTO_TCP
        || matches!(local_port, HBONE_PORT | INBOUND_PLAINTEXT_PORT | OUTBOUND_PORT)
    {
        return SK_PASS;
    }
    let remote_port = u16::from_be(remote_port);
    let (Some(local), Some(remote)) = (
        endpoint(
            family,
            || unsafe { (*lk).local_ip4 },
            || unsafe { read_ip6(&raw const (*lk).local_ip6) },
            local_port,
        ),
        endpoint(
            family,
            || unsafe { (*lk).remote_ip4 },
            || unsafe { read_ip6(&raw const (*lk).remote_ip6) },
            remote_port,
        ),
    ) else {
        return SK_PASS;
    };
    // ztunnel delivering to the app: from the pod's own address, or from the client's
    // (transparent) with the delivery recorded by `connect`.
    let delivery = FlowKey {
        src: remote,
        dst: local,
    };
    if is_loopback(&local) || local.addr == remote.addr || DELIVERIES.get_ptr(&delivery).is_some() {
        return SK_PASS;
    }
    match INBOUND_LISTENERS.redirect_sk_lookup(ctx, local.addr, 0) {
        Ok(()) => SK_PASS,
        Err(_) => SK_DROP,
    }
}
