//! The HTTP proxy: accepts HTTP/1.1 and HTTP/2 (prior knowledge) connections, routes
//! each request with the current [`RouteTable`], and forwards it to an endpoint through
//! the [`Connect`] seam.
//!
//! # Layout
//! - this file: [`Engine`] (the swappable table and the upstream clients), [`run`] (the
//!   accept loop with graceful shutdown), [`Peer`] (who is downstream), [`ProxyError`]
//!   and its [`Side`];
//! - [`connector`]: the [`Connect`] seam and [`TcpConnector`];
//! - `upstream`: a pooled hyper client per endpoint;
//! - `forward`: one request's way through routing, faults, rewrites, header edits,
//!   retries and timeouts;
//! - `mirror`: copies of requests sent to `mirror` destinations;
//! - [`inspect`]: a body seen frame by frame on its way, its length kept;
//! - `reply`: the responses the waypoint answers itself (404 `NR`, 503 `UH`, …);
//! - `upgrade`: WebSocket and other `Upgrade:` requests, spliced after `101`;
//! - [`relay`]: [`relay_connection`], a connection to a TCP service port relayed as
//!   bytes by `tls:` and `tcp:` routes;
//! - `sni`: the server name of a TLS client's ClientHello, read before routing;
//! - `idle`: closing relayed connections silent for their cluster's idle timeout.

pub mod connector;
mod forward;
mod idle;
pub mod inspect;
mod mirror;
pub(crate) mod received;
pub mod relay;
pub(crate) mod reply;
mod sni;
mod upgrade;
pub(crate) mod upstream;

use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    sync::{Arc, PoisonError, RwLock},
};

use ambit_api::identity::Identity;
use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
};
use prometheus_client::registry::Registry;
use rustls::pki_types::CertificateDer;
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::Instrument;

use self::upstream::Upstreams;
pub use self::{
    connector::{Connect, ConnectFuture, TcpConnector, UpstreamStream},
    relay::{RelayError, relay_connection},
};
use crate::{
    config::Config,
    policy::Fetcher,
    table::{ConfigErrors, RouteTable},
    telemetry::{ConnectionSource, Metrics, spans::SpanReporter},
};

/// The body of requests sent upstream and of responses sent downstream.
pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;

/// Who a failure is attributed to, as access logs and metrics report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client, or its connection to the waypoint.
    Downstream,
    /// The endpoint, or the waypoint's connection to it.
    Upstream,
    /// The waypoint itself.
    Internal,
}

/// Why the proxy, a connection or a request failed.
#[derive(Debug, Error)]
pub enum ProxyError {
    #[error("accepting a connection failed: {0} (is the process out of file descriptors?)")]
    Accept(#[source] io::Error),
    #[error(
        "could not connect to endpoint {endpoint}: {source} (is the pod running and listening on that port?)"
    )]
    UpstreamConnect {
        endpoint: SocketAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("endpoint {endpoint} ended the request before answering: {source}")]
    UpstreamReset {
        endpoint: SocketAddr,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("reading the client's request body failed: {0}")]
    DownstreamBody(#[source] hyper::Error),
    #[error("the request's authority `{authority}` cannot be forwarded: {source}")]
    Authority {
        authority: String,
        #[source]
        source: http::Error,
    },
}

impl ProxyError {
    /// Who the failure is attributed to.
    #[must_use]
    pub fn side(&self) -> Side {
        match self {
            Self::Accept(_) => Side::Internal,
            Self::UpstreamConnect { .. } | Self::UpstreamReset { .. } => Side::Upstream,
            Self::DownstreamBody(_) | Self::Authority { .. } => Side::Downstream,
        }
    }
}

/// Who sent the requests of a downstream connection: what `AuthorizationPolicy`
/// (`principals`, `namespaces`, `ipBlocks`, `source.*`) and telemetry (`source_*`) read.
///
/// This is the seam for HBONE: [`run`] serves plain TCP and fills `ip` from the TCP
/// peer with no identity; an HBONE listener fills both from the tunnel (the client's
/// address and its certificate's SPIFFE identity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub ip: IpAddr,
    /// The peer's workload identity, when the connection is mutually authenticated.
    pub identity: Option<Identity>,
}

/// The waypoint's routing state: the current route table (swapped whole when the
/// config changes), the clients towards endpoints (kept across swaps, so pooled
/// connections survive a config push, as do fetched key sets) and the request metrics.
#[derive(Debug)]
pub struct Engine {
    table: RwLock<Arc<RouteTable>>,
    upstreams: Arc<Upstreams>,
    /// RequestAuthentication key sets fetched from `jwksUri`, kept across updates.
    jwks: Fetcher,
    metrics: Metrics,
    /// Where sampled requests' spans go, if anywhere.
    spans: Option<SpanReporter>,
}

impl Engine {
    /// An engine routing with `config`, reaching endpoints through `connector`, with
    /// Istio's request metrics registered on `registry`.
    pub fn new(
        config: &Config,
        connector: Arc<dyn Connect>,
        registry: &mut Registry,
    ) -> Result<Self, ConfigErrors> {
        let table = warn_of_ignored(RouteTable::compile(config)?);
        Ok(Self {
            table: RwLock::new(Arc::new(table)),
            jwks: Fetcher::new(Arc::clone(&connector)),
            upstreams: Arc::new(Upstreams::new(connector)),
            metrics: Metrics::register(registry),
            spans: None,
        })
    }

    /// Reports the spans of sampled requests through `reporter`.
    #[must_use]
    pub fn reporting_spans(mut self, reporter: SpanReporter) -> Self {
        self.spans = Some(reporter);
        self
    }

    /// Trusts `roots` too, besides the system's, for RequestAuthentication key sets
    /// fetched over `https`: an issuer's private CA.
    #[must_use]
    pub fn trusting_for_jwks(mut self, roots: Vec<CertificateDer<'static>>) -> Self {
        self.jwks = self.jwks.trust(roots);
        self
    }

    /// Replaces the route table with `config`'s. On error the current table stays in
    /// use. Requests in flight finish with the table they started with. Clusters whose settings did not change carry on with their state (see
    /// [`crate::table::Cluster::continuing`]).
    pub fn update(&self, config: &Config) -> Result<(), ConfigErrors> {
        let table = Arc::new(warn_of_ignored(self.table().recompile(config)?));
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = table;
        Ok(())
    }

    /// The current route table.
    #[must_use]
    pub fn table(&self) -> Arc<RouteTable> {
        Arc::clone(&self.table.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// `table`, once the fields it ignores are logged.
fn warn_of_ignored(table: RouteTable) -> RouteTable {
    for field in table.ignored() {
        tracing::warn!(
            field,
            "ignoring a field the waypoint does not implement yet"
        );
    }
    table
}

/// What the waypoint knows of a downstream connection besides its bytes.
#[derive(Debug)]
pub struct Downstream {
    /// The address the client addressed: the listener's, or the service VIP and port of
    /// an HBONE `CONNECT`.
    pub destination: SocketAddr,
    /// The service the client addressed (an HBONE `CONNECT` to its VIP): routes are
    /// looked up for it, not for the `Host` header, as Istio's waypoints do.
    pub service: Option<String>,
    /// Who the client is.
    pub peer: Peer,
    /// Who the client is, as telemetry names it.
    pub source: ConnectionSource,
    /// The server name the client asked for in its TLS handshake, on a gateway port
    /// that terminates TLS (`connection.sni`).
    pub sni: Option<String>,
}

impl Downstream {
    /// A connection from `peer` to `destination` (service `service`, when known).
    #[must_use]
    pub fn new(destination: SocketAddr, service: Option<String>, peer: Peer) -> Self {
        Self {
            destination,
            service,
            peer,
            source: ConnectionSource::default(),
            sni: None,
        }
    }
}

/// Serves HTTP (HTTP/1.1 or HTTP/2) on one connection until it ends.
///
/// # Errors
/// The connection failed (a protocol error, or the client went away mid-request).
pub async fn serve_connection<IO>(
    io: IO,
    engine: Arc<Engine>,
    downstream: Downstream,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    auto::Builder::new(TokioExecutor::new())
        .serve_connection_with_upgrades(TokioIo::new(io), service(engine, downstream))
        .await
}

/// The per-request service of one connection.
fn service(
    engine: Arc<Engine>,
    downstream: Downstream,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = http::Response<Body>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<http::Response<Body>, std::convert::Infallible>> + Send,
> + Clone {
    let downstream = Arc::new(downstream);
    service_fn(move |request: http::Request<Incoming>| {
        let engine = Arc::clone(&engine);
        let downstream = Arc::clone(&downstream);
        async move { Ok(forward::handle(&engine, request, &downstream).await) }
    })
}

/// Serves HTTP on `listener` with `engine` until `shutdown` completes, then stops
/// accepting and waits for open connections to finish their requests (HTTP/1.1 closes
/// after the current response, HTTP/2 sends `GOAWAY`). Bound the wait by racing this
/// future against a deadline.
pub async fn run(
    listener: TcpListener,
    engine: Arc<Engine>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut next_id: u64 = 0;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // A connection that failed before accept (reset in the backlog).
                Err(error) if error.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(error) => return Err(ProxyError::Accept(error)),
            },
            () = &mut shutdown => break,
        };
        next_id += 1;
        let Ok(local) = stream.local_addr() else {
            tracing::debug!(%peer, "connection closed before it could be served");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let span = tracing::debug_span!("connection", id = next_id, %peer, %local);
        // A plain listener: the TCP peer, no identity (HBONE gives both: `mesh::inbound`).
        let downstream = Downstream::new(
            local,
            None,
            Peer {
                ip: peer.ip().to_canonical(),
                identity: None,
            },
        );
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(stream),
                service(Arc::clone(&engine), downstream),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(
            async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
    tracing::debug!(open = graceful.count(), "draining connections");
    graceful.shutdown().await;
    Ok(())
}
