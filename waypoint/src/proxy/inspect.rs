//! A body passed through unchanged while a closure sees each frame (to count bytes, read
//! trailers, or hold something until the body ends). Unlike `BodyExt::map_frame`, it
//! keeps the inner body's size hint, so a response of known length is still sent with
//! `content-length` rather than chunked.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use hyper::body::{Body, Frame, SizeHint};

/// `inner`, with `see` called on each frame it yields.
pub struct Inspected<B, F> {
    inner: B,
    see: F,
}

impl<B: std::fmt::Debug, F> std::fmt::Debug for Inspected<B, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inspected")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<B, F> Inspected<B, F> {
    pub fn new(inner: B, see: F) -> Self {
        Self { inner, see }
    }
}

impl<B, F> Body for Inspected<B, F>
where
    B: Body + Unpin,
    F: FnMut(&Frame<B::Data>) + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            (this.see)(frame);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};

    use super::*;

    #[tokio::test]
    async fn frames_pass_unchanged_seen_once_with_the_size_kept() {
        let mut seen = 0;
        let body = Inspected::new(
            Full::new(Bytes::from_static(b"hello")),
            |frame: &Frame<Bytes>| {
                seen += frame.data_ref().map_or(0, Bytes::len);
            },
        );
        assert_eq!(body.size_hint().exact(), Some(5));
        let collected = body.collect().await.expect("a body").to_bytes();
        assert_eq!(collected, "hello");
        assert_eq!(seen, 5);
    }
}
