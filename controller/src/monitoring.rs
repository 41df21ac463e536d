//! The controller's monitoring endpoint (`--monitoring-listen`, 15014 like istiod's):
//! Prometheus metrics of the config push or of the CA, `/healthz/ready`, and for the
//! push `/debug/syncz` — each subscriber's node, kind, and the versions sent and
//! acknowledged, with its last NACK (istiod's `/debug/syncz`).
//!
//! The counters live where they are counted ([`ConfigServer`], [`CaMetrics`]); the
//! collectors here read them at each scrape.

use std::{collections::BTreeMap, sync::Arc};

use ambit_api::http_endpoints::{self, Reply, StatusCode, prometheus, reply, text};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use serde_json::json;
use tokio::net::TcpListener;

use crate::{ca::service::CaMetrics, push::ConfigServer, snapshot::kind_name};

/// Serves the push's metrics and `/debug/syncz` on `listener` until dropped.
pub async fn serve_push(listener: TcpListener, server: ConfigServer) {
    serve(
        listener,
        push_registry(server.clone()),
        move |path| match path {
            "/debug/syncz" => Some(syncz(&server)),
            _ => None,
        },
    )
    .await;
}

/// Serves the CA's metrics on `listener` until dropped.
pub async fn serve_ca(listener: TcpListener, metrics: Arc<CaMetrics>) {
    serve(listener, ca_registry(metrics), |_| None).await;
}

/// The push's metrics, read from `server` at each scrape.
#[must_use]
pub fn push_registry(server: ConfigServer) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(PushCollector(server)));
    registry
}

/// The CA's metrics, read from `metrics` at each scrape.
#[must_use]
pub fn ca_registry(metrics: Arc<CaMetrics>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(CaCollector(metrics)));
    registry
}

/// `/metrics`, `/healthz/ready`, and whatever `extra` answers.
async fn serve(
    listener: TcpListener,
    registry: Registry,
    extra: impl Fn(&str) -> Option<Reply> + Send + Sync + 'static,
) {
    http_endpoints::serve(listener, "controller monitoring", move |path| {
        let reply = match path {
            "/metrics" | "/stats/prometheus" => prometheus(&registry),
            "/healthz/ready" => text(StatusCode::OK, "ready\n"),
            _ => extra(path).unwrap_or_else(|| {
                text(
                    StatusCode::NOT_FOUND,
                    "endpoints: /metrics /healthz/ready /debug/syncz (serve only)\n",
                )
            }),
        };
        async move { reply }
    })
    .await;
}

fn syncz(server: &ConfigServer) -> Reply {
    let subscribers: Vec<_> = server
        .subscribers()
        .into_iter()
        .map(|s| {
            json!({
                "id": s.id,
                "node": s.node,
                "kind": kind_name(s.kind),
                "sent_version": s.sent_version,
                "acked_version": s.acked_version,
                "nacks": s.nacks,
                "last_nack": s.last_nack.map(|n| json!({"version": n.version, "error": n.error})),
            })
        })
        .collect();
    reply(
        StatusCode::OK,
        "application/json",
        json!({ "subscribers": subscribers }).to_string(),
    )
}

#[derive(Debug)]
struct PushCollector(ConfigServer);

impl Collector for PushCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.0.counts();
        for (name, help, value) in [
            (
                "ambit_push_updates",
                "Config updates sent to subscribers",
                counts.updates,
            ),
            (
                "ambit_push_acks",
                "Config updates subscribers acknowledged",
                counts.acks,
            ),
            (
                "ambit_push_nacks",
                "Config updates subscribers rejected (NACK): they stay on their last version",
                counts.nacks,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value).encode(metric)?;
        }
        encode_by_reason(
            &mut encoder,
            (
                "ambit_push_subscriptions_refused",
                "Subscriptions refused, by reason (the log line says which and why)",
            ),
            &[
                ("unauthenticated", counts.unauthenticated),
                ("permission_denied", counts.permission_denied),
                ("unavailable", counts.unavailable),
            ],
        )?;
        let mut by_kind: BTreeMap<&str, Connected> = BTreeMap::new();
        for subscriber in self.0.subscribers() {
            let entry = by_kind.entry(kind_name(subscriber.kind)).or_default();
            entry.subscribers += 1;
            if subscriber.acked_version != Some(subscriber.sent_version) {
                entry.behind += 1;
            }
        }
        encode_by_kind(
            &mut encoder,
            ("ambit_push_subscribers", "Connected subscribers"),
            &by_kind,
            |c| c.subscribers,
        )?;
        encode_by_kind(
            &mut encoder,
            (
                "ambit_push_subscribers_behind",
                "Connected subscribers that have not acknowledged the last version sent",
            ),
            &by_kind,
            |c| c.behind,
        )
    }
}

/// The connected subscribers of one kind.
#[derive(Debug, Default)]
struct Connected {
    subscribers: i64,
    behind: i64,
}

/// One gauge with a `kind` label.
fn encode_by_kind(
    encoder: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    by_kind: &BTreeMap<&str, Connected>,
    value: impl Fn(&Connected) -> i64,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (kind, connected) in by_kind {
        let labels = [("kind", *kind)];
        ConstGauge::new(value(connected)).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

#[derive(Debug)]
struct CaCollector(Arc<CaMetrics>);

impl Collector for CaCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.0.snapshot();
        let issued = encoder.encode_descriptor(
            "ambit_ca_certificates_issued",
            "Workload certificates signed",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(counts.issued).encode(issued)?;
        encode_by_reason(
            &mut encoder,
            (
                "ambit_ca_requests_refused",
                "Certificate requests refused, by reason (the log line says which and why)",
            ),
            &[
                ("unauthenticated", counts.unauthenticated),
                ("permission_denied", counts.permission_denied),
                ("invalid_argument", counts.invalid_argument),
                ("internal", counts.internal),
            ],
        )
    }
}

/// One counter with a `reason` label.
fn encode_by_reason(
    encoder: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    by_reason: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (reason, value) in by_reason {
        let labels = [("reason", *reason)];
        ConstCounter::new(*value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}
