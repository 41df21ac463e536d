//! `ambit-controller`: Ambit's control plane. `validate` checks manifests; `serve` pushes
//! the model of a watched config folder or of the Kubernetes API to agents, ztunnels and
//! waypoints (and, from the Kubernetes API, runs a waypoint for each waypoint Gateway);
//! `serve-ca` runs the certificate authority.

use std::{io, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use ambit_controller::{
    ca::{
        self, CaConfig,
        auth::{Authenticator, TokenFiles},
        material::CaMaterial,
        service::CaService,
        sign::Signer,
        token_review::{TokenReviewError, TokenReviewer},
    },
    cli::{CallerAuth, Cli, Command, ModelOrigin, ServingTls},
    crds, deployer, input, monitoring, push, route_status,
    serving::{self, ServingCert},
    snapshot,
    source::{FolderSource, KubeSource, ModelSource},
    validate::{self, Severity},
};
use anyhow::Context as _;
use clap::Parser as _;

/// A started source of the model; dropping it stops the watch.
enum RunningSource {
    Folder(FolderSource),
    Kube(KubeSource, kube::Client),
}

impl RunningSource {
    /// Reads the model once (for Kubernetes: lists every kind, retrying until it can),
    /// then watches it.
    async fn start(origin: &ModelOrigin, trust_domain: &str) -> anyhow::Result<Self> {
        if let Some(config_dir) = &origin.config_dir {
            return Ok(Self::Folder(FolderSource::start(config_dir, trust_domain)?));
        }
        Ok(Self::kube(kube_client().await?, trust_domain).await)
    }

    /// Watches the Kubernetes API through `client`.
    async fn kube(client: kube::Client, trust_domain: &str) -> Self {
        Self::Kube(
            KubeSource::start(client.clone(), trust_domain).await,
            client,
        )
    }

    fn subscribe(&self) -> ModelSource {
        match self {
            Self::Folder(source) => source.subscribe(),
            Self::Kube(source, _) => source.subscribe(),
        }
    }
}

/// A client of the cluster the controller runs in, or of the kubeconfig's.
async fn kube_client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default().await.context(
        "cannot configure a Kubernetes client: not in a cluster, and no usable kubeconfig (KUBECONFIG, ~/.kube/config)",
    )
}

/// Binds `address` for `what`.
async fn bind(address: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| {
            format!("cannot listen on {address} for {what}: is another controller running?")
        })
}

/// Kubernetes mode's authenticator, configured by `callers`.
fn token_reviewer(
    client: kube::Client,
    callers: &CallerAuth,
) -> Result<TokenReviewer, TokenReviewError> {
    TokenReviewer::new(
        client,
        &callers.token_audience,
        &callers.node_service_accounts,
    )
}

/// Who may subscribe to the push, and how that is checked (for the log): the tokens
/// folder, else a TokenReview with `--kube`, else (a warning) everyone.
fn push_gate(
    callers: &CallerAuth,
    source: &RunningSource,
) -> anyhow::Result<(push::Gate, &'static str)> {
    if let Some(tokens_dir) = &callers.tokens_dir {
        return Ok((
            push::Gate::new(TokenFiles::load(tokens_dir)?),
            "bootstrap token files",
        ));
    }
    if let RunningSource::Kube(_, client) = source {
        let reviewer = token_reviewer(client.clone(), callers)?;
        return Ok((push::Gate::new(reviewer), "TokenReview"));
    }
    tracing::warn!(
        "subscribers are not authenticated: anyone who reaches the push may subscribe as any node and read the whole mesh — pass --tokens-dir (the CA's) to check their tokens"
    );
    Ok((push::Gate::open(), "none"))
}

/// Where `serve-ca` listens, and its TLS.
struct CaListen {
    grpc: SocketAddr,
    monitoring: SocketAddr,
    tls: ServingTls,
}

/// The namespace the controller runs in, in Kubernetes mode.
fn namespace(source: &RunningSource) -> Option<&str> {
    match source {
        RunningSource::Kube(_, client) => Some(client.default_namespace()),
        RunningSource::Folder(_) => None,
    }
}

/// This server's own certificate, issued by `signer` for the names clients use and
/// renewed at half-life in the background; the acceptor that serves it.
fn serving_tls(
    signer: Arc<Signer>,
    tls: &ServingTls,
    namespace: Option<&str>,
    listen: SocketAddr,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let names = serving::server_names(&tls.server_names, namespace, listen);
    let ttl = Duration::from_secs(tls.serving_cert_ttl_secs);
    let cert = ServingCert::issue(signer, &names, ttl)?;
    tracing::info!(?names, ?ttl, "issued the serving certificate");
    tokio::spawn(Arc::clone(&cert).renew());
    Ok(cert.acceptor()?)
}

/// Serves `service` on `listen`, its placement following `source`, until a signal.
async fn serve_ca<A: Authenticator>(
    service: CaService<A>,
    source: RunningSource,
    trust_domain: String,
    listen: CaListen,
) -> anyhow::Result<ExitCode> {
    // Placement follows the model: a pod scheduled later gets its identity.
    tokio::spawn(ca::follow_placement(
        source.subscribe(),
        service.clone(),
        trust_domain,
    ));
    let listener = bind(listen.grpc, "gRPC").await?;
    let monitoring = bind(listen.monitoring, "monitoring").await?;
    tokio::spawn(monitoring::serve_ca(monitoring, service.metrics()));
    let tls = serving_tls(
        Arc::clone(service.signer()),
        &listen.tls,
        namespace(&source),
        listen.grpc,
    )?;
    let listen = listener.local_addr().unwrap_or(listen.grpc);
    tracing::info!(%listen, "serving IstioCertificateService (gRPC over TLS)");
    ca::service::serve(listener, service, tls, shutdown_signal()).await?;
    drop(source);
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

fn main() -> anyhow::Result<ExitCode> {
    match Cli::parse().command {
        Command::Validate { files } => {
            let manifests = input::read(&files, io::stdin().lock())?;
            let report = validate::validate(&manifests);
            for diagnostic in &report.diagnostics {
                println!("{diagnostic}");
            }
            println!("{}", report.summary());
            Ok(if report.count(Severity::Error) > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Serve {
            origin,
            callers,
            waypoints,
            ca_dir,
            tls,
            listen,
            monitoring_listen,
            trust_domain,
        } => {
            ambit_api::logging::init();
            ca::identity::check_trust_domain(&trust_domain)?;
            let material = CaMaterial::load_or_create(&ca_dir, &trust_domain)?;
            let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
            runtime.block_on(async {
                let source = RunningSource::start(&origin, &trust_domain).await?;
                let root_pem = material.root_pem().to_owned();
                if let RunningSource::Kube(_, client) = &source {
                    tokio::spawn(deployer::publish_root(
                        client.clone(),
                        client.default_namespace().to_owned(),
                        root_pem.clone(),
                        Duration::from_secs(waypoints.resync_secs),
                    ));
                    tracing::info!(?waypoints, "running a waypoint for each waypoint Gateway");
                    let template = deployer::Template {
                        flags: waypoints,
                        trust_domain: trust_domain.clone(),
                        root_pem,
                    };
                    tokio::spawn(deployer::run(client.clone(), template, source.subscribe()));
                    tokio::spawn(route_status::run(client.clone(), source.subscribe()));
                }
                let signer = Arc::new(Signer::new(material, &trust_domain));
                let tls = serving_tls(signer, &tls, namespace(&source), listen)?;
                let listener = bind(listen, "gRPC").await?;
                let monitoring = bind(monitoring_listen, "monitoring").await?;
                let listen = listener.local_addr().unwrap_or(listen);
                let (gate, authentication) = push_gate(&callers, &source)?;
                tracing::info!(
                    %listen,
                    config_dir = ?origin.config_dir,
                    kube = origin.kube,
                    authentication,
                    %trust_domain,
                    "serving ConfigService (gRPC over TLS)"
                );
                let server = push::ConfigServer::new(source.subscribe(), gate);
                tokio::spawn(monitoring::serve_push(monitoring, server.clone()));
                push::serve(listener, server, tls, shutdown_signal()).await?;
                drop(source);
                tracing::info!("stopped");
                anyhow::Ok(ExitCode::SUCCESS)
            })
        }
        Command::Snapshot {
            config_dir,
            node,
            kind,
            out,
            trust_domain,
        } => {
            let subscriber = push::select::Subscriber { node, kind };
            let (diagnostics, count) =
                snapshot::write(&config_dir, &trust_domain, &subscriber, &out)?;
            for diagnostic in &diagnostics {
                eprintln!("{diagnostic}");
            }
            println!(
                "wrote {count} resources for {} to {}",
                subscriber.node,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Crds { out, check } => {
            if check {
                crds::check(&out)?;
                println!("{} is up to date", out.display());
            } else {
                for path in crds::write(&out)? {
                    println!("wrote {}", path.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ServeCa {
            ca_dir,
            tls,
            callers,
            origin,
            listen,
            monitoring_listen,
            trust_domain,
        } => {
            ambit_api::logging::init();
            let listen = CaListen {
                grpc: listen,
                monitoring: monitoring_listen,
                tls,
            };
            let config = CaConfig {
                ca_dir,
                config_dir: origin.config_dir.clone(),
                trust_domain,
            };
            let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
            runtime.block_on(async {
                let trust_domain = config.trust_domain.clone();
                if let Some(tokens_dir) = &callers.tokens_dir {
                    let service = ca::build(&config, TokenFiles::load(tokens_dir)?)?;
                    let source = RunningSource::start(&origin, &trust_domain).await?;
                    return serve_ca(service, source, trust_domain, listen).await;
                }
                let client = kube_client().await?;
                let service = ca::build(&config, token_reviewer(client.clone(), &callers)?)?;
                let source = RunningSource::kube(client, &trust_domain).await;
                serve_ca(service, source, trust_domain, listen).await
            })
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; stop with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
