//! `TCPRoute`: how TCP connections to a parent are spread over backends
//! (`gateway.networking.k8s.io/v1alpha2`, the Gateway API's experimental channel, which
//! Istio serves). A rule has no matches: its weighted backends take every connection,
//! so only a route's first rule ever does (as in Istio).

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::http_route::{BackendRef, ParentReference};

/// The spec of a `TCPRoute`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1alpha2",
    kind = "TCPRoute",
    root = "TcpRoute",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase")]
pub struct TcpRouteSpec {
    pub parent_refs: Vec<ParentReference>,
    pub rules: Vec<TcpRouteRule>,
}

/// One rule: the backends connections go to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TcpRouteRule {
    pub name: Option<String>,
    pub backend_refs: Vec<WeightedBackendRef>,
}

/// A backend and its share of the rule's connections.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WeightedBackendRef {
    #[serde(flatten)]
    pub backend: BackendRef,
    /// `None`: 1. A share of the rule's total, not a percentage.
    pub weight: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway_api::http_route::producer_parents;

    #[test]
    fn a_tcp_route_reads_as_users_write_it() {
        let route: TcpRouteSpec = serde_yaml_ng::from_str(
            "
parentRefs: [{group: '', kind: Service, name: db, port: 5432}]
rules:
- backendRefs:
  - {name: db-v1, port: 5432, weight: 90}
  - {name: db-v2, port: 5432}
",
        )
        .expect("decodes");
        let backends = &route.rules[0].backend_refs;
        assert_eq!(backends[0].backend.name, "db-v1");
        assert_eq!(backends[0].backend.port, Some(5432));
        assert_eq!(backends[0].weight, Some(90));
        assert_eq!(backends[1].weight, None);
        assert!(backends[1].backend.is_service());
        assert_eq!(producer_parents(&route.parent_refs, "shop").count(), 1);
    }
}
