//! Reading `deploy/kubernetes` into k8s-openapi types (a field the type lacks is an
//! error, not silently dropped), and feeding a container's command line and environment
//! to a binary's clap parser.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use ambit_agent::config as agent;
use ambit_controller::{cli as controller, deployer};
use ambit_ztunnel::config::Config as ZtunnelConfig;
use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment},
        core::v1::{
            Container, Namespace, PodSpec, PodTemplateSpec, Service, ServiceAccount, Volume,
            VolumeMount,
        },
        rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{Deserialize as _, de::DeserializeOwned};

/// The environment variables a container may set that no Ambit flag reads.
const OTHER_ENV: &[&str] = &["RUST_LOG"];

pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the repository")
        .to_owned()
}

fn manifests_dir() -> PathBuf {
    repository_root().join("deploy/kubernetes")
}

/// A Deployment's or DaemonSet's pods.
/// The listeners of the ingress Gateway whose Deployment is checked: what its
/// `ambit-waypoint --ingress` listens on besides its flags (they come from the push).
pub const INGRESS_LISTENERS: [(&str, u16); 2] = [("http", 80), ("https", 443)];

#[derive(Debug)]
pub struct Workload {
    /// `Kind/namespace/name`, for messages.
    pub name: String,
    namespace: String,
    template: PodTemplateSpec,
}

impl Workload {
    fn new(kind: &str, metadata: &ObjectMeta, template: PodTemplateSpec) -> Self {
        let namespace = metadata.namespace.clone().unwrap_or_default();
        let name = metadata.name.clone().unwrap_or_default();
        Self {
            name: format!("{kind}/{namespace}/{name}"),
            namespace,
            template,
        }
    }

    pub fn pod_spec(&self) -> &PodSpec {
        self.template
            .spec
            .as_ref()
            .expect("a pod template has a spec")
    }

    pub fn pod_labels(&self) -> BTreeMap<String, String> {
        self.template
            .metadata
            .as_ref()
            .and_then(|metadata| metadata.labels.clone())
            .unwrap_or_default()
    }

    /// Every container, with whether it is an init container.
    pub fn containers(&self) -> Vec<(&Container, bool)> {
        let spec = self.pod_spec();
        spec.init_containers
            .iter()
            .flatten()
            .map(|container| (container, true))
            .chain(spec.containers.iter().map(|container| (container, false)))
            .collect()
    }

    /// The volume, and its mount in `container`, that `path` lies on (the deepest mount).
    pub fn volume_at(&self, container: &Container, path: &Path) -> Option<(&Volume, VolumeMount)> {
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .filter(|mount| path.starts_with(&mount.mount_path))
            .max_by_key(|mount| mount.mount_path.len())?
            .clone();
        let volume = self
            .pod_spec()
            .volumes
            .iter()
            .flatten()
            .find(|volume| volume.name == mount.name)
            .unwrap_or_else(|| panic!("{}: mount {} names no volume", self.name, mount.name));
        Some((volume, mount))
    }

    fn container_running(&self, binary: &str) -> Option<&Container> {
        self.pod_spec().containers.iter().find(|container| {
            container
                .command
                .as_ref()
                .and_then(|c| c.first())
                .is_some_and(|c| c == binary)
        })
    }

    /// The agent's container and its `run` flags.
    pub fn agent_run(&self) -> (&Container, agent::RunArgs) {
        let container = self
            .container_running("ambit-agent")
            .expect("an agent container");
        match parse_container::<agent::Cli>(container)
            .expect("the agent's flags parse")
            .command
        {
            agent::Command::Run(run) => (container, run),
            agent::Command::Uninstall { .. } => {
                panic!("{}: the agent container runs `ambit-agent run`", self.name)
            }
        }
    }

    /// ztunnel's container and its flags.
    pub fn ztunnel(&self) -> (&Container, ZtunnelConfig) {
        let container = self
            .container_running("ambit-ztunnel")
            .expect("a ztunnel container");
        (
            container,
            parse_container(container).expect("ztunnel's flags parse"),
        )
    }
}

/// Everything under `deploy/kubernetes` that the tests look at.
#[derive(Debug, Default)]
pub struct Manifests {
    pub workloads: Vec<Workload>,
    pub services: Vec<Service>,
    cluster_roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
}

impl Manifests {
    /// Reads every manifest, checks the kustomization lists exactly them, and fails on a
    /// document of an unexpected kind or with a field its type does not have.
    pub fn load() -> Self {
        let dir = manifests_dir();
        let mut files: BTreeSet<String> = fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
            .map(|entry| {
                entry
                    .expect("a directory entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
            .collect();
        assert!(
            files.remove("kustomization.yaml"),
            "{} has a kustomization.yaml",
            dir.display()
        );
        let kustomization: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&read(&dir.join("kustomization.yaml")))
                .expect("kustomization.yaml is YAML");
        let resources: BTreeSet<String> = kustomization["resources"]
            .as_sequence()
            .expect("kustomization.yaml lists its resources")
            .iter()
            .map(|resource| {
                resource
                    .as_str()
                    .expect("a resource is a file name")
                    .to_owned()
            })
            .collect();
        assert_eq!(
            resources,
            files,
            "kustomization.yaml lists exactly the manifests of {}",
            dir.display()
        );

        let mut manifests = Self::default();
        for file in &files {
            let path = dir.join(file);
            for (index, document) in serde_yaml_ng::Deserializer::from_str(&read(&path)).enumerate()
            {
                let value = serde_yaml_ng::Value::deserialize(document)
                    .unwrap_or_else(|error| panic!("{file} document {}: {error}", index + 1));
                if value.is_null() {
                    continue;
                }
                manifests.add(value, &format!("{file} document {}", index + 1));
            }
        }
        manifests.add_deployed_waypoint();
        manifests
    }

    /// Adds what the controller (`serve --kube`, with its container's flags) applies for
    /// a waypoint Gateway `shop/waypoint`: its objects are manifests too, and the same
    /// checks hold for them.
    fn add_deployed_waypoint(&mut self) {
        let serve = self
            .workloads
            .iter()
            .flat_map(|workload| workload.containers())
            .filter_map(|(container, _)| {
                parse_container::<controller::Cli>(container)
                    .ok()
                    .filter(|_| {
                        container
                            .command
                            .iter()
                            .flatten()
                            .next()
                            .map(String::as_str)
                            == Some("ambit-controller")
                    })
            })
            .find_map(|cli| match cli.command {
                controller::Command::Serve {
                    waypoints,
                    trust_domain,
                    ..
                } => Some(deployer::Template {
                    flags: waypoints,
                    trust_domain,
                    root_pem: String::new(),
                }),
                _ => None,
            })
            .expect("a container runs `ambit-controller serve`");
        let ingress = deployer::Role::Ingress(
            INGRESS_LISTENERS
                .iter()
                .map(|(name, port)| ((*name).to_owned(), *port))
                .collect(),
        );
        for (what, name, role) in [
            ("a waypoint Gateway", "waypoint", &deployer::Role::Waypoint),
            (
                "an ingress Gateway (class istio)",
                "bookinfo-gateway",
                &ingress,
            ),
        ] {
            let owner = deployer::Owner {
                namespace: "shop",
                name,
                uid: "6a3f0c1e-0000-4000-8000-000000000001",
                role,
            };
            let deployment = serve.deployment(owner);
            self.workloads.push(Workload::new(
                &format!("Deployment (applied for {what})"),
                &deployment.metadata,
                deployment.spec.template,
            ));
            self.services.push(serve.service(owner));
        }
    }

    fn add(&mut self, value: serde_yaml_ng::Value, at: &str) {
        let kind = value["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{at}: no kind"))
            .to_owned();
        match kind.as_str() {
            "Namespace" => drop(typed::<Namespace>(value, at)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(value, at)),
            "ClusterRole" => self.cluster_roles.push(typed(value, at)),
            "ClusterRoleBinding" => self.bindings.push(typed(value, at)),
            "Service" => self.services.push(typed(value, at)),
            "Deployment" => {
                let deployment: Deployment = typed(value, at);
                let template = deployment.spec.template;
                self.workloads
                    .push(Workload::new("Deployment", &deployment.metadata, template));
            }
            "DaemonSet" => {
                let daemon_set: DaemonSet = typed(value, at);
                let template = daemon_set.spec.template;
                self.workloads
                    .push(Workload::new("DaemonSet", &daemon_set.metadata, template));
            }
            other => panic!("{at}: kind {other} is not one these tests check — teach them"),
        }
    }

    /// The workload one of whose containers runs `binary`.
    pub fn workload_running<'a>(&'a self, binary: &'a str) -> &'a Workload {
        let mut running = self.workloads_running(binary);
        let workload = running
            .next()
            .unwrap_or_else(|| panic!("no workload runs {binary}"));
        assert!(running.next().is_none(), "one workload runs {binary}");
        workload
    }

    /// The workloads one of whose containers runs `binary`.
    pub fn workloads_running<'a>(&'a self, binary: &'a str) -> impl Iterator<Item = &'a Workload> {
        self.workloads
            .iter()
            .filter(move |workload| workload.container_running(binary).is_some())
    }

    /// The rules of every ClusterRole bound to the service account of `workload`'s pods.
    pub fn cluster_rules_of(&self, workload: &Workload) -> Vec<PolicyRule> {
        let account = workload
            .pod_spec()
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let bound: BTreeSet<&str> = self
            .bindings
            .iter()
            .filter(|binding| {
                binding.subjects.iter().flatten().any(|subject| {
                    subject.kind == "ServiceAccount"
                        && subject.name == account
                        && subject.namespace.as_deref() == Some(workload.namespace.as_str())
                })
            })
            .map(|binding| binding.role_ref.name.as_str())
            .collect();
        self.cluster_roles
            .iter()
            .filter(|role| {
                role.metadata
                    .name
                    .as_deref()
                    .is_some_and(|name| bound.contains(name))
            })
            .flat_map(|role| role.rules.clone().unwrap_or_default())
            .collect()
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
}

/// `value` as `T`, failing on any field `T` does not have (k8s-openapi ignores them).
fn typed<T: DeserializeOwned>(value: serde_yaml_ng::Value, at: &str) -> T {
    let mut unknown = Vec::new();
    let typed = serde_ignored::deserialize(value, |path| unknown.push(path.to_string()))
        .unwrap_or_else(|error| panic!("{at}: {error}"));
    assert!(
        unknown.is_empty(),
        "{at}: fields Kubernetes does not know: {unknown:?}"
    );
    typed
}

/// `container`'s command, args and environment through `P`'s parser: each environment
/// variable of an Ambit flag becomes that flag, and one that no flag of the subcommand
/// reads is an error (a renamed variable would be silently ignored).
pub fn parse_container<P: clap::Parser>(container: &Container) -> Result<P, String> {
    parse(container, true)
}

/// As [`parse_container`], but ignoring environment variables no flag of the subcommand
/// reads, as the binary itself does: for a command run in a container set up for another.
pub fn parse_container_leniently<P: clap::Parser>(container: &Container) -> Result<P, String> {
    parse(container, false)
}

fn parse<P: clap::Parser>(container: &Container, strict: bool) -> Result<P, String> {
    let mut argv: Vec<String> = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .cloned()
        .collect();
    let root = P::command();
    let mut command = &root;
    for word in argv.iter().skip(1) {
        match command.find_subcommand(word) {
            Some(subcommand) => command = subcommand,
            None => break,
        }
    }
    let mut from_env = Vec::new();
    for variable in container.env.iter().flatten() {
        let value = match (&variable.value, &variable.value_from) {
            (Some(value), _) => value.clone(),
            // Known only in the cluster (the node's name): any name will do.
            (None, Some(_)) => "from-the-cluster".to_owned(),
            (None, None) => String::new(),
        };
        let flag = command.get_arguments().find(|arg| {
            arg.get_env()
                .is_some_and(|env| env == variable.name.as_str())
        });
        match flag {
            Some(arg) => {
                let long = arg
                    .get_long()
                    .ok_or_else(|| format!("{} sets a flag without a long name", variable.name))?;
                if arg.get_action().takes_values() {
                    from_env.push(format!("--{long}={value}"));
                } else if truthy(&value).ok_or_else(|| {
                    format!("{}={value:?} is neither true nor false", variable.name)
                })? {
                    from_env.push(format!("--{long}"));
                }
            }
            None if strict && !OTHER_ENV.contains(&variable.name.as_str()) => {
                return Err(format!(
                    "environment variable {} is read by no flag of `{}`",
                    variable.name,
                    command.get_name()
                ));
            }
            None => {}
        }
    }
    argv.extend(from_env);
    P::try_parse_from(&argv).map_err(|error| format!("{argv:?}: {}", error.render()))
}

fn truthy(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "on" | "1" => Some(true),
        "false" | "no" | "n" | "off" | "0" | "" => Some(false),
        _ => None,
    }
}
