//! The sending side: one h2 client connection over an established mutual-TLS stream,
//! on which [`Connection::open`] starts one `CONNECT` tunnel per proxied connection.
//! Tunnels multiplex; the connection closes once every handle and tunnel is dropped.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request, StatusCode, Uri, Version, header};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::{
    CONNECTION_WINDOW_BYTES, MAX_FRAME_BYTES, STREAM_WINDOW_BYTES, server::forwarded_value,
    stream::Tunnel,
};

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the HTTP/2 handshake failed (does the server speak HBONE on this port?): {0}")]
    Handshake(h2::Error),
    #[error("the HBONE connection is no longer usable; open a new one: {0}")]
    Connection(h2::Error),
    #[error("the CONNECT stream to {destination} failed before a response: {source}")]
    Stream {
        destination: SocketAddr,
        source: h2::Error,
    },
    #[error(
        "the HBONE server refused CONNECT to {destination} with {status} \
         (503: nothing accepted the connection there; 401/403: denied by policy)"
    )]
    Refused {
        destination: SocketAddr,
        status: StatusCode,
    },
    #[error("cannot build the CONNECT request for {destination}: {source}")]
    Request {
        destination: SocketAddr,
        source: http::Error,
    },
}

impl ClientError {
    /// The status of a refused `CONNECT`.
    #[must_use]
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One HBONE HTTP/2 connection; cheap to clone (clones share the connection).
#[derive(Debug, Clone)]
pub struct Connection {
    send: SendRequest<Bytes>,
    closed: Arc<AtomicBool>,
}

impl Connection {
    /// Runs the h2 client handshake on `io` (a TLS stream from [`crate::tls::connect`])
    /// and spawns the task that drives the connection.
    ///
    /// # Errors
    /// The HTTP/2 handshake failed.
    pub async fn handshake<IO>(io: IO) -> Result<Self, ClientError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(STREAM_WINDOW_BYTES)
            .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
            .max_frame_size(MAX_FRAME_BYTES)
            .handshake(io)
            .await
            .map_err(ClientError::Handshake)?;
        let closed = Arc::new(AtomicBool::new(false));
        let flag = closed.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                debug!(%error, "HBONE client connection ended with an error");
            }
            flag.store(true, Ordering::Release);
        });
        Ok(Self { send, closed })
    }

    /// Whether the connection has ended (no new tunnel can be opened on it).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Opens a tunnel to `destination` (`:authority`), with `Forwarded: for=` when a
    /// source is given, plus `headers` (e.g. `baggage`, `traceparent`).
    ///
    /// # Errors
    /// The connection is gone, the stream failed, or the server answered other than 200
    /// ([`ClientError::Refused`] carries the status).
    pub async fn open(
        &self,
        destination: SocketAddr,
        forwarded_for: Option<IpAddr>,
        headers: HeaderMap,
    ) -> Result<Tunnel, ClientError> {
        let request_error = |source| ClientError::Request {
            destination,
            source,
        };
        let uri =
            Uri::try_from(destination.to_string()).map_err(|error| request_error(error.into()))?;
        let mut request = Request::builder()
            .method(Method::CONNECT)
            .version(Version::HTTP_2)
            .uri(uri)
            .body(())
            .map_err(request_error)?;
        *request.headers_mut() = headers;
        if let Some(source) = forwarded_for {
            request
                .headers_mut()
                .insert(header::FORWARDED, forwarded_value(source));
        }
        let mut send = self
            .send
            .clone()
            .ready()
            .await
            .map_err(ClientError::Connection)?;
        let (response, stream) = send
            .send_request(request, false)
            .map_err(ClientError::Connection)?;
        let response = response.await.map_err(|source| ClientError::Stream {
            destination,
            source,
        })?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(ClientError::Refused {
                destination,
                status,
            });
        }
        Ok(Tunnel::new(stream, response.into_body()))
    }
}
