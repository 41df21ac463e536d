//! ztunnel's HTTP endpoints: Prometheus metrics (15020), readiness (15021) and the
//! admin config dump (15000, localhost).

use std::sync::Arc;

use ambit_api::http_endpoints::{self, Reply, prometheus, reply, text};
use hyper::StatusCode;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::inpod::InPod;

/// What the endpoints read.
#[derive(Debug)]
pub struct AdminState {
    pub registry: Registry,
    pub inpod: Arc<InPod>,
}

/// Serves every endpoint on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>) {
    http_endpoints::serve(listener, "ztunnel admin", move |path| {
        let reply = respond(path, &state);
        async move { reply }
    })
    .await;
}

fn respond(path: &str, state: &AdminState) -> Reply {
    match path {
        "/metrics" | "/stats/prometheus" => prometheus(&state.registry),
        "/healthz/ready" => {
            if state.inpod.is_synced() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "waiting for the agent's snapshot\n",
                )
            }
        }
        "/config_dump" => reply(
            StatusCode::OK,
            "application/json",
            state.inpod.config_dump(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "endpoints: /metrics /stats/prometheus /healthz/ready /config_dump\n",
        ),
    }
}
