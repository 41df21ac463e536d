//! The waypoint's own HTTP endpoint (15020): Prometheus metrics at `/metrics` (Istio's
//! `istio_requests_total` and friends) and readiness at `/healthz/ready`.

use std::sync::Arc;

use ambit_api::http_endpoints::{self, Reply, prometheus, text};
use hyper::StatusCode;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Serves the endpoints on `listener` forever.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>) {
    http_endpoints::serve(listener, "waypoint metrics", move |path| {
        let reply = respond(path, &registry);
        async move { reply }
    })
    .await;
}

fn respond(path: &str, registry: &Registry) -> Reply {
    match path {
        "/metrics" | "/stats/prometheus" => prometheus(registry),
        "/healthz/ready" => text(StatusCode::OK, ""),
        _ => text(StatusCode::NOT_FOUND, "try /metrics or /healthz/ready\n"),
    }
}
