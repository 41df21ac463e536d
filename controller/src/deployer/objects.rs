//! The objects that run one waypoint or ingress gateway, as Istio's gateway deployment
//! controller makes them: a ServiceAccount, a Deployment and a Service, each named after
//! the Gateway (a waypoint's `<name>`, an ingress gateway's `<name>-istio`), in its
//! namespace, labelled with its name and owned by it (so Kubernetes deletes them with
//! the Gateway). An ingress gateway's Service is a LoadBalancer on its listeners' ports,
//! and its pod may bind ports below 1024 unprivileged (the `ip_unprivileged_port_start`
//! sysctl, as Istio's gateways do). And the ConfigMap of the mesh root the waypoint mounts, shared by every
//! waypoint of the namespace (not owned: Istio's `istio-ca-root-cert` is not either).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
            EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec,
            PodTemplateSpec, Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile,
            SecurityContext, Service, ServiceAccount, ServiceAccountTokenProjection, ServicePort,
            ServiceSpec, Sysctl, Volume, VolumeMount, VolumeProjection,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};

use crate::{
    ca::material::ROOT_CERT_FILE,
    cli::WaypointDeployment,
    mesh::waypoints::{GATEWAY_API_GROUP, GATEWAY_NAME_LABEL},
};

/// Istio's other label naming the Gateway its objects are for.
const ISTIO_GATEWAY_NAME_LABEL: &str = "istio.io/gateway-name";
/// The label that keeps a pod out of the mesh's capture.
const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// The version of the Gateway API the owner references name.
const GATEWAY_API_VERSION: &str = "v1";
/// The waypoint's HBONE port, and its port name on the Gateway's listener and Service.
const MESH_PORT: u16 = 15008;
const MESH_PORT_NAME: &str = "mesh";
/// The waypoint's metrics and readiness port (Istio's).
const METRICS_PORT: u16 = 15020;
const METRICS_PORT_NAME: &str = "metrics";
/// Where the waypoint answers readiness on [`METRICS_PORT`].
const READINESS_PATH: &str = "/healthz/ready";
/// The projected token for the CA: its folder, file and lifetime (the kubelet renews it
/// at 80 % of that; the waypoint reads it per request).
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
const TOKEN_FILE: &str = "ambit-ca-token";
const TOKEN_EXPIRATION_SECS: i64 = 43_200;
/// The ConfigMap holding the mesh root (key [`ROOT_CERT_FILE`]), and where the waypoint
/// mounts it.
pub const ROOT_CERT_CONFIG_MAP: &str = "ambit-root-cert";
const ROOT_CERT_DIR: &str = "/var/run/secrets/ambit";
/// The unprivileged user and group the waypoint runs as (the image's `nonroot`).
const NONROOT_ID: i64 = 65_532;
/// The one container's name.
const CONTAINER: &str = "waypoint";

/// The Gateway the objects are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// The Gateway's `metadata.uid`.
    pub uid: &'a str,
    pub role: &'a Role,
}

/// What a Gateway's pods are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A waypoint (class `istio-waypoint`): HBONE on port 15008.
    Waypoint,
    /// An ingress gateway (class `istio`) on its listeners' ports, as (name, port).
    Ingress(Vec<(String, u16)>),
}

impl Owner<'_> {
    /// The objects' name: the Gateway's for a waypoint, `<name>-istio` for an ingress
    /// gateway, as Istio names them.
    #[must_use]
    pub fn object_name(&self) -> String {
        match self.role {
            Role::Waypoint => self.name.to_owned(),
            Role::Ingress(_) => format!("{}-istio", self.name),
        }
    }
}

/// What every waypoint's objects share: the controller's flags, trust domain and root.
#[derive(Debug, Clone)]
pub struct Template {
    pub flags: WaypointDeployment,
    pub trust_domain: String,
    /// The mesh root (PEM), published in each waypoint's namespace.
    pub root_pem: String,
}

/// The mesh root as a ConfigMap in `namespace` (`root-cert.pem`).
#[must_use]
pub fn root_config_map(namespace: &str, root_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(ROOT_CERT_CONFIG_MAP.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/part-of".to_owned(),
                "ambit".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            ROOT_CERT_FILE.to_owned(),
            root_pem.to_owned(),
        )])),
        ..ConfigMap::default()
    }
}

impl Template {
    /// The account the waypoint runs as, and whose identity it obtains: the Gateway's
    /// name, as Istio does.
    #[must_use]
    pub fn service_account(&self, owner: Owner<'_>) -> ServiceAccount {
        ServiceAccount {
            metadata: metadata(owner),
            ..ServiceAccount::default()
        }
    }

    /// One waypoint pod running `ambit-waypoint` as the Gateway's account, out of the
    /// mesh's capture, with a projected token for the CA.
    #[must_use]
    pub fn deployment(&self, owner: Owner<'_>) -> Deployment {
        let mut pod_labels = labels(owner);
        pod_labels.insert(DATAPLANE_MODE_LABEL.to_owned(), "none".to_owned());
        let annotations = BTreeMap::from(
            [
                ("prometheus.io/scrape", "true".to_owned()),
                ("prometheus.io/port", METRICS_PORT.to_string()),
                ("prometheus.io/path", "/metrics".to_owned()),
            ]
            .map(|(key, value)| (key.to_owned(), value)),
        );
        Deployment {
            metadata: metadata(owner),
            spec: DeploymentSpec {
                replicas: Some(1),
                selector: LabelSelector {
                    match_labels: Some(selector(owner)),
                    ..LabelSelector::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels),
                        annotations: Some(annotations),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(self.pod(owner)),
                },
                ..DeploymentSpec::default()
            },
            ..Deployment::default()
        }
    }

    /// The pods' address: a waypoint's HBONE on port 15008 in the cluster; an
    /// ingress gateway's listeners, from outside (a LoadBalancer).
    #[must_use]
    pub fn service(&self, owner: Owner<'_>) -> Service {
        let port = |name: &str, port: u16| ServicePort {
            name: Some(name.to_owned()),
            port: port.into(),
            target_port: Some(IntOrString::Int(port.into())),
            protocol: Some("TCP".to_owned()),
            ..ServicePort::default()
        };
        let (type_, ports) = match owner.role {
            Role::Waypoint => (
                "ClusterIP",
                vec![ServicePort {
                    app_protocol: Some("tcp".to_owned()),
                    ..port(MESH_PORT_NAME, MESH_PORT)
                }],
            ),
            Role::Ingress(listeners) => (
                "LoadBalancer",
                listeners
                    .iter()
                    .map(|(name, number)| port(name, *number))
                    .collect(),
            ),
        };
        Service {
            metadata: metadata(owner),
            spec: Some(ServiceSpec {
                type_: Some(type_.to_owned()),
                selector: Some(selector(owner)),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn pod(&self, owner: Owner<'_>) -> PodSpec {
        // An ingress gateway binds its listeners' ports, 80 and 443 included, as a user.
        let sysctls = matches!(owner.role, Role::Ingress(_)).then(|| {
            vec![Sysctl {
                name: "net.ipv4.ip_unprivileged_port_start".to_owned(),
                value: "0".to_owned(),
            }]
        });
        PodSpec {
            service_account_name: Some(owner.object_name()),
            // It reads nothing from the Kubernetes API: its only token is the CA's.
            automount_service_account_token: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(NONROOT_ID),
                run_as_group: Some(NONROOT_ID),
                // The projected token readable by the pod's group.
                fs_group: Some(NONROOT_ID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..SeccompProfile::default()
                }),
                sysctls,
                ..PodSecurityContext::default()
            }),
            containers: vec![self.container(owner)],
            volumes: Some(vec![
                Volume {
                    name: ROOT_CERT_CONFIG_MAP.to_owned(),
                    config_map: Some(ConfigMapVolumeSource {
                        name: ROOT_CERT_CONFIG_MAP.to_owned(),
                        ..ConfigMapVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: TOKEN_FILE.to_owned(),
                    projected: Some(ProjectedVolumeSource {
                        sources: Some(vec![VolumeProjection {
                            service_account_token: Some(ServiceAccountTokenProjection {
                                audience: Some(self.flags.waypoint_token_audience.clone()),
                                expiration_seconds: Some(TOKEN_EXPIRATION_SECS),
                                path: TOKEN_FILE.to_owned(),
                                ..ServiceAccountTokenProjection::default()
                            }),
                            ..VolumeProjection::default()
                        }]),
                        ..ProjectedVolumeSource::default()
                    }),
                    ..Volume::default()
                },
            ]),
            ..PodSpec::default()
        }
    }

    fn container(&self, owner: Owner<'_>) -> Container {
        let flags = &self.flags;
        let args = [
            ("name", owner.name),
            ("namespace", owner.namespace),
            ("service-account", &owner.object_name()),
            ("trust-domain", &self.trust_domain),
            ("controller-address", &flags.waypoint_controller_address),
            ("ca-address", &flags.waypoint_ca_address),
            ("ca-token-file", &format!("{TOKEN_DIR}/{TOKEN_FILE}")),
            ("ca-root-file", &format!("{ROOT_CERT_DIR}/{ROOT_CERT_FILE}")),
            ("listen", &format!("[::]:{MESH_PORT}")),
            ("metrics-listen", &format!("[::]:{METRICS_PORT}")),
        ]
        .map(|(flag, value)| format!("--{flag}={value}"));
        // An ingress gateway finds the Gateways it serves by its pod (`POD_NAME`).
        let (ingress, ports) = match owner.role {
            Role::Waypoint => (None, vec![container_port(Some(MESH_PORT_NAME), MESH_PORT)]),
            Role::Ingress(listeners) => (
                Some("--ingress".to_owned()),
                listeners
                    .iter()
                    .map(|(_, port)| container_port(None, *port))
                    .collect(),
            ),
        };
        let tracing = [
            flags
                .waypoint_zipkin_address
                .as_ref()
                .map(|address| format!("--zipkin-address={address}")),
            flags
                .waypoint_trace_sampling
                .map(|percent| format!("--trace-sampling={percent}")),
        ];
        let args = args
            .into_iter()
            .chain(ingress)
            .chain(tracing.into_iter().flatten());
        Container {
            name: CONTAINER.to_owned(),
            image: Some(flags.waypoint_image.clone()),
            command: Some(vec!["ambit-waypoint".to_owned()]),
            args: Some(args.collect()),
            // The node the CA and the push know the waypoint by; its pod, by name.
            env: Some(vec![
                downward("NODE_NAME", "spec.nodeName"),
                downward("POD_NAME", "metadata.name"),
            ]),
            ports: Some(
                ports
                    .into_iter()
                    .chain([container_port(Some(METRICS_PORT_NAME), METRICS_PORT)])
                    .collect(),
            ),
            readiness_probe: Some(Probe {
                http_get: Some(HTTPGetAction {
                    path: Some(READINESS_PATH.to_owned()),
                    port: IntOrString::String(METRICS_PORT_NAME.to_owned()),
                    ..HTTPGetAction::default()
                }),
                period_seconds: Some(5),
                ..Probe::default()
            }),
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_owned(), Quantity("100m".to_owned())),
                    ("memory".to_owned(), Quantity("64Mi".to_owned())),
                ])),
                ..ResourceRequirements::default()
            }),
            security_context: Some(SecurityContext {
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(vec!["ALL".to_owned()]),
                    ..Capabilities::default()
                }),
                ..SecurityContext::default()
            }),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: TOKEN_FILE.to_owned(),
                    mount_path: TOKEN_DIR.to_owned(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
                VolumeMount {
                    name: ROOT_CERT_CONFIG_MAP.to_owned(),
                    mount_path: ROOT_CERT_DIR.to_owned(),
                    read_only: Some(true),
                    ..VolumeMount::default()
                },
            ]),
            ..Container::default()
        }
    }
}

/// Each object's name, namespace, labels and owner: the Gateway.
fn metadata(owner: Owner<'_>) -> ObjectMeta {
    ObjectMeta {
        name: Some(owner.object_name()),
        namespace: Some(owner.namespace.to_owned()),
        labels: Some(labels(owner)),
        owner_references: Some(vec![OwnerReference {
            api_version: format!("{GATEWAY_API_GROUP}/{GATEWAY_API_VERSION}"),
            kind: "Gateway".to_owned(),
            name: owner.name.to_owned(),
            uid: owner.uid.to_owned(),
            controller: Some(true),
            ..OwnerReference::default()
        }]),
        ..ObjectMeta::default()
    }
}

/// The labels naming the Gateway, as Istio puts them on what it deploys.
fn labels(owner: Owner<'_>) -> BTreeMap<String, String> {
    let mut labels = selector(owner);
    labels.insert(ISTIO_GATEWAY_NAME_LABEL.to_owned(), owner.name.to_owned());
    labels
}

/// The waypoint's pods: the label by which the model (and the waypoint) finds them.
fn selector(owner: Owner<'_>) -> BTreeMap<String, String> {
    BTreeMap::from([(GATEWAY_NAME_LABEL.to_owned(), owner.name.to_owned())])
}

fn downward(variable: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: variable.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn container_port(name: Option<&str>, port: u16) -> ContainerPort {
    ContainerPort {
        name: name.map(str::to_owned),
        container_port: port.into(),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

#[cfg(test)]
#[path = "objects_tests.rs"]
mod tests;
