//! The Gateway API's routes where they attach: HTTPRoutes (GRPCRoutes come as the
//! HTTPRoutes they amount to, [`super::http_route`]), TCPRoutes and TLSRoutes
//! ([`super::stream_routes`]). A waypoint applies a route to the Services it names as
//! parents in its own namespace (producer routes, as Istio's waypoints do); an ingress
//! gateway to the listeners of the Gateways it serves that the route names and that
//! admit it. Every route on one host and set of ports goes into one virtual host, so an
//! HTTPRoute and a TCPRoute (or TLSRoute) on the same Service both apply, each on its
//! own ports.

use std::collections::BTreeMap;

use ambit_api::{
    gateway_api::http_route::{ParentReference, producer_parents},
    istio::{GatewaySpec, PortSelector, virtual_service::Destination},
};

use super::{
    ClusterIndex, ConfigError, HostOnPorts, Route, RouteTable, TcpRoute, VirtualHost,
    http_route::Rank,
};
use crate::{
    config::{CLUSTER_DOMAIN, Config, Named},
    gateway::servers::{Binding, PortProtocol, Servers},
    host::HostPattern,
};

/// Where a route's rules apply: requests (or connections) for `host` on `ports`
/// (`None`: every port), matched also on `port` (a parentRef's port at a waypoint).
#[derive(Debug, Clone)]
pub(super) struct Attachment {
    pub host: String,
    pub ports: Option<Vec<u16>>,
    pub port: Option<u32>,
}

impl Attachment {
    /// The virtual host its routes go to.
    pub fn key(&self) -> HostOnPorts {
        (self.host.clone(), self.ports.clone())
    }
}

/// The routes attached to one host and set of ports.
#[derive(Debug, Default)]
pub(super) struct AttachedRoutes {
    /// HTTPRoute rules, each with its rank among the host's matches.
    pub http: Vec<(Rank, Route)>,
    /// TLSRoute rules (by server name), in route order.
    pub tls: Vec<TcpRoute>,
    /// TCPRoute rules, in route order.
    pub tcp: Vec<TcpRoute>,
}

/// Every attached route, by host and ports.
pub(super) type ByHost = BTreeMap<HostOnPorts, AttachedRoutes>;

impl RouteTable {
    /// Adds the Gateway API's routes where they attach, each host's HTTP rules in the
    /// Gateway API's order (by rank; then by route, in `namespace/name` order, and
    /// rule). A VirtualService for the same host, added before, takes its traffic.
    pub(super) fn add_gateway_api_routes(
        &mut self,
        config: &Config,
        clusters: &ClusterIndex,
        errors: &mut Vec<ConfigError>,
    ) {
        let mut by_host = ByHost::new();
        self.collect_http_routes(config, clusters, errors, &mut by_host);
        self.collect_stream_routes(config, clusters, errors, &mut by_host);
        for ((host, ports), mut attached) in by_host {
            attached
                .http
                .sort_by_key(|(rank, _)| std::cmp::Reverse(*rank));
            let index = self.virtual_hosts.len();
            self.virtual_hosts.push(VirtualHost {
                ports,
                routes: attached.http.into_iter().map(|(_, route)| route).collect(),
                tls_routes: attached.tls,
                tcp_routes: attached.tcp,
            });
            match HostPattern::literal(&host) {
                HostPattern::Exact(name) => self.exact_hosts.entry(name).or_default().push(index),
                wildcard => self.wildcard_hosts.push((wildcard, index)),
            }
        }
    }
}

/// At a waypoint, each Service a route in `namespace` with `parents` attaches to as a
/// producer route (its rules apply to traffic for that Service).
pub(super) fn service_attachments(namespace: &str, parents: &[ParentReference]) -> Vec<Attachment> {
    producer_parents(parents, namespace)
        .map(|parent| Attachment {
            host: service_host(&parent.name, namespace),
            ports: None,
            port: parent.port,
        })
        .collect()
}

/// At an ingress gateway serving `gateways` on `servers`, each of the `hostnames` (`*`
/// when none) of a route in `namespace` with `parents`, on the ports of the listeners
/// it attaches to: of the Gateways it names that are served here, those whose hostname
/// and `allowedRoutes` admit it and whose protocol `takes` the route's kind, narrowed
/// to the parentRef's `sectionName` (a listener's name) or `port`.
pub(super) fn gateway_attachments(
    (namespace, parents, hostnames): (&str, &[ParentReference], &[String]),
    gateways: &[Named<GatewaySpec>],
    servers: &Servers,
    takes: impl Fn(PortProtocol) -> bool,
) -> Vec<Attachment> {
    let hostnames: Vec<&str> = match hostnames {
        [] => vec!["*"],
        hostnames => hostnames.iter().map(String::as_str).collect(),
    };
    let mut ports: Vec<u16> = Vec::new();
    for parent in parents.iter().filter(|p| p.is_gateway()) {
        let gateway_namespace = parent.namespace.as_deref().unwrap_or(namespace);
        let Some(gateway) = gateways
            .iter()
            .find(|g| g.namespace == gateway_namespace && g.name == parent.name)
        else {
            continue;
        };
        let binding = Binding {
            namespace: namespace.to_owned(),
            hosts: hostnames
                .iter()
                .map(|host| HostPattern::literal(host))
                .collect(),
            gateways: vec![gateway.key()],
        };
        let listener_ports: Vec<u16> = gateway
            .spec
            .servers
            .iter()
            .filter(|server| parent.names_listener(&server.name, server.port.number))
            .filter_map(|server| u16::try_from(server.port.number).ok())
            .collect();
        ports.extend(
            servers
                .ports_routing(&binding)
                .into_iter()
                .filter(|port| listener_ports.contains(port))
                .filter(|port| servers.on_port(*port).is_some_and(|s| takes(s.protocol))),
        );
    }
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        return Vec::new();
    }
    hostnames
        .into_iter()
        .map(|host| Attachment {
            host: host.to_ascii_lowercase(),
            ports: Some(ports.clone()),
            port: None,
        })
        .collect()
}

/// The Service `name` in `namespace`, on `port` when given, as a route destination.
pub(super) fn destination(name: &str, namespace: &str, port: Option<u32>) -> Destination {
    Destination {
        host: service_host(name, namespace),
        subset: String::new(),
        port: port.map(|number| PortSelector { number }),
    }
}

fn service_host(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}.svc.{CLUSTER_DOMAIN}")
}
