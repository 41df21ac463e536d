//! The waypoint in-process: real hyper backends on loopback addresses
//! (127.0.0.11, .12, .13 on one port, as pods of a service), a waypoint serving on
//! port 0, and a real hyper client; raw TCP servers for the L4 relay.

mod affinity;
mod authorizer;
mod external_authz;
mod grpc;
mod grpc_authorizer;
mod http_routes;
mod issuer;
mod jwks_server;
mod protection;
mod resilience;
mod rewriting;
mod routing;
mod security;
mod support;
mod tcp;
mod telemetry;
mod upgrades;
mod zipkin_collector;
