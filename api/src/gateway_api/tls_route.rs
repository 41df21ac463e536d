//! `TLSRoute`: how TLS connections to a parent are spread over backends by the server
//! name of their ClientHello, the TLS passed through untouched
//! (`gateway.networking.k8s.io/v1alpha2`, the Gateway API's experimental channel,
//! which Istio serves). Its rules are a TCPRoute's: weighted backends, no matches.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::{http_route::ParentReference, tcp_route::TcpRouteRule};

/// The spec of a `TLSRoute`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "gateway.networking.k8s.io",
    version = "v1alpha2",
    kind = "TLSRoute",
    root = "TlsRoute",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase")]
pub struct TlsRouteSpec {
    pub parent_refs: Vec<ParentReference>,
    /// The server names (SNI) it takes, `*.example.com` for any one label; none: all.
    pub hostnames: Vec<String>,
    pub rules: Vec<TcpRouteRule>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway_api::http_route::producer_parents;

    #[test]
    fn a_tls_route_reads_as_users_write_it() {
        let route: TlsRouteSpec = serde_yaml_ng::from_str(
            "
parentRefs: [{name: edge, sectionName: tls}]
hostnames: [secure.example.com]
rules: [{backendRefs: [{name: secure, port: 443}]}]
",
        )
        .expect("decodes");
        assert_eq!(route.hostnames, ["secure.example.com"]);
        assert_eq!(route.rules[0].backend_refs[0].backend.port, Some(443));
        assert_eq!(
            producer_parents(&route.parent_refs, "shop").count(),
            0,
            "a Gateway parent"
        );
    }
}
