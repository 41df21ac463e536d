//! `ambit-waypoint`: the waypoint proxy. Holds a certificate for its identity from the
//! mesh CA, follows the controller's push (services, mesh workloads, routes), serves
//! HBONE on 15008 and routes each request with the L7 engine to an endpoint over HBONE.

use std::sync::{Arc, PoisonError, RwLock};

use ambit_api::{
    config::SubscriberKind,
    subscribe::{self, Subscription},
};
use ambit_certs::{CaClient, CertificateStore};
use ambit_waypoint::{
    Config, Engine, admin,
    cli::Cli,
    mesh::{
        inbound::{self, Inbound},
        outbound::HboneConnector,
        state::{MeshView, PushedState},
    },
};
use anyhow::Context as _;
use clap::Parser as _;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::info;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let identity = cli.identity().context("the waypoint's identity")?;
    info!(?cli, %identity, "starting");
    let certificates = Arc::new(CertificateStore::new(CaClient::new(
        &cli.ca_address,
        cli.ca_token_file.clone(),
        cli.cert_ttl(),
        cli.ca_root_file.as_deref(),
    )?));
    let _lease = certificates.acquire(identity.clone());
    let view = Arc::new(RwLock::new(Arc::new(MeshView::default())));
    let connector = HboneConnector::new(
        identity.clone(),
        Arc::clone(&certificates),
        Arc::clone(&view),
    );
    let empty = Config {
        namespace: cli.namespace.clone(),
        name: cli.name.clone(),
        ..Config::default()
    };
    let mut registry = Registry::default();
    let engine = Engine::new(&empty, Arc::new(connector), &mut registry)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let engine = Arc::new(engine);
    let metrics = TcpListener::bind(cli.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {} for metrics", cli.metrics_listen))?;
    tokio::spawn(admin::serve(metrics, Arc::new(registry)));

    let subscription = Subscription {
        address: cli.controller_address.clone(),
        node: cli.node_name.clone(),
        kind: SubscriberKind::Waypoint,
    };
    let (push_engine, push_view) = (Arc::clone(&engine), Arc::clone(&view));
    let (namespace, name) = (cli.namespace.clone(), cli.name.clone());
    tokio::spawn(async move {
        let mut state = PushedState::default();
        subscribe::run(subscription, &mut |update| {
            let (config, mesh) = state
                .apply(update, &namespace, &name)
                .map_err(|e| e.to_string())?;
            push_engine.update(&config).map_err(|e| e.to_string())?;
            let summary = format!(
                "{} services, {} routes, {} policies",
                config.services.len(),
                config.virtual_services.len() + config.destination_rules.len(),
                config.authorization_policies.len() + config.request_authentications.len()
            );
            *push_view.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(mesh);
            Ok(summary)
        })
        .await;
    });

    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {} for HBONE", cli.listen))?;
    info!(listen = %cli.listen, "serving HBONE");
    let inbound = Arc::new(Inbound {
        identity,
        certificates,
        engine,
        view,
    });
    tokio::select! {
        () = inbound::accept_loop(listener, inbound) => {}
        () = shutdown_signal() => info!("stopping"),
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
