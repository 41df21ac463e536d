//! `ambit-controller`: Ambit's control plane. `validate` checks manifests; `serve` pushes
//! the model of a watched config folder or of the Kubernetes API to agents, ztunnels and
//! waypoints; `serve-ca` runs the certificate authority.

use std::{io, net::SocketAddr, path::PathBuf, process::ExitCode};

use ambit_api::config::SubscriberKind;
use ambit_controller::{
    ca::{
        self, CaConfig,
        auth::{Authenticator, TokenFiles},
        identity::DEFAULT_TRUST_DOMAIN,
        service::CaService,
        token_review::{DEFAULT_AUDIENCE, DEFAULT_NODE_SERVICE_ACCOUNT, TokenReviewer},
    },
    crds, input, push, snapshot,
    source::{FolderSource, KubeSource, ModelSource},
    validate::{self, Severity},
};
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "ambit-controller", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check Istio manifests and print every problem, with its object, file, document and
    /// field path; exit 1 if there is an error (like `istioctl analyze`).
    Validate {
        /// A manifest file, a folder of `*.yaml`/`*.yml` files (recursively), or `-` for
        /// standard input. Repeatable.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
    },
    /// Watch a folder of Kubernetes and Istio manifests, or the Kubernetes API, and push
    /// the validated model to subscribed agents, ztunnels and waypoints over gRPC
    /// (plaintext for now).
    Serve {
        #[command(flatten)]
        origin: ModelOrigin,
        /// Where to listen for gRPC (`ambit.config.v1.ConfigService`).
        #[arg(long, env = "AMBIT_CONFIG_LISTEN", default_value = "127.0.0.1:15010")]
        listen: SocketAddr,
        /// The SPIFFE trust domain of the workloads' identities.
        #[arg(long, env = "AMBIT_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
    },
    /// Write what the push would send one subscriber to a file (a protobuf
    /// `ConfigUpdate`), for `ambit-ztunnel --local-config`.
    Snapshot {
        #[arg(long, env = "AMBIT_CONFIG_DIR")]
        config_dir: PathBuf,
        /// The subscriber's node.
        #[arg(long)]
        node: String,
        /// `ztunnel`, `agent` or `waypoint`.
        #[arg(long, default_value = "ztunnel", value_parser = snapshot::kind)]
        kind: SubscriberKind,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, env = "AMBIT_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
    },
    /// Write the CRDs of the Istio kinds Ambit reads, generated from its types.
    Crds {
        /// The folder to write them into (`deploy/crds`).
        #[arg(long)]
        out: PathBuf,
        /// Only check the folder is up to date (exit 1 if not).
        #[arg(long)]
        check: bool,
    },
    /// Serve the certificate authority: Istio's `IstioCertificateService` over gRPC
    /// (plaintext for now), signing SPIFFE certificates for the workloads on each caller's
    /// node.
    ServeCa {
        /// Istio's plug-in CA folder (ca-cert.pem, ca-key.pem, cert-chain.pem,
        /// root-cert.pem); a new root is generated into it when it holds none of them.
        #[arg(long, env = "AMBIT_CA_DIR")]
        ca_dir: PathBuf,
        /// One file per node, named after the node, holding its bootstrap token (with
        /// `--config-dir`; with `--kube` callers present service-account tokens, checked
        /// with a TokenReview).
        #[arg(
            long,
            env = "AMBIT_CA_TOKENS_DIR",
            required_unless_present = "kube",
            conflicts_with = "kube"
        )]
        tokens_dir: Option<PathBuf>,
        /// With `--kube`: the audience the callers' projected tokens must be for.
        #[arg(long, env = "AMBIT_CA_TOKEN_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
        token_audience: String,
        /// With `--kube`: a service account (`namespace/name`) the node proxies run as.
        /// Repeatable (comma-separated in the environment variable).
        #[arg(
            long = "node-service-account",
            env = "AMBIT_CA_NODE_SERVICE_ACCOUNTS",
            value_delimiter = ',',
            default_value = DEFAULT_NODE_SERVICE_ACCOUNT
        )]
        node_service_accounts: Vec<String>,
        /// Where the Pods (with `spec.nodeName`) saying which workloads run on which node
        /// come from.
        #[command(flatten)]
        origin: ModelOrigin,
        /// Where to listen for gRPC.
        #[arg(long, env = "AMBIT_CA_LISTEN", default_value = "127.0.0.1:15012")]
        listen: SocketAddr,
        /// The SPIFFE trust domain.
        #[arg(long, env = "AMBIT_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
    },
}

/// Where the model comes from: a folder, or the Kubernetes API.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
struct ModelOrigin {
    /// The folder of `*.yaml`/`*.yml` manifests (recursively); changes apply within a
    /// second, and an object that turns invalid keeps its last good version.
    #[arg(long, env = "AMBIT_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Watch the Kubernetes API instead of a folder: in-cluster, or with the kubeconfig
    /// (`KUBECONFIG`, `~/.kube/config`).
    #[arg(long, env = "AMBIT_KUBE")]
    kube: bool,
}

/// A started source of the model; dropping it stops the watch.
enum RunningSource {
    Folder(FolderSource),
    Kube(KubeSource),
}

impl RunningSource {
    /// Reads the model once (for Kubernetes: lists every kind, retrying until it can),
    /// then watches it.
    async fn start(origin: &ModelOrigin, trust_domain: &str) -> anyhow::Result<Self> {
        if let Some(config_dir) = &origin.config_dir {
            return Ok(Self::Folder(FolderSource::start(config_dir, trust_domain)?));
        }
        Ok(Self::Kube(
            KubeSource::start(kube_client().await?, trust_domain).await,
        ))
    }

    fn subscribe(&self) -> ModelSource {
        match self {
            Self::Folder(source) => source.subscribe(),
            Self::Kube(source) => source.subscribe(),
        }
    }
}

/// A client of the cluster the controller runs in, or of the kubeconfig's.
async fn kube_client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default().await.context(
        "cannot configure a Kubernetes client: not in a cluster, and no usable kubeconfig (KUBECONFIG, ~/.kube/config)",
    )
}

/// Serves `service` on `listen`, its placement following `source`, until a signal.
async fn serve_ca<A: Authenticator>(
    service: CaService<A>,
    source: RunningSource,
    trust_domain: String,
    listen: SocketAddr,
) -> anyhow::Result<ExitCode> {
    // Placement follows the model: a pod scheduled later gets its identity.
    tokio::spawn(ca::follow_placement(
        source.subscribe(),
        service.clone(),
        trust_domain,
    ));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let listen = listener.local_addr().unwrap_or(listen);
    tracing::info!(%listen, "serving IstioCertificateService (plaintext gRPC)");
    ca::service::serve(listener, service, shutdown_signal()).await?;
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
            listen,
            trust_domain,
        } => {
            init_logs();
            ca::identity::check_trust_domain(&trust_domain)?;
            let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
            runtime.block_on(async {
                let source = RunningSource::start(&origin, &trust_domain).await?;
                let listener = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("cannot listen on {listen}"))?;
                let listen = listener.local_addr().unwrap_or(listen);
                tracing::info!(
                    %listen,
                    config_dir = ?origin.config_dir,
                    kube = origin.kube,
                    %trust_domain,
                    "serving ConfigService (plaintext gRPC)"
                );
                let server = push::ConfigServer::new(source.subscribe());
                push::serve(listener, server, shutdown_signal()).await?;
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
            tokens_dir,
            token_audience,
            node_service_accounts,
            origin,
            listen,
            trust_domain,
        } => {
            init_logs();
            let config = CaConfig {
                ca_dir,
                config_dir: origin.config_dir.clone(),
                trust_domain,
            };
            let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
            runtime.block_on(async {
                let trust_domain = config.trust_domain.clone();
                if let Some(tokens_dir) = tokens_dir {
                    let service = ca::build(&config, TokenFiles::load(&tokens_dir)?)?;
                    let source = RunningSource::start(&origin, &trust_domain).await?;
                    return serve_ca(service, source, trust_domain, listen).await;
                }
                let client = kube_client().await?;
                let reviewer =
                    TokenReviewer::new(client.clone(), &token_audience, &node_service_accounts)?;
                let service = ca::build(&config, reviewer)?;
                let source = RunningSource::Kube(KubeSource::start(client, &trust_domain).await);
                serve_ca(service, source, trust_domain, listen).await
            })
        }
    }
}

fn init_logs() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
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
