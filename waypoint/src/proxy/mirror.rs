//! Mirroring (`mirror`, `mirrors`): a copy of the request goes to another destination,
//! in the background; its response is read and dropped, and its failures only logged.
//!
//! As Envoy shadows: the copy carries the forwarded request's headers and body with
//! `-shadow` appended to the host of its authority (`reviews:9080` →
//! `reviews-shadow:9080`), passes the mirror cluster's `connectionPool` limits, and is
//! bounded by the route's timeout. Only requests whose body is replayable (see
//! `forward`) are mirrored.

use std::{sync::Arc, time::Duration};

use http::{Uri, uri::Authority};
use http_body_util::BodyExt;

use super::upstream::Upstreams;
use crate::{host::split_authority, table::Cluster};

/// A copy of a request, ready to send.
#[derive(Debug)]
pub struct Shadow {
    pub cluster: Arc<Cluster>,
    pub request: http::Request<super::Body>,
    pub timeout: Option<Duration>,
}

/// `uri` with `-shadow` appended to its host.
#[must_use]
pub fn shadow_uri(uri: &Uri) -> Option<Uri> {
    let authority = uri.authority()?.as_str();
    let (host, port) = split_authority(authority);
    let shadow = match port {
        Some(port) => format!("{host}-shadow:{port}"),
        None => format!("{host}-shadow"),
    };
    let mut parts = uri.clone().into_parts();
    parts.authority = Some(Authority::try_from(shadow).ok()?);
    Uri::from_parts(parts).ok()
}

/// Sends `shadow` in the background.
pub fn send(upstreams: &Arc<Upstreams>, shadow: Shadow) {
    let upstreams = Arc::clone(upstreams);
    tokio::spawn(async move {
        let Shadow {
            cluster,
            request,
            timeout,
        } = shadow;
        let Ok(_admission) = cluster.admit().await else {
            tracing::debug!(
                cluster = cluster.name,
                "mirror overflowed its connection pool"
            );
            return;
        };
        let Some(endpoint) = cluster.pick(None, &[]) else {
            tracing::debug!(cluster = cluster.name, "mirror has no endpoint");
            return;
        };
        let _in_flight = endpoint.start_request();
        let exchange = async {
            let response = upstreams
                .send(
                    endpoint.address,
                    cluster.pooling(cluster.speaks_http2()),
                    request,
                )
                .await?;
            let status = response.status();
            // Read to the end so the connection goes back to the pool.
            let _ = response.into_body().collect().await;
            Ok::<_, hyper_util::client::legacy::Error>(status)
        };
        let outcome = match timeout {
            Some(limit) => tokio::time::timeout(limit, exchange).await.ok(),
            None => Some(exchange.await),
        };
        match outcome {
            Some(Ok(status)) => {
                tracing::debug!(cluster = cluster.name, endpoint = %endpoint.address, status = status.as_u16(), "mirrored")
            }
            Some(Err(error)) => {
                tracing::debug!(cluster = cluster.name, endpoint = %endpoint.address, %error, "mirror failed")
            }
            None => {
                tracing::debug!(cluster = cluster.name, endpoint = %endpoint.address, "mirror timed out")
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shadow_host_keeps_the_port_path_and_query() {
        let uri: Uri = "http://reviews:9080/a?b=1".parse().unwrap();
        assert_eq!(
            shadow_uri(&uri).unwrap(),
            "http://reviews-shadow:9080/a?b=1"
        );
        let uri: Uri = "http://reviews.shop.svc.cluster.local/".parse().unwrap();
        assert_eq!(
            shadow_uri(&uri).unwrap(),
            "http://reviews.shop.svc.cluster.local-shadow/"
        );
    }
}
