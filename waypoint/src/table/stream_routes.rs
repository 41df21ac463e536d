//! TCPRoutes and TLSRoutes (the Gateway API's): each rule becomes the VirtualService
//! route Istio generates for it — a TCPRoute's a `tcp:` route, a TLSRoute's a `tls:`
//! route taking the server names (SNI) in its `hostnames` — with no other condition but
//! its parent's port, and its backends as weighted destinations (weights are shares, 1
//! by default; a backend of weight 0 takes nothing). Rules have no matches, so a
//! route's first rule takes every connection. At an ingress gateway a TCPRoute attaches
//! to TCP listeners only, a TLSRoute to TLS passthrough listeners only.

use ambit_api::{
    gateway_api::{
        TcpRouteSpec, TlsRouteSpec,
        http_route::ParentReference,
        tcp_route::{TcpRouteRule, WeightedBackendRef},
    },
    istio::virtual_service::{
        L4MatchAttributes, RouteDestination, TcpRoute as VsTcpRoute, TlsMatchAttributes,
        TlsRoute as VsTlsRoute,
    },
};

use super::{
    ClusterIndex, ConfigError, Problem, RouteTable, TcpRoute,
    gateway_api::{AttachedRoutes, ByHost, destination, gateway_attachments, service_attachments},
    tcp::StreamRouteSpec,
};
use crate::{
    config::{Config, Named, Role},
    gateway::servers::PortProtocol,
};

/// A Gateway API route whose connections are relayed as bytes.
trait StreamRoute {
    /// Its kind, for errors.
    const KIND: &'static str;
    /// The ingress servers it attaches to.
    const SERVED_ON: PortProtocol;
    /// The VirtualService route a rule becomes.
    type Rule: StreamRouteSpec;
    fn parents(&self) -> &[ParentReference];
    /// The server names it takes (none for a TCPRoute: all).
    fn hostnames(&self) -> &[String];
    fn rules(&self) -> &[TcpRouteRule];
    /// A rule sending to `route`, taking the connections to `port` (a parentRef's) or
    /// all, as the VirtualService route Istio makes of it.
    fn as_virtual_service(&self, route: Vec<RouteDestination>, port: Option<u32>) -> Self::Rule;
    /// Where a compiled rule goes among a host's routes.
    fn routes_of(attached: &mut AttachedRoutes) -> &mut Vec<TcpRoute>;

    /// Compiles rule `index` of route `object` in `namespace` for a parent's `port`.
    fn compile_rule(
        &self,
        (object, namespace): (&str, &str),
        (index, rule): (usize, &TcpRouteRule),
        port: Option<u32>,
        clusters: &ClusterIndex,
        problems: &mut Vec<Problem>,
    ) -> Option<TcpRoute> {
        let spec = self.as_virtual_service(destinations(rule, namespace), port);
        TcpRoute::compile(object, namespace, index, &spec, clusters, problems)
    }
}

impl StreamRoute for TcpRouteSpec {
    const KIND: &'static str = "TCPRoute";
    const SERVED_ON: PortProtocol = PortProtocol::Tcp;
    type Rule = VsTcpRoute;

    fn parents(&self) -> &[ParentReference] {
        &self.parent_refs
    }

    fn hostnames(&self) -> &[String] {
        &[]
    }

    fn rules(&self) -> &[TcpRouteRule] {
        &self.rules
    }

    fn as_virtual_service(&self, route: Vec<RouteDestination>, port: Option<u32>) -> VsTcpRoute {
        VsTcpRoute {
            matches: port
                .map(|port| L4MatchAttributes {
                    port: Some(port),
                    ..L4MatchAttributes::default()
                })
                .into_iter()
                .collect(),
            route,
        }
    }

    fn routes_of(attached: &mut AttachedRoutes) -> &mut Vec<TcpRoute> {
        &mut attached.tcp
    }
}

impl StreamRoute for TlsRouteSpec {
    const KIND: &'static str = "TLSRoute";
    const SERVED_ON: PortProtocol = PortProtocol::Passthrough;
    type Rule = VsTlsRoute;

    fn parents(&self) -> &[ParentReference] {
        &self.parent_refs
    }

    fn hostnames(&self) -> &[String] {
        &self.hostnames
    }

    fn rules(&self) -> &[TcpRouteRule] {
        &self.rules
    }

    fn as_virtual_service(&self, route: Vec<RouteDestination>, port: Option<u32>) -> VsTlsRoute {
        VsTlsRoute {
            matches: vec![TlsMatchAttributes {
                sni_hosts: self.hostnames.clone(),
                port,
                ..TlsMatchAttributes::default()
            }],
            route,
        }
    }

    fn routes_of(attached: &mut AttachedRoutes) -> &mut Vec<TcpRoute> {
        &mut attached.tls
    }
}

impl RouteTable {
    /// Collects the TCPRoutes' and TLSRoutes' rules where they attach into `by_host`,
    /// each kind's routes in `namespace/name` order.
    pub(super) fn collect_stream_routes(
        &self,
        config: &Config,
        clusters: &ClusterIndex,
        errors: &mut Vec<ConfigError>,
        by_host: &mut ByHost,
    ) {
        self.collect(&config.tcp_routes, config, clusters, errors, by_host);
        self.collect(&config.tls_routes, config, clusters, errors, by_host);
    }

    fn collect<R: StreamRoute>(
        &self,
        routes: &[Named<R>],
        config: &Config,
        clusters: &ClusterIndex,
        errors: &mut Vec<ConfigError>,
        by_host: &mut ByHost,
    ) {
        let mut in_order: Vec<&Named<R>> = routes.iter().collect();
        in_order.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        for route in in_order {
            let (spec, namespace) = (&route.spec, route.namespace.as_str());
            let attachments = match (&config.role, &self.ingress) {
                (Role::Ingress(gateways), Some(servers)) => gateway_attachments(
                    (namespace, spec.parents(), spec.hostnames()),
                    gateways,
                    servers,
                    |protocol| protocol == R::SERVED_ON,
                ),
                _ => service_attachments(namespace, spec.parents()),
            };
            let object = route.key();
            let mut problems = Vec::new();
            if spec.rules().is_empty() {
                problems.push(Problem::NoDestination {
                    field: "rules".to_owned(),
                });
            }
            let mut compiled = Vec::new();
            for attachment in attachments {
                for rule in spec.rules().iter().enumerate() {
                    let at = (object.as_str(), namespace);
                    compiled.extend(
                        spec.compile_rule(at, rule, attachment.port, clusters, &mut problems)
                            .map(|compiled| (attachment.key(), compiled)),
                    );
                }
            }
            if problems.is_empty() {
                for (key, compiled) in compiled {
                    R::routes_of(by_host.entry(key).or_default()).push(compiled);
                }
            } else {
                errors.extend(problems.into_iter().map(|problem| ConfigError {
                    kind: R::KIND,
                    object: object.clone(),
                    problem,
                }));
            }
        }
    }
}

/// A rule's backends of weight above 0, of a route in `namespace`, as route
/// destinations.
fn destinations(rule: &TcpRouteRule, namespace: &str) -> Vec<RouteDestination> {
    rule.backend_refs
        .iter()
        .filter(|backend| backend.weight.unwrap_or(1) > 0)
        .map(|backend| weighted(backend, namespace))
        .collect()
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
