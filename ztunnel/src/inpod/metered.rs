//! An upstream socket that counts the bytes through it and, when dropped (the HBONE
//! stream relaying it has finished), reports the connection: Istio's TCP metrics and one
//! access-log line. The HBONE server owns the relay, so this is where its end is seen —
//! and where a policy change ends it: once the connection's admission is revoked, reads
//! and writes fail, and the HBONE stream is reset.

use std::{
    future::Future as _,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tracing::info;

use super::PodContext;
use crate::{drain::Tracked, metrics::TcpLabels, policy::Admission};

/// The app side of an inbound HBONE stream.
#[derive(Debug)]
pub struct Metered {
    inner: TcpStream,
    pod: Arc<PodContext>,
    labels: TcpLabels,
    /// Read from the app, sent back to the client.
    sent: u64,
    /// Received from the client, written to the app.
    received: u64,
    src: SocketAddr,
    dst: SocketAddr,
    started: Instant,
    revoked: Pin<Box<WaitForCancellationFutureOwned>>,
    _admission: Admission,
    _in_flight: Tracked,
}

impl Metered {
    /// Wraps `inner`; the connection was counted as opened by the caller, and admitted
    /// by policy.
    #[must_use]
    pub fn new(
        inner: TcpStream,
        pod: Arc<PodContext>,
        labels: TcpLabels,
        (src, dst): (SocketAddr, SocketAddr),
        admission: Admission,
    ) -> Self {
        let in_flight = pod.drain.track();
        Self {
            inner,
            pod,
            labels,
            sent: 0,
            received: 0,
            src,
            dst,
            started: Instant::now(),
            revoked: Box::pin(admission.revoked()),
            _admission: admission,
            _in_flight: in_flight,
        }
    }

    /// An error once a policy change has revoked the connection.
    fn check_revoked(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.revoked.as_mut().poll(cx).is_ready() {
            self.labels.response_flags = "RBAC";
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "closed: a policy change forbids this connection",
            ));
        }
        Ok(())
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        let metrics = &self.pod.metrics;
        metrics
            .received_bytes
            .get_or_create(&self.labels)
            .inc_by(self.received);
        metrics
            .sent_bytes
            .get_or_create(&self.labels)
            .inc_by(self.sent);
        metrics.connections_closed.get_or_create(&self.labels).inc();
        let duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        info!(
            target: "access",
            direction = "Inbound",
            hbone = true,
            src = %self.src,
            dst = %self.dst,
            src_principal = %self.labels.source_principal,
            bytes_received = self.received,
            bytes_sent = self.sent,
            duration_ms,
            response_flags = self.labels.response_flags,
            "connection complete"
        );
    }
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check_revoked(cx)?;
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if poll.is_ready() {
            self.sent += (buf.filled().len() - before) as u64;
        }
        poll
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_revoked(cx)?;
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.received += *n as u64;
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
