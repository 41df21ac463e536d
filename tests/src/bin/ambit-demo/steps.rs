//! The demo's steps after the nodes start, in the order they run; each says what it
//! showed in plain words and numbers, or fails with what it expected.
//!
//! - [`enrolment`]: pods joining by label, no firewall rule, identities from the CA;
//! - [`capture`]: mutual TLS between nodes, transparent capture, fail-closed, STRICT;
//! - [`routing`]: load balancing, a VirtualService and a canary at the waypoint, the
//!   canary again as a Gateway API HTTPRoute;
//! - [`policy`]: an AuthorizationPolicy at the waypoint, in its access log and metrics;
//! - [`ingress`]: the ingress gateway serving the app to a client outside the mesh;
//! - [`latency`]: direct vs through the mesh, in latency and throughput.

mod capture;
mod enrolment;
mod ingress;
mod latency;
mod policy;
mod routing;

use std::time::Duration;

use anyhow::Result;

use crate::{cluster::Cluster, components::Component};

/// Every demo pod runs as its namespace's default service account.
const DEFAULT_IDENTITY: &str = "spiffe://cluster.local/ns/shop/sa/default";
/// Where the waypoint serves Prometheus metrics, inside its pod.
pub const WAYPOINT_METRICS_PORT: u16 = 15020;
/// How long something the demo set up may take to apply.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// One step: what it shows, which component it exercises most, and how.
pub struct Step {
    pub name: &'static str,
    /// The component blamed when the step fails and nothing has exited.
    pub component: Component,
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
    routing::LOAD_BALANCING,
    routing::ALL_TO_V2,
    routing::CANARY,
    routing::HTTP_ROUTE,
    policy::DENY_POST,
    ingress::INGRESS,
    latency::DIRECT_VS_MESH,
];

/// An access-log line without its timestamp, level and target.
fn access_entry(line: &str) -> &str {
    line.split_once("access: ").map_or(line, |(_, entry)| entry)
}
