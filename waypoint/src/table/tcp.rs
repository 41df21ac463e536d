//! One compiled VirtualService TCP route (`tcp[i]`), or TLS route (`tls[i]`, which also
//! matches the client's SNI): the connections it takes (any of its `match` entries, or
//! all without one) and the destinations it splits them over by weight. A service's
//! connections that no `tls:` or `tcp:` route takes go to the service itself, as Istio
//! routes them.

use std::sync::Arc;

use ambit_api::istio::virtual_service::{
    L4MatchAttributes, RouteDestination, TcpRoute as TcpRouteSpec, TlsMatchAttributes,
    TlsRoute as TlsRouteSpec,
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

/// A VirtualService route relayed as bytes, as written: `tcp:` or `tls:`.
pub trait StreamRouteSpec {
    /// The field the route is listed in (`tcp`, `tls`).
    const FIELD: &'static str;
    type Match;
    fn matches(&self) -> &[Self::Match];
    fn destinations(&self) -> &[RouteDestination];
    /// Compiles one `match` entry; `field` prefixes error paths.
    fn compile_match(
        field: &str,
        namespace: &str,
        spec: &Self::Match,
    ) -> Result<ConnectionMatch, Vec<MatchError>>;
}

impl StreamRouteSpec for TcpRouteSpec {
    const FIELD: &'static str = "tcp";
    type Match = L4MatchAttributes;

    fn matches(&self) -> &[L4MatchAttributes] {
        &self.matches
    }

    fn destinations(&self) -> &[RouteDestination] {
        &self.route
    }

    fn compile_match(
        field: &str,
        namespace: &str,
        spec: &L4MatchAttributes,
    ) -> Result<ConnectionMatch, Vec<MatchError>> {
        ConnectionMatch::compile(field, namespace, spec)
    }
}

impl StreamRouteSpec for TlsRouteSpec {
    const FIELD: &'static str = "tls";
    type Match = TlsMatchAttributes;

    fn matches(&self) -> &[TlsMatchAttributes] {
        &self.matches
    }

    fn destinations(&self) -> &[RouteDestination] {
        &self.route
    }

    fn compile_match(
        field: &str,
        namespace: &str,
        spec: &TlsMatchAttributes,
    ) -> Result<ConnectionMatch, Vec<MatchError>> {
        ConnectionMatch::compile_tls(field, namespace, spec)
    }
}

impl TcpRoute {
    /// Compiles `spec`, route number `index` of its field (`tcp[index]`, `tls[index]`)
    /// of VirtualService `object` (`ns/name`) in `namespace`; problems go to `problems`
    /// with their path.
    pub fn compile<R: StreamRouteSpec>(
        object: &str,
        namespace: &str,
        index: usize,
        spec: &R,
        clusters: &ClusterIndex,
        problems: &mut Vec<Problem>,
    ) -> Option<Self> {
        let field = format!("{}[{index}]", R::FIELD);
        let matches = spec
            .matches()
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                R::compile_match(&format!("{field}.match[{i}]"), namespace, m)
                    .map_err(|errors| problems.extend(errors.into_iter().map(Problem::from)))
                    .ok()
            })
            .collect();
        let name = format!("{object}#{}.{index}", R::FIELD);
        Self::assemble(
            name,
            &field,
            namespace,
            matches,
            spec.destinations(),
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
