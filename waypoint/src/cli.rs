//! `ambit-waypoint`'s flags: who the waypoint is, where the controller and the CA are.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use ambit_api::identity::{DEFAULT_TRUST_DOMAIN, Identity, IdentityError};

/// Where the waypoint listens for HBONE by default.
pub const DEFAULT_HBONE_LISTEN: &str = "[::]:15008";
/// Where the waypoint serves metrics by default (Istio's port).
pub const DEFAULT_METRICS_LISTEN: &str = "[::]:15020";
/// Where the waypoint serves its admin endpoints by default (Envoy's, on localhost).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:15000";

/// The waypoint proxy: HBONE in from ztunnels, VirtualService and DestinationRule
/// routing, HBONE out to endpoints. With `--ingress`, the ingress gateway: Istio
/// `Gateway` servers in, the same routing, HBONE out.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "ambit-waypoint", version)]
pub struct Cli {
    /// The waypoint Gateway's name (`gatewayClassName: istio-waypoint`).
    #[arg(long, env = "AMBIT_WAYPOINT_NAME", default_value = "waypoint")]
    pub name: String,
    /// The namespace of the Gateway and of the waypoint's pods.
    #[arg(long, env = "AMBIT_WAYPOINT_NAMESPACE")]
    pub namespace: String,
    /// The pods' service account (Istio runs a waypoint as the account of its name).
    #[arg(long, env = "AMBIT_WAYPOINT_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
    #[arg(long, env = "AMBIT_TRUST_DOMAIN", default_value = DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// Serve as an ingress gateway: listen on the ports of the Istio Gateways whose
    /// `selector` matches this pod (`--pod-name`), instead of HBONE.
    #[arg(long, requires = "pod_name")]
    pub ingress: bool,
    /// The gateway's pod (in `--namespace`), whose labels Gateways select.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Where HBONE is served; an ingress gateway listens on this address's IP.
    #[arg(long, default_value = DEFAULT_HBONE_LISTEN)]
    pub listen: SocketAddr,
    /// Where Prometheus metrics (`/metrics`) and readiness are served.
    #[arg(long, default_value = DEFAULT_METRICS_LISTEN)]
    pub metrics_listen: SocketAddr,
    /// Where the admin endpoints (`/clusters`) are served; keep it on localhost.
    #[arg(long, default_value = DEFAULT_ADMIN_LISTEN)]
    pub admin_listen: SocketAddr,
    /// The controller's config push, e.g. `https://198.19.255.1:15010`.
    #[arg(long, env = "AMBIT_CONTROLLER_ADDRESS")]
    pub controller_address: String,
    /// The node the waypoint runs on (the CA checks its pod is placed there).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The mesh CA, e.g. `https://198.19.255.1:15012`.
    #[arg(long, env = "AMBIT_CA_ADDRESS")]
    pub ca_address: String,
    /// The node's bootstrap token for the CA.
    #[arg(long, env = "AMBIT_CA_TOKEN_FILE")]
    pub ca_token_file: PathBuf,
    /// The mesh root, PEM (Istio's `root-cert.pem`; in Kubernetes the `ambit-root-cert`
    /// ConfigMap): the CA's and the controller's TLS certificates must chain to it, and
    /// it is the workloads' trust root.
    #[arg(long, env = "AMBIT_CA_ROOT_FILE")]
    pub ca_root_file: PathBuf,
    /// More roots, PEM, trusted for RequestAuthentication key sets fetched over `https`
    /// (an issuer with a private CA), besides the system's (`SSL_CERT_FILE`).
    #[arg(long, env = "AMBIT_JWKS_CA_FILE")]
    pub jwks_ca_file: Option<PathBuf>,
    /// A Zipkin collector (`host:port`, e.g. `zipkin.istio-system:9411`, Istio's
    /// `tracing.zipkin.address`) to send the spans of sampled requests to.
    #[arg(long, env = "AMBIT_ZIPKIN_ADDRESS")]
    pub zipkin_address: Option<String>,
    /// The share (0 to 100) of requests arriving without trace context whose new trace
    /// is sampled: Istio's `tracing.sampling`, 1% by default as in Istio.
    #[arg(long, env = "AMBIT_TRACE_SAMPLING", default_value_t = DEFAULT_TRACE_SAMPLING_PERCENT)]
    pub trace_sampling: f64,
    /// Ask for certificates valid this long (the CA's default when absent).
    #[arg(long)]
    pub cert_ttl_secs: Option<u64>,
    /// Threads serving requests, each a share of the downstream connections (a
    /// connection, its requests and the upstream connections they pool stay on one);
    /// `0`: one per CPU. Accepting, the config push and certificates run on the main
    /// thread besides.
    #[arg(long, env = "AMBIT_WORKER_THREADS", default_value_t = DEFAULT_WORKER_THREADS)]
    pub worker_threads: usize,
}

/// Istio's default `meshConfig.defaultConfig.tracing.sampling`.
pub const DEFAULT_TRACE_SAMPLING_PERCENT: f64 = 1.0;

/// Request threads by default: 2, as for ztunnel (see [`ambit_workers`]).
pub const DEFAULT_WORKER_THREADS: usize = 2;

impl Cli {
    /// The waypoint's SPIFFE identity.
    ///
    /// # Errors
    /// A namespace, service account or trust domain that cannot form one.
    pub fn identity(&self) -> Result<Identity, IdentityError> {
        let account = self.service_account.as_deref().unwrap_or(&self.name);
        Identity::new(&self.trust_domain, &self.namespace, account)
    }

    /// The requested certificate lifetime.
    #[must_use]
    pub fn cert_ttl(&self) -> Option<Duration> {
        self.cert_ttl_secs.map(Duration::from_secs)
    }
}
