//! Ambit's control plane: it reads the Istio and Kubernetes objects users already have,
//! tells them precisely what is wrong, builds the mesh model from the rest, and pushes to
//! each node what it needs.
//!
//! It reads manifests (files, folders, standard input) through
//! [`ambit_api::manifests`] and checks every `networking.istio.io` VirtualService and
//! DestinationRule and every `security.istio.io` AuthorizationPolicy and
//! PeerAuthentication ([`validate`]); `ambit-controller validate -f …` prints the
//! diagnostics, like `istioctl analyze` or `kubectl apply --dry-run`.
//!
//! `ambit-controller serve --config-dir DIR` watches a folder, or `serve --kube` the
//! Kubernetes API, with the same result ([`source`]), resolves it into a [`mesh::Mesh`]
//! (workloads with node, IPs, identity and ambient enrolment; services with their
//! endpoints; accepted routes; policies in the L4 form ztunnel enforces), keeps the last
//! good version of anything that turns invalid, and streams it over gRPC ([`push`],
//! `ambit.config.v1.ConfigService`): a full state then deltas, versioned and ACKed or
//! NACKed, each agent, ztunnel and waypoint receiving only its share
//! ([`push::select::select`]).
//!
//! In Kubernetes mode it also runs a waypoint for each waypoint Gateway, and an ingress
//! gateway for each Gateway of class `istio` ([`deployer`]).
//!
//! It is also the mesh's certificate authority ([`ca`]): `ambit-controller serve-ca`
//! serves Istio's `IstioCertificateService` over gRPC, signing SPIFFE certificates for
//! the workloads a node's ztunnel may hold (and, in Kubernetes mode, for a pod that
//! presents its own service-account token, its own identity).
//!
//! # Layout
//! - [`cli`]: the binary's subcommands and flags;
//! - [`input`]: what `-f` names — files, folders, `-` for standard input;
//! - [`validate`]: the checks, in passes (document, shape, object rules, references),
//!   and the [`validate::Diagnostic`] each problem becomes;
//! - [`hosts`]: Istio's host names — short names per namespace, wildcards, `exportTo`;
//! - [`delegation`]: VirtualService `delegate`, a root's route merged with its
//!   delegate's routes as Istio merges them;
//! - [`model`]: the Istio objects that passed validation, as typed CRDs;
//! - [`mesh`]: the resolved model built from a folder and its previous version (last good
//!   version kept);
//! - [`source`]: the watched `--config-dir` folder or Kubernetes API (`--kube`),
//!   debounced, publishing versioned [`source::Snapshot`]s;
//! - [`push`]: the config push — who may subscribe as what, the selection rule, the
//!   protobuf conversion, the gRPC service with its subscriber registry (sent, acked,
//!   NACKed versions);
//! - [`crds`]: the CRD manifests generated from the `ambit_api::istio` types;
//! - [`deployer`]: in Kubernetes mode, a waypoint (ServiceAccount, Deployment, Service)
//!   run for each waypoint Gateway, an ingress gateway for each Gateway of class `istio`;
//! - [`route_status`]: in Kubernetes mode, each HTTPRoute's, GRPCRoute's, TCPRoute's and
//!   TLSRoute's status (its parents' `Accepted` and `ResolvedRefs`);
//! - [`snapshot`]: one subscriber's push written to a file (`--local-config`);
//! - [`ca`]: the certificate authority — root material (Istio's plug-in CA layout),
//!   signing, caller authentication (token files, or a `TokenReview` in Kubernetes),
//!   placement-based authorization (or a pod's own identity), gRPC service;
//! - [`serving`]: TLS on both gRPC ports — the controller's own certificate from the
//!   CA, renewed at half-life, and the TLS accept loop;
//! - [`monitoring`]: the monitoring endpoint — Prometheus metrics of the push and of the
//!   CA, and `/debug/syncz` (what each subscriber was sent and acknowledged).
//!
//! # Not yet
//! Later slices add what this one deliberately leaves out: no status written back in
//! Kubernetes mode (rejections are Events); no client certificates on the gRPC
//! endpoints (TLS, [`serving`]; callers authenticate with tokens); without
//! `--tokens-dir` or `--kube` the push lets
//! anyone subscribe as any node; `serve` and `serve-ca` are separate
//! processes (each watches the folder or the API); the CA root is not read from a
//! Kubernetes `cacerts` Secret. The model does not yet resolve subsets to endpoints or hold
//! ServiceEntries or WorkloadEntries (read, not checked or pushed); HTTPRoutes (and GRPCRoutes) are
//! served attached to Services in their own namespace (producer routes, by the
//! waypoints) or to Gateway API Gateways of class `istio` (HTTP and HTTPS listeners),
//! TCPRoutes likewise (to those Gateways' TCP listeners), and TLSRoutes (to their TLS
//! listeners, which pass TLS through by server name);
//! a rejected route gets Events, not a status; a waypoint receives every service, route and
//! waypoint policy, not only its namespace's.
#![forbid(unsafe_code)]

pub mod ca;
pub mod cli;
pub mod crds;
pub mod delegation;
pub mod deployer;
pub mod hosts;
pub mod input;
pub mod mesh;
pub mod model;
pub mod monitoring;
pub mod push;
pub mod route_status;
pub mod serving;
pub mod snapshot;
pub mod source;
pub mod validate;
