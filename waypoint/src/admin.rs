//! The waypoint's own HTTP endpoint (15020): Prometheus metrics at `/metrics` (Istio's
//! `istio_requests_total` and friends) and readiness at `/healthz/ready`.

use std::{convert::Infallible, sync::Arc};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::warn;

/// Serves the endpoints on `listener` forever.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::task::yield_now().await;
            continue;
        };
        let registry = Arc::clone(&registry);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let response = respond(request.uri().path(), &registry);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                warn!(%error, "metrics connection failed");
            }
        });
    }
}

fn respond(path: &str, registry: &Registry) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/metrics" | "/stats/prometheus" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, registry) {
                Ok(()) => (StatusCode::OK, text),
                Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
            }
        }
        "/healthz/ready" => (StatusCode::OK, String::new()),
        _ => (
            StatusCode::NOT_FOUND,
            "try /metrics or /healthz/ready\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
