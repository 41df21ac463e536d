//! ztunnel's HTTP endpoints: Prometheus metrics (15020), readiness (15021) and the
//! admin config dump (15000, localhost).

use std::{convert::Infallible, sync::Arc};

use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Bytes, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::warn;

use crate::inpod::InPod;

/// What the endpoints read.
#[derive(Debug)]
pub struct AdminState {
    pub registry: Registry,
    pub inpod: Arc<InPod>,
}

/// Serves every endpoint on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "admin accept failed");
                continue;
            }
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(respond(&request, &state)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                warn!(%error, "admin connection failed");
            }
        });
    }
}

fn respond(request: &Request<hyper::body::Incoming>, state: &AdminState) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/metrics" | "/stats/prometheus" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
                Ok(()) => reply(StatusCode::OK, "text/plain; version=0.0.4", text),
                Err(error) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    error.to_string(),
                ),
            }
        }
        "/healthz/ready" => {
            if state.inpod.is_synced() {
                reply(StatusCode::OK, "text/plain", "ready\n".to_owned())
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "waiting for the agent's snapshot\n".to_owned(),
                )
            }
        }
        "/config_dump" => reply(
            StatusCode::OK,
            "application/json",
            state.inpod.config_dump(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "endpoints: /metrics /stats/prometheus /healthz/ready /config_dump\n".to_owned(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
