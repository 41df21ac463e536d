//! L4 policy end to end: AuthorizationPolicy and PeerAuthentication written into the
//! config folder, pushed by the real controller, enforced by the receiving node's real
//! ztunnel — on HBONE connections from mesh pods and on plaintext ones from a pod outside
//! the mesh — and a policy change closing a connection it now forbids.
//!
//! The cluster: nodes n1 and n2; on n1 `client` (namespace shop, service account alpha),
//! `intruder` (namespace lab, in the mesh) and `legacy` (namespace plain, not in the
//! mesh); on n2 `server` (shop, service account beta, label app=server) echoing on 8080
//! and 9090, and `neighbor` (namespace lab), whose connections to the server take the
//! same-node fast path and must meet the same policy.

use std::{net::SocketAddr, time::Duration};

use ambit_e2e::{ChildGuard, ControlPlane, MeshNode, Pod, PodSpec, TestNet, app, wait_for};
use anyhow::{Context as _, Result, ensure};
use serde_json::{Value, json};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
const ALPHA: &str = "cluster.local/ns/shop/sa/alpha";
const BETA: &str = "spiffe://cluster.local/ns/shop/sa/beta";
const PORT: u16 = 8080;
const OTHER_PORT: u16 = 9090;
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const DENIALS: &str = "ambit_policy_denials_total";

struct Cluster {
    net: TestNet,
    meshes: Vec<MeshNode>,
    client: Pod,
    intruder: Pod,
    legacy: Pod,
    server: Pod,
    neighbor: Pod,
    _processes: Vec<ChildGuard>,
}

impl Cluster {
    fn start(name: &str) -> Result<Option<Self>> {
        let Some(net) = TestNet::new(name) else {
            return Ok(None);
        };
        net.write_namespace("shop", [AMBIENT])?;
        net.write_namespace("lab", [AMBIENT])?;
        net.write_namespace("plain", Vec::<(String, String)>::new())?;
        let n1 = net.add_node("n1")?;
        let n2 = net.add_node("n2")?;
        let control = ControlPlane::new(&net, &n1)?;
        let meshes = control.install(&net, &[&n1, &n2])?;
        let client = n1.add_pod(PodSpec::new("shop", "client").service_account("alpha"))?;
        let intruder = n1.add_pod(PodSpec::new("lab", "intruder").service_account("mallory"))?;
        let legacy = n1.add_pod(PodSpec::new("plain", "legacy"))?;
        let server = n2.add_pod(
            PodSpec::new("shop", "server")
                .service_account("beta")
                .label("app", "server"),
        )?;
        let neighbor = n2.add_pod(PodSpec::new("lab", "neighbor").service_account("mallory"))?;
        let mut processes = Vec::new();
        for port in [PORT, OTHER_PORT] {
            processes.push(app::serve(&server, SocketAddr::from(([0; 4], port)))?);
        }
        processes.extend(control.start(&net)?);
        meshes[1].wait_certificate(BETA, READY_TIMEOUT)?;
        meshes[0].wait_peer(&server.ipv4().to_string(), Some(BETA), READY_TIMEOUT)?;
        let cluster = Self {
            net,
            meshes,
            client,
            intruder,
            legacy,
            server,
            neighbor,
            _processes: processes,
        };
        // Until a client holds its certificate it would talk plaintext.
        for identity in [
            "spiffe://cluster.local/ns/shop/sa/alpha",
            "spiffe://cluster.local/ns/lab/sa/mallory",
        ] {
            cluster.meshes[0].wait_certificate(identity, READY_TIMEOUT)?;
        }
        cluster.meshes[1]
            .wait_certificate("spiffe://cluster.local/ns/lab/sa/mallory", READY_TIMEOUT)?;
        Ok(Some(cluster))
    }

    /// Replaces the test's policies with `objects` and waits until n2's ztunnel enforces
    /// exactly them.
    fn set_policies(&self, objects: &[Value]) -> Result<()> {
        let documents: Vec<String> = objects
            .iter()
            .map(serde_yaml_ng::to_string)
            .collect::<Result<_, _>>()?;
        std::fs::write(
            self.net.config_dir().join("policies.yaml"),
            documents.join("---\n"),
        )?;
        let names: Vec<String> = objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["metadata"]["namespace"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default()
                )
            })
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.meshes[1].wait_policies(&names, READY_TIMEOUT)
    }

    /// Whether `from` can exchange a message with the server on `port`.
    fn reaches(&self, from: &Pod, port: u16) -> Result<bool> {
        let report = app::connect_with(from, self.server.addr_v4(port), "ping", CONNECT_TIMEOUT)?;
        Ok(report.ok)
    }

    fn expect(&self, from: &Pod, port: u16, allowed: bool) -> Result<()> {
        let reached = self.reaches(from, port)?;
        ensure!(
            reached == allowed,
            "{}/{} -> server:{port}: expected {}, it was {}\nn2's ztunnel:\n{}",
            from.namespace(),
            from.name(),
            if allowed { "allowed" } else { "refused" },
            if reached { "allowed" } else { "refused" },
            self.meshes[1]
                .ztunnel()
                .map(ChildGuard::stdout)
                .unwrap_or_default()
        );
        Ok(())
    }

    /// n2's denial count for `labels`, once it reaches at least `at_least`.
    fn wait_denials(&self, labels: &[(&str, &str)], at_least: f64) -> Result<f64> {
        wait_for(
            &format!("n2 to count {at_least} denials with {labels:?}"),
            Duration::from_secs(5),
            || -> Result<Option<f64>> {
                let count = self.meshes[1].metrics()?.sum(DENIALS, labels);
                Ok((count >= at_least).then_some(count))
            },
        )
        .with_context(|| format!("{:?}", self.meshes[1].metrics().map(|m| m.0)))
    }
}

fn object(kind: &str, namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": kind,
        "metadata": { "name": name, "namespace": namespace },
        "spec": spec,
    })
}

#[test]
fn authorization_policy_allows_and_denies_by_principal_and_namespace() -> Result<()> {
    let Some(cluster) = Cluster::start("policy_authz")? else {
        return Ok(());
    };
    // No policy: everyone gets in (PERMISSIVE accepts the plaintext one).
    for from in [
        &cluster.client,
        &cluster.intruder,
        &cluster.legacy,
        &cluster.neighbor,
    ] {
        cluster.expect(from, PORT, true)?;
    }

    // ALLOW by principal on the server: only alpha; everything else is denied by default.
    cluster.set_policies(&[object(
        "AuthorizationPolicy",
        "shop",
        "allow-alpha",
        json!({
            "selector": { "matchLabels": { "app": "server" } },
            "action": "ALLOW",
            "rules": [{ "from": [{ "source": { "principals": [ALPHA] } }] }],
        }),
    )])?;
    cluster.expect(&cluster.client, PORT, true)?;
    cluster.expect(&cluster.intruder, PORT, false)?;
    cluster.expect(&cluster.legacy, PORT, false)?;
    cluster.wait_denials(
        &[
            ("reason", "not_allowed"),
            ("destination_workload", "server"),
        ],
        2.0,
    )?;

    // DENY by namespace, for the whole namespace: lab is out, the rest is back in.
    cluster.set_policies(&[object(
        "AuthorizationPolicy",
        "shop",
        "deny-lab",
        json!({
            "action": "DENY",
            "rules": [{ "from": [{ "source": { "namespaces": ["lab"] } }] }],
        }),
    )])?;
    cluster.expect(&cluster.client, PORT, true)?;
    cluster.expect(&cluster.legacy, PORT, true)?;
    cluster.expect(&cluster.intruder, PORT, false)?;
    cluster.expect(&cluster.neighbor, PORT, false)?;
    cluster.wait_denials(&[("reason", "denied"), ("policy", "shop/deny-lab")], 2.0)?;

    // A DENY on one port only (`to.operation.ports`) leaves the other port open.
    cluster.set_policies(&[object(
        "AuthorizationPolicy",
        "shop",
        "deny-alpha-9090",
        json!({
            "action": "DENY",
            "rules": [{
                "from": [{ "source": { "principals": [ALPHA] } }],
                "to": [{ "operation": { "ports": [OTHER_PORT.to_string()] } }],
            }],
        }),
    )])?;
    cluster.expect(&cluster.client, OTHER_PORT, false)?;
    cluster.expect(&cluster.client, PORT, true)
}

#[test]
fn strict_refuses_plaintext_and_permissive_accepts_it() -> Result<()> {
    let Some(cluster) = Cluster::start("policy_mtls")? else {
        return Ok(());
    };
    let peer_authentication =
        |namespace, name, spec| object("PeerAuthentication", namespace, name, spec);
    // STRICT for the namespace, with a PERMISSIVE exception on the server's 9090.
    cluster.set_policies(&[
        peer_authentication("shop", "strict", json!({ "mtls": { "mode": "STRICT" } })),
        peer_authentication(
            "shop",
            "server-9090",
            json!({
                "selector": { "matchLabels": { "app": "server" } },
                "portLevelMtls": { "9090": { "mode": "PERMISSIVE" } },
            }),
        ),
    ])?;
    cluster.expect(&cluster.legacy, PORT, false)?;
    cluster.expect(&cluster.legacy, OTHER_PORT, true)?;
    cluster.expect(&cluster.client, PORT, true)?;
    cluster.wait_denials(
        &[("reason", "plaintext_refused"), ("policy", "shop/strict")],
        1.0,
    )?;

    // The mesh-wide default from the root namespace, overridden by the namespace.
    cluster.set_policies(&[
        peer_authentication(
            "istio-system",
            "mesh-strict",
            json!({ "mtls": { "mode": "STRICT" } }),
        ),
        peer_authentication(
            "shop",
            "permissive",
            json!({ "mtls": { "mode": "PERMISSIVE" } }),
        ),
    ])?;
    cluster.expect(&cluster.legacy, PORT, true)?;
    cluster.set_policies(&[peer_authentication(
        "istio-system",
        "mesh-strict",
        json!({ "mtls": { "mode": "STRICT" } }),
    )])?;
    cluster.expect(&cluster.legacy, PORT, false)?;
    cluster.expect(&cluster.client, PORT, true)
}

#[test]
fn a_policy_change_closes_the_connections_it_forbids() -> Result<()> {
    let Some(cluster) = Cluster::start("policy_revoke")? else {
        return Ok(());
    };
    let to = cluster.server.addr_v4(PORT);
    let hold = Duration::from_secs(60);
    let alpha = app::hold(&cluster.client, to, hold)?;
    let plaintext = app::hold(&cluster.legacy, to, hold)?;
    let bystander = app::hold(&cluster.intruder, to, hold)?;

    cluster.set_policies(&[
        object(
            "AuthorizationPolicy",
            "shop",
            "deny-alpha",
            json!({
                "action": "DENY",
                "rules": [{ "from": [{ "source": { "principals": [ALPHA] } }] }],
            }),
        ),
        object(
            "PeerAuthentication",
            "shop",
            "strict",
            json!({ "mtls": { "mode": "STRICT" } }),
        ),
    ])?;
    for (holder, what) in [
        (&alpha, "alpha's HBONE connection"),
        (&plaintext, "the plaintext connection"),
    ] {
        let finished = holder
            .finish(Duration::from_secs(10))
            .with_context(|| format!("{what} should be closed by the policy change"))?;
        ensure!(
            finished.stdout.contains("\"ok\":false"),
            "{what} should have broken, it reported: {finished}"
        );
    }
    ensure!(
        bystander.try_status()?.is_none(),
        "a connection the new policy allows must stay open: {}",
        bystander.stdout()
    );
    cluster.wait_denials(&[("policy", "shop/deny-alpha"), ("reason", "denied")], 1.0)?;
    cluster.wait_denials(
        &[("policy", "shop/strict"), ("reason", "plaintext_refused")],
        1.0,
    )?;
    Ok(())
}

#[test]
fn a_restarted_ztunnel_waits_for_its_certificate_rather_than_send_plaintext() -> Result<()> {
    let Some(mut cluster) = Cluster::start("policy_restart")? else {
        return Ok(());
    };
    cluster.set_policies(&[object(
        "PeerAuthentication",
        "shop",
        "strict",
        json!({ "mtls": { "mode": "STRICT" } }),
    )])?;
    cluster.expect(&cluster.client, PORT, true)?;
    // Right after a restart n1's ztunnel has neither its config nor the client's
    // certificate: the connection must wait for them, not go out in plaintext (which
    // the STRICT server would refuse).
    cluster.meshes[0].stop_ztunnel()?;
    cluster.meshes[0].start_ztunnel()?;
    cluster.expect(&cluster.client, PORT, true)?;
    let mutual = cluster.meshes[1].metrics()?.sum(
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
            ("source_principal", &format!("spiffe://{ALPHA}")),
        ],
    );
    ensure!(mutual >= 2.0, "both connections were mutual TLS: {mutual}");
    Ok(())
}
