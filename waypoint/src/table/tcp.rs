//! One compiled VirtualService TCP route (`tcp[i]`): the connections it takes (any of
//! its `match` entries, or all without one) and the destinations it splits them over
//! by weight. A service's connections that no `tcp:` route takes go to the service
//! itself, as Istio routes them.

use std::sync::Arc;

use ambit_api::istio::virtual_service::TcpRoute as TcpRouteSpec;

use super::{
    Problem,
    cluster::{Cluster, ClusterIndex},
    route::{Target, WeightedDestination, WeightedTargets},
};
use crate::matcher::connection::{ConnectionMatch, ConnectionView};

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
        let before = problems.len();
        let matches: Vec<ConnectionMatch> = spec
            .matches
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                ConnectionMatch::compile(&format!("{field}.match[{i}]"), namespace, m)
                    .map_err(|errors| problems.extend(errors.into_iter().map(Problem::from)))
                    .ok()
            })
            .collect();
        if spec.route.is_empty() {
            problems.push(Problem::NoDestination {
                field: field.clone(),
            });
        }
        let destinations: Vec<WeightedDestination<'_>> = spec
            .route
            .iter()
            .map(|route| WeightedDestination {
                destination: &route.destination,
                weight: route.weight,
                headers: None,
            })
            .collect();
        let targets =
            WeightedTargets::compile(&field, namespace, &destinations, clusters, problems)?;
        (problems.len() == before).then(|| Self {
            name: format!("{object}#tcp.{index}"),
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
