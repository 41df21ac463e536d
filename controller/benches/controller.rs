//! `cargo xtask bench controller`: how the controller scales.
//!
//! A generated folder of 1,000 Services, 10,000 Pods on 100 nodes, 2,000
//! VirtualServices and 500 AuthorizationPolicies; the real `FolderSource` and config
//! push on loopback, and 100 subscribers (one ztunnel per node) through the real client
//! loop (`ambit_api::subscribe`), over TLS as in production. Measured:
//! - the time to load and resolve the folder, and the process's peak RSS after it;
//! - the size of a ztunnel's full state;
//! - after a one-pod change (one file rewritten), the time until all 100 ztunnels have
//!   the new version, and the bytes of the delta each receives.

use std::{
    fmt::Write as _,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use ambit_api::{
    config::SubscriberKind,
    subscribe::{self, Subscription},
};
use ambit_controller::{
    ca::{
        material::{CaMaterial, ROOT_CERT_FILE},
        sign::Signer,
    },
    push,
    serving::{self, ServingCert},
    source::FolderSource,
};
use anyhow::{Context as _, Result};
use prost::Message as _;
use tokio::sync::mpsc;

const NAMESPACES: usize = 10;
const SERVICES: usize = 1_000;
const PODS_PER_SERVICE: usize = 10;
const NODES: usize = 100;
const VIRTUAL_SERVICES: usize = 2_000;
const POLICIES: usize = 500;
const TRUST_DOMAIN: &str = "cluster.local";
const WAIT: Duration = Duration::from_secs(120);

fn main() -> Result<()> {
    let folder = tempfile::tempdir()?;
    write_folder(folder.path())?;
    tokio::runtime::Runtime::new()?.block_on(run(folder.path()))
}

async fn run(folder: &Path) -> Result<()> {
    let started = Instant::now();
    let source = FolderSource::start(folder, TRUST_DOMAIN)?;
    let load = started.elapsed();
    let rss = peak_rss_mib()?;
    println!(
        "load and resolve {SERVICES} services, {} pods, {VIRTUAL_SERVICES} VirtualServices, {POLICIES} AuthorizationPolicies: {load:?}, peak RSS {rss:.1} MiB",
        SERVICES * PODS_PER_SERVICE
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = format!("https://{}", listener.local_addr()?);
    let ca_dir = tempfile::tempdir()?;
    let material = CaMaterial::load_or_create(ca_dir.path(), TRUST_DOMAIN)?;
    let signer = Arc::new(Signer::new(material, TRUST_DOMAIN));
    let names = serving::server_names(&[], None, listener.local_addr()?);
    let tls = ServingCert::issue(signer, &names, Duration::from_secs(3600))?.acceptor()?;
    let server = push::ConfigServer::new(source.subscribe(), push::Gate::open());
    tokio::spawn(push::serve(listener, server, tls, std::future::pending()));
    let root_file = ca_dir.path().join(ROOT_CERT_FILE);
    let (seen, mut updates) = mpsc::unbounded_channel();
    for node in 0..NODES {
        let seen = seen.clone();
        let subscription = Subscription {
            address: address.clone(),
            root_file: Some(root_file.clone()),
            node: format!("node-{node}"),
            kind: SubscriberKind::Ztunnel,
            token_file: None,
        };
        tokio::spawn(async move {
            subscribe::run(subscription, &mut |update| {
                let _ = seen.send((node, update.version, update.encoded_len(), Instant::now()));
                Ok(String::new())
            })
            .await;
        });
    }
    let first = collect(&mut updates, 1).await?;
    let full_bytes = first.iter().map(|u| u.1).max().unwrap_or(0);
    println!("{NODES} ztunnels subscribed; full state {full_bytes} bytes each");

    let changed = Instant::now();
    std::fs::write(folder.join("pods-node-0.yaml"), pods_of_node(0, "changed"))?;
    let next = collect(&mut updates, 2).await?;
    let last = next.iter().map(|u| u.2).max().context("no update")?;
    let delta = next.iter().map(|u| u.1).max().unwrap_or(0);
    println!(
        "one-pod change to all {NODES} ztunnels: {:?} (the source debounces {:?}); delta {delta} bytes each ({:.2}% of the full state)",
        last - changed,
        ambit_controller::source::DEBOUNCE,
        100.0 * delta as f64 / full_bytes.max(1) as f64
    );
    drop(source);
    Ok(())
}

/// The updates of `version` from every node: (node, bytes, received at).
async fn collect(
    updates: &mut mpsc::UnboundedReceiver<(usize, u64, usize, Instant)>,
    version: u64,
) -> Result<Vec<(usize, usize, Instant)>> {
    let mut got = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < NODES {
        let (node, v, bytes, at) = tokio::time::timeout_at(deadline, updates.recv())
            .await
            .with_context(|| format!("only {} ztunnels got version {version}", got.len()))?
            .context("the subscribers ended")?;
        if v >= version {
            got.entry(node).or_insert((node, bytes, at));
        }
    }
    Ok(got.into_values().collect())
}

fn write_folder(dir: &Path) -> Result<()> {
    let mut namespaces = String::new();
    for ns in 0..NAMESPACES {
        writeln!(
            namespaces,
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{ns}, labels: {{istio.io/dataplane-mode: ambient}}}}\n---"
        )?;
    }
    std::fs::write(dir.join("namespaces.yaml"), namespaces)?;
    let mut services = String::new();
    for s in 0..SERVICES {
        let (ns, a, b) = (s % NAMESPACES, s / 250, s % 250 + 1);
        writeln!(
            services,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: ns-{ns}}}\nspec: {{clusterIP: 10.96.{a}.{b}, selector: {{app: svc-{s}}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---"
        )?;
    }
    std::fs::write(dir.join("services.yaml"), services)?;
    for node in 0..NODES {
        std::fs::write(
            dir.join(format!("pods-node-{node}.yaml")),
            pods_of_node(node, "v1"),
        )?;
    }
    let mut routes = String::new();
    for v in 0..VIRTUAL_SERVICES {
        let s = v % SERVICES;
        writeln!(
            routes,
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs-{v}, namespace: ns-{}}}\nspec: {{hosts: [svc-{s}], http: [{{match: [{{headers: {{x-route: {{exact: r{v}}}}}}}], route: [{{destination: {{host: svc-{s}}}}}]}}]}}\n---",
            s % NAMESPACES
        )?;
    }
    std::fs::write(dir.join("virtualservices.yaml"), routes)?;
    let mut policies = String::new();
    for p in 0..POLICIES {
        writeln!(
            policies,
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: ap-{p}, namespace: ns-{}}}\nspec: {{selector: {{matchLabels: {{app: svc-{p}}}}}, rules: [{{from: [{{source: {{principals: [cluster.local/ns/ns-0/sa/client]}}}}]}}]}}\n---",
            p % NAMESPACES
        )?;
    }
    std::fs::write(dir.join("policies.yaml"), policies)?;
    Ok(())
}

/// The pods of one node (pods are spread round-robin over nodes), labelled `version`.
fn pods_of_node(node: usize, version: &str) -> String {
    let mut pods = String::new();
    for p in (node..SERVICES * PODS_PER_SERVICE).step_by(NODES) {
        let s = p / PODS_PER_SERVICE;
        let version = if p == node { version } else { "v1" };
        let _ = writeln!(
            pods,
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{p}, namespace: ns-{}, labels: {{app: svc-{s}, version: {version}}}}}\nspec: {{nodeName: node-{node}, serviceAccountName: sa-{s}}}\nstatus: {{podIP: 10.{}.{}.{}}}\n---",
            s % NAMESPACES,
            1 + p / 65_536,
            p / 256 % 256,
            p % 256
        );
    }
    pods
}

/// The process's peak resident memory (`VmHWM`), in MiB.
fn peak_rss_mib() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")?;
    Ok(kib / 1024.0)
}
