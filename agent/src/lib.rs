//! Ambit's node agent. It loads the capture eBPF programs and keeps them attached,
//! decides which pods belong in the mesh, enrols them by network-namespace cookie, and
//! hands each enrolled pod's network namespace to the node's ztunnel.
//!
//! # Layout
//! - [`config`]: flags, defaults, validation;
//! - [`decisions`]: where enrolment decisions come from — the config folder, or the
//!   controller's push (`--controller-address`);
//! - [`config_watch`]: re-deciding every known pod when the config folder changes;
//! - [`capture`]: loading, adopting, pinning and removing the eBPF; enrolling pods;
//! - [`pod_network`]: the pod's sysctl and policy routes for transparent delivery;
//! - [`pods`]: the enrolled pods, persisted so a restarted agent knows them;
//! - [`cni_install`]: copying `ambit-cni` onto the node and chaining it into the node's
//!   CNI configuration;
//! - [`cni_server`]: answers the `ambit-cni` plugin (ADD / DEL / CHECK / STATUS);
//! - [`ztunnel_link`]: the SOCK_SEQPACKET hand-off of pod namespaces to ztunnel;
//! - [`agent`]: wiring the pieces together and the enrolment decisions.
//!
//! The agent carries no traffic and holds no policy: ztunnel does both. It never writes
//! an iptables or nftables rule.

pub mod agent;
pub mod capture;
pub mod cni_install;
pub mod cni_server;
pub mod config;
pub mod config_watch;
pub mod decisions;
pub mod pod_network;
pub mod pods;
pub mod ztunnel_link;
