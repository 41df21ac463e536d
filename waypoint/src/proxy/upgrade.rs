//! Protocol upgrades (WebSocket and any other `Upgrade:`), as Envoy proxies them: an
//! HTTP/1.1 request with `Connection: upgrade` is forwarded with its `Upgrade` header
//! over HTTP/1.1, and when the endpoint answers `101 Switching Protocols` the two
//! connections are spliced, bytes copied both ways until either side closes.

use http::{HeaderMap, HeaderValue, Response, StatusCode, Version, header, request::Parts};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use tracing::debug;

/// A downstream request's wish to switch protocols.
pub struct Upgrade {
    /// The `Upgrade` header as the client sent it (`websocket`).
    protocol: HeaderValue,
    /// The client's connection, once the switch happens.
    downstream: OnUpgrade,
}

impl Upgrade {
    /// The upgrade `parts` asks for: an HTTP/1.1 request whose `Connection` names
    /// `upgrade` and that has an `Upgrade` header; `None` otherwise.
    pub fn requested(parts: &mut Parts) -> Option<Self> {
        if parts.version != Version::HTTP_11 {
            return None;
        }
        let connection_upgrade = parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
        let protocol = parts.headers.get(header::UPGRADE)?.clone();
        if !connection_upgrade {
            return None;
        }
        let downstream = parts.extensions.remove::<OnUpgrade>()?;
        Some(Self {
            protocol,
            downstream,
        })
    }

    /// Puts back the headers asking for the upgrade, which hop-by-hop stripping removed.
    pub fn ask(&self, headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, self.protocol.clone());
    }

    /// The switch, if the endpoint answered `101 Switching Protocols`.
    pub fn accepted(self, upstream: &mut Response<Incoming>) -> Option<Switched> {
        if upstream.status() != StatusCode::SWITCHING_PROTOCOLS {
            return None;
        }
        Some(Switched {
            protocol: upstream.headers().get(header::UPGRADE).cloned(),
            downstream: self.downstream,
            upstream: hyper::upgrade::on(upstream),
        })
    }
}

/// Both sides agreed to switch protocols.
pub struct Switched {
    /// The endpoint's `Upgrade` header.
    protocol: Option<HeaderValue>,
    downstream: OnUpgrade,
    upstream: OnUpgrade,
}

impl Switched {
    /// Puts the switch's headers on the response to the client (hop-by-hop stripping
    /// removed them) and splices the two connections once both are handed over.
    pub fn splice(self, response_headers: &mut HeaderMap) {
        response_headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(protocol) = self.protocol {
            response_headers.insert(header::UPGRADE, protocol);
        }
        tokio::spawn(splice(self.downstream, self.upstream));
    }
}

async fn splice(downstream: OnUpgrade, upstream: OnUpgrade) {
    let (downstream, upstream) = match tokio::try_join!(downstream, upstream) {
        Ok(both) => both,
        Err(error) => {
            debug!(%error, "the upgrade did not complete");
            return;
        }
    };
    let (mut downstream, mut upstream) = (TokioIo::new(downstream), TokioIo::new(upstream));
    match tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
        Ok((sent, received)) => debug!(sent, received, "upgraded connection closed"),
        Err(error) => debug!(%error, "upgraded connection failed"),
    }
}
