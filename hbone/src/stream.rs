//! One HBONE stream as bytes: [`Tunnel`] is `AsyncRead + AsyncWrite` over an h2
//! `SendStream`/`RecvStream` pair, and [`Tunnel::relay`] copies between it and a plain
//! connection with one buffer per direction and no per-read allocation.
//!
//! Flow control: received data is released back to the peer only once it has been
//! handed on (read by the caller or written to the plain side), so a slow consumer
//! slows the sender instead of growing a queue; sending reserves capacity and waits for
//! it, sending at most what the window allows.

use std::{
    future::poll_fn,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf as _, Bytes, BytesMut};
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

/// Size of each direction's read buffer block; a new block is taken only when the
/// previous one is still held by h2 (queued frames) and less than [`MIN_READ_BYTES`] is
/// left, so allocations are one per ~256 KiB relayed, not one per read.
pub const BUFFER_BYTES: usize = 256 * 1024;
/// Smallest free space a read is given before a fresh block is taken.
pub const MIN_READ_BYTES: usize = 16 * 1024;
/// Largest write accepted by one `poll_write` (one or more h2 DATA frames).
pub const MAX_WRITE_BYTES: usize = 64 * 1024;

/// Which side of a relay failed, for access logs and Istio's response flags.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("the HBONE stream failed: {0}")]
    Tunnel(io::Error),
    #[error("the plain-TCP side failed: {0}")]
    Plain(io::Error),
}

/// Bytes moved by [`Tunnel::relay`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transferred {
    /// Received from the HBONE peer and written to the plain side.
    pub from_tunnel: u64,
    /// Read from the plain side and sent to the HBONE peer.
    pub into_tunnel: u64,
}

/// An established HBONE stream (after a `200` to `CONNECT`).
#[derive(Debug)]
pub struct Tunnel {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received, not yet handed on; its length is not yet released to the peer.
    pending: Bytes,
    read_done: bool,
    write_done: bool,
}

/// h2's error as an `io::Error`, with a reset from the peer as `ConnectionReset`.
pub(crate) fn h2_io(error: h2::Error) -> io::Error {
    if error.is_io() {
        return error
            .into_io()
            .unwrap_or_else(|| io::Error::other("h2 I/O error"));
    }
    let kind = if error.is_reset() || error.is_go_away() {
        io::ErrorKind::ConnectionReset
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, error)
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the HBONE stream is closed for sending",
    )
}

impl Tunnel {
    pub(crate) fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        Self {
            send,
            recv,
            pending: Bytes::new(),
            read_done: false,
            write_done: false,
        }
    }

    /// Copies both ways between this stream and `plain` until both directions finish: the
    /// peer's end-of-stream becomes `shutdown(Write)` on `plain`, and `plain`'s EOF becomes
    /// end-of-stream. On an error the HBONE stream is reset (`CANCEL`).
    ///
    /// # Errors
    /// The side that failed first.
    pub async fn relay<P>(mut self, mut plain: P) -> Result<Transferred, RelayError>
    where
        P: AsyncRead + AsyncWrite + Unpin,
    {
        let mut out = Outbound::default();
        let mut inbound = Inbound::default();
        let result = poll_fn(|cx| {
            let to_plain = self.poll_to_plain(cx, &mut plain, &mut inbound)?;
            let to_tunnel = self.poll_to_tunnel(cx, &mut plain, &mut out)?;
            if to_tunnel.is_pending()
                && let Poll::Ready(reason) = self.send.poll_reset(cx)
            {
                let reason = reason.map_err(|e| RelayError::Tunnel(h2_io(e)))?;
                return Poll::Ready(Err(RelayError::Tunnel(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    format!("the peer reset the stream ({reason})"),
                ))));
            }
            ready!(to_plain);
            ready!(to_tunnel);
            Poll::Ready(Ok(Transferred {
                from_tunnel: inbound.bytes,
                into_tunnel: out.bytes,
            }))
        })
        .await;
        if result.is_err() {
            self.send.send_reset(Reason::CANCEL);
        }
        result
    }

    /// Tunnel → plain, ending with `shutdown` of `plain`.
    fn poll_to_plain<P>(
        &mut self,
        cx: &mut Context<'_>,
        plain: &mut P,
        state: &mut Inbound,
    ) -> Poll<Result<(), RelayError>>
    where
        P: AsyncWrite + Unpin,
    {
        loop {
            if state.done {
                return Poll::Ready(Ok(()));
            }
            if !self.pending.is_empty() {
                let n = ready!(Pin::new(&mut *plain).poll_write(cx, &self.pending))
                    .map_err(RelayError::Plain)?;
                if n == 0 {
                    return Poll::Ready(Err(RelayError::Plain(io::ErrorKind::WriteZero.into())));
                }
                self.consume(n).map_err(RelayError::Tunnel)?;
                state.bytes += n as u64;
                state.unflushed = true;
                continue;
            }
            if self.read_done {
                ready!(Pin::new(&mut *plain).poll_shutdown(cx)).map_err(RelayError::Plain)?;
                state.done = true;
                continue;
            }
            match self.poll_fill(cx) {
                Poll::Ready(result) => result.map_err(RelayError::Tunnel)?,
                Poll::Pending => {
                    if state.unflushed {
                        ready!(Pin::new(&mut *plain).poll_flush(cx)).map_err(RelayError::Plain)?;
                        state.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Plain → tunnel, ending with end-of-stream.
    fn poll_to_tunnel<P>(
        &mut self,
        cx: &mut Context<'_>,
        plain: &mut P,
        state: &mut Outbound,
    ) -> Poll<Result<(), RelayError>>
    where
        P: AsyncRead + Unpin,
    {
        loop {
            if state.done {
                return Poll::Ready(Ok(()));
            }
            if !state.outgoing.is_empty() {
                ready!(self.poll_send(cx, &mut state.outgoing)).map_err(RelayError::Tunnel)?;
                continue;
            }
            if state.eof {
                self.finish().map_err(RelayError::Tunnel)?;
                state.done = true;
                continue;
            }
            if state.buf.capacity() - state.buf.len() < MIN_READ_BYTES {
                // Reclaims the block in place once h2 has dropped every chunk of it.
                state.buf.reserve(BUFFER_BYTES);
            }
            let n = ready!(poll_read_buf(Pin::new(&mut *plain), cx, &mut state.buf))
                .map_err(RelayError::Plain)?;
            if n == 0 {
                state.eof = true;
                continue;
            }
            state.bytes += n as u64;
            state.outgoing = state.buf.split().freeze();
        }
    }

    /// Makes `pending` non-empty, or sets `read_done` at the peer's end-of-stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending.is_empty() && !self.read_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => self.pending = data,
                Some(Err(error)) => return Poll::Ready(Err(h2_io(error))),
                None => self.read_done = true,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Drops `n` handed-on bytes and returns their window to the peer.
    fn consume(&mut self, n: usize) -> io::Result<()> {
        self.pending.advance(n);
        if self.pending.is_empty() {
            // An emptied slice still pins h2's whole read block: a stream left idle (a
            // pooled upstream connection) would hold one block each.
            self.pending = Bytes::new();
        }
        self.recv.flow_control().release_capacity(n).map_err(h2_io)
    }

    /// Sends all of `data` as the window allows (zero-copy splits of `data`).
    fn poll_send(&mut self, cx: &mut Context<'_>, data: &mut Bytes) -> Poll<io::Result<()>> {
        while !data.is_empty() {
            self.send.reserve_capacity(data.len());
            match ready!(self.send.poll_capacity(cx)) {
                Some(Ok(0)) => {}
                Some(Ok(n)) => {
                    let chunk = data.split_to(n.min(data.len()));
                    self.send.send_data(chunk, false).map_err(h2_io)?;
                }
                Some(Err(error)) => return Poll::Ready(Err(h2_io(error))),
                None => return Poll::Ready(Err(closed())),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Sends end-of-stream once.
    fn finish(&mut self) -> io::Result<()> {
        if !self.write_done {
            self.write_done = true;
            self.send.send_data(Bytes::new(), true).map_err(h2_io)?;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Inbound {
    bytes: u64,
    unflushed: bool,
    done: bool,
}

#[derive(Debug, Default)]
struct Outbound {
    buf: BytesMut,
    outgoing: Bytes,
    bytes: u64,
    eof: bool,
    done: bool,
}

impl AsyncRead for Tunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_fill(cx))?;
        let n = buf.remaining().min(this.pending.len());
        if n > 0 {
            buf.put_slice(&this.pending[..n]);
            this.consume(n)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.write_done {
            return Poll::Ready(Err(closed()));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let want = buf.len().min(MAX_WRITE_BYTES);
        this.send.reserve_capacity(want);
        loop {
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(0)) => {}
                Some(Ok(capacity)) => {
                    let n = capacity.min(want);
                    // Each write in its own allocation: a stream held open for many
                    // small writes (a pooled upstream HTTP/1.1 connection) must not pin
                    // a large block whose every page its writes have touched.
                    let chunk = Bytes::copy_from_slice(&buf[..n]);
                    this.send.send_data(chunk, false).map_err(h2_io)?;
                    return Poll::Ready(Ok(n));
                }
                Some(Err(error)) => return Poll::Ready(Err(h2_io(error))),
                None => return Poll::Ready(Err(closed())),
            }
        }
    }

    /// h2 writes queued frames from its connection task; nothing to do here.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    /// Sends end-of-stream; reading continues until the peer ends its side.
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().finish())
    }
}
