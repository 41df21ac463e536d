//! The gateway deployer (`serve --kube`): for each waypoint Gateway of the model
//! ([`crate::mesh::waypoints`]) and each Gateway of class `istio` (an ingress gateway),
//! the controller runs its pods, as istiod's gateway deployment controller does — a
//! ServiceAccount, a Deployment of `ambit-waypoint` (with `--ingress` for an ingress
//! gateway) and a Service (an ingress gateway's a LoadBalancer on its listeners' ports),
//! named after the Gateway in its namespace (`objects.rs`) — and publishes the
//! mesh root there as the ConfigMap [`ROOT_CERT_CONFIG_MAP`] (`root-cert.pem`), which the
//! waypoint mounts to verify the controller, as Istio publishes `istio-ca-root-cert`.
//! [`publish_root`] publishes it in the controller's own namespace for the node
//! DaemonSet.
//!
//! The objects are server-side applied (field manager [`FIELD_MANAGER`], forced) when a
//! waypoint Gateway appears or is recreated (a new `uid`), and again every
//! `--resync-secs` (five minutes by default), so one edited or deleted by hand is put
//! back, as the root ConfigMaps are. Each is owned by its Gateway, so Kubernetes
//! garbage-collects them when the Gateway is deleted. Once applied for a `uid`, the
//! Gateway's status says so, as Istio's does (`kubectl get gateway` shows it
//! `PROGRAMMED` with the Service's address): conditions `Accepted` and `Programmed`, and
//! the Service's load balancer address if it has one yet, else its cluster IP (else its
//! host name) in `addresses`.
//! An apply the API refuses is logged with the object and the reason and retried with
//! backoff (and on every change of the model); it never holds up the rest of the
//! controller. The folder source (`--config-dir`) deploys nothing: a test or a simulated
//! node starts the waypoint process itself.
//!
//! # Layout
//! - `objects.rs`: the three objects of one waypoint, from the controller's flags, and
//!   the root's ConfigMap.
//!
//! # Not yet
//! It does not watch the objects it applied: a change by hand lasts until the next
//! resync. `Programmed` says the objects were applied, not that the waypoint's pods are
//! ready; listener statuses are not written.

use std::{collections::BTreeMap, fmt::Debug, time::Duration};

use ambit_api::istio::GatewaySpec as IstioGatewaySpec;
use k8s_openapi::{
    NamespaceResourceScope,
    api::core::v1::{ConfigMap, Service},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tokio::time::Instant;

pub use self::objects::{Owner, ROOT_CERT_CONFIG_MAP, Role, Template, root_config_map};
use crate::{
    mesh::{Key, Mesh, Route, RouteKind, waypoints::GATEWAY_API_GROUP},
    source::ModelSource,
};

mod objects;

/// The field manager of the applied objects' fields.
pub const FIELD_MANAGER: &str = "ambit-controller";
/// The image of the waypoint Deployments by default: this version's, as
/// `deploy/kubernetes` runs it.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/ambit-mesh/ambit:", env!("CARGO_PKG_VERSION"));
/// The config push as pods reach it by default: the Service of
/// `deploy/kubernetes/controller.yaml`.
pub const DEFAULT_CONTROLLER_ADDRESS: &str = "https://ambit-controller.ambit-system.svc:15010";
/// The CA as pods reach it by default.
pub const DEFAULT_CA_ADDRESS: &str = "https://ambit-controller.ambit-system.svc:15012";
/// The first wait before applying again what the API refused; it doubles up to
/// [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// Why one object of a waypoint, or its Gateway's status, could not be applied.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot apply {kind} {namespace}/{name}: {source} — may the controller's service account create and patch {resource} there (deploy/kubernetes/controller-rbac.yaml)?"
)]
struct ApplyError {
    kind: &'static str,
    /// What the RBAC rule names (`deployments`, `gateways/status`).
    resource: &'static str,
    namespace: String,
    name: String,
    source: kube::Error,
}

/// Keeps a waypoint running for each waypoint Gateway of `model`, through `client`,
/// until the model source ends.
pub async fn run(client: Client, template: Template, mut model: ModelSource) {
    // The Gateways whose objects were applied, with the `uid` and role they were
    // applied for (an ingress gateway's listeners changing is a new role).
    let mut deployed: BTreeMap<Key, (String, Role)> = BTreeMap::new();
    let mut retry = RETRY_FIRST;
    let resync = Duration::from_secs(template.flags.resync_secs);
    let mut resync_at = Instant::now() + resync;
    let mut resyncing = false;
    loop {
        let wanted = owners(&model.borrow_and_update().mesh);
        deployed.retain(|key, _| wanted.contains_key(key));
        let mut failed = false;
        for (key, wanted) in &wanted {
            let programmed = deployed.get(key) == Some(wanted);
            if programmed && !resyncing {
                continue;
            }
            let (uid, role) = wanted;
            let owner = Owner {
                namespace: &key.0,
                name: &key.1,
                uid,
                role,
            };
            match deploy(&client, &template, owner, !programmed).await {
                Ok(()) if programmed => {
                    tracing::debug!(
                        namespace = owner.namespace,
                        gateway = owner.name,
                        "gateway objects applied again (resync)"
                    );
                }
                Ok(()) => {
                    tracing::info!(
                        namespace = owner.namespace,
                        gateway = owner.name,
                        objects = owner.object_name(),
                        ?role,
                        "gateway deployed (ServiceAccount, Deployment, Service), Gateway programmed"
                    );
                    deployed.insert(key.clone(), wanted.clone());
                }
                Err(error) => {
                    tracing::warn!(namespace = owner.namespace, gateway = owner.name, %error, retry_in = ?retry, "gateway not deployed");
                    failed = true;
                }
            }
        }
        let wait = if failed {
            let wait = retry;
            retry = (retry * 2).min(RETRY_MAX);
            Some(wait)
        } else {
            retry = RETRY_FIRST;
            None
        };
        resyncing = false;
        tokio::select! {
            changed = model.changed() => if changed.is_err() {
                return;
            },
            () = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {}
            () = tokio::time::sleep_until(resync_at) => {
                resyncing = true;
                resync_at = Instant::now() + resync;
            }
        }
    }
}

/// The waypoint and ingress Gateways of `mesh`, with their `uid` and role.
fn owners(mesh: &Mesh) -> BTreeMap<Key, (String, Role)> {
    let waypoints = mesh
        .waypoints
        .iter()
        .map(|(key, waypoint)| (key, waypoint.uid.as_ref(), Role::Waypoint));
    let ingresses = mesh
        .routes
        .iter()
        .filter(|((kind, _), _)| *kind == RouteKind::KubernetesGateway)
        .map(|((_, key), route)| (key, route.uid.as_ref(), Role::Ingress(listeners(route))));
    waypoints
        .chain(ingresses)
        .filter_map(|(key, uid, role)| match uid {
            Some(uid) => Some((key.clone(), (uid.clone(), role))),
            // The API server gives every object one; only a folder's may lack it.
            None => {
                tracing::debug!(
                    namespace = key.0,
                    gateway = key.1,
                    "Gateway without a uid: nothing could own its objects, none deployed"
                );
                None
            }
        })
        .collect()
}

/// An ingress gateway's listeners (name, port), from the Istio Gateway made of it.
fn listeners(route: &Route) -> Vec<(String, u16)> {
    serde_json::from_value::<IstioGatewaySpec>(route.spec.clone())
        .map(|spec| {
            spec.servers
                .iter()
                .filter_map(|server| {
                    Some((
                        server.port.name.clone(),
                        u16::try_from(server.port.number).ok()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Applies the root's ConfigMap in `owner`'s namespace, the three objects of its
/// waypoint, then, when `with_status`, the Gateway's status; stops at the first refused.
async fn deploy(
    client: &Client,
    template: &Template,
    owner: Owner<'_>,
    with_status: bool,
) -> Result<(), ApplyError> {
    let root = root_config_map(owner.namespace, &template.root_pem);
    apply(client, owner.namespace, ROOT_CERT_CONFIG_MAP, &root).await?;
    let (namespace, name) = (owner.namespace, owner.name);
    let objects = &owner.object_name();
    apply(client, namespace, objects, &template.service_account(owner)).await?;
    apply(client, namespace, objects, &template.deployment(owner)).await?;
    let service = apply(client, namespace, objects, &template.service(owner)).await?;
    if !with_status {
        return Ok(());
    }
    let gateways = ApiResource {
        group: GATEWAY_API_GROUP.to_owned(),
        version: "v1".to_owned(),
        api_version: format!("{GATEWAY_API_GROUP}/v1"),
        kind: "Gateway".to_owned(),
        plural: "gateways".to_owned(),
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &gateways)
        .patch_status(name, &params, &Patch::Apply(programmed(owner, &service)))
        .await
        .map(drop)
        .map_err(|source| ApplyError {
            kind: "Gateway status",
            resource: "gateways/status",
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })
}

/// The status of `owner`, whose pods run behind `service`: accepted and programmed,
/// as Istio reports its Gateways, reached at the Service's load balancer address (an
/// ingress gateway's, once the cloud assigned one), else its cluster IP, else its host
/// name.
fn programmed(owner: Owner<'_>, service: &Service) -> Value {
    let balancer = service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref()?.ingress.as_ref()?.first());
    let cluster_ip = service
        .spec
        .as_ref()
        .and_then(|spec| spec.cluster_ip.as_deref())
        .filter(|ip| !ip.is_empty() && *ip != "None");
    let address = match (balancer, cluster_ip) {
        (Some(ingress), _) if ingress.ip.is_some() => {
            json!({"type": "IPAddress", "value": ingress.ip})
        }
        (Some(ingress), _) if ingress.hostname.is_some() => {
            json!({"type": "Hostname", "value": ingress.hostname})
        }
        (_, Some(ip)) => json!({"type": "IPAddress", "value": ip}),
        (_, None) => json!({
            "type": "Hostname",
            "value": format!("{}.{}.svc.cluster.local", owner.object_name(), owner.namespace),
        }),
    };
    let now = Time(Timestamp::now());
    let condition = |kind: &str, message: String| {
        json!({
            "type": kind,
            "status": "True",
            "reason": kind,
            "message": message,
            "lastTransitionTime": now,
        })
    };
    let runs = match owner.role {
        Role::Waypoint => "a waypoint",
        Role::Ingress(_) => "an ingress gateway",
    };
    json!({
        "apiVersion": format!("{GATEWAY_API_GROUP}/v1"),
        "kind": "Gateway",
        "metadata": {"name": owner.name, "namespace": owner.namespace},
        "status": {
            "addresses": [address],
            "conditions": [
                condition("Accepted", format!("Ambit runs {runs} for this Gateway")),
                condition(
                    "Programmed",
                    format!(
                        "its ServiceAccount, Deployment and Service {} are applied",
                        owner.object_name()
                    ),
                ),
            ],
        },
    })
}

/// Publishes the mesh root in `namespace` (the controller's: the node DaemonSet mounts
/// it), retrying with backoff until the API accepts it, and again every `resync`.
pub async fn publish_root(client: Client, namespace: String, root_pem: String, resync: Duration) {
    let mut retry = RETRY_FIRST;
    let mut published = false;
    let config_map: ConfigMap = root_config_map(&namespace, &root_pem);
    loop {
        match apply(&client, &namespace, ROOT_CERT_CONFIG_MAP, &config_map).await {
            Ok(_) => {
                if !published {
                    tracing::info!(%namespace, name = ROOT_CERT_CONFIG_MAP, "published the mesh root");
                }
                published = true;
                retry = RETRY_FIRST;
                tokio::time::sleep(resync).await;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?retry, "mesh root not published: clients cannot verify the controller until it is");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Server-side applies `object`, named `name` in `namespace`; the object as the API
/// holds it after.
async fn apply<K>(client: &Client, namespace: &str, name: &str, object: &K) -> Result<K, ApplyError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Api::<K>::namespaced(client.clone(), namespace)
        .patch(name, &params, &Patch::Apply(object))
        .await
        .map_err(|source| ApplyError {
            kind: <K as k8s_openapi::Resource>::KIND,
            resource: <K as k8s_openapi::Resource>::URL_PATH_SEGMENT,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::waypoints::Waypoint;

    fn waypoint(name: &str, uid: Option<&str>) -> (Key, Waypoint) {
        let key = ("shop".to_owned(), name.to_owned());
        let waypoint = Waypoint {
            namespace: key.0.clone(),
            name: key.1.clone(),
            uid: uid.map(str::to_owned),
            identity: None,
            addresses: Vec::new(),
        };
        (key, waypoint)
    }

    #[test]
    fn an_ingress_gateway_is_deployed_on_its_listeners() {
        let spec = json!({"servers": [
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["./*"]},
            {"port": {"number": 443, "name": "https", "protocol": "HTTPS"}, "hosts": ["./*"]},
        ]});
        let route = |uid: Option<&str>| Route {
            kind: RouteKind::KubernetesGateway,
            namespace: "shop".into(),
            name: "edge".into(),
            hosts: Vec::new(),
            spec: spec.clone(),
            delegated: None,
            uid: uid.map(str::to_owned),
            generation: None,
            source: std::path::PathBuf::new(),
        };
        let key = ("shop".to_owned(), "edge".to_owned());
        let mut mesh = Mesh::default();
        mesh.routes.insert(
            (RouteKind::KubernetesGateway, key.clone()),
            std::sync::Arc::new(route(Some("u2"))),
        );
        let listeners = vec![("http".to_owned(), 80), ("https".to_owned(), 443)];
        assert_eq!(
            owners(&mesh),
            BTreeMap::from([(key.clone(), ("u2".to_owned(), Role::Ingress(listeners)))])
        );
        mesh.routes.insert(
            (RouteKind::KubernetesGateway, key.clone()),
            std::sync::Arc::new(route(None)),
        );
        assert!(
            owners(&mesh).is_empty(),
            "a folder's Gateway deploys nothing"
        );
    }

    #[test]
    fn only_waypoints_with_a_uid_to_own_their_objects_are_deployed() {
        let mesh = Mesh {
            waypoints: [
                waypoint("waypoint", Some("u1")),
                waypoint("from-a-file", None),
            ]
            .into_iter()
            .collect(),
            ..Mesh::default()
        };
        assert_eq!(
            owners(&mesh),
            BTreeMap::from([(
                ("shop".to_owned(), "waypoint".to_owned()),
                ("u1".to_owned(), Role::Waypoint)
            )])
        );
    }
}
