//! Workload certificates end to end: the real `ambit-controller serve-ca` and ztunnel on
//! a simulated node. ztunnel obtains one certificate per identity, renews it at half its
//! (short) lifetime while traffic flows, and keeps the certificates it holds while the CA
//! is away; over HBONE between two nodes, connections live through renewals.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use ambit_e2e::{
    ControlPlane, MeshNode, MeshOptions, PodSpec, TestNet, app,
    mesh::{CaClientOptions, start_ca},
    wait_for,
};
use anyhow::{Context as _, Result, bail, ensure};
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
const CA_LISTEN: &str = "127.0.0.1:15012";
const TTL_SECS: u64 = 4;
const ALPHA: &str = "spiffe://cluster.local/ns/shop/sa/alpha";
const BETA: &str = "spiffe://cluster.local/ns/shop/sa/beta";
/// Long enough for a renewal (every ~2 s) to fall inside the transfer: ~5 s at the
/// ~8 Gbit/s a debug build relays on one core.
const TRANSFER_BYTES: u64 = 5_000_000_000;
/// A renewal comes at half of [`TTL_SECS`]; allow for a retry or two.
const RENEWAL_TIMEOUT: Duration = Duration::from_secs(6);

/// One row of ztunnel's `certificates` dump.
#[derive(Debug, Clone)]
struct Held {
    serial: Option<String>,
    pem: Option<String>,
    state: String,
    last_error: Option<String>,
}

fn certificates(mesh: &MeshNode) -> Result<BTreeMap<String, Held>> {
    let dump = mesh.config_dump()?;
    let rows = dump["certificates"]
        .as_array()
        .with_context(|| format!("the config dump has no certificates array: {dump}"))?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let text = |key: &str| row[key].as_str().map(str::to_owned);
            Some((
                text("identity")?,
                Held {
                    serial: text("serial"),
                    pem: text("pem"),
                    state: text("state")?,
                    last_error: text("lastError"),
                },
            ))
        })
        .collect())
}

/// Waits until `identity` holds a valid certificate whose serial is not `old`.
fn wait_valid(
    mesh: &MeshNode,
    identity: &str,
    old: Option<&str>,
    timeout: Duration,
) -> Result<Held> {
    let what = match old {
        Some(old) => format!("{identity} to be renewed (serial other than {old})"),
        None => format!("{identity} to hold a valid certificate"),
    };
    wait_for(&what, timeout, || -> Result<Option<Held>> {
        let held = certificates(mesh)?.remove(identity);
        Ok(held.filter(|held| {
            held.state == "valid" && held.serial.is_some() && held.serial.as_deref() != old
        }))
    })
}

/// The dumped leaf names `identity` as its only SAN and carries the dumped serial.
fn check_leaf(held: &Held, identity: &str) -> Result<()> {
    let pem = pem::parse(held.pem.as_deref().context("no leaf PEM in the dump")?)?;
    let (_, cert) = X509Certificate::from_der(pem.contents())
        .map_err(|error| anyhow::anyhow!("the dumped leaf is not X.509: {error}"))?;
    let serial: String = cert
        .raw_serial()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    ensure!(
        Some(serial.as_str()) == held.serial.as_deref(),
        "the dump says serial {:?} but the certificate has {serial}",
        held.serial
    );
    let san = cert
        .subject_alternative_name()
        .map_err(|error| anyhow::anyhow!("unreadable SAN extension: {error}"))?
        .context("the leaf has no SAN")?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    ensure!(
        uris == [identity],
        "the leaf should name only {identity}, it names {uris:?}"
    );
    Ok(())
}

fn write_token(tokens_dir: &Path, node: &str, token: &str) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(tokens_dir)?;
    let path = tokens_dir.join(node);
    std::fs::write(&path, token).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

#[test]
fn ztunnel_obtains_renews_and_outlives_the_ca() -> Result<()> {
    let Some(net) = TestNet::new("certificates") else {
        return Ok(());
    };
    net.write_namespace("shop", [AMBIENT])?;
    let node = net.add_node("n1")?;
    let tokens_dir = net.dir().join("tokens");
    let token_file = write_token(&tokens_dir, node.name(), "token-of-n1")?;
    let ca_dir = net.dir().join("ca");
    std::fs::create_dir_all(&ca_dir)?;
    let listen: SocketAddr = CA_LISTEN.parse()?;
    let mesh = MeshNode::install_with_ca(
        &net,
        &node,
        MeshOptions::default(),
        Some(CaClientOptions {
            address: format!("https://{listen}"),
            token_file,
            root_file: ca_dir.join("root-cert.pem"),
            cert_ttl_secs: Some(TTL_SECS),
            controller_address: None,
            local_config: None,
        }),
    )?;
    let client = node.add_pod(PodSpec::new("shop", "client").service_account("alpha"))?;
    let server = node.add_pod(PodSpec::new("shop", "server").service_account("beta"))?;
    // The CA reads which pods run where when it starts; ztunnel retries until it serves.
    let ca = start_ca(&net, &node, &ca_dir, &tokens_dir, listen)?;

    // Both identities obtained, each its own certificate.
    let alpha = wait_valid(&mesh, ALPHA, None, RENEWAL_TIMEOUT)?;
    let beta = wait_valid(&mesh, BETA, None, RENEWAL_TIMEOUT)?;
    check_leaf(&alpha, ALPHA)?;
    check_leaf(&beta, BETA)?;
    ensure!(alpha.serial != beta.serial, "one certificate per identity");

    // Renewal while a long transfer runs through ztunnel: start right after a renewal so
    // the next one falls inside the transfer.
    let alpha = wait_valid(&mesh, ALPHA, alpha.serial.as_deref(), RENEWAL_TIMEOUT)?;
    let _sink = app::sink(&server, "[::]:9000".parse()?)?;
    let transfer = app::bulk_send(&client, server.addr_v4(9000), TRANSFER_BYTES, 65_536)?;
    let alpha = wait_valid(&mesh, ALPHA, alpha.serial.as_deref(), RENEWAL_TIMEOUT)?;
    check_leaf(&alpha, ALPHA)?;
    if transfer.try_status()?.is_some() {
        bail!(
            "the transfer ended before the renewal, so it proves nothing: raise TRANSFER_BYTES ({})",
            transfer.finish(Duration::from_secs(1))?
        );
    }
    let done = transfer.finish(Duration::from_secs(60))?;
    ensure!(
        done.stdout.contains(r#""ok":true"#),
        "the transfer across a renewal failed: {done}"
    );

    // The CA goes away: the next renewal fails, the certificate held stays valid.
    let alpha = wait_valid(&mesh, ALPHA, alpha.serial.as_deref(), RENEWAL_TIMEOUT)?;
    ca.kill()?;
    let failing = wait_for(
        "a renewal to fail while the CA is away",
        RENEWAL_TIMEOUT,
        || -> Result<Option<Held>> {
            Ok(certificates(&mesh)?
                .remove(ALPHA)
                .filter(|held| held.last_error.is_some()))
        },
    )?;
    ensure!(
        failing.state == "valid" && failing.serial == alpha.serial,
        "the certificate held should keep serving while the CA is away: {failing:?}"
    );
    ensure!(
        mesh.ztunnel()?.try_status()?.is_none(),
        "ztunnel should keep running without the CA"
    );

    // The CA is back (same root, from its folder): renewal resumes.
    let _ca = start_ca(&net, &node, &ca_dir, &tokens_dir, listen)?;
    let renewed = wait_valid(&mesh, ALPHA, alpha.serial.as_deref(), RENEWAL_TIMEOUT)?;
    check_leaf(&renewed, ALPHA)?;
    ensure!(
        renewed.last_error.is_none(),
        "a successful renewal clears the error: {renewed:?}"
    );
    wait_valid(&mesh, BETA, beta.serial.as_deref(), RENEWAL_TIMEOUT)?;

    // The identity's last pod leaves: its certificate is dropped, the other one stays.
    server.remove()?;
    wait_for(
        "beta's certificate to be dropped with its last pod",
        RENEWAL_TIMEOUT,
        || -> Result<Option<()>> {
            let held = certificates(&mesh)?;
            Ok((!held.contains_key(BETA) && held.contains_key(ALPHA)).then_some(()))
        },
    )?;
    Ok(())
}

/// Over HBONE between two nodes, with certificates living 4 s: a held connection and a
/// stream of new ones keep working while both identities renew twice.
#[test]
fn hbone_keeps_working_across_renewals() -> Result<()> {
    let Some(net) = TestNet::new("renewal_hbone") else {
        return Ok(());
    };
    net.write_namespace("shop", [AMBIENT])?;
    let n1 = net.add_node("n1")?;
    let n2 = net.add_node("n2")?;
    let control = ControlPlane::new(&net, &n1)?.with_cert_ttl_secs(TTL_SECS);
    let meshes = control.install(&net, &[&n1, &n2])?;
    let client = n1.add_pod(PodSpec::new("shop", "client").service_account("alpha"))?;
    let server = n2.add_pod(PodSpec::new("shop", "server").service_account("beta"))?;
    let _app = app::serve(&server, "[::]:8080".parse()?)?;
    let _control = control.start(&net)?;
    let mut alpha = wait_valid(&meshes[0], ALPHA, None, RENEWAL_TIMEOUT)?;
    let mut beta = wait_valid(&meshes[1], BETA, None, RENEWAL_TIMEOUT)?;
    meshes[0].wait_peer(&server.ipv4().to_string(), Some(BETA), RENEWAL_TIMEOUT)?;

    let to = server.addr_v4(8080);
    let held = app::hold(&client, to, Duration::from_secs(3 * TTL_SECS))?;
    let mut connections = 0;
    for round in 1..=2 {
        let renewed_alpha = alpha.serial.clone();
        let renewed_beta = beta.serial.clone();
        let started = std::time::Instant::now();
        loop {
            ensure!(
                started.elapsed() < 2 * RENEWAL_TIMEOUT,
                "renewal {round} of both identities did not happen in time"
            );
            app::connect(&client, to)?
                .expect_ok()
                .context("a new connection during renewals")?;
            connections += 1;
            let held = certificates(&meshes[0])?.remove(ALPHA);
            let held_beta = certificates(&meshes[1])?.remove(BETA);
            if let (Some(a), Some(b)) = (held, held_beta)
                && a.serial != renewed_alpha
                && b.serial != renewed_beta
                && a.state == "valid"
                && b.state == "valid"
            {
                (alpha, beta) = (a, b);
                break;
            }
        }
    }
    let done = held.finish(Duration::from_secs(4 * TTL_SECS))?;
    ensure!(
        done.stdout.contains(r#""ok":true"#),
        "the held connection should outlive two renewals of both ends: {done}"
    );
    ensure!(
        connections > 2,
        "new connections were opened throughout ({connections})"
    );
    check_leaf(&alpha, ALPHA)?;
    check_leaf(&beta, BETA)
}

/// The CA follows the config folder: a pod scheduled after it started still gets its
/// identity, as on a cluster where pods come and go.
#[test]
fn a_pod_scheduled_after_the_ca_started_gets_its_certificate() -> Result<()> {
    let Some(net) = TestNet::new("late_pod") else {
        return Ok(());
    };
    net.write_namespace("shop", [AMBIENT])?;
    let node = net.add_node("n1")?;
    let control = ControlPlane::new(&net, &node)?;
    let meshes = control.install(&net, &[&node])?;
    let _early = node.add_pod(PodSpec::new("shop", "early").service_account("alpha"))?;
    let _control = control.start(&net)?;
    wait_valid(&meshes[0], ALPHA, None, RENEWAL_TIMEOUT)?;
    let _late = node.add_pod(PodSpec::new("shop", "late").service_account("beta"))?;
    let late = wait_valid(&meshes[0], BETA, None, RENEWAL_TIMEOUT)?;
    check_leaf(&late, BETA)
}
