//! The demo's steps after the nodes start, in the order they run; each says what it
//! showed in plain words and numbers, or fails with what it expected.
//!
//! - [`enrolment`]: pods joining by label, no firewall rule, identities from the CA;
//! - [`capture`]: mutual TLS between nodes, transparent capture, fail-closed, STRICT;
//! - [`routing`]: the waypoint applying a VirtualService.

mod capture;
mod enrolment;
mod routing;

use std::time::Duration;

use anyhow::Result;

use crate::cluster::Cluster;

/// Every demo pod runs as its namespace's default service account.
const DEFAULT_IDENTITY: &str = "spiffe://cluster.local/ns/shop/sa/default";
/// How long something the demo set up may take to apply.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// One step: what it shows, and how.
pub struct Step {
    pub name: &'static str,
    pub run: fn(&mut Cluster<'_>) -> Result<String>,
}

/// The steps, in order.
pub const ALL: &[Step] = &[
    enrolment::PODS_JOIN,
    enrolment::NO_FIREWALL_RULES,
    enrolment::IDENTITIES,
    capture::MUTUAL_TLS,
    capture::SAME_NODE,
    capture::CROSS_NODE,
    capture::FROM_OUTSIDE,
    capture::FAIL_CLOSED,
    capture::STRICT,
    routing::WAYPOINT,
];
