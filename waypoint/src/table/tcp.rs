//! One compiled VirtualService TCP route (`tcp[i]`), or TLS route (`tls[i]`, which also
//! matches the client's SNI): the connections it takes (any of its `match` entries, or
//! all without one) and the destinations it splits them over by weight. A service's
//! connections that no `tls:` or `tcp:` route takes go to the service itself, as Istio
//! routes them.

use std::sync::Arc;

use ambit_api::istio::virtual_service::{
    RouteDestination, TcpRoute as TcpRouteSpec, TlsRoute as TlsRouteSpec,
};

use super::{
    Problem,
    cluster::{Cluster, ClusterIndex},
    route::{Target, WeightedDestination, WeightedTargets},
};
use crate::matcher::{
    MatchError,
    connection::{ConnectionMatch, ConnectionView},
};

/// A compiled TCP route.
#[derive(Debug)]
pub struct TcpRoute {
    /// `namespace/name#tcp.<index>` (or `<host>#default`), for logs.
    pub name: String,
    /// Any one holds (OR); none means every connection.
    matches: Vec<ConnectionMatch>,
    pub targets: WeightedTargets,
}

impl TcpRoute {
    /// Compiles `spec`, TCP route number `index` of VirtualService `object`
    /// (`ns/name`) in `namespace`; problems go to `problems` with their path.
    pub fn compile(
        object: &str,
        namespace: &str,
        index: usize,
        spec: &TcpRouteSpec,
        clusters: &ClusterIndex,
        problems: &mut Vec<Problem>,
    ) -> Option<Self> {
        let field = format!("tcp[{index}]");
        let matches = compile_matches(&field, &spec.matches, problems, |at, m| {
            ConnectionMatch::compile(at, namespace, m)
        });
        let name = format!("{object}#tcp.{index}");
        Self::assemble(
            name,
            &field,
            namespace,
            matches,
            &spec.route,
            clusters,
            problems,
        )
    }

    /// Compiles `spec`, TLS route number `index` (`tls[index]`, chosen by SNI), as
    /// [`TcpRoute::compile`] does a TCP route.
    pub fn compile_tls(
        object: &str,
        namespace: &str,
        index: usize,
        spec: &TlsRouteSpec,
        clusters: &ClusterIndex,
        problems: &mut Vec<Problem>,
    ) -> Option<Self> {
        let field = format!("tls[{index}]");
        let matches = compile_matches(&field, &spec.matches, problems, |at, m| {
            ConnectionMatch::compile_tls(at, namespace, m)
        });
        let name = format!("{object}#tls.{index}");
        Self::assemble(
            name,
            &field,
            namespace,
            matches,
            &spec.route,
            clusters,
            problems,
        )
    }

    /// The route from its compiled `matches` and its `route` destinations.
    fn assemble(
        name: String,
        field: &str,
        namespace: &str,
        matches: Vec<ConnectionMatch>,
        route: &[RouteDestination],
        clusters: &ClusterIndex,
        problems: &mut Vec<Problem>,
    ) -> Option<Self> {
        let before = problems.len();
        if route.is_empty() {
            problems.push(Problem::NoDestination {
                field: field.to_owned(),
            });
        }
        let destinations: Vec<WeightedDestination<'_>> = route
            .iter()
            .map(|route| WeightedDestination {
                destination: &route.destination,
                weight: route.weight,
                headers: None,
            })
            .collect();
        let targets =
            WeightedTargets::compile(field, namespace, &destinations, clusters, problems)?;
        (problems.len() == before).then_some(Self {
            name,
            matches,
            targets,
        })
    }

    /// The route of a service's connections no `tcp:` route takes: all its endpoints.
    #[must_use]
    pub fn service_default(host: &str, clusters: Vec<(u16, Arc<Cluster>)>) -> Self {
        Self {
            name: format!("{host}#default"),
            matches: Vec::new(),
            targets: WeightedTargets::single(Target::service(host, clusters)),
        }
    }

    /// Whether the route takes `connection`.
    #[must_use]
    pub fn matches(&self, connection: &ConnectionView<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(connection))
    }
}

/// Compiles the `match` entries of route `field`; problems go to `problems`.
fn compile_matches<M>(
    field: &str,
    specs: &[M],
    problems: &mut Vec<Problem>,
    compile: impl Fn(&str, &M) -> Result<ConnectionMatch, Vec<MatchError>>,
) -> Vec<ConnectionMatch> {
    specs
        .iter()
        .enumerate()
        .filter_map(|(i, spec)| {
            compile(&format!("{field}.match[{i}]"), spec)
                .map_err(|errors| problems.extend(errors.into_iter().map(Problem::from)))
                .ok()
        })
        .collect()
}
