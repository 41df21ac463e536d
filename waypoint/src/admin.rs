//! The waypoint's own HTTP endpoints: Prometheus metrics at `/metrics` (Istio's
//! `istio_requests_total` and friends) and readiness at `/healthz/ready` (15020); and, on
//! the admin port (15000, localhost), `/clusters`: what each cluster's endpoints are
//! doing, in Envoy's format.

use std::{fmt::Write as _, sync::Arc};

use ambit_api::http_endpoints::{self, Reply, prometheus, text};
use hyper::StatusCode;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::{Engine, RouteTable};

/// What Istio sets an unset circuit breaker to, and so what Envoy shows for it.
const UNLIMITED: u32 = u32::MAX;

/// Serves metrics and readiness on `listener` forever.
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

/// Serves the admin endpoints on `listener` forever: keep it on localhost.
pub async fn serve_admin(listener: TcpListener, engine: Arc<Engine>) {
    http_endpoints::serve(listener, "waypoint admin", move |path| {
        let reply = match path {
            "/clusters" => text(StatusCode::OK, clusters(&engine.table())),
            _ => text(StatusCode::NOT_FOUND, "try /clusters\n"),
        };
        async move { reply }
    })
    .await;
}

/// Envoy's `/clusters` text, one `cluster::field::value` or
/// `cluster::endpoint::field::value` line each: every cluster's circuit breakers, and
/// each endpoint's requests in flight and health, `/failed_outlier_check` while outlier
/// detection has it out. So `curl localhost:15000/clusters | grep failed_outlier_check`
/// answers as on an Envoy waypoint.
#[must_use]
pub fn clusters(table: &RouteTable) -> String {
    let mut clusters: Vec<_> = table.clusters().collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    let mut lines = String::new();
    for cluster in clusters {
        let name = &cluster.name;
        for (breaker, max) in cluster.thresholds() {
            let max = max.map_or_else(|| UNLIMITED.to_string(), |max| max.to_string());
            let _ = writeln!(lines, "{name}::default_priority::{breaker}::{max}");
        }
        for (endpoint, ejected) in cluster.endpoints().iter().zip(cluster.ejected_now()) {
            let address = endpoint.address;
            let health = if ejected {
                "/failed_outlier_check"
            } else {
                "healthy"
            };
            let _ = writeln!(
                lines,
                "{name}::{address}::rq_active::{}",
                endpoint.active_requests()
            );
            let _ = writeln!(lines, "{name}::{address}::health_flags::{health}");
        }
    }
    lines
}
