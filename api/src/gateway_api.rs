//! The Kubernetes Gateway API's (`gateway.networking.k8s.io`) objects, as its reference
//! documents them: what Istio users write for ambient L7 routing and ingress instead of
//! a VirtualService and an Istio Gateway.
//!
//! Plain data like [`crate::istio`]: missing fields default (so a reader reports all
//! missing required ones), names are camelCase as users write them, closed enums fail to
//! decode with the allowed values. Unlike Istio's, these types generate no CRDs (the
//! Gateway API's own are installed with it): they are kube resources without a schema.
//!
//! # Layout
//! - [`http_route`]: `HTTPRoute` (matches, filters, weighted backends, timeouts, retry);
//! - [`grpc_route`]: `GRPCRoute` (method matches), served as the HTTPRoute it amounts to;
//! - [`tcp_route`]: `TCPRoute` (weighted backends for TCP connections);
//! - [`tls_route`]: `TLSRoute` (the same, chosen by the ClientHello's server name);
//! - [`gateway`]: `Gateway` of class `istio` (an ingress gateway's listeners);
//! - [`reference_grant`]: `ReferenceGrant` (references across namespaces allowed).

pub mod gateway;
pub mod grpc_route;
pub mod http_route;
pub mod reference_grant;
pub mod tcp_route;
pub mod tls_route;

pub use self::{
    grpc_route::{GrpcRoute, GrpcRouteSpec},
    http_route::{HttpRoute, HttpRouteSpec},
    tcp_route::{TcpRoute, TcpRouteSpec},
    tls_route::{TlsRoute, TlsRouteSpec},
};

/// The Gateway API's group.
pub const GROUP: &str = "gateway.networking.k8s.io";

/// The versions of [`GROUP`] read (`Gateway`, `HTTPRoute`), preferred first; each kind
/// has one schema in both.
pub const VERSIONS: &[&str] = &["v1", "v1beta1"];

/// The versions a `ReferenceGrant` is read in, preferred first.
pub const REFERENCE_GRANT_VERSIONS: &[&str] = &["v1beta1", "v1"];

/// The versions a `GRPCRoute` is read in (it skipped `v1beta1`).
pub const GRPC_ROUTE_VERSIONS: &[&str] = &["v1", "v1alpha2"];

/// The versions a `TCPRoute` is read in (experimental: `v1alpha2` only).
pub const TCP_ROUTE_VERSIONS: &[&str] = &["v1alpha2"];

/// The versions a `TLSRoute` is read in (experimental; `v1alpha3` only made
/// `hostnames` required).
pub const TLS_ROUTE_VERSIONS: &[&str] = &["v1alpha2", "v1alpha3"];
