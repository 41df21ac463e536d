//! The waypoint in the mesh: what turns the L7 engine into Ambit's waypoint proxy.
//!
//! - [`state`]: the controller's push (services, mesh workloads, routes) kept by key and
//!   turned into the engine's [`crate::Config`], plus what HBONE needs: which service a
//!   VIP is, and which identity answers at an endpoint;
//! - [`inbound`]: the HBONE server on 15008 — mutual TLS with the waypoint's own
//!   certificate, then each `CONNECT` to a service VIP served as HTTP by the engine, or
//!   relayed as bytes on a port declared TCP, routed for that service;
//! - [`outbound`]: the [`crate::Connect`] the engine reaches endpoints with — HBONE to the
//!   endpoint's ztunnel on 15008 expecting the endpoint's identity, pooled per endpoint;
//!   plain TCP for an endpoint outside the mesh.

pub mod inbound;
pub mod outbound;
pub mod state;
