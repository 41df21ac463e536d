//! What an enrolled pod's network namespace needs so that ztunnel can deliver inbound
//! connections to the app from the client's own address (as Istio's ztunnel does):
//!
//! - `net.ipv4.tcp_fwmark_accept = 1`: the app's accepted socket takes the mark of the
//!   SYN, i.e. ztunnel's [`DELIVERY_MARK`];
//! - `ip rule fwmark DELIVERY_MARK lookup DELIVERY_ROUTE_TABLE` and
//!   `local default dev lo table DELIVERY_ROUTE_TABLE` (IPv4 and IPv6): the app's
//!   replies, so marked, go back to ztunnel's transparent socket instead of out of the
//!   pod towards the client.
//!
//! These are a sysctl and routing entries set over netlink — no iptables or nftables.
//! If any of it fails the pod still works: ztunnel then delivers from the pod's own
//! address.

use std::{
    fs,
    net::{Ipv4Addr, Ipv6Addr},
};

use ambit_ebpf_common::{DELIVERY_MARK, DELIVERY_ROUTE_TABLE};
use ambit_netns::{Netns, NetnsError};
use rtnetlink::{
    Handle, RouteMessageBuilder,
    packet_route::{
        route::{RouteMessage, RouteScope, RouteType},
        rule::RuleAction,
    },
};

/// `lo` is interface 1 in every network namespace.
const LOOPBACK_INDEX: u32 = 1;
/// Where the rule sits: before the main table (32766), after the local one (0).
const RULE_PRIORITY: u32 = 32_000;
const FWMARK_ACCEPT_SYSCTL: &str = "/proc/sys/net/ipv4/tcp_fwmark_accept";

#[derive(Debug, thiserror::Error)]
pub enum PodNetworkError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot set {FWMARK_ACCEPT_SYSCTL} in the pod: {0}")]
    Sysctl(std::io::Error),
    #[error("cannot open a netlink socket in the pod: {0}")]
    Netlink(std::io::Error),
    #[error("cannot add the pod's {what}: {error}")]
    Route {
        what: &'static str,
        error: rtnetlink::Error,
    },
}

/// Prepares `netns` for transparent delivery. Safe to repeat.
///
/// # Errors
/// [`PodNetworkError`] naming the step that failed.
pub async fn prepare_transparent_delivery(netns: &Netns) -> Result<(), PodNetworkError> {
    netns
        .run(|| fs::write(FWMARK_ACCEPT_SYSCTL, "1"))?
        .map_err(PodNetworkError::Sysctl)?;
    // The netlink socket belongs to the namespace it was opened in.
    let (connection, handle, _) = netns
        .run(rtnetlink::new_connection)?
        .map_err(PodNetworkError::Netlink)?;
    let connection = tokio::spawn(connection);
    let result = add_rules_and_routes(&handle).await;
    connection.abort();
    result
}

async fn add_rules_and_routes(handle: &Handle) -> Result<(), PodNetworkError> {
    let rule = || {
        handle
            .rule()
            .add()
            .fw_mark(DELIVERY_MARK)
            .table_id(DELIVERY_ROUTE_TABLE)
            .priority(RULE_PRIORITY)
            .action(RuleAction::ToTable)
    };
    ignore_exists(rule().v4().execute().await).map_err(|error| PodNetworkError::Route {
        what: "IPv4 rule",
        error,
    })?;
    ignore_exists(rule().v6().execute().await).map_err(|error| PodNetworkError::Route {
        what: "IPv6 rule",
        error,
    })?;

    let routes = [
        (
            "IPv4 local route",
            local_default_route(
                RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(Ipv4Addr::UNSPECIFIED, 0),
            ),
        ),
        (
            "IPv6 local route",
            local_default_route(
                RouteMessageBuilder::<Ipv6Addr>::new().destination_prefix(Ipv6Addr::UNSPECIFIED, 0),
            ),
        ),
    ];
    for (what, route) in routes {
        handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|error| PodNetworkError::Route { what, error })?;
    }
    Ok(())
}

/// `local <prefix> dev lo table DELIVERY_ROUTE_TABLE`.
fn local_default_route<T>(builder: RouteMessageBuilder<T>) -> RouteMessage {
    builder
        .kind(RouteType::Local)
        .scope(RouteScope::Host)
        .table_id(DELIVERY_ROUTE_TABLE)
        .output_interface(LOOPBACK_INDEX)
        .build()
}

/// A rule that is already there is what we wanted.
fn ignore_exists(result: Result<(), rtnetlink::Error>) -> Result<(), rtnetlink::Error> {
    match result {
        Err(rtnetlink::Error::NetlinkError(message)) if message.raw_code() == -libc::EEXIST => {
            Ok(())
        }
        other => other,
    }
}
