//! A request's body as it arrived, which an external authorizer may need the start of
//! before the request is forwarded: read up to a limit, then sent on whole — the bytes
//! read first, then the rest as it streams.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use super::Body;

/// The body of a request being served.
#[derive(Debug)]
pub enum ReceivedBody {
    /// Nothing read yet.
    Untouched(Incoming),
    /// Its first bytes read; `rest` is what follows them, `None` when it ended.
    Read { head: Bytes, rest: Option<Incoming> },
}

impl ReceivedBody {
    /// Reads the body until it ends or more than `limit` bytes are in (trailers are
    /// dropped); the bytes read (all of them) and whether that was all of it. A body
    /// that fails to read is lost: the request cannot be served anyway.
    pub async fn read_up_to(&mut self, limit: usize) -> Result<(Bytes, bool), hyper::Error> {
        let read = Self::Read {
            head: Bytes::new(),
            rest: None,
        };
        let mut incoming = match std::mem::replace(self, read) {
            Self::Untouched(incoming) => incoming,
            already @ Self::Read { .. } => {
                *self = already;
                return Ok(self.read_so_far());
            }
        };
        let mut head = BytesMut::new();
        let mut ended = incoming.is_end_stream();
        while !ended && head.len() <= limit {
            match incoming.frame().await {
                Some(frame) => {
                    if let Ok(data) = frame?.into_data() {
                        head.extend_from_slice(&data);
                    }
                    ended = incoming.is_end_stream();
                }
                None => ended = true,
            }
        }
        *self = Self::Read {
            head: head.freeze(),
            rest: (!ended).then_some(incoming),
        };
        Ok(self.read_so_far())
    }

    fn read_so_far(&self) -> (Bytes, bool) {
        match self {
            Self::Untouched(_) => (Bytes::new(), false),
            Self::Read { head, rest } => (head.clone(), rest.is_none()),
        }
    }
}

/// The bytes read first, then the rest of the body.
#[derive(Debug)]
pub struct Prefixed {
    head: Option<Bytes>,
    rest: Incoming,
}

impl Prefixed {
    pub fn boxed(head: Bytes, rest: Incoming) -> Body {
        let head = (!head.is_empty()).then_some(head);
        Self { head, rest }.boxed_unsync()
    }
}

impl HttpBody for Prefixed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(head) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let head = self.head.as_ref().map_or(0, |head| head.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + head);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + head);
        }
        hint
    }
}
