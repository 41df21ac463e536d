//! HBONE, the tunnel Istio's ambient mesh carries workload traffic in: HTTP/2 `CONNECT`
//! over mutual TLS 1.3 (ALPN `h2`) to port 15008, one stream per proxied TCP connection.
//! `:authority` is the destination `ip:port`, `Forwarded: for=` the original source, and
//! both ends are SPIFFE identities (`spiffe://<td>/ns/<ns>/sa/<sa>`) in their certificates'
//! URI SAN. ztunnel uses it between nodes, and the waypoint will use it on both sides.
//!
//! A connection goes through the layers in order:
//!
//! ```text
//! client:  TcpStream → tls::connect(client_config(expected)) → client::Connection::handshake
//!          → Connection::open(dst, src) → Tunnel (AsyncRead + AsyncWrite, or Tunnel::relay)
//! server:  TcpStream → tls::accept(server_config) → (stream, peer identity)
//!          → server::serve(stream, peer, handler) → handler(ConnectRequest) → upstream
//! ```
//!
//! Both ends use 4 MiB stream and connection windows (ztunnel's sizing) so one stream can
//! fill a fast link, and relay through reused 256 KiB buffers (no allocation per read).
//!
//! # Layout
//! - [`identity`]: [`Identity`], parsing and printing SPIFFE URIs, reading one from a
//!   certificate.
//! - [`tls`]: rustls configs from a [`WorkloadCertificate`] (ring provider, TLS 1.3 only),
//!   the server-identity check, [`tls::accept`] / [`tls::connect`].
//! - [`server`]: [`serve`] one authenticated connection with a `CONNECT` handler, its
//!   streams relayed to sockets ([`serve`]) or handed over as [`Tunnel`]s
//!   ([`serve_tunnels`]).
//! - [`client`]: [`Connection`] and opening [`Tunnel`]s on it.
//! - [`pool`]: [`Pool`], connections shared per (source, destination identity, IP).
//! - [`stream`]: [`Tunnel`], flow control, and the bidirectional [`Tunnel::relay`].
//!
//! # What it deliberately does not do
//! - Fetch, renew or pick certificates: the caller passes a [`WorkloadCertificate`] and
//!   rebuilds its configs on renewal (open connections keep their handshake).
//! - Authorize: the server handler decides, returning a [`Refusal`] with a status.
//! - Dial TCP: the caller owns sockets (they live in pod network namespaces) and hands
//!   [`Pool::connection`] the dial to run when no live connection exists for a key.
//! - Metrics and access logs: [`Tunnel::relay`] returns the byte counts and an error that
//!   says which side failed.

#![forbid(unsafe_code)]

pub mod client;
pub mod identity;
pub mod pool;
pub mod server;
pub mod stream;
pub mod tls;

pub use ambit_api::identity::{Identity, IdentityError};
pub use client::{ClientError, Connection};
pub use identity::CertificateIdentityError;
pub use pool::{Pool, PoolKey};
pub use server::{ConnectRequest, Refusal, ServerError, accept_loop, serve, serve_tunnels};
pub use stream::{RelayError, Transferred, Tunnel};
pub use tls::{TlsError, WorkloadCertificate};

/// The port HBONE listens on in each pod's network namespace.
pub const HBONE_PORT: u16 = 15008;
/// HTTP/2 stream receive window: ztunnel's 4 MiB.
pub const STREAM_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
/// HTTP/2 connection receive window: ztunnel's 4 MiB.
pub const CONNECTION_WINDOW_BYTES: u32 = 4 * 1024 * 1024;
/// Largest DATA frame this side accepts (the sender splits to the peer's limit).
pub const MAX_FRAME_BYTES: u32 = 64 * 1024;
