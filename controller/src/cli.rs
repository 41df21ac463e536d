//! `ambit-controller`'s command line: its subcommands and their flags (each with an
//! environment variable where a Deployment would set it). Public so that the manifests
//! under `deploy/kubernetes` are checked against the real parser.

use std::{net::SocketAddr, path::PathBuf};

use ambit_api::config::SubscriberKind;
use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::{
    ca::{
        identity::DEFAULT_TRUST_DOMAIN,
        token_review::{DEFAULT_AUDIENCE, DEFAULT_NODE_SERVICE_ACCOUNT},
    },
    deployer::{DEFAULT_CA_ADDRESS, DEFAULT_CONTROLLER_ADDRESS, DEFAULT_IMAGE},
    serving::DEFAULT_SERVING_CERT_TTL_SECS,
    snapshot,
};

/// The whole command line.
#[derive(Debug, Parser)]
#[command(name = "ambit-controller", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check Istio manifests and print every problem, with its object, file, document and
    /// field path; exit 1 if there is an error (like `istioctl analyze`).
    Validate {
        /// A manifest file, a folder of `*.yaml`/`*.yml` files (recursively), or `-` for
        /// standard input. Repeatable.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
    },
    /// Watch a folder of Kubernetes and Istio manifests, or the Kubernetes API, and push
    /// the validated model to subscribed agents, ztunnels and waypoints over gRPC on TLS
    /// (a certificate from the CA in `--ca-dir`). With `--kube`, also run a waypoint for
    /// each waypoint Gateway, and publish the mesh root as the `ambit-root-cert`
    /// ConfigMap.
    ///
    /// Subscribers present the same tokens as to the CA: with `--config-dir`, give
    /// `--tokens-dir` (without it everyone may subscribe, as any node); with `--kube`,
    /// tokens are checked with a TokenReview.
    Serve {
        #[command(flatten)]
        origin: ModelOrigin,
        #[command(flatten)]
        callers: CallerAuth,
        #[command(flatten)]
        waypoints: WaypointDeployment,
        /// The CA folder (`serve-ca`'s `--ca-dir`), whose CA issues this server's own
        /// certificate; a root is generated into it when it holds none, as `serve-ca`
        /// does.
        #[arg(long, env = "AMBIT_CA_DIR")]
        ca_dir: PathBuf,
        #[command(flatten)]
        tls: ServingTls,
        /// Where to listen for gRPC (`ambit.config.v1.ConfigService`).
        #[arg(long, env = "AMBIT_CONFIG_LISTEN", default_value = "127.0.0.1:15010")]
        listen: SocketAddr,
        /// Where to serve Prometheus metrics (`/metrics`), `/healthz/ready` and
        /// `/debug/syncz`.
        #[arg(
            long,
            env = "AMBIT_MONITORING_LISTEN",
            default_value = "127.0.0.1:15014"
        )]
        monitoring_listen: SocketAddr,
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
    /// Serve the certificate authority: Istio's `IstioCertificateService` over gRPC on
    /// TLS (a certificate it issues itself), signing SPIFFE certificates for the
    /// workloads on each caller's node.
    #[command(group(ArgGroup::new("ca_callers").args(["tokens_dir", "kube"]).required(true)))]
    ServeCa {
        /// Istio's plug-in CA folder (ca-cert.pem, ca-key.pem, cert-chain.pem,
        /// root-cert.pem); a new root is generated into it when it holds none of them.
        #[arg(long, env = "AMBIT_CA_DIR")]
        ca_dir: PathBuf,
        #[command(flatten)]
        tls: ServingTls,
        #[command(flatten)]
        callers: CallerAuth,
        /// Where the Pods (with `spec.nodeName`) saying which workloads run on which node
        /// come from.
        #[command(flatten)]
        origin: ModelOrigin,
        /// Where to listen for gRPC.
        #[arg(long, env = "AMBIT_CA_LISTEN", default_value = "127.0.0.1:15012")]
        listen: SocketAddr,
        /// Where to serve Prometheus metrics (`/metrics`) and `/healthz/ready`.
        #[arg(
            long,
            env = "AMBIT_CA_MONITORING_LISTEN",
            default_value = "127.0.0.1:15015"
        )]
        monitoring_listen: SocketAddr,
        /// The SPIFFE trust domain.
        #[arg(long, env = "AMBIT_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
    },
}

/// The controller's own TLS certificate on its gRPC port, issued by the mesh CA.
#[derive(Debug, Args)]
pub struct ServingTls {
    /// A name clients reach this server by (a DNS name or an IP), besides the defaults:
    /// `ambit-controller`, `localhost`, with `--kube` `ambit-controller.<namespace>.svc`,
    /// and the listen IP unless it is a wildcard. Repeatable (comma-separated in the
    /// environment variable).
    #[arg(
        long = "server-name",
        env = "AMBIT_SERVER_NAMES",
        value_delimiter = ','
    )]
    pub server_names: Vec<String>,
    /// The serving certificate's lifetime, in seconds; it is renewed at half of it.
    #[arg(
        long,
        env = "AMBIT_SERVING_CERT_TTL_SECS",
        default_value_t = DEFAULT_SERVING_CERT_TTL_SECS
    )]
    pub serving_cert_ttl_secs: u64,
}

/// How callers of the CA and of the config push prove who they are.
#[derive(Debug, Args)]
pub struct CallerAuth {
    /// One file per node, named after the node, holding its bootstrap token (with
    /// `--config-dir`; with `--kube` callers present service-account tokens, checked
    /// with a TokenReview).
    #[arg(long, env = "AMBIT_CA_TOKENS_DIR", conflicts_with = "kube")]
    pub tokens_dir: Option<PathBuf>,
    /// With `--kube`: the audience the callers' projected tokens must be for.
    #[arg(long, env = "AMBIT_CA_TOKEN_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub token_audience: String,
    /// With `--kube`: a service account (`namespace/name`) the node proxies run as.
    /// Repeatable (comma-separated in the environment variable).
    #[arg(
        long = "node-service-account",
        env = "AMBIT_CA_NODE_SERVICE_ACCOUNTS",
        value_delimiter = ',',
        default_value = DEFAULT_NODE_SERVICE_ACCOUNT
    )]
    pub node_service_accounts: Vec<String>,
}

/// Where the model comes from: a folder, or the Kubernetes API.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ModelOrigin {
    /// The folder of `*.yaml`/`*.yml` manifests (recursively); changes apply within a
    /// second, and an object that turns invalid keeps its last good version.
    #[arg(long, env = "AMBIT_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// Watch the Kubernetes API instead of a folder: in-cluster, or with the kubeconfig
    /// (`KUBECONFIG`, `~/.kube/config`).
    #[arg(long, env = "AMBIT_KUBE")]
    pub kube: bool,
}

/// With `--kube`: what the waypoint Deployments the controller creates for waypoint
/// Gateways run, and where their waypoints find the controller and the CA.
#[derive(Debug, Clone, Args)]
pub struct WaypointDeployment {
    /// The image of the waypoint Deployments (it holds `ambit-waypoint`).
    #[arg(long, env = "AMBIT_WAYPOINT_IMAGE", default_value = DEFAULT_IMAGE)]
    pub waypoint_image: String,
    /// The config push (`serve`), as the waypoints' pods reach it.
    #[arg(
        long,
        env = "AMBIT_WAYPOINT_CONTROLLER_ADDRESS",
        default_value = DEFAULT_CONTROLLER_ADDRESS
    )]
    pub waypoint_controller_address: String,
    /// The CA (`serve-ca`), as the waypoints' pods reach it.
    #[arg(long, env = "AMBIT_WAYPOINT_CA_ADDRESS", default_value = DEFAULT_CA_ADDRESS)]
    pub waypoint_ca_address: String,
    /// The audience of the token the waypoints present to the CA and the push: the
    /// `--token-audience` of `serve-ca` and `serve`.
    #[arg(long, env = "AMBIT_WAYPOINT_TOKEN_AUDIENCE", default_value = DEFAULT_AUDIENCE)]
    pub waypoint_token_audience: String,
    /// A Zipkin or Jaeger collector the waypoints send the spans of sampled requests to
    /// (`host:port`, e.g. `zipkin.istio-system:9411`: Istio's `tracing.zipkin.address`).
    #[arg(long, env = "AMBIT_WAYPOINT_ZIPKIN_ADDRESS")]
    pub waypoint_zipkin_address: Option<String>,
    /// The share (0 to 100) of new traces the waypoints sample (Istio's
    /// `tracing.sampling`); the waypoint's default, 1%, when absent.
    #[arg(long, env = "AMBIT_WAYPOINT_TRACE_SAMPLING")]
    pub waypoint_trace_sampling: Option<f64>,
    /// How often, in seconds, every applied waypoint object and root ConfigMap is
    /// applied again: one edited or deleted by hand is put back within this time.
    #[arg(long, env = "AMBIT_RESYNC_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_secs: u64,
}
