//! Ambit's L7 engine: the HTTP proxy the waypoint and the ingress gateway run. It
//! routes requests with Istio's `VirtualService` and `DestinationRule`, guards them with
//! `RequestAuthentication` and `AuthorizationPolicy`, and reports them with Istio's
//! metrics, as Istio documents them, so a user's manifests and dashboards mean the same
//! thing on Ambit.
//!
//! ```text
//! Config (services, endpoints, VirtualServices, DestinationRules, policies)
//!   → RouteTable::compile (validated, immutable; swapped whole by Engine::update)
//!   → proxy::run(listener, engine, shutdown): per connection a Peer (address, identity);
//!     per request
//!        path normalized → trace context and x-request-id → JWT (401)
//!        → AuthorizationPolicy (403)
//!        → host → VirtualService (exact, wildcard) or the service's default route
//!        → first matching http route (source labels and namespace from the mesh
//!          workloads, `gateways` from the role) → CORS preflight → fault → rewrite / redirect
//!        / header edits
//!        → weighted destination (and mirrors) → subset cluster → endpoint
//!        → Connect seam (TCP today, HBONE later) with retries and timeouts
//!        → metrics and an access-log line when the response body ends
//!   → relay_connection(io, engine, downstream): a connection to a service port declared TCP
//!        → first matching `tcp:` route (else the service) → weighted destination
//!        → subset cluster → endpoint → bytes both ways → `istio_tcp_*`, access log
//! ```
//!
//! Behaviour follows Istio and Envoy where they define it: short names resolve in the
//! object's namespace; a regex matches the whole value; `rewrite.uri` replaces the
//! matched prefix (or `/` when the match had no `uri`); without `retries` Istio's
//! default (2 retries on connection failures) applies; faults without a percentage
//! affect no request; the default load balancer is `LEAST_REQUEST`; `consistentHash`
//! (header, cookie — generated with `Set-Cookie` when it has a `ttl` —, source IP,
//! query parameter) places requests on a hash ring, stepping over ejected endpoints;
//! `connectionPool` limits refuse requests with 503 `UO` and `outlierDetection` ejects
//! endpoints after consecutive errors; local replies carry Envoy's texts and [`ResponseFlags`] (`NR`,
//! `UH`, `UF`, `UT`, `UO`, `DI`, `FI`, …).
//!
//! # Layout
//! - [`config`]: the plain input ([`Config`], [`Service`], [`Endpoint`]) and Istio's
//!   protocol selection for a service port ([`Protocol`]);
//! - [`table`]: [`RouteTable`] compiled from a config, clusters and load balancing;
//! - [`host`]: host names, short names and wildcards;
//! - [`matcher`]: `http[].match` and `tcp[].match` conditions; [`path`]: path
//!   normalization;
//! - [`headers`], [`retry`], [`cors`]: header operations, retry and CORS policies;
//! - [`flags`]: Envoy's response flags, [`ResponseFlags`];
//! - [`policy`]: `RequestAuthentication` and `AuthorizationPolicy`;
//! - [`telemetry`]: Istio's metrics, the access log, trace headers;
//! - [`proxy`]: [`Engine`], [`run`], [`serve_connection`], [`relay_connection`] (TCP
//!   ports, L4),
//!   [`Downstream`] and [`Peer`], and the [`Connect`] seam;
//! - [`mesh`]: the waypoint in the mesh — the controller's push, HBONE in (CONNECT to a
//!   service VIP, served by the engine with the client's identity) and out (to each
//!   endpoint's ztunnel);
//! - [`gateway`]: the ingress gateway — Istio `Gateway` servers (HTTP, HTTPS), bound
//!   VirtualServices;
//! - [`cli`], [`admin`]: `ambit-waypoint`'s flags, its metrics endpoint and its admin
//!   endpoint (Envoy's `/clusters`).
//!
//! # What this slice does not do yet
//! - On a plain listener ([`run`]) the [`Peer`] has the TCP peer's address and no
//!   identity, so `principals` and `namespaces` never match there; over HBONE
//!   ([`mesh::inbound`]) it has the client's certificate identity.
//! - The `request.regex.headers[…]` and `experimental.…` AuthorizationPolicy
//!   conditions: refused at compile time. `connection.sni` is read on ingress ports that
//!   terminate TLS; elsewhere (HBONE, plain ports) there is none, so it never matches.
//! - Span reporting beyond Zipkin (`--zipkin-address`): no OpenTelemetry exporter, and
//!   the sampling share of new traces is not yet read from Istio's Telemetry API.
//! - `delegate` (the controller pushes roots merged with their delegates; one that
//!   reaches the waypoint unmerged is refused), DestinationRule `tls` and
//!   `connectionPool.http.maxConcurrentStreams`: the fields that would change which
//!   requests a route takes are refused at compile time, the others listed by
//!   [`RouteTable::ignored`].
//!   `maglev` is served by the same hash ring as `ringHash` (`tableSize` sizes it).
//! - `CONNECT` requests and HTTP/2 extended CONNECT (WebSocket over HTTP/2; HTTP/1.1
//!   `Upgrade`, WebSocket included, is spliced after `101`), and replaying request
//!   bodies over 64 KiB or of unknown length (such requests are sent once and not
//!   mirrored).

#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod config;
pub mod cors;
pub mod flags;
pub mod gateway;
pub mod headers;
pub mod host;
pub mod matcher;
pub mod mesh;
pub mod path;
pub mod policy;
pub mod proxy;
pub mod retry;
pub mod table;
pub mod telemetry;

pub use config::{Config, Endpoint, MeshWorkload, Named, Protocol, Role, Service, ServicePort};
pub use flags::ResponseFlags;
pub use proxy::{
    Connect, Downstream, Engine, Peer, ProxyError, RelayError, Side, TcpConnector,
    relay_connection, run, serve_connection,
};
pub use table::{ConfigError, ConfigErrors, RouteTable};
