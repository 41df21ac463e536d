//! A connection to a service port declared TCP, relayed as bytes (L4): the service's
//! `tls:` routes (by the SNI of the client's ClientHello, read first when there are
//! any: `sni`) then `tcp:` routes pick a destination by weight (else the service
//! itself); on an ingress gateway, a TLS passthrough port's by SNI, a TCP server's by
//! the bound VirtualServices' `tcp:` routes. The destination's cluster picks an
//! endpoint by the DestinationRule's load balancer, and bytes are copied both ways
//! until either side closes. Reported with Istio's TCP metrics and one access-log line.
//!
//! `connectionPool.tcp.maxConnections` bounds the connections relayed to a cluster at
//! once (one more is closed at once, `UO`); `tcp.idleTimeout` (Istio's default: an
//! hour) closes a connection no byte has crossed for that long (`idle`).

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use http::HeaderMap;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};

use super::{
    Downstream, Engine, Side, UpstreamStream, idle,
    sni::{self, Inspected},
};
use crate::{
    flags::ResponseFlags,
    gateway::servers::PortProtocol,
    matcher::connection::ConnectionView,
    table::{ActiveRequest, ConnectionSlot, Health, Overflow, RequestKeys, RouteTable, TcpPolicy},
    telemetry::tcp::TcpExchange,
};

/// Why a connection could not be relayed.
#[derive(Debug, Error)]
pub enum RelayError {
    #[error("no service at {destination}: the waypoint does not serve it")]
    NoRoute { destination: SocketAddr },
    #[error(
        "route {route} sends to {target}, which has no port {port}: check the destination's host, subset and port"
    )]
    NoCluster {
        route: String,
        target: String,
        port: u16,
    },
    #[error("{cluster} has no endpoint available: are its pods ready?")]
    NoHealthyUpstream { cluster: String },
    #[error(
        "{cluster} has its connectionPool.tcp.maxConnections open: raise the limit in its DestinationRule, or wait for connections to close"
    )]
    Overflow { cluster: String },
    #[error(
        "could not connect to endpoint {endpoint}: {source} (is the pod running and listening on that port?)"
    )]
    Connect {
        endpoint: SocketAddr,
        #[source]
        source: io::Error,
    },
}

impl RelayError {
    /// Who the failure is attributed to.
    #[must_use]
    pub fn side(&self) -> Side {
        match self {
            Self::NoRoute { .. } | Self::NoCluster { .. } => Side::Internal,
            Self::NoHealthyUpstream { .. } | Self::Overflow { .. } | Self::Connect { .. } => {
                Side::Upstream
            }
        }
    }

    /// Envoy's response flag for the failure.
    #[must_use]
    pub fn flags(&self) -> ResponseFlags {
        match self {
            Self::NoRoute { .. } => ResponseFlags::NO_ROUTE_FOUND,
            Self::NoCluster { .. } => ResponseFlags::NO_CLUSTER_FOUND,
            Self::NoHealthyUpstream { .. } => ResponseFlags::NO_HEALTHY_UPSTREAM,
            Self::Overflow { .. } => ResponseFlags::UPSTREAM_OVERFLOW,
            Self::Connect { .. } => ResponseFlags::UPSTREAM_CONNECT_FAILURE,
        }
    }
}

/// Relays `io`, a connection to a TCP service port, until either side closes; a
/// connection that cannot be relayed is closed. Either way it is reported.
pub async fn relay_connection<IO>(io: IO, engine: Arc<Engine>, downstream: Downstream)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let table = engine.table();
    let metrics = engine.metrics.tcp();
    let mut exchange =
        TcpExchange::start(table.workloads(), &downstream.peer, downstream.destination);
    let activity = idle::Activity::new();
    let mut client = Counted::new(io, Arc::clone(&activity));
    // Routed by SNI: a service with `tls:` routes, or an ingress port passing TLS
    // through (no service: the server name picks the VirtualService). Other
    // connections are not read first: their server may be the one to speak first.
    let by_sni = match downstream.service.as_deref() {
        Some(service) => table.routes_by_sni(service, downstream.destination.port()),
        None => table
            .ingress()
            .and_then(|servers| servers.on_port(downstream.destination.port()))
            .is_some_and(|server| server.protocol == PortProtocol::Passthrough),
    };
    let hello = if by_sni {
        sni::inspect(&mut client).await
    } else {
        Inspected::default()
    };
    let server_name = hello.server_name.as_deref();
    let connected = connect(&engine, &table, &downstream, server_name, &mut exchange).await;
    let (mut upstream, tcp, _held) = match connected {
        Ok(connected) => connected,
        Err(error) => {
            tracing::debug!(%error, side = ?error.side(), "TCP connection not relayed");
            exchange.failed(error.flags());
            exchange.opened(metrics);
            exchange.closed(metrics);
            return;
        }
    };
    exchange.opened(metrics);
    let relayed = async {
        upstream.write_all(&hello.read).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await
    };
    let silent = async {
        match tcp.idle_timeout {
            Some(idle) => idle::until_idle(&activity, idle).await,
            None => std::future::pending().await,
        }
    };
    let expired = async {
        match tcp.max_connection_duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        relayed = relayed => if let Err(error) = relayed {
            tracing::debug!(%error, "TCP relay ended with an error");
        },
        () = silent => tracing::debug!(idle_timeout = ?tcp.idle_timeout, "TCP connection closed: idle"),
        () = expired => {
            tracing::debug!(max_connection_duration = ?tcp.max_connection_duration, "TCP connection closed: maxConnectionDuration");
            exchange.failed(ResponseFlags::DURATION_TIMEOUT);
        }
    }
    exchange.received = client.read;
    exchange.sent = client.written;
    exchange.closed(metrics);
}

/// What a relayed connection holds while it lives: its endpoint busy (for
/// `LEAST_REQUEST`), and its place under the cluster's `tcp.maxConnections`.
type Held = (ActiveRequest, Option<ConnectionSlot>);

/// Routes the connection and opens a stream to the chosen endpoint; with the
/// cluster's timeouts.
async fn connect(
    engine: &Engine,
    table: &RouteTable,
    downstream: &Downstream,
    server_name: Option<&str>,
    exchange: &mut TcpExchange,
) -> Result<(UpstreamStream, TcpPolicy, Held), RelayError> {
    let destination = downstream.destination;
    let peer = &downstream.peer;
    let view = ConnectionView {
        destination: destination.ip(),
        port: destination.port(),
        source: table.workloads().matching_source(peer),
        gateways: table.bound_as(),
        sni: server_name,
    };
    let routing = downstream.service.as_deref().or(server_name);
    let accepted = |host: &str| {
        table.ingress().is_none_or(|servers| {
            servers
                .on_port(destination.port())
                .is_some_and(|server| server.accepts(host))
        })
    };
    // An ingress TCP server's connections name no host: its bound `tcp:` routes decide.
    let route = match routing {
        Some(host) => Some(host)
            .filter(|host| accepted(host))
            .and_then(|host| table.tcp_route(host, &view)),
        None => table.gateway_tcp_route(destination.port(), &view),
    }
    .ok_or(RelayError::NoRoute { destination })?;
    let target = route.targets.choose();
    exchange.routed(&route.name, &target.host);
    let cluster = target
        .cluster(destination.port())
        .ok_or_else(|| RelayError::NoCluster {
            route: route.name.clone(),
            target: target.display_name(),
            port: destination.port(),
        })?;
    let slot = cluster
        .admit_stream()
        .map_err(|Overflow| RelayError::Overflow {
            cluster: cluster.name.clone(),
        })?;
    let no_headers = HeaderMap::new();
    let hash = cluster.hash(RequestKeys {
        headers: &no_headers,
        query: None,
        source: peer.ip,
    });
    let endpoint = cluster
        .pick(hash.hash, &[])
        .ok_or_else(|| RelayError::NoHealthyUpstream {
            cluster: cluster.name.clone(),
        })?;
    exchange.reached(table.workloads(), endpoint.address);
    let active = endpoint.start_request();
    let tcp = cluster.tcp();
    match engine.upstreams.open(endpoint.address, &tcp).await {
        Ok(stream) => {
            cluster.record(&endpoint, Health::Succeeded);
            Ok((stream, tcp, (active, slot)))
        }
        Err(source) => {
            cluster.record(&endpoint, Health::LocalFailure);
            Err(RelayError::Connect {
                endpoint: endpoint.address,
                source,
            })
        }
    }
}

/// A stream that counts the bytes read from it and written to it, and records when
/// it last carried one.
struct Counted<S> {
    inner: S,
    read: u64,
    written: u64,
    activity: Arc<idle::Activity>,
}

impl<S> Counted<S> {
    fn new(inner: S, activity: Arc<idle::Activity>) -> Self {
        Self {
            inner,
            read: 0,
            written: 0,
            activity,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if matches!(polled, Poll::Ready(Ok(()))) && read > 0 {
            self.read += read as u64;
            self.activity.record();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.written += n as u64;
            self.activity.record();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
