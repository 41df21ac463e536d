//! The config push: `ambit.config.v1.ConfigService/Subscribe`, a stream per subscriber
//! (a node's agent or ztunnel, a waypoint) carrying the part of the model it needs.
//!
//! Each stream opens with the subscriber's `Hello` (node and kind). The controller sends a
//! full state, then a delta each time the model changes what this subscriber sees, each
//! with the model's version. The subscriber ACKs or NACKs every version; a NACK is logged,
//! counted and recorded ([`SubscriberStatus::last_nack`]), the subscriber stays on the
//! version it last acknowledged, and its next update is a full state. A reconnect starts
//! over with a full state.
//!
//! A subscriber presents a token, as to the CA; [`access`] decides which node's config
//! and which kind it may subscribe for. The stream is TLS, served with the
//! controller's own certificate ([`crate::serving`]).
//!
//! # Layout
//! - [`access`]: who may subscribe as what;
//! - [`select`]: what each subscriber receives — the one rule;
//! - [`selections`]: that rule applied once per model version, derived from the previous
//!   version's where the model changed;
//! - [`convert`]: the model as protobuf resources;
//! - [`server`]: the gRPC service, the subscriber registry and [`server::serve`].

pub mod access;
pub mod convert;
pub mod select;
pub mod selections;
pub mod server;

pub use self::{
    access::Gate,
    server::{ConfigServer, PushCounts, SubscriberStatus, serve},
};

/// Why the push server stopped.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("the config push gRPC server failed: {0} — is the listen address already in use?")]
    Transport(#[from] tonic::transport::Error),
}

#[cfg(test)]
mod gateway_tests;
