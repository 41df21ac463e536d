//! What a waypoint is built from: services with their endpoints, the Istio
//! VirtualServices and DestinationRules (and the Gateway API's HTTPRoutes) that route
//! to them, the RequestAuthentications
//! and AuthorizationPolicies that guard them, and how traces are sampled.
//!
//! This is plain data, independent of how it arrives (the controller's push, a test):
//! [`RouteTable::compile`](crate::RouteTable::compile) validates it and turns it into
//! the immutable table requests are routed with.

use std::{collections::BTreeMap, net::IpAddr};

use ambit_api::{
    gateway_api::{HttpRouteSpec, TcpRouteSpec, TlsRouteSpec},
    istio::{
        AuthorizationPolicySpec, DestinationRuleSpec, GatewaySpec, MeshConfig,
        RequestAuthenticationSpec, TelemetrySpec, VirtualServiceSpec,
    },
    locality::Locality,
};

/// The cluster's DNS domain: services are `<name>.<namespace>.svc.<domain>`.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Everything one waypoint routes with.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The waypoint's own namespace: a request for a bare name (`Host: reviews`) means
    /// the service of that name here, as a pod in this namespace would resolve it.
    pub namespace: String,
    /// The waypoint's own name (its `Gateway`'s): policies whose `targetRefs` name this
    /// Gateway in [`Config::namespace`] apply to all its requests.
    pub name: String,
    /// What the proxy serves: a waypoint's mesh traffic, or an ingress gateway's servers.
    pub role: Role,
    pub services: Vec<Service>,
    /// Every mesh workload: who a request's source is (`sourceLabels`, telemetry), also
    /// when it is no service's endpoint.
    pub workloads: Vec<MeshWorkload>,
    pub virtual_services: Vec<Named<VirtualServiceSpec>>,
    /// The Gateway API's HTTPRoutes: those attached to Services route them as a
    /// VirtualService would (a VirtualService for the same Service comes first).
    pub http_routes: Vec<Named<HttpRouteSpec>>,
    /// The Gateway API's TCPRoutes: those attached to Services relay their TCP ports as
    /// a VirtualService's `tcp:` routes would.
    pub tcp_routes: Vec<Named<TcpRouteSpec>>,
    /// The Gateway API's TLSRoutes: those attached to Services relay their TLS ports by
    /// server name as a VirtualService's `tls:` routes would.
    pub tls_routes: Vec<Named<TlsRouteSpec>>,
    pub destination_rules: Vec<Named<DestinationRuleSpec>>,
    /// All AuthorizationPolicies; the waypoint enforces those that target it
    /// ([`crate::policy`] says which).
    pub authorization_policies: Vec<Named<AuthorizationPolicySpec>>,
    /// All RequestAuthentications; the waypoint applies those that target it.
    pub request_authentications: Vec<Named<RequestAuthenticationSpec>>,
    /// Istio's mesh config: the extension providers CUSTOM policies name.
    pub mesh: MeshConfig,
    /// All Telemetry objects; those that apply to this proxy set its access logging
    /// and trace sampling ([`crate::telemetry::settings`]).
    pub telemetries: Vec<Named<TelemetrySpec>>,
    /// The share of new traces marked sampled (0 to 100) when a request arrives without
    /// `traceparent`; `None`: all of them.
    pub trace_sampling_percent: Option<f64>,
    /// Where the proxy itself runs (its pod's locality): what `localityLbSetting` ranks
    /// endpoints from. Empty when unknown.
    pub locality: Locality,
    /// The proxy's own pod's labels (an ingress gateway's are what Gateways select;
    /// `failoverPriority` compares endpoints' with them). Empty when unknown.
    pub labels: BTreeMap<String, String>,
}

/// What the proxy serves, which decides the VirtualServices that apply.
#[derive(Debug, Clone, Default)]
pub enum Role {
    /// A waypoint: requests to a service's VIP over HBONE, routed by the VirtualServices
    /// bound to `mesh` (those naming no `gateways`), else to the service's endpoints.
    #[default]
    Waypoint,
    /// An ingress gateway serving these Istio Gateways: requests on their servers' ports,
    /// for their servers' hosts, routed by the VirtualServices bound to them
    /// (`gateways: [namespace/name]`); a request no such VirtualService routes gets 404.
    Ingress(Vec<Named<GatewaySpec>>),
}

/// A namespaced Istio object: its namespace and name, and its spec.
#[derive(Debug, Clone, Default)]
pub struct Named<T> {
    pub namespace: String,
    pub name: String,
    pub spec: T,
}

impl<T> Named<T> {
    /// `namespace/name`, as errors and logs name an object.
    #[must_use]
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// A Kubernetes Service and the endpoints (ready pods) behind it.
#[derive(Debug, Clone, Default)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub ports: Vec<ServicePort>,
    pub endpoints: Vec<Endpoint>,
}

impl Service {
    /// The service's FQDN, `name.namespace.svc.cluster.local`.
    #[must_use]
    pub fn hostname(&self) -> String {
        format!("{}.{}.svc.{CLUSTER_DOMAIN}", self.name, self.namespace)
    }
}

/// One port of a service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name (`http`, `grpc-api`, `tcp-db`): Istio reads the protocol from its
    /// prefix when `app_protocol` does not say.
    pub name: String,
    /// The port clients address.
    pub port: u16,
    /// The port the pods listen on; `0` means the same as `port`.
    pub target_port: u16,
    /// Kubernetes' `appProtocol` (`http`, `http2`, `grpc`, `tcp`), empty when absent.
    pub app_protocol: String,
}

/// What a service port speaks, as Istio's protocol selection decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (`http`, `http_proxy`, `kubernetes.io/ws`).
    Http,
    /// HTTP/2 with prior knowledge (`http2`, `grpc`, `grpc-web`, `h2c`,
    /// `kubernetes.io/h2c`).
    Http2,
    /// Bytes the waypoint does not parse, relayed as L4 and routed by `tcp:` routes:
    /// `tcp`, and what it cannot or does not read (`tls`, `https`, `mongo`, `mysql`,
    /// `redis`), as Istio treats them by default.
    Tcp,
    /// Not declared: served as HTTP, as Istio's waypoints sniff it.
    Unknown,
}

impl Protocol {
    /// The protocol a declaration (`appProtocol`, or a port name's prefix) names,
    /// case-insensitively.
    #[must_use]
    pub fn parse(declared: &str) -> Self {
        match declared.to_ascii_lowercase().as_str() {
            "http" | "http_proxy" | "kubernetes.io/ws" => Self::Http,
            "http2" | "grpc" | "grpc-web" | "h2c" | "kubernetes.io/h2c" => Self::Http2,
            "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" => Self::Tcp,
            _ => Self::Unknown,
        }
    }
}

impl ServicePort {
    /// The port endpoints listen on.
    #[must_use]
    pub fn endpoint_port(&self) -> u16 {
        if self.target_port == 0 {
            self.port
        } else {
            self.target_port
        }
    }

    /// What the port speaks, by Istio's protocol selection: `app_protocol`, else the
    /// name up to its first `-` (`tcp-db` is `tcp`), else [`Protocol::Unknown`].
    #[must_use]
    pub fn protocol(&self) -> Protocol {
        if self.app_protocol.is_empty() {
            Protocol::parse(self.name.split('-').next().unwrap_or_default())
        } else {
            Protocol::parse(&self.app_protocol)
        }
    }

    /// Whether endpoints speak HTTP/2 on this port.
    #[must_use]
    pub fn speaks_http2(&self) -> bool {
        self.protocol() == Protocol::Http2
    }
}

/// A pod in the mesh, by address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshWorkload {
    pub ip: IpAddr,
    pub namespace: String,
    /// The pod's workload (its Deployment's name), as telemetry names it.
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// A ready pod behind a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    /// The pod's labels, which DestinationRule subsets select on and telemetry reads
    /// (`app`, `version`, canonical service).
    pub labels: BTreeMap<String, String>,
    /// The pod's workload (its Deployment's name), as telemetry names it; empty when
    /// unknown.
    pub workload: String,
    /// Where the pod runs; empty when unknown.
    pub locality: Locality,
}

impl Endpoint {
    /// An endpoint at `ip` with these labels, of an unknown workload and locality.
    #[must_use]
    pub fn new<'a>(ip: IpAddr, labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            ip,
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            workload: String::new(),
            locality: Locality::default(),
        }
    }

    /// This endpoint, in `locality`.
    #[must_use]
    pub fn in_locality(mut self, locality: Locality) -> Self {
        self.locality = locality;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_is_named_by_its_cluster_fqdn() {
        let service = Service {
            namespace: "shop".into(),
            name: "reviews".into(),
            ..Service::default()
        };
        assert_eq!(service.hostname(), "reviews.shop.svc.cluster.local");
    }

    fn port(name: &str, app_protocol: &str) -> ServicePort {
        ServicePort {
            name: name.into(),
            port: 80,
            target_port: 0,
            app_protocol: app_protocol.into(),
        }
    }

    #[test]
    fn the_protocol_comes_from_app_protocol_or_the_port_name() {
        assert!(port("grpc-api", "").speaks_http2());
        assert!(port("web", "http2").speaks_http2());
        assert!(port("web", "kubernetes.io/h2c").speaks_http2());
        assert!(!port("http", "").speaks_http2());
        assert!(!port("http2-ish", "http").speaks_http2());
        assert_eq!(port("http", "").endpoint_port(), 80);
    }

    #[test]
    fn tcp_and_opaque_protocols_are_relayed_as_bytes() {
        for (name, app_protocol) in [
            ("tcp", ""),
            ("tcp-echo", ""),
            ("TCP-db", ""),
            ("mongo", ""),
            ("redis-cache", ""),
            ("mysql-primary", ""),
            ("tls-passthrough", ""),
            ("web", "tcp"),
            ("http", "tcp"),
        ] {
            assert_eq!(
                port(name, app_protocol).protocol(),
                Protocol::Tcp,
                "name {name:?}, appProtocol {app_protocol:?}"
            );
        }
        assert_eq!(
            port("tcp", "http").protocol(),
            Protocol::Http,
            "appProtocol first"
        );
        assert_eq!(port("db", "").protocol(), Protocol::Unknown);
        assert_eq!(port("", "").protocol(), Protocol::Unknown);
        assert_eq!(port("tcpish", "").protocol(), Protocol::Unknown);
    }
}
