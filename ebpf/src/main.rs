//! Ambit's eBPF programs: they capture an enrolled pod's TCP traffic into the node's
//! ztunnel without iptables, and join same-node socket pairs with sk_msg.
//!
//! # Layout
//! One file per hook, each a thin entry point calling a `try_…` function:
//! - `connect.rs`: `cgroup/connect4|6` send an enrolled pod's outbound TCP to ztunnel's
//!   in-pod listener (127.0.0.1:15001 / [::1]:15001) and remember where it was going;
//! - `getpeername.rs`: `cgroup/getpeername4|6` show the app that original peer;
//! - `sockops.rs`: `sock_ops` publishes the original destination by connection for
//!   ztunnel, fills the sk_msg SOCKHASH, and cleans up when a socket closes;
//! - `sk_msg.rs`: `sk_msg` moves data between same-node socket pairs;
//! - `sk_lookup.rs`: `sk_lookup`, attached to each enrolled pod's network namespace,
//!   steers inbound TCP (all ports but 15008) to ztunnel's in-pod 15006 listener;
//! - `maps.rs`: every map, with its key, value, writer and reader;
//! - `addr.rs`: reading addresses out of the kernel's contexts.
//!
//! The programs never touch a socket carrying ztunnel's mark (0x539), loopback
//! destinations, or a network namespace that is not enrolled. They hold no policy:
//! that is ztunnel's job.
#![no_std]
#![no_main]

mod addr;
mod connect;
mod getpeername;
mod maps;
mod sk_lookup;
mod sk_msg;
mod sockops;

/// The kernel only offers some helpers to GPL-compatible programs.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
