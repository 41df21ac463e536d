//! Ambit's per-node L4 tunnel. For every pod the node agent hands over (with its
//! network namespace), ztunnel listens inside the pod — 127.0.0.1:15001 / [::1]:15001
//! for outbound, [::]:15006 for inbound plaintext, [::]:15008 for inbound HBONE — and
//! relays what the capture eBPF sends there: outbound connections to their original
//! destination, inbound ones to the app.
//!
//! With `--ca-address` (workload certificates) and `--controller-address` (the config
//! push, which names every mesh workload's IPs and identity), a connection to a mesh
//! workload is carried over HBONE: HTTP/2 `CONNECT` over mutual TLS 1.3 from the source
//! pod's identity to the destination pod's port 15008, pooled per (source identity,
//! destination identity, destination IP). Destinations outside the mesh, and every
//! destination while a pod has no certificate yet, keep the plaintext passthrough. A
//! failed HBONE connect fails the app's connection (fail closed, `UF`). A connection to
//! the VIP of a Service that uses a waypoint goes over HBONE to the waypoint instead (the
//! VIP as the `CONNECT` authority), and a workload behind a waypoint accepts mesh traffic
//! only from it.
//!
//! # Layout
//! - [`config`]: flags and defaults;
//! - [`handoff`]: the link to the agent (pods arrive and leave here);
//! - [`subscribe`], [`directory`]: the controller's config push, and the mesh
//!   workloads (IP → identity, node, labels) and services (VIP → ports, endpoints) it
//!   names;
//! - [`local_config`]: the same config from a snapshot file (`--local-config`);
//! - [`heap`]: freed heap handed back to the kernel after each update;
//! - [`inpod`]: per-pod listeners, the relay, and HBONE both ways;
//! - the data path's threads, one single-threaded runtime each, come from
//!   [`ambit_workers`]: a pod and all its connections stay on one;
//! - workload certificates (one per identity, renewed at half-life) come from
//!   [`ambit_certs`];
//! - [`capture_maps`]: the agent's pinned maps (original destinations, inbound listeners);
//! - [`policy`]: L4 AuthorizationPolicy and PeerAuthentication, checked for every
//!   inbound connection and re-checked on every policy change;
//! - [`metrics`], [`admin`]: Istio's TCP metrics, readiness and the config dump;
//! - [`drain`]: counting connections in flight for a graceful shutdown.
//!
//! # What it does not do yet
//! - Pods come from the agent, not from the push (the push gives their labels, the mesh
//!   peers and the services). A service VIP is resolved to an endpoint by the client's
//!   port (an even spread, not a load-balancing policy).
//! - `baggage` / `traceparent` are not passed on (there is nothing to read them from at
//!   L4).

pub mod admin;
pub mod capture_maps;
pub mod config;
pub mod directory;
pub mod drain;
pub mod handoff;
pub mod heap;
pub mod inpod;
pub mod local_config;
pub mod metrics;
pub mod policy;
pub mod subscribe;
