//! Ambit's per-node L4 tunnel. For every pod the node agent hands over (with its
//! network namespace), ztunnel listens inside the pod — 127.0.0.1:15001 / [::1]:15001
//! for outbound, [::]:15006 for inbound — and relays what the capture eBPF sends there:
//! outbound connections to their original destination, inbound ones to the app.
//!
//! # Layout
//! - [`config`]: flags and defaults;
//! - [`handoff`]: the link to the agent (pods arrive and leave here);
//! - [`inpod`]: per-pod listeners and the relay;
//! - [`certs`]: workload certificates from the mesh CA, one per identity, renewed at
//!   half-life;
//! - [`capture_maps`]: the agent's pinned maps (original destinations, inbound listeners);
//! - [`metrics`], [`admin`]: Istio's TCP metrics, readiness and the config dump;
//! - [`drain`]: counting connections in flight for a graceful shutdown.
//!
//! With `--ca-address`, ztunnel obtains, caches and renews a certificate for every
//! identity it serves (shown in the admin config dump) but does not use them yet: it
//! still relays plaintext. It does not terminate or originate mutual TLS (HBONE on
//! 15008), enforce policy, or take workloads from the controller's config push.

pub mod admin;
pub mod capture_maps;
pub mod certs;
pub mod config;
pub mod drain;
pub mod handoff;
pub mod inpod;
pub mod metrics;
