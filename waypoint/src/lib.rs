//! Ambit's L7 engine: the HTTP proxy the waypoint and the ingress gateway run. It
//! routes requests with Istio's `VirtualService` and `DestinationRule` as Istio
//! documents them, so a user's manifests mean the same thing on Ambit.
//!
//! ```text
//! Config (services, endpoints, VirtualServices, DestinationRules)
//!   → RouteTable::compile (validated, immutable; swapped whole by Engine::update)
//!   → proxy::run(listener, engine, shutdown): per request
//!        host → VirtualService (exact, wildcard) or the service's default route
//!        → first matching http route → fault → rewrite / redirect / header edits
//!        → weighted destination (and mirrors) → subset cluster → endpoint
//!        → Connect seam (TCP today, HBONE later) with retries and timeouts
//! ```
//!
//! Behaviour follows Istio and Envoy where they define it: short names resolve in the
//! object's namespace; a regex matches the whole value; `rewrite.uri` replaces the
//! matched prefix (or `/` when the match had no `uri`); without `retries` Istio's
//! default (2 retries on connection failures) applies; faults without a percentage
//! affect no request; the default load balancer is `LEAST_REQUEST`; `connectionPool`
//! limits refuse requests with 503 `UO` and `outlierDetection` ejects endpoints after
//! consecutive errors; local replies carry Envoy's texts and [`ResponseFlags`] (`NR`,
//! `UH`, `UF`, `UT`, `UO`, `DI`, `FI`, …).
//!
//! # Layout
//! - [`cli`]: `ambit-waypoint`'s flags;
//! - [`config`]: the plain input ([`Config`], [`Service`], [`Endpoint`]);
//! - [`table`]: [`RouteTable`] compiled from a config, clusters and load balancing;
//! - [`host`]: host names, short names and wildcards;
//! - [`matcher`]: `http[].match` conditions;
//! - [`headers`], [`retry`]: header operations and retry policies;
//! - [`flags`]: Envoy's response flags, [`ResponseFlags`];
//! - [`proxy`]: [`Engine`], [`run`], [`serve_connection`] and the [`Connect`] seam;
//! - [`mesh`]: the waypoint in the mesh — the controller's push, HBONE in (CONNECT to a
//!   service VIP, served by the engine) and out (to each endpoint's ztunnel).
//!
//! # What this slice does not do yet
//! - Route by the client's identity: the HBONE peer is authenticated but not yet passed
//!   to routing or policy.
//! - L7 `AuthorizationPolicy`, the ingress `Gateway` (TLS, `gateways:` binding: a
//!   VirtualService bound only to gateways is skipped, as it does not apply to mesh
//!   traffic), telemetry (metrics, access logs, trace headers).
//! - `corsPolicy`, `delegate`, `sourceLabels` / `sourceNamespace` matches,
//!   consistent-hash and locality balancing, DestinationRule `tls`, and the parts of
//!   `connectionPool` and `outlierDetection` beyond the request limits and the
//!   consecutive-error ejection: the ones that would change which requests a route
//!   takes are refused at compile time, the others listed by [`RouteTable::ignored`].
//! - Upgrades (WebSocket, `CONNECT`), and replaying request bodies over 64 KiB or of
//!   unknown length (such requests are sent once and not mirrored).

#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod flags;
pub mod headers;
pub mod host;
pub mod matcher;
pub mod mesh;
pub mod proxy;
pub mod retry;
pub mod table;

pub use config::{Config, Endpoint, Named, Service, ServicePort};
pub use flags::ResponseFlags;
pub use proxy::{
    Connect, Downstream, Engine, ProxyError, Side, TcpConnector, run, serve_connection,
};
pub use table::{ConfigError, ConfigErrors, RouteTable};
