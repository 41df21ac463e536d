//! The receiving side: an h2 server on an authenticated connection that turns each
//! `CONNECT ip:port` into a call to the caller's handler and relays the stream to what
//! the handler returns.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use bytes::Bytes;
use h2::server::SendResponse;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, warn};

use crate::{
    CONNECTION_WINDOW_BYTES, Identity, MAX_FRAME_BYTES, STREAM_WINDOW_BYTES,
    stream::{RelayError, Transferred, Tunnel},
};

/// Why an HBONE server connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the HTTP/2 handshake failed (is the client speaking HBONE with ALPN h2?): {0}")]
    Handshake(h2::Error),
    #[error("the HTTP/2 connection failed: {0}")]
    Connection(h2::Error),
}

/// A `CONNECT` the server accepted the shape of, for the handler to authorize and dial.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The destination `ip:port` from `:authority`.
    pub authority: SocketAddr,
    /// The client's identity from its certificate.
    pub peer: Identity,
    /// The original source from `Forwarded: for=`.
    pub forwarded_for: Option<IpAddr>,
    pub baggage: Option<HeaderValue>,
    pub traceparent: Option<HeaderValue>,
}

/// The handler's "no": the status the client sees (503 when the upstream connect failed,
/// 401/403 for policy, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused with {status}: {reason}")]
pub struct Refusal {
    pub status: StatusCode,
    /// For the server's log only; not sent to the client.
    pub reason: String,
}

impl Refusal {
    #[must_use]
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }
}

/// Accepts connections on `listener` forever, each served by `serve` on its own task
/// under an `hbone_in` span naming the peer (IPv4-mapped addresses as IPv4; `serve` is
/// called in that span too, so it can carry it to another runtime); a failed connection
/// is logged with its error.
pub async fn accept_loop<S, F, E>(listener: tokio::net::TcpListener, serve: S)
where
    S: Fn(tokio::net::TcpStream, SocketAddr) -> F,
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    use tracing::Instrument as _;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                let span = tracing::info_span!("hbone_in", %peer);
                let connection = span.in_scope(|| serve(stream, peer));
                tokio::spawn(
                    async move {
                        if let Err(error) = connection.await {
                            warn!(%error, "HBONE connection failed");
                        }
                    }
                    .instrument(span),
                );
            }
            Err(error) => {
                warn!(%error, "HBONE accept failed");
                tokio::task::yield_now().await;
            }
        }
    }
}

/// Serves HBONE on one connection whose TLS handshake (and client identity, `peer`) is
/// done, until the client closes it and every stream has finished. Each stream runs on
/// its own task, relayed to the `upstream` the handler returns for its `CONNECT`.
///
/// # Errors
/// The HTTP/2 handshake or connection failed.
pub async fn serve<IO, H, F, U>(io: IO, peer: Identity, handler: H) -> Result<(), ServerError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(ConnectRequest) -> F + Send + Sync + 'static,
    F: Future<Output = Result<U, Refusal>> + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_tunnels(io, peer, move |connect| {
        let authority = connect.authority;
        let upstream = handler(connect);
        async move {
            let upstream = upstream.await?;
            Ok(move |tunnel: Tunnel| relay(tunnel, upstream, authority))
        }
    })
    .await
}

/// Like [`serve`], but each accepted stream is handed, as a [`Tunnel`], to the function
/// the handler returns, which runs on the stream's task: for a caller that speaks a
/// protocol over the stream itself rather than relaying it to a socket.
///
/// # Errors
/// The HTTP/2 handshake or connection failed.
pub async fn serve_tunnels<IO, H, F, A, AF>(
    io: IO,
    peer: Identity,
    handler: H,
) -> Result<(), ServerError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(ConnectRequest) -> F + Send + Sync + 'static,
    F: Future<Output = Result<A, Refusal>> + Send + 'static,
    A: FnOnce(Tunnel) -> AF + Send + 'static,
    AF: Future<Output = ()> + Send + 'static,
{
    let mut connection = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(ServerError::Handshake)?;
    let handler = Arc::new(handler);
    while let Some(accepted) = connection.accept().await {
        let (request, respond) = accepted.map_err(ServerError::Connection)?;
        let handler = handler.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            let (request, recv) = request.into_parts();
            let request = Request::from_parts(request, ());
            handle_stream(&request, recv, respond, peer, &*handler).await;
        });
    }
    Ok(())
}

async fn handle_stream<H, F, A, AF>(
    request: &Request<()>,
    recv: h2::RecvStream,
    mut respond: SendResponse<Bytes>,
    peer: Identity,
    handler: &H,
) where
    H: Fn(ConnectRequest) -> F,
    F: Future<Output = Result<A, Refusal>>,
    A: FnOnce(Tunnel) -> AF,
    AF: Future<Output = ()>,
{
    let connect = match parse(request, peer) {
        Ok(connect) => connect,
        Err(refusal) => {
            debug!(method = %request.method(), uri = %request.uri(), %refusal, "bad HBONE request");
            reply(&mut respond, refusal.status);
            return;
        }
    };
    let authority = connect.authority;
    let accept = match handler(connect).await {
        Ok(accept) => accept,
        Err(refusal) => {
            debug!(%authority, %refusal, "HBONE CONNECT refused");
            reply(&mut respond, refusal.status);
            return;
        }
    };
    let Some(send) = reply(&mut respond, StatusCode::OK) else {
        return;
    };
    accept(Tunnel::new(send, recv)).await;
}

/// Relays one accepted stream to `upstream`, logging how it ended.
async fn relay<U>(tunnel: Tunnel, upstream: U, authority: SocketAddr)
where
    U: AsyncRead + AsyncWrite + Unpin,
{
    match tunnel.relay(upstream).await {
        Ok(Transferred {
            from_tunnel,
            into_tunnel,
        }) => debug!(%authority, from_tunnel, into_tunnel, "HBONE stream complete"),
        Err(error @ RelayError::Tunnel(_)) => {
            debug!(%authority, %error, "HBONE stream ended by the client side");
        }
        Err(error @ RelayError::Plain(_)) => {
            debug!(%authority, %error, "HBONE stream ended by the upstream side");
        }
    }
}

/// Sends the response headers; the body stays open only for `200`.
fn reply(respond: &mut SendResponse<Bytes>, status: StatusCode) -> Option<h2::SendStream<Bytes>> {
    let mut response = Response::new(());
    *response.status_mut() = status;
    match respond.send_response(response, status != StatusCode::OK) {
        Ok(send) => Some(send),
        Err(error) => {
            warn!(%status, %error, "cannot answer an HBONE request; the client went away");
            None
        }
    }
}

/// Checks the request's shape: `CONNECT` (else 405) to an `ip:port` authority (else 400).
fn parse(request: &Request<()>, peer: Identity) -> Result<ConnectRequest, Refusal> {
    if request.method() != Method::CONNECT {
        return Err(Refusal::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("HBONE only accepts CONNECT, not {}", request.method()),
        ));
    }
    let authority = request
        .uri()
        .authority()
        .and_then(|authority| authority.as_str().parse::<SocketAddr>().ok())
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("the CONNECT authority {:?} is not ip:port", request.uri()),
            )
        })?;
    let headers = request.headers();
    Ok(ConnectRequest {
        authority,
        peer,
        forwarded_for: forwarded_for(headers),
        baggage: headers.get("baggage").cloned(),
        traceparent: headers.get("traceparent").cloned(),
    })
}

/// The first `for=` address of the first `Forwarded` element (RFC 7239: IPv6 comes as
/// `"[addr]"`; a port, if any, is ignored). Obfuscated or unknown nodes give `None`.
pub(crate) fn forwarded_for(headers: &HeaderMap) -> Option<IpAddr> {
    let value = headers.get(header::FORWARDED)?.to_str().ok()?;
    let element = value.split(',').next()?;
    element.split(';').find_map(|pair| {
        let (key, node) = pair.trim().split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let node = node.trim().trim_matches('"');
        if let Some(bracketed) = node.strip_prefix('[') {
            return bracketed.split(']').next()?.parse().ok();
        }
        node.parse::<IpAddr>()
            .ok()
            .or_else(|| node.parse::<SocketAddr>().ok().map(|addr| addr.ip()))
    })
}

/// The `Forwarded` value for a source address, as [`forwarded_for`] reads it back.
pub(crate) fn forwarded_value(source: IpAddr) -> HeaderValue {
    let value = match source {
        IpAddr::V4(v4) => format!("for={v4}"),
        IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
    };
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("for=unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_forwarded(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::FORWARDED, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn reads_forwarded_for() {
        for (value, expected) in [
            ("for=10.0.0.1", Some("10.0.0.1")),
            ("For=\"10.0.0.1:4711\"", Some("10.0.0.1")),
            ("proto=http;for=\"[2001:db8::1]\"", Some("2001:db8::1")),
            (
                "for=\"[2001:db8::1]:80\", for=10.0.0.9",
                Some("2001:db8::1"),
            ),
            ("for=unknown", None),
            ("for=_hidden", None),
            ("by=10.0.0.1", None),
        ] {
            assert_eq!(
                forwarded_for(&with_forwarded(value)),
                expected.map(|ip| ip.parse().expect("test address")),
                "Forwarded: {value}"
            );
        }
        assert_eq!(forwarded_for(&HeaderMap::new()), None);
    }

    #[test]
    fn writes_what_it_reads() {
        for ip in ["192.0.2.7", "2001:db8::7"] {
            let ip: IpAddr = ip.parse().expect("test address");
            let mut headers = HeaderMap::new();
            headers.insert(header::FORWARDED, forwarded_value(ip));
            assert_eq!(forwarded_for(&headers), Some(ip));
        }
    }
}
