//! `ambit-demo` (run it with `cargo xtask demo`): Ambit's capture on two simulated
//! nodes, step by step, on the config folder `deploy/examples/demo/`.
//!
//! It builds two nodes out of network namespaces, starts the real agent and ztunnel on
//! each, creates pods through the real CNI plugins (with `ambit-cni` chained), and
//! shows: pods joining the mesh by namespace label, no firewall rule anywhere, same-node
//! and cross-node traffic captured transparently, inbound capture from outside the mesh,
//! and fail-closed behaviour while ztunnel is down. Everything it made is removed when
//! it ends. `--json` prints the results for machines; `--verbose` prints component logs
//! on failure.

use std::{
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use ambit_e2e::{ControlPlane, Pod, PodSpec, TestNet, app, wait_for, workspace_dir};
use anyhow::{Context as _, Result, bail, ensure};
use serde_json::json;

struct Step {
    name: &'static str,
    ok: bool,
    detail: String,
    millis: u128,
}

/// Every demo pod runs as its namespace's default service account.
const DEFAULT_IDENTITY: &str = "spiffe://cluster.local/ns/shop/sa/default";
const READY_TIMEOUT: Duration = Duration::from_secs(20);

struct Demo {
    json: bool,
    steps: Vec<Step>,
}

impl Demo {
    /// Like [`Demo::step`], keeping what the step made (processes to stop at the end).
    fn step_with<T>(
        &mut self,
        name: &'static str,
        body: impl FnOnce() -> Result<(T, String)>,
    ) -> Result<T> {
        let mut kept = None;
        self.step(name, || {
            let (value, detail) = body()?;
            kept = Some(value);
            Ok(detail)
        })?;
        kept.context("the step kept nothing")
    }

    /// Runs one step, prints it, and stops the demo if it failed.
    fn step(&mut self, name: &'static str, body: impl FnOnce() -> Result<String>) -> Result<()> {
        let started = Instant::now();
        let outcome = body();
        let millis = started.elapsed().as_millis();
        let (ok, detail) = match &outcome {
            Ok(detail) => (true, detail.clone()),
            Err(error) => (false, format!("{error:#}")),
        };
        if !self.json {
            println!(
                "{} {name} ({millis} ms)\n    {}",
                if ok { "✓" } else { "✗" },
                detail.replace('\n', "\n    ")
            );
        }
        self.steps.push(Step {
            name,
            ok,
            detail,
            millis,
        });
        outcome.map(drop)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut demo = Demo {
        json: args.iter().any(|a| a == "--json"),
        steps: Vec::new(),
    };
    let result = run(&mut demo);
    if demo.json {
        let steps: Vec<_> = demo
            .steps
            .iter()
            .map(|s| json!({"step": s.name, "ok": s.ok, "detail": s.detail, "millis": s.millis}))
            .collect();
        println!("{}", json!({"ok": result.is_ok(), "steps": steps}));
    } else {
        let passed = demo.steps.iter().filter(|s| s.ok).count();
        println!("\n{passed} passed, {} failed", demo.steps.len() - passed);
        if let Err(error) = &result {
            println!("stopped: {error:#}");
        }
    }
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(demo: &mut Demo) -> Result<()> {
    let Some(net) = TestNet::new("demo") else {
        bail!("the demo needs root, ip, the CNI reference plugins, cgroup2 and bpffs (see above)");
    };
    let mut nodes = Vec::new();
    let mut pods: Vec<Pod> = Vec::new();
    let control: &mut Option<ControlPlane> = &mut None;
    let mut waypoint_pod: Option<Pod> = None;
    demo.step("two nodes start Ambit's agent and ztunnel", || {
        let source = workspace_dir().join("deploy/examples/demo");
        for entry in std::fs::read_dir(&source).with_context(|| format!("reading {}", source.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                std::fs::copy(&path, net.config_dir().join(path.file_name().context("file name")?))?;
            }
        }
        let first = net.add_node("node1")?;
        let second = net.add_node("node2")?;
        // The control plane (CA and config push) runs on node1, reachable over the underlay.
        *control = Some(ControlPlane::new(&net, &first)?);
        let control = control.as_ref().context("control plane")?;
        nodes.extend(control.install(&net, &[&first, &second])?);
        Ok(format!(
            "config folder {} (namespace shop labelled istio.io/dataplane-mode=ambient, legacy unlabelled)\ncapture programs pinned under {} and {}",
            net.config_dir().display(),
            nodes[0].bpffs_dir().display(),
            nodes[1].bpffs_dir().display()
        ))
    })?;

    demo.step("pods join the mesh by namespace label (no sidecar)", || {
        pods.push(nodes[0].node().add_pod(PodSpec::new("shop", "client"))?);
        for (node, version) in [(0, "v1"), (1, "v2")] {
            let spec = PodSpec::new("shop", &format!("app-{version}"))
                .label("app", "app")
                .label("version", version);
            pods.push(nodes[node].node().add_pod(spec)?);
        }
        pods.push(
            nodes[1]
                .node()
                .add_pod(PodSpec::new("legacy", "outsider"))?,
        );
        // The waypoint's pod (outside ambient capture) exists from the start; its
        // Gateway and the service using it come in the last step.
        waypoint_pod = Some(
            nodes[0].node().add_pod(
                PodSpec::new("shop", "waypoint-0")
                    .service_account("waypoint")
                    .label("gateway.networking.k8s.io/gateway-name", "waypoint")
                    .label("istio.io/dataplane-mode", "none"),
            )?,
        );
        let mut served = nodes[0].served_workloads()?;
        served.extend(nodes[1].served_workloads()?);
        served.sort();
        ensure!(
            served == ["app-v1", "app-v2", "client"],
            "ztunnels serve {served:?}"
        );
        Ok(format!(
            "ztunnels serve {served:?}; legacy/outsider stays outside"
        ))
    })?;

    let [client, app_v1, app_v2, outsider] = &pods[..] else {
        bail!("expected four pods");
    };
    let _servers = [
        app::serve(app_v1, "[::]:8080".parse()?)?,
        app::serve(app_v2, "[::]:8080".parse()?)?,
        app::http_serve(app_v1, "[::]:9080".parse()?, "v1")?,
        app::http_serve(app_v2, "[::]:9080".parse()?, "v2")?,
    ];

    demo.step("no iptables or nftables rule anywhere", || {
        let mut rules = 0;
        for pod in &pods {
            for command in [
                vec!["iptables-save"],
                vec!["ip6tables-save"],
                vec!["nft", "list", "ruleset"],
            ] {
                let out = pod
                    .exec(
                        Command::new(command[0]).args(&command[1..]),
                        Duration::from_secs(10),
                    )?
                    .success()?;
                rules += out
                    .stdout
                    .lines()
                    .filter(|l| l.starts_with("-A") || l.starts_with("table"))
                    .count();
            }
        }
        ensure!(rules == 0, "{rules} rules found in the pods' namespaces");
        Ok("iptables-save, ip6tables-save and nft list ruleset are empty in every pod".to_owned())
    })?;

    let _control_processes = demo.step_with(
        "the mesh CA gives every workload its SPIFFE identity",
        || {
            let control = control.as_ref().context("control plane")?;
            // The CA reads which pods run where when it starts: after the pods.
            let processes = control.start(&net)?;
            for mesh in &nodes {
                mesh.wait_certificate(DEFAULT_IDENTITY, READY_TIMEOUT)?;
            }
            Ok((
                processes,
                format!(
                    "ambit-controller serve-ca on {} and serve on {}; both ztunnels hold a valid certificate for {DEFAULT_IDENTITY}",
                    control.ca_address(),
                    control.controller_address()
                ),
            ))
        },
    )?;

    demo.step("traffic between the nodes is mutual TLS (HBONE)", || {
        nodes[0].wait_peer(&app_v2.ipv4().to_string(), None, READY_TIMEOUT)?;
        let to = app_v2.addr_v4(8080);
        app::connect(client, to)?.expect_ok()?;
        let mtls = nodes[1].metrics()?.sum(
            "istio_tcp_connections_opened_total",
            &[
                ("reporter", "destination"),
                ("connection_security_policy", "mutual_tls"),
                ("source_principal", DEFAULT_IDENTITY),
                ("destination_workload", "app-v2"),
            ],
        );
        ensure!(mtls >= 1.0, "app-v2's ztunnel saw no mutual-TLS connection from {DEFAULT_IDENTITY}");
        Ok(format!(
            "client -> app-v2 went over HTTP/2 CONNECT on 15008 with TLS 1.3; app-v2's ztunnel reports connection_security_policy=\"mutual_tls\", source_principal=\"{DEFAULT_IDENTITY}\" ({mtls} connection(s))"
        ))
    })?;

    for (name, target, node) in [
        (
            "client -> app-v1 on the same node is captured and relayed",
            app_v1,
            0,
        ),
        (
            "client -> app-v2 on the other node is captured and relayed",
            app_v2,
            1,
        ),
    ] {
        demo.step(name, || {
            let to = target.addr_v4(8080);
            let report = app::connect(client, to)?.expect_ok()?;
            ensure!(report.peer == Some(to), "the app saw peer {:?}", report.peer);
            let relayed = nodes[0].metrics()?.sum(
                "istio_tcp_connections_opened_total",
                &[("reporter", "source"), ("source_workload", "client")],
            );
            let inbound = nodes[node].metrics()?.sum(
                "istio_tcp_connections_opened_total",
                &[("reporter", "destination"), ("destination_workload", target.name())],
            );
            Ok(format!(
                "getpeername() shows {to} (the app sees no difference)\nclient's ztunnel: {relayed} outbound connections; {}'s ztunnel: {inbound} inbound",
                target.name()
            ))
        })?;
    }

    demo.step(
        "a client outside the mesh is captured on the way in",
        || {
            let to = app_v1.addr_v6(8080);
            app::connect(outsider, to)?.expect_ok()?;
            let needle = format!("dst=Some({to})");
            let line = nodes[0]
                .ztunnel()?
                .wait_for_log_line(Duration::from_secs(5), |l| {
                    l.contains("direction=Inbound") && l.contains(&needle)
                })
                .context("no inbound access-log line")?;
            let line = line.as_str();
            Ok(format!(
                "ztunnel access log: {}",
                line.split("access: ").nth(1).unwrap_or(line)
            ))
        },
    )?;

    demo.step(
        "with ztunnel down, enrolled pods fail closed, then recover",
        || {
            nodes[0].stop_ztunnel()?;
            let down = app::connect_with(
                client,
                app_v2.addr_v4(8080),
                "hello",
                Duration::from_secs(3),
            )?;
            ensure!(!down.ok, "a connection worked with ztunnel down: {down:?}");
            nodes[0].start_ztunnel()?;
            app::connect(client, app_v2.addr_v4(8080))?.expect_ok()?;
            Ok(format!(
                "while down: {}; after restart: connected",
                down.error_kind.unwrap_or_default()
            ))
        },
    )?;

    demo.step("PeerAuthentication STRICT turns plaintext away", || {
        net.write_manifest("strict.yaml", &peer_authentication_strict())?;
        let to = app_v1.addr_v4(8080);
        wait_for("the STRICT policy to apply", READY_TIMEOUT, || -> Result<Option<()>> {
            Ok((!app::connect_with(outsider, to, "hello", Duration::from_secs(2))?.ok).then_some(()))
        })?;
        app::connect(client, to)?.expect_ok()?;
        let denied = nodes[0].metrics()?.sum(
            "ambit_policy_denials_total",
            &[("reason", "plaintext_refused"), ("policy", "shop/strict")],
        );
        net.remove_manifest("strict.yaml")?;
        Ok(format!(
            "legacy/outsider (no mesh identity) is refused by app-v1's ztunnel ({denied} denial(s) counted for shop/strict); client (mutual TLS) still connects"
        ))
    })?;

    let _waypoint = demo.step_with(
        "a waypoint applies the VirtualService: v2 for everyone, v1 for jason",
        || {
            let control = control.as_ref().context("control plane")?;
            let pod = waypoint_pod.as_ref().context("the waypoint's pod")?;
            let manifests = workspace_dir().join("deploy/examples/demo/waypoint/app.yaml");
            std::fs::copy(&manifests, net.config_dir().join("app.yaml"))
                .with_context(|| format!("copying {}", manifests.display()))?;
            let waypoint = control.start_waypoint(pod, "waypoint")?;
            let vip = "198.19.200.30:80".parse()?;
            let everyone = wait_for("the waypoint to route", READY_TIMEOUT, || -> Result<Option<app::HttpReport>> {
                let report = app::http_get(client, vip, 20, None)?;
                Ok((report.bodies.get("v2") == Some(&20)).then_some(report))
            })?;
            let jason = app::http_get(client, vip, 20, Some("end-user: jason"))?;
            ensure!(jason.bodies.get("v1") == Some(&20), "jason's requests: {jason:?}");
            Ok((
                waypoint,
                format!(
                    "client -> app (198.19.200.30:80) goes over HBONE to ambit-waypoint, which routes by the VirtualService: 20/20 answered by {:?}; with end-user: jason, 20/20 by {:?}",
                    everyone.bodies.keys().collect::<Vec<_>>(),
                    jason.bodies.keys().collect::<Vec<_>>()
                ),
            ))
        },
    )?;
    Ok(())
}

fn peer_authentication_strict() -> serde_json::Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": { "name": "strict", "namespace": "shop" },
        "spec": { "mtls": { "mode": "STRICT" } },
    })
}
