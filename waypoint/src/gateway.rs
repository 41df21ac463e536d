//! The ingress gateway: the same engine serving Istio `Gateway` resources instead of
//! HBONE. Istio's semantics, as far as this slice goes:
//!
//! - a Gateway applies to the gateway pods its `selector` matches (the pod's labels come
//!   from the controller's push);
//! - each server port is listened on, HTTP in the clear or HTTPS terminated with the
//!   server's certificate ([`tls`]); a request whose host no server on its port accepts
//!   gets 404 `NR`, and a server with `tls.httpsRedirect` answers 301 to `https://`;
//! - requests are routed by the VirtualServices bound to the Gateway (`gateways:
//!   [namespace/name]`, or `name` from the Gateway's namespace), never by a service's
//!   default route; endpoints are reached over HBONE, as the waypoint reaches them;
//! - a server host's `namespace/` part says which namespaces' VirtualServices may bind
//!   to it (`./` the Gateway's own); TCP and `PASSTHROUGH` servers relay by `tcp:` and
//!   `tls:` routes;
//! - not yet: a server's `bind` address (the controller refuses it).
//!
//! # Layout
//! - [`servers`]: the servers by port, and which VirtualServices bind;
//! - [`tls`]: HTTPS ports' TLS configs from Secrets or files;
//! - [`listeners`]: the open ports, reconciled with the Gateways.

pub mod listeners;
pub mod servers;
pub mod tls;
