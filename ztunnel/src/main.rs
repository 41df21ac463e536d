//! `ambit-ztunnel`: serves the pods the node agent hands over.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use ambit_certs::{CaClient, CertificateStore};
use ambit_workers::Workers;
use ambit_ztunnel::{
    admin::{self, AdminState},
    config::{Config, DRAIN_TIMEOUT_SECS},
    directory::Directory,
    drain::Drain,
    handoff,
    inpod::InPod,
    local_config,
    metrics::Metrics,
    policy::Policies,
    subscribe::{self, Targets},
};
use anyhow::Context as _;
use clap::Parser as _;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{info, warn};

fn main() -> anyhow::Result<()> {
    ambit_api::logging::init();
    let config = Arc::new(Config::parse());
    config.validate()?;
    // The control plane's runtime; the data path runs on the workers `serve` starts.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

async fn serve(config: Arc<Config>) -> anyhow::Result<()> {
    info!(?config, "starting");
    let certificates = match (&config.ca_address, &config.ca_token_file) {
        (Some(address), Some(token_file)) => Some(Arc::new(CertificateStore::new(CaClient::new(
            address,
            token_file.clone(),
            config.cert_ttl(),
            config.ca_root_file.as_deref(),
        )?))),
        _ => {
            info!("no --ca-address: workload certificates are not obtained");
            None
        }
    };

    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let drain = Arc::new(Drain::default());
    let workers = Workers::start(config.worker_threads, "ztunnel-data")
        .context("cannot start the data path's threads")?;
    let mut inpod = InPod::new(
        config.bpffs_dir.clone(),
        Arc::clone(&metrics),
        Arc::clone(&drain),
        workers,
    )
    .with_identities(config.trust_domain.clone(), certificates.clone());
    let targets = Targets {
        directory: Arc::new(Directory::new()),
        policies: Arc::new(Policies::new()),
    };
    let source = match (
        &config.controller_address,
        &config.node_name,
        &config.local_config,
    ) {
        (Some(address), Some(node), _) => Some(tokio::spawn(subscribe::run(
            address.clone(),
            node.clone(),
            config.ca_token_file.clone(),
            config.ca_root_file.clone(),
            targets.clone(),
        ))),
        (None, _, Some(path)) => Some(tokio::spawn(local_config::follow(
            path.clone(),
            targets.clone(),
        ))),
        _ => None,
    };
    if source.is_some() {
        targets.policies.register(&mut registry);
        inpod = inpod.with_policies(Arc::clone(&targets.policies));
        if certificates.is_some() {
            inpod = inpod.with_directory(Arc::clone(&targets.directory));
        } else {
            warn!("a config source without --ca-address: no certificates, so no HBONE");
        }
    } else {
        info!(
            "no --controller-address or --local-config: every connection is relayed in plaintext"
        );
    }
    let inpod = Arc::new(inpod);
    let state = Arc::new(AdminState {
        registry,
        inpod: Arc::clone(&inpod),
    });
    for addr in [
        config.metrics_addr,
        config.readiness_addr,
        config.admin_addr,
    ] {
        let listener = bind(addr).await?;
        tokio::spawn(admin::serve(listener, Arc::clone(&state)));
    }
    tokio::spawn(handoff::run(Arc::clone(&config), Arc::clone(&inpod)));
    info!("ready for the agent");
    shutdown_signal().await;
    // Stop accepting (enrolled pods fail closed from here), let connections finish.
    inpod.stop_all();
    info!(in_flight = drain.active(), "draining");
    let deadline = Duration::from_secs(DRAIN_TIMEOUT_SECS);
    if tokio::time::timeout(deadline, drain.idle()).await.is_err() {
        warn!(
            in_flight = drain.active(),
            "drain deadline passed; closing what is left"
        );
    }
    info!("stopped");
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr} — is another ztunnel running on this node?")
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
