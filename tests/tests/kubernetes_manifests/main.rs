//! The manifests under `deploy/kubernetes` kept true to the binaries, without a cluster:
//! every document is a Kubernetes object of a known type with no field that type lacks;
//! every container running an Ambit binary passes that binary's own clap parser with its
//! command, args and the environment variables the binary reads; the ports it declares
//! are ones the binary listens on (not on loopback), and probes and Services name ports
//! that exist; the paths it is given lie on its volumes, shared with the other container
//! where the two must meet; and the controller's ClusterRole grants list and watch on
//! exactly the kinds the `--kube` source watches (`KINDS`); every client of the
//! controller (the agent, ztunnel, the waypoints) reaches it over `https://` and verifies
//! it against the mesh root the controller publishes (the `ambit-root-cert` ConfigMap,
//! mounted), and `serve` issues its certificate from the CA folder `serve-ca` uses. The
//! Deployment and Service
//! the controller applies for a waypoint Gateway (built with the controller container's
//! own flags) are held to the same checks, `ambit-waypoint`'s parser included.
//!
//! Renaming a flag or an environment variable, a port, or adding a watched kind without
//! its RBAC fails here.

mod manifests;

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use ambit_agent::config::{self as agent, ZTUNNEL_SOCKET_NAME};
use ambit_controller::{
    ca::material::ROOT_CERT_FILE, cli as controller, deployer::ROOT_CERT_CONFIG_MAP,
    source::kubernetes::kinds::KINDS,
};
use k8s_openapi::{
    api::{
        core::v1::{Container, PodSpec, Probe},
        rbac::v1::PolicyRule,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};

use self::manifests::{INGRESS_LISTENERS, Manifests, Workload, parse_container};

/// The audience of the node's projected token, which the controller's TokenReview checks.
const CA_TOKEN_AUDIENCE: &str = "ambit-ca";

/// What one container's command line says, through its binary's parser.
enum Parsed {
    Controller(controller::Cli),
    Agent(agent::Cli),
    Ztunnel(ambit_ztunnel::config::Config),
    Waypoint(ambit_waypoint::cli::Cli),
}

impl Parsed {
    /// Parses `container` with the parser of the Ambit binary it runs; `None` for a shell
    /// helper (init containers only).
    fn of(container: &Container) -> Result<Option<Self>, String> {
        let Some(binary) = container.command.as_ref().and_then(|c| c.first()) else {
            return Err(format!("container {} has no command", container.name));
        };
        Ok(Some(match binary.as_str() {
            "ambit-controller" => Self::Controller(parse_container(container)?),
            "ambit-agent" => Self::Agent(parse_container(container)?),
            "ambit-ztunnel" => {
                let config: ambit_ztunnel::config::Config = parse_container(container)?;
                config.validate().map_err(|error| error.to_string())?;
                Self::Ztunnel(config)
            }
            "ambit-waypoint" => Self::Waypoint(parse_container(container)?),
            "sh" => return Ok(None),
            other => return Err(format!("{other} is not an Ambit binary in the image")),
        }))
    }

    /// The addresses the binary listens on.
    fn listeners(&self) -> Vec<SocketAddr> {
        match self {
            Self::Controller(cli) => match &cli.command {
                controller::Command::Serve {
                    listen,
                    monitoring_listen,
                    ..
                }
                | controller::Command::ServeCa {
                    listen,
                    monitoring_listen,
                    ..
                } => vec![*listen, *monitoring_listen],
                _ => Vec::new(),
            },
            Self::Agent(_) => Vec::new(),
            Self::Ztunnel(config) => vec![
                config.metrics_addr,
                config.readiness_addr,
                config.admin_addr,
            ],
            Self::Waypoint(cli) if cli.ingress => {
                [cli.listen, cli.metrics_listen, cli.admin_listen]
                    .into_iter()
                    .chain(
                        INGRESS_LISTENERS
                            .iter()
                            .map(|(_, port)| SocketAddr::from(([0u16; 8], *port))),
                    )
                    .collect()
            }
            Self::Waypoint(cli) => vec![cli.listen, cli.metrics_listen, cli.admin_listen],
        }
    }

    /// The files and folders the binary is given.
    fn paths(&self) -> Vec<PathBuf> {
        match self {
            Self::Controller(cli) => match &cli.command {
                controller::Command::Serve {
                    ca_dir,
                    callers,
                    origin,
                    ..
                }
                | controller::Command::ServeCa {
                    ca_dir,
                    callers,
                    origin,
                    ..
                } => std::iter::once(ca_dir.clone())
                    .chain(callers.tokens_dir.clone())
                    .chain(origin.config_dir.clone())
                    .collect(),
                _ => Vec::new(),
            },
            Self::Agent(cli) => match &cli.command {
                agent::Command::Run(run) => [
                    run.config_dir.clone(),
                    run.controller_token_file.clone(),
                    run.ca_root_file.clone(),
                    run.cgroup.clone(),
                    Some(run.paths.bpffs_dir.clone()),
                    Some(run.paths.run_dir.clone()),
                    run.cni.cni_bin_dir.clone(),
                    run.cni.cni_conf_dir.clone(),
                ]
                .into_iter()
                .flatten()
                .collect(),
                agent::Command::Uninstall { paths, cni } => [
                    Some(paths.bpffs_dir.clone()),
                    Some(paths.run_dir.clone()),
                    cni.cni_bin_dir.clone(),
                    cni.cni_conf_dir.clone(),
                ]
                .into_iter()
                .flatten()
                .collect(),
            },
            Self::Ztunnel(config) => [
                Some(config.agent_socket.clone()),
                Some(config.bpffs_dir.clone()),
                config.ca_token_file.clone(),
                config.ca_root_file.clone(),
                config.local_config.clone(),
            ]
            .into_iter()
            .flatten()
            .collect(),
            Self::Waypoint(cli) => vec![cli.ca_token_file.clone(), cli.ca_root_file.clone()],
        }
    }
}

/// Every container of every workload, with its parse.
fn parsed_containers(manifests: &Manifests) -> Vec<(&Workload, &Container, Option<Parsed>)> {
    let mut all = Vec::new();
    for workload in &manifests.workloads {
        for (container, init) in workload.containers() {
            let parsed = Parsed::of(container).unwrap_or_else(|error| {
                panic!("{} container {}: {error}", workload.name, container.name)
            });
            assert!(
                parsed.is_some() || init,
                "{} container {} runs a shell: only init containers may, the others run Ambit binaries",
                workload.name,
                container.name
            );
            all.push((workload, container, parsed));
        }
    }
    all
}

#[test]
fn every_container_parses_with_its_binary_and_runs_this_version() {
    let manifests = Manifests::load();
    let image = format!("ghcr.io/ambit-mesh/ambit:{}", env!("CARGO_PKG_VERSION"));
    let parsed = parsed_containers(&manifests);
    let binaries: BTreeSet<&str> = parsed
        .iter()
        .filter_map(|(_, container, parsed)| parsed.as_ref().map(|_| container))
        .filter_map(|container| container.command.as_ref()?.first().map(String::as_str))
        .collect();
    assert_eq!(
        binaries,
        BTreeSet::from([
            "ambit-agent",
            "ambit-controller",
            "ambit-waypoint",
            "ambit-ztunnel"
        ]),
        "the manifests run the controller, the agent and ztunnel, and the controller the waypoints"
    );
    for (workload, container, _) in &parsed {
        assert_eq!(
            container.image.as_deref(),
            Some(image.as_str()),
            "{} container {}: the image of this version",
            workload.name,
            container.name
        );
    }
}

#[test]
fn declared_ports_are_the_ports_the_binaries_listen_on() {
    let manifests = Manifests::load();
    for (workload, container, parsed) in parsed_containers(&manifests) {
        let listeners = parsed.as_ref().map(Parsed::listeners).unwrap_or_default();
        for port in container.ports.iter().flatten() {
            let listener = listeners
                .iter()
                .find(|address| i32::from(address.port()) == port.container_port);
            match listener {
                Some(address) => assert!(
                    !address.ip().is_loopback(),
                    "{} container {} declares port {} but listens on {address}: only the node itself could reach it",
                    workload.name,
                    container.name,
                    port.container_port
                ),
                None => panic!(
                    "{} container {} declares port {} but listens on {listeners:?}",
                    workload.name, container.name, port.container_port
                ),
            }
        }
    }
}

#[test]
fn probes_and_services_name_ports_that_exist() {
    let manifests = Manifests::load();
    for workload in &manifests.workloads {
        for (container, _) in workload.containers() {
            let probes = [
                &container.readiness_probe,
                &container.liveness_probe,
                &container.startup_probe,
            ];
            for probe in probes.into_iter().flatten() {
                let port = probe_port(probe).unwrap_or_else(|| {
                    panic!(
                        "{} container {}: a probe without a port",
                        workload.name, container.name
                    )
                });
                assert!(
                    resolves(&port, std::slice::from_ref(container)),
                    "{} container {}: probe port {port:?} is not one of its ports",
                    workload.name,
                    container.name
                );
            }
        }
    }
    for service in &manifests.services {
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let spec = service.spec.as_ref().expect("a Service has a spec");
        let selector = spec.selector.as_ref().expect("a Service selects pods");
        let selected: Vec<&Workload> = manifests
            .workloads
            .iter()
            .filter(|workload| {
                selector
                    .iter()
                    .all(|(key, value)| workload.pod_labels().get(key) == Some(value))
            })
            .collect();
        assert_eq!(
            selected.len(),
            1,
            "Service {name} selects one workload's pods"
        );
        let containers = &selected[0].pod_spec().containers;
        for port in spec.ports.iter().flatten() {
            let target = port
                .target_port
                .clone()
                .unwrap_or(IntOrString::Int(port.port));
            assert!(
                resolves(&target, containers),
                "Service {name} port {}: target {target:?} is no container port of {}",
                port.port,
                selected[0].name
            );
        }
    }
}

fn probe_port(probe: &Probe) -> Option<IntOrString> {
    if let Some(http) = &probe.http_get {
        return Some(http.port.clone());
    }
    if let Some(tcp) = &probe.tcp_socket {
        return Some(tcp.port.clone());
    }
    probe.grpc.as_ref().map(|grpc| IntOrString::Int(grpc.port))
}

/// Whether `port` (a number or a name) is a declared port of one of `containers`.
fn resolves(port: &IntOrString, containers: &[Container]) -> bool {
    containers
        .iter()
        .flat_map(|container| container.ports.iter().flatten())
        .any(|declared| match port {
            IntOrString::Int(number) => declared.container_port == *number,
            IntOrString::String(name) => declared.name.as_deref() == Some(name.as_str()),
        })
}

#[test]
fn paths_lie_on_volumes_and_the_node_containers_meet_on_them() {
    let manifests = Manifests::load();
    for (workload, container, parsed) in parsed_containers(&manifests) {
        for path in parsed.iter().flat_map(Parsed::paths) {
            assert!(
                workload.volume_at(container, &path).is_some(),
                "{} container {}: {} is on no volume (the image's own filesystem is read-only)",
                workload.name,
                container.name,
                path.display()
            );
        }
    }

    let node = manifests.workload_running("ambit-agent");
    let (agent_container, run) = node.agent_run();
    let (ztunnel_container, ztunnel) = node.ztunnel();
    let on = |container: &Container, path: &Path| {
        node.volume_at(container, path)
            .map(|(volume, _)| volume.name.clone())
    };
    assert_eq!(
        ztunnel.agent_socket,
        run.paths.run_dir.join(ZTUNNEL_SOCKET_NAME),
        "ztunnel dials the agent's hand-off socket"
    );
    assert_eq!(
        on(ztunnel_container, &ztunnel.agent_socket),
        on(agent_container, &run.paths.run_dir),
        "the agent and ztunnel share the run folder"
    );
    assert_eq!(ztunnel.bpffs_dir, run.paths.bpffs_dir, "one pin folder");
    assert_eq!(
        on(ztunnel_container, &ztunnel.bpffs_dir),
        on(agent_container, &run.paths.bpffs_dir),
        "the agent and ztunnel share the bpffs"
    );

    // The CNI plugin runs on the node and dials the run folder's socket by the path the
    // agent wrote into the CNI configuration: the container's path must be the node's.
    let (volume, mount) = node
        .volume_at(agent_container, &run.paths.run_dir)
        .expect("checked above");
    let host_path = volume
        .host_path
        .as_ref()
        .expect("the agent's run folder is a hostPath volume: the CNI plugin runs on the node");
    assert_eq!(
        Path::new(&host_path.path),
        Path::new(&mount.mount_path),
        "the agent's run folder is mounted at the node's own path"
    );
    for path in [
        &run.paths.bpffs_dir,
        run.cgroup.as_ref().expect("the node's cgroup is given"),
        run.cni
            .cni_bin_dir
            .as_ref()
            .expect("the CNI plugin is installed"),
        run.cni
            .cni_conf_dir
            .as_ref()
            .expect("the CNI plugin is chained"),
    ] {
        let (volume, _) = node
            .volume_at(agent_container, path)
            .expect("checked above");
        assert!(
            volume.host_path.is_some(),
            "the agent's {} is on the node (a hostPath volume), not {}",
            path.display(),
            volume.name
        );
    }

    // ztunnel presents its token to the CA and the push, the agent to the push: both a
    // projected token for the controller's audience.
    for (container, token) in [
        (ztunnel_container, ztunnel.ca_token_file.as_ref()),
        (agent_container, run.controller_token_file.as_ref()),
    ] {
        let token =
            token.unwrap_or_else(|| panic!("{} has a token for the controller", container.name));
        let (volume, mount) = node.volume_at(container, token).expect("checked above");
        let file = token
            .strip_prefix(&mount.mount_path)
            .expect("the token lies under its mount");
        let projected = volume
            .projected
            .iter()
            .flat_map(|projected| projected.sources.iter().flatten())
            .filter_map(|source| source.service_account_token.as_ref())
            .find(|projection| Path::new(&projection.path) == file)
            .unwrap_or_else(|| {
                panic!(
                    "{}'s token is a projected service-account token",
                    container.name
                )
            });
        assert_eq!(
            projected.audience.as_deref(),
            Some(CA_TOKEN_AUDIENCE),
            "{}'s token is for the controller only",
            container.name
        );
    }
}

#[test]
fn uninstall_in_the_agent_container_undoes_what_run_installs() {
    let manifests = Manifests::load();
    let node = manifests.workload_running("ambit-agent");
    let (container, run) = node.agent_run();
    // `kubectl exec POD -c agent -- ambit-agent uninstall`, with the container's
    // environment, as docs/OPERATIONS.md says to run it.
    let mut uninstall = container.clone();
    uninstall.command = Some(vec!["ambit-agent".to_owned(), "uninstall".to_owned()]);
    uninstall.args = None;
    let agent::Command::Uninstall { paths, cni } =
        manifests::parse_container_leniently::<agent::Cli>(&uninstall)
            .unwrap_or_else(|error| panic!("ambit-agent uninstall: {error}"))
            .command
    else {
        unreachable!("the uninstall subcommand parses as Uninstall")
    };
    assert_eq!(
        (paths.bpffs_dir, paths.run_dir),
        (run.paths.bpffs_dir, run.paths.run_dir)
    );
    assert_eq!(
        (cni.cni_bin_dir, cni.cni_conf_dir),
        (run.cni.cni_bin_dir, run.cni.cni_conf_dir),
        "uninstall removes the CNI plugin run installed"
    );
}

/// Whether `rules` let their subject `verb` `resource` in API group `group`.
fn grants(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|rule| {
        rule.api_groups.iter().flatten().any(|g| g == group)
            && rule.resources.iter().flatten().any(|r| r == resource)
            && rule.verbs.iter().any(|v| v == verb)
    })
}

#[test]
fn the_cluster_role_lets_the_controller_apply_each_waypoints_objects_and_status() {
    let manifests = Manifests::load();
    let rules = manifests.cluster_rules_of(manifests.workload_running("ambit-controller"));
    for (group, resource) in [
        ("", "configmaps"),
        ("", "serviceaccounts"),
        ("apps", "deployments"),
        ("", "services"),
        ("gateway.networking.k8s.io", "gateways/status"),
    ] {
        assert!(
            grants(&rules, group, resource, "patch"),
            "the deployer server-side applies {resource} (group {group:?}) but may not patch them"
        );
    }
}

#[test]
fn the_cluster_role_grants_list_and_watch_on_exactly_the_watched_kinds() {
    let manifests = Manifests::load();
    let controller = manifests.workload_running("ambit-controller");
    for (container, _) in controller.containers() {
        if let Ok(Some(Parsed::Controller(cli))) = Parsed::of(container) {
            let kube = match &cli.command {
                controller::Command::Serve { origin, .. }
                | controller::Command::ServeCa { origin, .. } => origin.kube,
                _ => false,
            };
            assert!(
                kube,
                "container {} watches the Kubernetes API",
                container.name
            );
        }
    }
    let rules = manifests.cluster_rules_of(controller);
    let granted = |group: &str, resource: &str, verb: &str| grants(&rules, group, resource, verb);
    let watched: BTreeSet<(&str, &str)> =
        KINDS.iter().map(|kind| (kind.group, kind.plural)).collect();
    for (group, plural) in &watched {
        for verb in ["list", "watch"] {
            assert!(
                granted(group, plural, verb),
                "the controller watches {plural} in group {group:?} but may not {verb} them"
            );
        }
    }
    for rule in &rules {
        if !rule
            .verbs
            .iter()
            .any(|verb| verb == "list" || verb == "watch")
        {
            continue;
        }
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                assert!(
                    watched.contains(&(group.as_str(), resource.as_str())),
                    "the ClusterRole lets the controller list or watch {resource} in group {group:?}, which it does not watch"
                );
            }
        }
    }
}

#[test]
fn the_image_holds_every_binary_the_manifests_run() {
    let manifests = Manifests::load();
    let dockerfile = std::fs::read_to_string(manifests::repository_root().join("Dockerfile"))
        .expect("the Dockerfile at the repository root");
    let mut binaries: BTreeSet<String> = parsed_containers(&manifests)
        .into_iter()
        .filter(|(_, _, parsed)| parsed.is_some())
        .filter_map(|(_, container, _)| container.command.as_ref()?.first().cloned())
        .collect();
    // The agent installs the CNI plugin from next to its own binary.
    binaries.insert(ambit_agent::cni_install::PLUGIN_TYPE.to_owned());
    for binary in binaries {
        assert!(
            dockerfile.contains(&format!("/usr/local/bin/{binary}")),
            "the Dockerfile does not install {binary} in /usr/local/bin"
        );
    }
}

/// Kubernetes refuses these at admission; checked here so a cluster need not.
#[test]
fn security_contexts_are_ones_kubernetes_accepts() {
    let manifests = Manifests::load();
    for workload in &manifests.workloads {
        let spec: &PodSpec = workload.pod_spec();
        for (container, _) in workload.containers() {
            let Some(context) = &container.security_context else {
                continue;
            };
            if context.allow_privilege_escalation != Some(false) {
                continue;
            }
            let sys_admin = context
                .capabilities
                .iter()
                .flat_map(|caps| caps.add.iter().flatten())
                .any(|cap| cap == "SYS_ADMIN" || cap == "CAP_SYS_ADMIN");
            assert!(
                context.privileged != Some(true) && !sys_admin,
                "{} container {}: allowPrivilegeEscalation: false with privileged or SYS_ADMIN is rejected",
                workload.name,
                container.name
            );
        }
        if spec.host_network == Some(true) {
            assert_eq!(
                spec.dns_policy.as_deref(),
                Some("ClusterFirstWithHostNet"),
                "{}: on the host network, Service names resolve only with ClusterFirstWithHostNet",
                workload.name
            );
        }
    }
}

/// Whether `path` in `container` of `workload` is the `root-cert.pem` of a mounted
/// `ambit-root-cert` ConfigMap, the root the controller publishes.
fn is_published_root(workload: &manifests::Workload, container: &Container, path: &Path) -> bool {
    let Some((volume, mount)) = workload.volume_at(container, path) else {
        return false;
    };
    volume
        .config_map
        .as_ref()
        .is_some_and(|config_map| config_map.name == ROOT_CERT_CONFIG_MAP)
        && path.strip_prefix(&mount.mount_path).ok() == Some(Path::new(ROOT_CERT_FILE))
}

#[test]
fn every_client_verifies_the_controller_against_the_published_root() {
    let manifests = Manifests::load();
    let node = manifests.workload_running("ambit-agent");
    let (agent_container, run) = node.agent_run();
    let (ztunnel_container, ztunnel) = node.ztunnel();
    let mut clients = vec![
        (
            node,
            agent_container,
            vec![run.controller_address.clone()],
            run.ca_root_file.clone(),
        ),
        (
            node,
            ztunnel_container,
            vec![
                ztunnel.controller_address.clone(),
                ztunnel.ca_address.clone(),
            ],
            ztunnel.ca_root_file.clone(),
        ),
    ];
    // The waypoint's and the ingress gateway's Deployments.
    for waypoint in manifests.workloads_running("ambit-waypoint") {
        let waypoint_container = &waypoint.pod_spec().containers[0];
        let Ok(Some(Parsed::Waypoint(waypoint_cli))) = Parsed::of(waypoint_container) else {
            panic!("{} runs ambit-waypoint", waypoint.name);
        };
        clients.push((
            waypoint,
            waypoint_container,
            vec![
                Some(waypoint_cli.controller_address.clone()),
                Some(waypoint_cli.ca_address.clone()),
            ],
            Some(waypoint_cli.ca_root_file.clone()),
        ));
    }
    for (workload, container, addresses, root) in clients {
        let name = format!("{} container {}", workload.name, container.name);
        for address in addresses {
            let address = address.unwrap_or_else(|| panic!("{name} reaches the controller"));
            assert!(
                address.starts_with("https://"),
                "{name}: {address} is not TLS: the controller serves only https://"
            );
        }
        let root = root.unwrap_or_else(|| panic!("{name} has --ca-root-file"));
        assert!(
            is_published_root(workload, container, &root),
            "{name}: {} is not root-cert.pem of the mounted ConfigMap {ROOT_CERT_CONFIG_MAP}",
            root.display()
        );
    }

    // `serve` issues its certificate from the CA folder `serve-ca` uses.
    let controller = manifests.workload_running("ambit-controller");
    let mut ca_dirs = Vec::new();
    for (container, _) in controller.containers() {
        if let Ok(Some(Parsed::Controller(cli))) = Parsed::of(container) {
            let (controller::Command::Serve { ca_dir, .. }
            | controller::Command::ServeCa { ca_dir, .. }) = &cli.command
            else {
                continue;
            };
            let (volume, _) = controller
                .volume_at(container, ca_dir)
                .unwrap_or_else(|| panic!("{}'s --ca-dir is on a volume", container.name));
            ca_dirs.push((ca_dir.clone(), volume.name.clone()));
        }
    }
    assert_eq!(ca_dirs.len(), 2, "serve and serve-ca: {ca_dirs:?}");
    assert_eq!(ca_dirs[0], ca_dirs[1], "one CA folder, on one volume");

    // It publishes the root: the ClusterRole lets it apply ConfigMaps, and read only
    // the mesh config's.
    let rules = manifests.cluster_rules_of(controller);
    let config_map_rules: Vec<(BTreeSet<&str>, Vec<&str>)> = rules
        .iter()
        .filter(|rule| {
            rule.api_groups.iter().flatten().any(String::is_empty)
                && rule.resources.iter().flatten().any(|r| r == "configmaps")
        })
        .map(|rule| {
            let verbs = rule.verbs.iter().map(String::as_str).collect();
            let names = rule.resource_names.iter().flatten().map(String::as_str);
            (verbs, names.collect())
        })
        .collect();
    assert_eq!(
        config_map_rules,
        [
            (BTreeSet::from(["create", "patch"]), vec![]),
            (BTreeSet::from(["list", "watch"]), vec!["istio"]),
        ],
        "the controller server-side applies the root's ConfigMap and reads only Istio's mesh config"
    );
}
