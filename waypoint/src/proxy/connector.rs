//! The upstream connector seam: how the waypoint reaches an endpoint.
//!
//! Tests and plain deployments dial TCP ([`TcpConnector`]); the waypoint in the mesh
//! implements [`Connect`] by opening an HBONE tunnel to the endpoint's ztunnel. The
//! waypoint speaks HTTP over the returned stream, pooled per endpoint, or relays a TCP
//! connection's bytes over it.

use std::{
    fmt,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use http::Uri;
use hyper_util::{
    client::legacy::connect::{Connected, Connection},
    rt::TokioIo,
};
use socket2::{SockRef, TcpKeepalive};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

use crate::table::Keepalive;

/// Istio's default `connectTimeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`Connect::connect`] returns.
pub type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<UpstreamStream>> + Send>>;

/// Opens a byte stream to an endpoint.
pub trait Connect: Send + Sync + fmt::Debug + 'static {
    /// A new stream to `endpoint` (a pod's `ip:targetPort`), its socket sending
    /// `keepalive` probes when it is the endpoint's own.
    fn connect(&self, endpoint: SocketAddr, keepalive: Option<Keepalive>) -> ConnectFuture;
}

/// Dials the endpoint over plain TCP, with `TCP_NODELAY`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connect for TcpConnector {
    fn connect(&self, endpoint: SocketAddr, keepalive: Option<Keepalive>) -> ConnectFuture {
        Box::pin(async move {
            let stream = TcpStream::connect(endpoint).await?;
            stream.set_nodelay(true)?;
            if let Some(keepalive) = keepalive {
                set_keepalive(&stream, keepalive)?;
            }
            Ok(UpstreamStream::new(stream))
        })
    }
}

/// Turns on keepalive probes (`SO_KEEPALIVE`), with the times and count `keepalive`
/// sets.
fn set_keepalive(stream: &TcpStream, keepalive: Keepalive) -> io::Result<()> {
    let mut params = TcpKeepalive::new();
    if let Some(time) = keepalive.time {
        params = params.with_time(time);
    }
    if let Some(interval) = keepalive.interval {
        params = params.with_interval(interval);
    }
    if let Some(probes) = keepalive.probes {
        params = params.with_retries(probes);
    }
    SockRef::from(stream).set_tcp_keepalive(&params)
}

/// A stream to `endpoint` through `connector` (with `keepalive`), or an error once
/// `timeout` has passed (the cluster's `connectTimeout`, [`CONNECT_TIMEOUT`] by
/// default).
pub fn connect_in_time(
    connector: &dyn Connect,
    endpoint: SocketAddr,
    timeout: Duration,
    keepalive: Option<Keepalive>,
) -> impl Future<Output = io::Result<UpstreamStream>> + Send + 'static {
    let connecting = connector.connect(endpoint, keepalive);
    async move {
        match tokio::time::timeout(timeout, connecting).await {
            Ok(stream) => stream,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connecting to {endpoint} took over {timeout:?} (connectionPool.tcp.connectTimeout)"
                ),
            )),
        }
    }
}

trait ByteStream: AsyncRead + AsyncWrite + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + 'static> ByteStream for T {}

/// A connection to an endpoint, whatever carries it.
pub struct UpstreamStream(Pin<Box<dyn ByteStream>>);

impl UpstreamStream {
    /// Wraps any async byte stream.
    pub fn new(stream: impl AsyncRead + AsyncWrite + Send + 'static) -> Self {
        Self(Box::pin(stream))
    }
}

impl fmt::Debug for UpstreamStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UpstreamStream")
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.0.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        Connected::new().extra(RequestCount::default())
    }
}

/// The requests a pooled connection has carried, kept with it by hyper's pool (its
/// `Connected` extras): what `maxRequestsPerConnection` is checked against.
#[derive(Debug, Clone, Default)]
pub(super) struct RequestCount(Arc<AtomicU32>);

impl RequestCount {
    /// Counts one more request, returning how many the connection has carried.
    pub(super) fn add_one(&self) -> u32 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// hyper's client asks a tower service for connections by URI; this one ignores the
/// URI's authority (the request's, kept for `Host` / `:authority`) and always reaches
/// one endpoint, so each client and its pool belong to that endpoint.
#[derive(Debug, Clone)]
pub(super) struct EndpointConnector {
    pub(super) connector: std::sync::Arc<dyn Connect>,
    pub(super) endpoint: SocketAddr,
    pub(super) timeout: Duration,
    pub(super) keepalive: Option<Keepalive>,
}

impl tower_service::Service<Uri> for EndpointConnector {
    type Response = TokioIo<UpstreamStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let connecting = connect_in_time(
            &*self.connector,
            self.endpoint,
            self.timeout,
            self.keepalive,
        );
        Box::pin(async move { connecting.await.map(TokioIo::new) })
    }
}
