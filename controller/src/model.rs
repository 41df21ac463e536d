//! The mesh model: the objects that passed validation, typed, with where they came from.
//!
//! It holds the Istio objects (and the Gateway API's routes and Gateways) as read; [`crate::mesh`] resolves them against workloads
//! and services.

use ambit_api::{
    gateway_api::{
        GrpcRoute, GrpcRouteSpec, HttpRoute, HttpRouteSpec, TcpRoute, TcpRouteSpec, TlsRoute,
        TlsRouteSpec,
        gateway::{Gateway as KubernetesGateway, GatewaySpec as KubernetesGatewaySpec},
    },
    istio::{
        AuthorizationPolicy, AuthorizationPolicySpec, DestinationRule, DestinationRuleSpec,
        GatewaySpec, IstioGateway, MeshConfig, PeerAuthentication, PeerAuthenticationSpec,
        RequestAuthentication, RequestAuthenticationSpec, Telemetry, TelemetrySpec, VirtualService,
        VirtualServiceSpec,
    },
    manifests::{Object, Source},
};
use kube::Resource;

/// An object that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted<T> {
    pub object: T,
    pub source: Source,
}

/// Every valid Istio object of the input.
#[derive(Debug, Default)]
pub struct Model {
    pub virtual_services: Vec<Accepted<VirtualService>>,
    pub destination_rules: Vec<Accepted<DestinationRule>>,
    pub gateways: Vec<Accepted<IstioGateway>>,
    pub authorization_policies: Vec<Accepted<AuthorizationPolicy>>,
    pub peer_authentications: Vec<Accepted<PeerAuthentication>>,
    pub request_authentications: Vec<Accepted<RequestAuthentication>>,
    /// Istio's mesh config, from the root namespace's `istio` ConfigMap.
    pub mesh_config: Option<Accepted<MeshConfig>>,
    /// The Gateway API's HTTPRoutes.
    pub http_routes: Vec<Accepted<HttpRoute>>,
    /// The Gateway API's GRPCRoutes.
    pub grpc_routes: Vec<Accepted<GrpcRoute>>,
    /// The Gateway API's TCPRoutes.
    pub tcp_routes: Vec<Accepted<TcpRoute>>,
    /// The Gateway API's TLSRoutes.
    pub tls_routes: Vec<Accepted<TlsRoute>>,
    pub telemetries: Vec<Accepted<Telemetry>>,
    /// The Gateway API's Gateways of class `istio` (ingress gateways).
    pub kubernetes_gateways: Vec<Accepted<KubernetesGateway>>,
}

impl Model {
    /// How many objects the model holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.virtual_services.len()
            + self.destination_rules.len()
            + self.gateways.len()
            + self.authorization_policies.len()
            + self.peer_authentications.len()
            + self.request_authentications.len()
            + usize::from(self.mesh_config.is_some())
            + self.http_routes.len()
            + self.grpc_routes.len()
            + self.tcp_routes.len()
            + self.tls_routes.len()
            + self.telemetries.len()
            + self.kubernetes_gateways.len()
    }

    /// Whether the model holds no object.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The VirtualService `namespace/name`.
    #[must_use]
    pub fn virtual_service(&self, namespace: &str, name: &str) -> Option<&VirtualService> {
        find(&self.virtual_services, namespace, name)
    }

    /// The DestinationRule `namespace/name`.
    #[must_use]
    pub fn destination_rule(&self, namespace: &str, name: &str) -> Option<&DestinationRule> {
        find(&self.destination_rules, namespace, name)
    }

    pub(crate) fn add_mesh_config(&mut self, object: &Object, mesh: MeshConfig) {
        self.mesh_config = Some(Accepted {
            object: mesh,
            source: object.source.clone(),
        });
    }

    pub(crate) fn add_virtual_service(&mut self, object: &Object, spec: VirtualServiceSpec) {
        let typed = VirtualService::new(&object.metadata.name, spec);
        self.virtual_services.push(accept(object, typed));
    }

    pub(crate) fn add_http_route(&mut self, object: &Object, spec: HttpRouteSpec) {
        let typed = HttpRoute::new(&object.metadata.name, spec);
        self.http_routes.push(accept(object, typed));
    }

    pub(crate) fn add_telemetry(&mut self, object: &Object, spec: TelemetrySpec) {
        let typed = Telemetry::new(&object.metadata.name, spec);
        self.telemetries.push(accept(object, typed));
    }

    pub(crate) fn add_grpc_route(&mut self, object: &Object, spec: GrpcRouteSpec) {
        let typed = GrpcRoute::new(&object.metadata.name, spec);
        self.grpc_routes.push(accept(object, typed));
    }

    pub(crate) fn add_tcp_route(&mut self, object: &Object, spec: TcpRouteSpec) {
        let typed = TcpRoute::new(&object.metadata.name, spec);
        self.tcp_routes.push(accept(object, typed));
    }

    pub(crate) fn add_tls_route(&mut self, object: &Object, spec: TlsRouteSpec) {
        let typed = TlsRoute::new(&object.metadata.name, spec);
        self.tls_routes.push(accept(object, typed));
    }

    pub(crate) fn add_kubernetes_gateway(&mut self, object: &Object, spec: KubernetesGatewaySpec) {
        let typed = KubernetesGateway::new(&object.metadata.name, spec);
        self.kubernetes_gateways.push(accept(object, typed));
    }

    pub(crate) fn add_destination_rule(&mut self, object: &Object, spec: DestinationRuleSpec) {
        let typed = DestinationRule::new(&object.metadata.name, spec);
        self.destination_rules.push(accept(object, typed));
    }

    pub(crate) fn add_gateway(&mut self, object: &Object, spec: GatewaySpec) {
        let typed = IstioGateway::new(&object.metadata.name, spec);
        self.gateways.push(accept(object, typed));
    }

    pub(crate) fn add_authorization_policy(
        &mut self,
        object: &Object,
        spec: AuthorizationPolicySpec,
    ) {
        let typed = AuthorizationPolicy::new(&object.metadata.name, spec);
        self.authorization_policies.push(accept(object, typed));
    }

    pub(crate) fn add_peer_authentication(
        &mut self,
        object: &Object,
        spec: PeerAuthenticationSpec,
    ) {
        let typed = PeerAuthentication::new(&object.metadata.name, spec);
        self.peer_authentications.push(accept(object, typed));
    }

    pub(crate) fn add_request_authentication(
        &mut self,
        object: &Object,
        spec: RequestAuthenticationSpec,
    ) {
        let typed = RequestAuthentication::new(&object.metadata.name, spec);
        self.request_authentications.push(accept(object, typed));
    }
}

type KubeMeta = kube::core::ObjectMeta;

/// `typed` with the manifest's metadata, and where it came from.
fn accept<T: Resource>(object: &Object, mut typed: T) -> Accepted<T> {
    copy_metadata(object, typed.meta_mut());
    Accepted {
        object: typed,
        source: object.source.clone(),
    }
}

fn find<'a, T: Resource>(objects: &'a [Accepted<T>], namespace: &str, name: &str) -> Option<&'a T> {
    objects.iter().map(|a| &a.object).find(|o| {
        let meta = o.meta();
        meta.name.as_deref() == Some(name) && meta.namespace.as_deref() == Some(namespace)
    })
}

/// The manifest's metadata, in Kubernetes' form (the namespace made explicit).
fn copy_metadata(object: &Object, meta: &mut KubeMeta) {
    let source = &object.metadata;
    meta.namespace = Some(object.namespace().to_owned());
    meta.uid.clone_from(&source.uid);
    meta.generation = source.generation;
    meta.labels = (!source.labels.is_empty()).then(|| source.labels.clone());
    meta.annotations = (!source.annotations.is_empty()).then(|| source.annotations.clone());
}
