//! A proxy's or controller's own small HTTP/1.1 endpoint (metrics, readiness, debug
//! pages): the accept loop and the replies every binary shares, so each one only says
//! what each path answers.

use std::{convert::Infallible, future::Future, sync::Arc};

use http_body_util::Full;
pub use hyper::StatusCode;
use hyper::{Response, body::Bytes, header::CONTENT_TYPE, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::warn;

/// A reply to a GET of an endpoint.
pub type Reply = Response<Full<Bytes>>;

/// Serves `respond(path)` on every connection of `listener` until the task is dropped.
/// `what` names the endpoint in logs.
pub async fn serve<F, R>(listener: TcpListener, what: &'static str, respond: F)
where
    F: Fn(&str) -> R + Send + Sync + 'static,
    R: Future<Output = Reply> + Send + 'static,
{
    let respond = Arc::new(respond);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                warn!(%error, endpoint = what, "accept failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let respond = Arc::clone(&respond);
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let reply = respond(request.uri().path());
                async move { Ok::<_, Infallible>(reply.await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                warn!(%error, endpoint = what, "connection failed");
            }
        });
    }
}

/// A reply with a status, a content type and a body.
#[must_use]
pub fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// Plain text.
#[must_use]
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    reply(status, "text/plain; charset=utf-8", body)
}

/// The registry in Prometheus' text format.
#[must_use]
pub fn prometheus(registry: &Registry) -> Reply {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => reply(StatusCode::OK, "text/plain; version=0.0.4", body),
        Err(error) => text(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    #[tokio::test]
    async fn serves_each_path_its_reply_over_real_http() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("demo_events", "Events seen", counter.clone());
        counter.inc_by(3);
        let registry = Arc::new(registry);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let address = listener.local_addr().expect("an address");
        let served = Arc::clone(&registry);
        let server = tokio::spawn(serve(listener, "test", move |path| {
            let reply = match path {
                "/metrics" => prometheus(&served),
                _ => text(StatusCode::NOT_FOUND, "try /metrics\n"),
            };
            async move { reply }
        }));

        let (status, body) = get(address, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("demo_events_total 3"), "{body}");
        assert_eq!(get(address, "/nope").await.0, StatusCode::NOT_FOUND);
        server.abort();
    }

    async fn get(address: std::net::SocketAddr, path: &str) -> (StatusCode, String) {
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header("host", "test")
            .body(http_body_util::Empty::<Bytes>::new())
            .expect("a request");
        let response = sender.send_request(request).await.expect("a response");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}
