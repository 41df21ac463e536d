//! The controller's push as the waypoint keeps it: every resource by key, replaced by a
//! full update and patched by deltas, then compiled into the engine's [`Config`] and a
//! [`MeshView`] (VIP → service, IP → identity); for an ingress gateway also the Istio
//! Gateways that select its pod and the TLS credentials they name. The proxy's own
//! labels and locality are its pod's, found among the workloads of its node the push
//! includes.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use ambit_api::{
    config::{self as pb, ConfigUpdate, resource::Kind},
    gateway_api::GrpcRouteSpec,
    identity::Identity,
    istio::MeshConfig,
    locality::Locality,
};

use crate::{
    config::{Config, Endpoint, MeshWorkload, Named, Role, Service, ServicePort},
    gateway::tls::{Credential, Credentials},
};

/// Why pushed resources cannot be used (the update is NACKed).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{key}: address {ip:?} is not an IP address")]
    Address { key: String, ip: String },
    #[error("{key}: {source}")]
    Identity {
        key: String,
        source: ambit_api::identity::IdentityError,
    },
    #[error("{key}: the spec is not a valid {kind}: {source}")]
    Spec {
        key: String,
        kind: &'static str,
        source: serde_json::Error,
    },
}

/// What HBONE needs to know of the mesh.
#[derive(Debug, Clone, Default)]
pub struct MeshView {
    /// Service VIP → the service's hostname.
    pub services: HashMap<IpAddr, String>,
    /// Mesh workload IP → its identity.
    pub identities: HashMap<IpAddr, Identity>,
    /// For an ingress gateway: service VIP → the waypoint its traffic must go through.
    pub waypoints: HashMap<IpAddr, WaypointAddress>,
}

/// Where a service's waypoint answers HBONE, and who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaypointAddress {
    pub ip: IpAddr,
    pub identity: Identity,
}

/// The label naming the Gateway a waypoint pod serves.
const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// What endpoints are known by: their workload, labels and locality.
#[derive(Debug, Clone, Default)]
struct Peer {
    workload: String,
    labels: BTreeMap<String, String>,
    locality: Locality,
}

/// Which proxy the push is compiled for.
#[derive(Debug, Clone, Copy)]
pub enum Serving<'a> {
    /// A waypoint: mesh traffic for services.
    Waypoint,
    /// An ingress gateway running as the pod of this name (in the proxy's namespace):
    /// the Gateways whose `selector` matches the pod's labels.
    Ingress { pod: &'a str },
}

/// What a push compiles to.
#[derive(Debug, Default)]
pub struct Pushed {
    pub config: Config,
    pub mesh: MeshView,
    /// The TLS credentials pushed (to ingress gateways only).
    pub credentials: Credentials,
}

/// The pushed resources, by key.
#[derive(Debug, Default)]
pub struct PushedState {
    resources: BTreeMap<String, pb::Resource>,
}

impl PushedState {
    /// Applies `update` and compiles the result; on error nothing changes.
    ///
    /// # Errors
    /// A resource that cannot be read.
    pub fn apply(
        &mut self,
        update: &ConfigUpdate,
        namespace: &str,
        name: &str,
        serving: Serving<'_>,
    ) -> Result<Pushed, StateError> {
        let mut resources = if update.full {
            BTreeMap::new()
        } else {
            self.resources.clone()
        };
        for key in &update.removed {
            resources.remove(key);
        }
        for resource in &update.upserted {
            resources.insert(resource.key.clone(), resource.clone());
        }
        let compiled = compile(&resources, namespace, name, serving)?;
        self.resources = resources;
        Ok(compiled)
    }
}

fn compile(
    resources: &BTreeMap<String, pb::Resource>,
    namespace: &str,
    name: &str,
    serving: Serving<'_>,
) -> Result<Pushed, StateError> {
    let mut view = MeshView::default();
    let mut mesh_workloads = Vec::new();
    let mut workloads: HashMap<IpAddr, Peer> = HashMap::new();
    for (key, resource) in resources {
        if let Some(Kind::Peer(peer)) = &resource.kind {
            // No identity: a workload outside the mesh, dialled in plain TCP.
            let identity = (!peer.identity.is_empty())
                .then(|| peer.identity.parse::<Identity>())
                .transpose()
                .map_err(|source| StateError::Identity {
                    key: key.clone(),
                    source,
                })?;
            for ip in ips(key, &peer.ips)? {
                let labels: BTreeMap<String, String> = peer.labels.clone().into_iter().collect();
                if let Some(identity) = &identity {
                    view.identities.insert(ip, identity.clone());
                    mesh_workloads.push(MeshWorkload {
                        ip,
                        namespace: peer.namespace.clone(),
                        name: peer.name.clone(),
                        labels: labels.clone(),
                    });
                }
                workloads.insert(
                    ip,
                    Peer {
                        workload: peer.name.clone(),
                        labels,
                        locality: peer
                            .locality
                            .clone()
                            .map(Locality::from)
                            .unwrap_or_default(),
                    },
                );
            }
        }
    }
    let mut config = Config {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        workloads: mesh_workloads,
        ..Config::default()
    };
    let mut gateways = Vec::new();
    let mut credentials = Credentials::new();
    for (key, resource) in resources {
        match &resource.kind {
            Some(Kind::Service(service)) => {
                for vip in ips(key, &service.cluster_ips)? {
                    view.services.insert(vip, service.hostname.clone());
                }
                let waypoint = match serving {
                    Serving::Ingress { .. } => waypoint_of(key, service)?,
                    Serving::Waypoint => None,
                };
                let compiled = match waypoint {
                    Some((vip, waypoint)) => {
                        view.waypoints.insert(vip, waypoint);
                        through_waypoint(service, vip)
                    }
                    None => self::service(key, service, &workloads)?,
                };
                config.services.push(compiled);
            }
            Some(Kind::Route(route)) if route.kind == "VirtualService" => {
                config
                    .virtual_services
                    .push(named(key, route, "VirtualService")?);
            }
            Some(Kind::Route(route)) if route.kind == "HTTPRoute" => {
                config.http_routes.push(named(key, route, "HTTPRoute")?);
            }
            // Served as the HTTPRoute it amounts to (method matches as paths).
            Some(Kind::Route(route)) if route.kind == "GRPCRoute" => {
                let grpc = named::<GrpcRouteSpec>(key, route, "GRPCRoute")?;
                config.http_routes.push(Named {
                    spec: grpc.spec.to_http_route(),
                    namespace: grpc.namespace,
                    name: grpc.name,
                });
            }
            Some(Kind::Route(route)) if route.kind == "TCPRoute" => {
                config.tcp_routes.push(named(key, route, "TCPRoute")?);
            }
            Some(Kind::Route(route)) if route.kind == "TLSRoute" => {
                config.tls_routes.push(named(key, route, "TLSRoute")?);
            }
            Some(Kind::Route(route)) if route.kind == "DestinationRule" => {
                config
                    .destination_rules
                    .push(named(key, route, "DestinationRule")?);
            }
            Some(Kind::Route(route)) if route.kind == "AuthorizationPolicy" => {
                config
                    .authorization_policies
                    .push(named(key, route, "AuthorizationPolicy")?);
            }
            Some(Kind::Route(route)) if route.kind == "RequestAuthentication" => {
                config
                    .request_authentications
                    .push(named(key, route, "RequestAuthentication")?);
            }
            Some(Kind::Route(route)) if route.kind == "Telemetry" => {
                config.telemetries.push(named(key, route, "Telemetry")?);
            }
            Some(Kind::Route(route)) if route.kind == "MeshConfig" => {
                config.mesh = named::<MeshConfig>(key, route, "MeshConfig")?.spec;
            }
            // A Gateway API Gateway comes as the Istio Gateway made of it.
            Some(Kind::Route(route))
                if route.kind == "Gateway" || route.kind == "KubernetesGateway" =>
            {
                gateways.push(named::<ambit_api::istio::GatewaySpec>(
                    key, route, "Gateway",
                )?);
            }
            Some(Kind::Workload(workload)) if is_own(workload, namespace, name, serving) => {
                config.labels = workload.labels.clone().into_iter().collect();
                config.locality = workload
                    .locality
                    .clone()
                    .map(Locality::from)
                    .unwrap_or_default();
            }
            Some(Kind::Credential(credential)) => {
                credentials.insert(
                    (credential.namespace.clone(), credential.name.clone()),
                    Credential {
                        cert_chain: credential.cert_chain.clone(),
                        private_key: credential.private_key.clone(),
                        ca_certificates: credential.ca_certificates.clone(),
                    },
                );
            }
            _ => {}
        }
    }
    if let Serving::Ingress { .. } = serving {
        let labels = &config.labels;
        gateways.retain(|gateway| {
            !gateway.spec.selector.is_empty()
                && gateway
                    .spec
                    .selector
                    .iter()
                    .all(|(key, value)| labels.get(key) == Some(value))
        });
        config.role = Role::Ingress(gateways);
    }
    Ok(Pushed {
        config,
        mesh: view,
        credentials,
    })
}

/// Whether `workload` (one of the proxy's node) is the proxy's own pod: for an ingress
/// gateway the pod it is told it runs as, for a waypoint a pod of its Gateway (two on
/// one node share the node's locality).
fn is_own(workload: &pb::Workload, namespace: &str, name: &str, serving: Serving<'_>) -> bool {
    workload.namespace == namespace
        && match serving {
            Serving::Ingress { pod } => workload.name == pod,
            Serving::Waypoint => {
                workload.labels.get(GATEWAY_NAME_LABEL).map(String::as_str) == Some(name)
            }
        }
}

fn service(
    key: &str,
    service: &pb::Service,
    workloads: &HashMap<IpAddr, Peer>,
) -> Result<Service, StateError> {
    let ports = service_ports(service, Target::Pods);
    // Endpoints of the VIP's family (IPv4 without a VIP), as kube-proxy pairs them: the
    // client reached the waypoint through that family.
    let ipv4 = ips(key, &service.cluster_ips)?
        .first()
        .is_none_or(IpAddr::is_ipv4);
    let endpoints = ips(key, &service.endpoints)?
        .into_iter()
        .filter(|ip| ip.is_ipv4() == ipv4)
        .map(|ip| {
            let peer = workloads.get(&ip).cloned().unwrap_or_default();
            Endpoint {
                ip,
                labels: peer.labels,
                workload: peer.workload,
                locality: peer.locality,
            }
        })
        .collect();
    Ok(Service {
        namespace: service.namespace.clone(),
        name: service.name.clone(),
        ports,
        endpoints,
    })
}

/// A service's first VIP and the waypoint it uses, when it uses one that has an address
/// of the VIP's family and an identity.
fn waypoint_of(
    key: &str,
    service: &pb::Service,
) -> Result<Option<(IpAddr, WaypointAddress)>, StateError> {
    let Some(waypoint) = &service.waypoint else {
        return Ok(None);
    };
    let Some(vip) = ips(key, &service.cluster_ips)?.first().copied() else {
        return Ok(None);
    };
    let Some(ip) = ips(key, &waypoint.addresses)?
        .into_iter()
        .find(|ip| ip.is_ipv4() == vip.is_ipv4())
    else {
        return Ok(None);
    };
    let identity =
        waypoint
            .identity
            .parse::<Identity>()
            .map_err(|source| StateError::Identity {
                key: key.to_owned(),
                source,
            })?;
    Ok(Some((vip, WaypointAddress { ip, identity })))
}

/// A service an ingress gateway reaches through its waypoint: one endpoint, the VIP on
/// the service's own ports (the waypoint then routes and picks the pod), as Istio's
/// gateways do for `istio.io/ingress-use-waypoint`.
fn through_waypoint(service: &pb::Service, vip: IpAddr) -> Service {
    Service {
        namespace: service.namespace.clone(),
        name: service.name.clone(),
        ports: service_ports(service, Target::Vip),
        endpoints: vec![Endpoint::new(vip, [])],
    }
}

/// What a service's endpoints are: its pods (on `targetPort`) or its VIP (on `port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Pods,
    Vip,
}

fn service_ports(service: &pb::Service, target: Target) -> Vec<ServicePort> {
    service
        .ports
        .iter()
        .filter_map(|p| {
            Some(ServicePort {
                name: p.name.clone(),
                port: u16::try_from(p.port).ok()?,
                target_port: match target {
                    Target::Pods => u16::try_from(p.target_port).unwrap_or(0),
                    Target::Vip => 0,
                },
                app_protocol: p.app_protocol.clone(),
            })
        })
        .collect()
}

fn named<T: serde::de::DeserializeOwned>(
    key: &str,
    route: &pb::Route,
    kind: &'static str,
) -> Result<Named<T>, StateError> {
    let spec = serde_json::from_str(&route.spec_json).map_err(|source| StateError::Spec {
        key: key.to_owned(),
        kind,
        source,
    })?;
    Ok(Named {
        namespace: route.namespace.clone(),
        name: route.name.clone(),
        spec,
    })
}

fn ips(key: &str, texts: &[String]) -> Result<Vec<IpAddr>, StateError> {
    texts
        .iter()
        .map(|text| {
            text.parse::<IpAddr>()
                .map(|ip| ip.to_canonical())
                .map_err(|_| StateError::Address {
                    key: key.to_owned(),
                    ip: text.clone(),
                })
        })
        .collect()
}
