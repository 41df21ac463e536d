//! `ambit-waypoint`: the waypoint proxy. Holds a certificate for its identity from the
//! mesh CA, follows the controller's push (services, mesh workloads, routes), serves
//! HBONE on 15008 and routes each request with the L7 engine to an endpoint over HBONE.
//! With `--ingress` it is the ingress gateway: it serves the ports of the Istio Gateways
//! that select its pod instead of HBONE, and routes the same way.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, PoisonError, RwLock},
};

use ambit_api::{
    config::SubscriberKind,
    istio::GatewaySpec,
    subscribe::{self, Subscription},
};
use ambit_certs::{CaClient, CertificateStore};
use ambit_waypoint::{
    Config, Engine, Named, Role, admin,
    cli::Cli,
    gateway::{
        listeners::{Listeners, PortMode},
        servers::{PortProtocol, Servers},
        tls::{self, Credentials},
    },
    mesh::{
        inbound::{self, Inbound},
        outbound::HboneConnector,
        state::{MeshView, PushedState, Serving},
    },
    telemetry::spans::SpanReporter,
};
use ambit_workers::Workers;
use anyhow::Context as _;
use clap::Parser as _;
use prometheus_client::registry::Registry;
use rustls::pki_types::{CertificateDer, pem::PemObject as _};
use tokio::net::TcpListener;
use tracing::{info, warn};

// The control plane and the accept loops run on this thread; requests on the workers'.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    ambit_api::logging::init();
    let cli = Cli::parse();
    let identity = cli.identity().context("the waypoint's identity")?;
    info!(?cli, %identity, "starting");
    let certificates = Arc::new(CertificateStore::new(CaClient::new(
        &cli.ca_address,
        cli.ca_token_file.clone(),
        cli.cert_ttl(),
        Some(&cli.ca_root_file),
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
        trace_sampling_percent: Some(cli.trace_sampling),
        ..Config::default()
    };
    let mut registry = Registry::default();
    let engine = Engine::new(&empty, Arc::new(connector), &mut registry)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .trusting_for_jwks(jwks_roots(cli.jwks_ca_file.as_deref())?);
    let engine = match &cli.zipkin_address {
        Some(collector) => engine.reporting_spans(SpanReporter::start(
            collector.clone(),
            format!("{}.{}", cli.name, cli.namespace),
        )),
        None => engine,
    };
    let engine = Arc::new(engine);
    let metrics = TcpListener::bind(cli.metrics_listen)
        .await
        .with_context(|| format!("cannot listen on {} for metrics", cli.metrics_listen))?;
    tokio::spawn(admin::serve(metrics, Arc::new(registry)));
    let admin = TcpListener::bind(cli.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} for admin", cli.admin_listen))?;
    tokio::spawn(admin::serve_admin(admin, Arc::clone(&engine)));

    let kind = if cli.ingress {
        SubscriberKind::Gateway
    } else {
        SubscriberKind::Waypoint
    };
    let subscription = Subscription {
        address: cli.controller_address.clone(),
        root_file: Some(cli.ca_root_file.clone()),
        node: cli.node_name.clone(),
        kind,
        token_file: Some(cli.ca_token_file.clone()),
    };
    let workers = Arc::new(
        Workers::start(cli.worker_threads, "waypoint-data")
            .context("cannot start the request threads")?,
    );
    let listeners = Arc::new(Listeners::new(
        cli.listen.ip(),
        Arc::clone(&engine),
        Arc::clone(&workers),
    ));
    let (push_engine, push_view, push_listeners) = (
        Arc::clone(&engine),
        Arc::clone(&view),
        Arc::clone(&listeners),
    );
    let (namespace, name, pod) = (
        cli.namespace.clone(),
        cli.name.clone(),
        cli.pod_name.clone(),
    );
    let (ingress, trace_sampling) = (cli.ingress, cli.trace_sampling);
    tokio::spawn(async move {
        let mut state = PushedState::default();
        subscribe::run(subscription, &mut |update| {
            let serving = match (ingress, pod.as_deref()) {
                (true, Some(pod)) => Serving::Ingress { pod },
                _ => Serving::Waypoint,
            };
            let mut pushed = state
                .apply(&update, &namespace, &name, serving)
                .map_err(|e| e.to_string())?;
            pushed.config.trace_sampling_percent = Some(trace_sampling);
            push_engine
                .update(&pushed.config)
                .map_err(|e| e.to_string())?;
            let config = &pushed.config;
            let mut summary = format!(
                "{} services, {} routes, {} policies, {} Telemetry objects",
                config.services.len(),
                config.virtual_services.len()
                    + config.destination_rules.len()
                    + config.http_routes.len()
                    + config.tcp_routes.len()
                    + config.tls_routes.len(),
                config.authorization_policies.len() + config.request_authentications.len(),
                config.telemetries.len()
            );
            if let Role::Ingress(gateways) = &config.role {
                let ports = gateway_ports(gateways, &namespace, &pushed.credentials);
                for error in push_listeners.reconcile(&ports) {
                    warn!(%error, "a Gateway port is not served");
                }
                summary += &format!(", {} Gateways on ports {:?}", gateways.len(), ports.keys());
            }
            *push_view.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(pushed.mesh);
            Ok(summary)
        })
        .await;
    });

    if cli.ingress {
        info!(
            pod = cli.pod_name.as_deref().unwrap_or_default(),
            "serving as an ingress gateway"
        );
        shutdown_signal().await;
        info!("stopping");
        return Ok(());
    }
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
        () = inbound::accept_loop(listener, inbound, workers) => {}
        () = shutdown_signal() => info!("stopping"),
    }
    Ok(())
}

/// What each port of `gateways` serves; an HTTPS port whose certificate cannot be set up
/// is left closed (and logged) while the others are served.
fn gateway_ports(
    gateways: &[Named<GatewaySpec>],
    namespace: &str,
    credentials: &Credentials,
) -> BTreeMap<u16, PortMode> {
    let (tls, errors) = tls::port_configs(gateways, namespace, credentials);
    for error in errors {
        warn!(%error, "an HTTPS server cannot be served");
    }
    Servers::compile(gateways)
        .ports()
        .filter_map(|(port, protocol)| match (protocol, tls.get(&port)) {
            (PortProtocol::Http, _) => Some((port, PortMode::Http)),
            (PortProtocol::Passthrough | PortProtocol::Tcp, _) => Some((port, PortMode::Relay)),
            (PortProtocol::Https, Some(config)) => {
                Some((port, PortMode::Https(Arc::clone(config))))
            }
            (PortProtocol::TlsTerminated, Some(config)) => {
                Some((port, PortMode::TlsRelay(Arc::clone(config))))
            }
            (PortProtocol::Https | PortProtocol::TlsTerminated, None) => None,
        })
        .collect()
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// The certificates of `--jwks-ca-file`, if given.
fn jwks_roots(file: Option<&Path>) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let Some(file) = file else {
        return Ok(Vec::new());
    };
    let roots = CertificateDer::pem_file_iter(file)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("--jwks-ca-file {}: not PEM certificates", file.display()))?;
    anyhow::ensure!(
        !roots.is_empty(),
        "--jwks-ca-file {}: no certificate in it",
        file.display()
    );
    Ok(roots)
}
