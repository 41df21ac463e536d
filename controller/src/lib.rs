//! Ambit's control plane: it reads the Istio and Kubernetes objects users already have,
//! tells them precisely what is wrong, and builds the mesh model from the rest.
//!
//! This first slice reads manifests (files, folders, standard input) through
//! [`ambit_api::manifests`], checks every `networking.istio.io` VirtualService and
//! DestinationRule ([`validate`]), and keeps the valid ones in a [`model::Model`]. The
//! `ambit-controller validate -f …` command prints the diagnostics, like
//! `istioctl analyze` or `kubectl apply --dry-run`.
//!
//! It is also the mesh's certificate authority ([`ca`]): `ambit-controller serve-ca`
//! serves Istio's `IstioCertificateService` over gRPC, signing SPIFFE certificates for
//! the workloads a node's ztunnel may hold.
//!
//! # Layout
//! - [`input`]: what `-f` names — files, folders, `-` for standard input;
//! - [`validate`]: the checks, in passes (document, shape, object rules, references),
//!   and the [`validate::Diagnostic`] each problem becomes;
//! - [`hosts`]: Istio's host names — short names per namespace, wildcards, `exportTo`;
//! - [`model`]: the objects that passed;
//! - [`ca`]: the certificate authority — root material (Istio's plug-in CA layout),
//!   signing, node-token authentication, placement-based authorization, gRPC service.
//!
//! # Not yet
//! Later slices of the controller add what this one deliberately leaves out: no
//! Kubernetes watch (`--kube`) and no hot-reloaded `--config-dir`, no resolution of
//! routes against Pods, Services and endpoints, no gRPC config push to agents, ztunnels
//! and waypoints. The CA serves plaintext gRPC (TLS on its endpoint comes with the config
//! push), authenticates only with bootstrap token files (no Kubernetes TokenReview), reads
//! the token and config folders once at start, and does not read the root from a
//! Kubernetes `cacerts` Secret. Other Istio kinds (Gateway, ServiceEntry,
//! AuthorizationPolicy, …) are read but not checked yet.
#![forbid(unsafe_code)]

pub mod ca;
pub mod hosts;
pub mod input;
pub mod model;
pub mod validate;
