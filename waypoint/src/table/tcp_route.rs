//! TCPRoutes (the Gateway API's): each rule becomes the VirtualService `tcp:` route
//! Istio generates for it, with no condition but its parent's port and its backends as
//! weighted destinations (weights are shares, 1 by default; a backend of weight 0 takes
//! nothing). Rules have no matches, so a route's first rule takes every connection.
//! At an ingress gateway a TCPRoute attaches to TCP listeners only.

use ambit_api::{
    gateway_api::{
        TcpRouteSpec,
        tcp_route::{TcpRouteRule, WeightedBackendRef},
    },
    istio::virtual_service::{L4MatchAttributes, RouteDestination, TcpRoute as VsTcpRoute},
};

use super::{
    ClusterIndex, ConfigError, Problem, RouteTable, TcpRoute,
    gateway_api::{ByHost, destination, gateway_attachments, service_attachments},
};
use crate::config::{Config, Named, Role};

impl RouteTable {
    /// Collects the TCPRoutes' rules where they attach into `by_host`, in
    /// `namespace/name` order.
    pub(super) fn collect_tcp_routes(
        &self,
        config: &Config,
        clusters: &ClusterIndex,
        errors: &mut Vec<ConfigError>,
        by_host: &mut ByHost,
    ) {
        let mut in_order: Vec<&Named<TcpRouteSpec>> = config.tcp_routes.iter().collect();
        in_order.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        for tcp in in_order {
            let mut attachments = match (&config.role, &self.ingress) {
                (Role::Ingress(gateways), Some(servers)) => gateway_attachments(
                    &tcp.namespace,
                    &tcp.spec.parent_refs,
                    &[],
                    gateways,
                    servers,
                ),
                _ => service_attachments(&tcp.namespace, &tcp.spec.parent_refs),
            };
            if let Some(servers) = &self.ingress {
                for attachment in &mut attachments {
                    if let Some(ports) = &mut attachment.ports {
                        ports.retain(|port| servers.on_port(*port).is_some_and(|s| s.relays_tcp()));
                    }
                }
                attachments.retain(|a| a.ports.as_ref().is_some_and(|ports| !ports.is_empty()));
            }
            let object = tcp.key();
            let mut problems = Vec::new();
            let mut compiled = Vec::new();
            for attachment in attachments {
                for (index, rule) in tcp.spec.rules.iter().enumerate() {
                    let spec = as_virtual_service_route(rule, &tcp.namespace, attachment.port);
                    compiled.extend(
                        TcpRoute::compile(
                            &object,
                            &tcp.namespace,
                            index,
                            &spec,
                            clusters,
                            &mut problems,
                        )
                        .map(|route| (attachment.key(), route)),
                    );
                }
            }
            if tcp.spec.rules.is_empty() {
                problems.push(Problem::NoDestination {
                    field: "rules".to_owned(),
                });
            }
            if problems.is_empty() {
                for (key, route) in compiled {
                    by_host.entry(key).or_default().tcp.push(route);
                }
            } else {
                errors.extend(problems.into_iter().map(|problem| ConfigError {
                    kind: "TCPRoute",
                    object: object.clone(),
                    problem,
                }));
            }
        }
    }
}

/// `rule` of a route in `namespace` as a VirtualService `tcp:` route, taking the
/// connections to `port` (a parentRef's) or all.
fn as_virtual_service_route(rule: &TcpRouteRule, namespace: &str, port: Option<u32>) -> VsTcpRoute {
    VsTcpRoute {
        matches: port
            .map(|port| L4MatchAttributes {
                port: Some(port),
                ..L4MatchAttributes::default()
            })
            .into_iter()
            .collect(),
        route: rule
            .backend_refs
            .iter()
            .filter(|backend| backend.weight.unwrap_or(1) > 0)
            .map(|backend| weighted(backend, namespace))
            .collect(),
    }
}

fn weighted(backend: &WeightedBackendRef, namespace: &str) -> RouteDestination {
    let service = &backend.backend;
    RouteDestination {
        destination: destination(
            &service.name,
            service.namespace.as_deref().unwrap_or(namespace),
            service.port,
        ),
        weight: Some(backend.weight.unwrap_or(1).try_into().unwrap_or(i32::MAX)),
    }
}
