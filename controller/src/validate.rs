//! Validation: every Istio object of the input checked, every problem reported with the
//! object (`namespace/name (Kind)`), its file and document, the field path and what to
//! do; the valid objects kept in a [`Model`].
//!
//! The checks run in passes. Within a pass every problem is reported at once; only a
//! spec that cannot be read (pass 1 or 2 failed) skips the later passes:
//! 1. the document: a supported `apiVersion`, no unknown top-level field, a `spec`,
//!    no second object of the same kind and name;
//! 2. the spec's shape (`decode.rs`): wrong types and unknown enum values (the first one
//!    stops decoding), unknown fields (all of them);
//! 3. each object's own rules (`virtual_service.rs`, `destination_rule.rs`): weights,
//!    regexes, ports, percentages, …, all reported at once;
//! 4. references between objects (`references.rs`): subsets a route names must be defined
//!    by a DestinationRule for that host; a delegate must be usable by its root and its
//!    matches narrow the root's ([`crate::delegation`], warnings: the route is left out).
//!
//! An object with no error goes into the [`Model`]; an invalid sibling does not change
//! that. Warnings (deprecated fields) do not reject an object.
//!
//! Why here and not in `ambit-api`: `api` holds the types every binary shares and no
//! policy; what Ambit accepts is the controller's decision, and only the controller needs
//! the `regex` and decoding machinery.

mod authorization_policy;
mod decode;
mod destination_rule;
mod fields;
mod gateway;
mod grpc_route;
mod http_route;
mod kubernetes_gateway;
mod mesh_config;
mod peer_authentication;
mod references;
mod tcp_route;
mod telemetry;
mod tls_route;
mod virtual_service;

use std::{
    collections::{BTreeMap, btree_map::Entry},
    fmt,
    path::PathBuf,
};

use ambit_api::{
    gateway_api::{self, reference_grant::ReferenceGrantSpec},
    istio,
    manifests::{ManifestError, Manifests, Object, Source},
};
use serde::de::DeserializeOwned;

pub use self::mesh_config::CONFIG_MAP as MESH_CONFIG_MAP;
use self::references::References;
use crate::model::Model;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The object is rejected.
    Error,
    /// The object is accepted, but should be changed.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Warning => "warning",
        })
    }
}

/// The object a problem belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The API group, empty for the core group.
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    fn of(object: &Object) -> Self {
        let group = object
            .api_version
            .split_once('/')
            .map_or("", |(group, _)| group);
        Self {
            group: group.to_owned(),
            kind: object.kind.clone(),
            namespace: object.namespace().to_owned(),
            name: object.metadata.name.clone(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ({})", self.namespace, self.name, self.kind)
    }
}

/// Why something is wrong, and what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reason {
    #[error("cannot be read: {0} — does it exist and is it readable?")]
    Unreadable(String),
    #[error("not a Kubernetes object: {0}")]
    NotAnObject(String),
    #[error("`{written}` is not a version Istio serves: use {served}")]
    UnsupportedVersion { written: String, served: String },
    #[error("also defined in {0}: keep one (this one is ignored)")]
    Duplicate(String),
    #[error("{0}")]
    Decode(String),
    #[error("unknown field: remove it or correct its name (Istio's fields are camelCase)")]
    UnknownField,
    #[error("required: {0}")]
    Required(&'static str),
    #[error("weights sum to {0}, they must sum to 100")]
    WeightSum(i64),
    #[error("{0} destinations and no weights: give each a `weight`, so they sum to 100")]
    WeightsMissing(usize),
    #[error("{0} is negative: it must be 0 or more")]
    Negative(i64),
    #[error("port {0} is out of range: use 1 to 65535")]
    PortOutOfRange(u32),
    #[error("{0} is not a percentage: use a value from 0 to 100")]
    PercentOutOfRange(f64),
    #[error("{value} is not {expected}")]
    StatusOutOfRange { value: i64, expected: &'static str },
    #[error("`{pattern}` is not a valid regular expression (RE2 syntax): {error}")]
    InvalidRegex { pattern: String, error: String },
    #[error(
        "matches nothing: set one of `exact`, `prefix` or `regex` (`{{}}` means \"present\" only in headers and query parameters)"
    )]
    EmptyMatch,
    #[error(
        "`redirect` cannot be combined with `route`: a redirect answers the request itself — keep one"
    )]
    RedirectWithRoute,
    #[error("`{0}` cannot be combined with `{1}`: keep one")]
    Exclusive(&'static str, &'static str),
    #[error("sets {0}: set exactly one of them")]
    OneOf(String),
    #[error("does nothing: give it a `route`, a `redirect`, a `directResponse` or a `delegate`")]
    NoAction,
    #[error(
        "unknown retry condition `{0}`: use 5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, retriable-status-codes, retriable-headers, envoy-ratelimited, cancelled, deadline-exceeded, internal, resource-exhausted, unavailable, or an HTTP status code"
    )]
    RetryOn(String),
    #[error(
        "no DestinationRule for {host} defines subset `{subset}`{}",
        known_subsets(.defined)
    )]
    UnknownSubset {
        subset: String,
        host: String,
        defined: Vec<String>,
    },
    #[error("subset `{name}` is already defined at {first}: give each subset its own name")]
    DuplicateSubset { name: String, first: String },
    #[error("deprecated: use {0}")]
    Deprecated(&'static str),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("{0}")]
    IpBlock(String),
    #[error("`{0}` is not a port: use a number from 1 to 65535")]
    NotAPort(String),
    #[error("unknown key `{0}`: use one of {known}", known = ambit_api::istio::authorization_policy::ConditionKey::DOCUMENTED)]
    UnknownConditionKey(String),
    #[error("`{0}`: `*` may only stand alone, or at the start or the end")]
    Wildcard(String),
    #[error(
        "`{field}` needs an L7 proxy and ztunnel enforces this policy at L4, so {consequence}; to check it, attach the policy to a waypoint with `targetRefs`"
    )]
    HttpOnlyAtL4 {
        field: String,
        consequence: &'static str,
    },
    #[error("port-level settings need a `selector`: Istio applies them to selected workloads only")]
    PortLevelNeedsSelector,
    #[error("{0}")]
    Conflict(String),
    #[error(
        "no Istio Gateway {0}: the routes apply once it exists — correct the name (`namespace/name`, or `name` in this namespace), or add the Gateway"
    )]
    UnknownGateway(String),
    #[error("unknown protocol `{0}`: use HTTP, HTTPS, HTTP2, GRPC or GRPC-WEB")]
    UnknownProtocol(String),
    #[error(
        "`{0}` is not a server host: write `host` or `namespace/host`, with `*` alone or as the first label (`*.example.com`)"
    )]
    ServerHost(String),
    #[error("{value} is not {expected}: Envoy refuses it")]
    HashTableSize { value: u64, expected: &'static str },
    #[error("locality {0}")]
    Locality(ambit_api::locality::LocalityError),
    #[error("`{0}` is not a region: name one region, without `/` or `*`")]
    Region(String),
    #[error("fails over from region `{0}` to itself: name another region")]
    FailoverToItself(String),
    #[error(
        "does nothing without `outlierDetection`: Istio moves requests to other localities only when it can eject endpoints — add `outlierDetection`"
    )]
    FailoverWithoutOutlier,
    #[error("{0}; until then this route is left out and the others apply")]
    DelegateUnusable(crate::delegation::Unusable),
    #[error(
        "{conflict}, so this route is left out of {root}, which delegates here: a delegate's match must narrow the root's"
    )]
    DelegateConflict {
        root: String,
        conflict: crate::delegation::Conflict,
    },
    #[error("{0}")]
    Provider(String),
    #[error(
        "ztunnel does not enforce CUSTOM policies: this one applies only on the ingress gateways it selects; to protect a service, attach the policy to its waypoint with `targetRefs`"
    )]
    CustomOnWorkloads,
    #[error("{0}")]
    NotServed(String),
}

fn known_subsets(defined: &[String]) -> String {
    if defined.is_empty() {
        " (none defines any): add a DestinationRule with this subset, or remove `subset`".to_owned()
    } else {
        format!(
            " (defined: {}): correct the name, or add the subset to the DestinationRule",
            defined.join(", ")
        )
    }
}

impl Reason {
    /// Whether this rejects the object.
    #[must_use]
    pub fn severity(&self) -> Severity {
        match self {
            Self::Deprecated(_)
            | Self::HttpOnlyAtL4 { .. }
            | Self::UnknownGateway(_)
            | Self::DelegateUnusable(_)
            | Self::DelegateConflict { .. }
            | Self::CustomOnWorkloads
            | Self::NotServed(_)
            | Self::FailoverWithoutOutlier => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

/// One problem: where it is and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The object, when the document was read as one.
    pub object: Option<ObjectRef>,
    pub file: PathBuf,
    /// The document's position in `file` (from 1); `None` for the file as a whole.
    pub document: Option<usize>,
    /// The field path (`spec.http[0].route`); empty for the document as a whole.
    pub path: String,
    pub reason: Reason,
}

impl Diagnostic {
    fn of_manifest_error(error: &ManifestError) -> Self {
        let (file, document, reason) = match error {
            ManifestError::Folder { path, source } | ManifestError::File { path, source } => {
                (path.clone(), None, Reason::Unreadable(source.to_string()))
            }
            ManifestError::Document { at, reason } => (
                at.file.clone(),
                Some(at.document),
                Reason::NotAnObject(reason.clone()),
            ),
        };
        Self {
            severity: reason.severity(),
            object: None,
            file,
            document,
            path: String::new(),
            reason,
        }
    }
}

/// `error: shop/reviews (VirtualService) in x.yaml document 2: spec.http[0].route: …`
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.severity)?;
        if let Some(object) = &self.object {
            write!(f, "{object} in ")?;
        }
        write!(f, "{}", self.file.display())?;
        if let Some(document) = self.document {
            write!(f, " document {document}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// The problems found in one object, by field path.
#[derive(Debug, Default)]
pub(crate) struct Findings(Vec<(String, Reason)>);

impl Findings {
    pub(crate) fn add(&mut self, path: impl Into<String>, reason: Reason) {
        self.0.push((path.into(), reason));
    }

    fn has_errors(&self) -> bool {
        self.0.iter().any(|(_, r)| r.severity() == Severity::Error)
    }
}

/// What validation found: every problem, and the objects that passed.
#[derive(Debug, Default)]
pub struct Report {
    /// In file and document order.
    pub diagnostics: Vec<Diagnostic>,
    /// The valid objects.
    pub model: Model,
    /// How many Istio objects were checked.
    pub checked: usize,
    /// How many objects were of kinds this validator does not check (Pods, Services, …).
    pub skipped: usize,
}

impl Report {
    /// How many diagnostics have `severity`.
    #[must_use]
    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }

    /// `2 errors, 0 warnings: 3 of 5 Istio objects valid (4 objects of other kinds not checked)`
    #[must_use]
    pub fn summary(&self) -> String {
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        let mut line = format!(
            "{}, {}: {} of {} valid",
            plural(self.count(Severity::Error), "error"),
            plural(self.count(Severity::Warning), "warning"),
            self.model.len(),
            plural(self.checked, "Istio object"),
        );
        if self.skipped > 0 {
            line.push_str(&format!(
                " ({} of other kinds not checked)",
                plural(self.skipped, "object")
            ));
        }
        line
    }
}

/// One Istio object on its way through the passes.
struct Checked<'a, T> {
    object: &'a Object,
    /// `None` when passes 1 or 2 failed: there is nothing to check further.
    spec: Option<T>,
    findings: Findings,
}

impl<'a, T: DeserializeOwned> Checked<'a, T> {
    /// Passes 1 and 2: the document, then the spec's shape.
    fn decode(object: &'a Object, mut findings: Findings) -> Self {
        let spec = if check_document(object, &mut findings) {
            decode::spec(&object.spec, &mut findings)
        } else {
            None
        };
        Self {
            object,
            spec,
            findings,
        }
    }

    /// Turns the findings into diagnostics; returns the object and its spec if valid.
    fn conclude(self, diagnostics: &mut Vec<Diagnostic>) -> Option<(&'a Object, T)> {
        let valid = !self.findings.has_errors();
        let object = self.object;
        diagnostics.extend(
            self.findings
                .0
                .into_iter()
                .map(|(path, reason)| Diagnostic {
                    severity: reason.severity(),
                    object: Some(ObjectRef::of(object)),
                    file: object.source.file.clone(),
                    document: Some(object.source.document),
                    path,
                    reason,
                }),
        );
        self.spec.filter(|_| valid).map(|spec| (object, spec))
    }
}

/// The kinds this validator checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    VirtualService,
    DestinationRule,
    Gateway,
    AuthorizationPolicy,
    PeerAuthentication,
    RequestAuthentication,
    /// The `istio` ConfigMap of the root namespace.
    MeshConfig,
    /// The Gateway API's.
    HttpRoute,
    GrpcRoute,
    /// The Gateway API's, of its experimental channel (`v1alpha2`).
    TcpRoute,
    /// The Gateway API's, of its experimental channel (`v1alpha2`, `v1alpha3`).
    TlsRoute,
    /// The Gateway API's `Gateway` of class `istio`: an ingress gateway.
    KubernetesGateway,
    /// What routes attached to Gateways may refer to across namespaces.
    ReferenceGrant,
    Telemetry,
}

fn kind_of(object: &Object) -> Option<Kind> {
    if mesh_config::holds_it(object) {
        return Some(Kind::MeshConfig);
    }
    let (group, _version) = object.api_version.split_once('/')?;
    match (group, object.kind.as_str()) {
        (istio::NETWORKING_GROUP, "VirtualService") => Some(Kind::VirtualService),
        (istio::NETWORKING_GROUP, "DestinationRule") => Some(Kind::DestinationRule),
        (istio::NETWORKING_GROUP, "Gateway") => Some(Kind::Gateway),
        (istio::SECURITY_GROUP, "AuthorizationPolicy") => Some(Kind::AuthorizationPolicy),
        (istio::SECURITY_GROUP, "PeerAuthentication") => Some(Kind::PeerAuthentication),
        (istio::SECURITY_GROUP, "RequestAuthentication") => Some(Kind::RequestAuthentication),
        (istio::TELEMETRY_GROUP, "Telemetry") => Some(Kind::Telemetry),
        (gateway_api::GROUP, "HTTPRoute") => Some(Kind::HttpRoute),
        (gateway_api::GROUP, "GRPCRoute") => Some(Kind::GrpcRoute),
        (gateway_api::GROUP, "TCPRoute") => Some(Kind::TcpRoute),
        (gateway_api::GROUP, "TLSRoute") => Some(Kind::TlsRoute),
        (gateway_api::GROUP, "ReferenceGrant") => Some(Kind::ReferenceGrant),
        // Waypoints (class `istio-waypoint`) are read as such, not checked here.
        (gateway_api::GROUP, "Gateway")
            if object.spec_str("gatewayClassName") == Some(gateway_api::gateway::INGRESS_CLASS) =>
        {
            Some(Kind::KubernetesGateway)
        }
        _ => None,
    }
}

/// Whether `object` is of a kind [`validate`] checks.
#[must_use]
pub fn checks(object: &Object) -> bool {
    kind_of(object).is_some()
}

/// Checks every Istio object in `manifests` and every document that could not be read.
#[must_use]
pub fn validate(manifests: &Manifests) -> Report {
    let mut report = Report::default();
    report
        .diagnostics
        .extend(manifests.errors.iter().map(Diagnostic::of_manifest_error));

    let mut first_seen: BTreeMap<ObjectRef, &Source> = BTreeMap::new();
    let mut virtual_services = Vec::new();
    let mut destination_rules = Vec::new();
    let mut gateways = Vec::new();
    let mut authorization_policies = Vec::new();
    let mut peer_authentications = Vec::new();
    let mut request_authentications = Vec::new();
    let mut mesh_configs = Vec::new();
    let mut http_routes = Vec::new();
    let mut grpc_routes = Vec::new();
    let mut tcp_routes = Vec::new();
    let mut tls_routes = Vec::new();
    let mut reference_grants = Vec::new();
    let mut telemetries = Vec::new();
    let mut kubernetes_gateways = Vec::new();
    for object in &manifests.objects {
        let Some(kind) = kind_of(object) else {
            report.skipped += 1;
            continue;
        };
        report.checked += 1;
        let mut findings = Findings::default();
        match first_seen.entry(ObjectRef::of(object)) {
            Entry::Occupied(first) => {
                findings.add("metadata.name", Reason::Duplicate(first.get().to_string()));
            }
            Entry::Vacant(slot) => {
                slot.insert(&object.source);
            }
        }
        match kind {
            Kind::VirtualService => virtual_services.push(Checked::decode(object, findings)),
            Kind::DestinationRule => destination_rules.push(Checked::decode(object, findings)),
            Kind::Gateway => gateways.push(Checked::decode(object, findings)),
            Kind::AuthorizationPolicy => {
                authorization_policies.push(Checked::decode(object, findings));
            }
            Kind::PeerAuthentication => {
                peer_authentications.push(Checked::decode(object, findings));
            }
            Kind::RequestAuthentication => {
                request_authentications.push(Checked::decode(object, findings));
            }
            Kind::MeshConfig => mesh_configs.push(mesh_config::check(object, findings)),
            Kind::HttpRoute => http_routes.push(Checked::decode(object, findings)),
            Kind::GrpcRoute => grpc_routes.push(Checked::decode(object, findings)),
            Kind::TcpRoute => tcp_routes.push(Checked::decode(object, findings)),
            Kind::TlsRoute => tls_routes.push(Checked::decode(object, findings)),
            Kind::ReferenceGrant => reference_grants.push(Checked::decode(object, findings)),
            Kind::Telemetry => telemetries.push(Checked::decode(object, findings)),
            Kind::KubernetesGateway => {
                kubernetes_gateways.push(Checked::decode(object, findings));
            }
        }
    }
    // What CUSTOM policies are checked against: the valid mesh config, else none.
    let mesh = mesh_configs
        .iter()
        .filter(|checked| !checked.findings.has_errors())
        .find_map(|checked| checked.spec.clone())
        .unwrap_or_default();

    // The references borrow every spec, so the findings join their objects afterwards.
    let references = References::new(&manifests.objects, &virtual_services);
    let found: Vec<Findings> = virtual_services
        .iter()
        .map(|vs| {
            let mut findings = Findings::default();
            if let Some(spec) = &vs.spec {
                let namespace = vs.object.namespace();
                let delegate_target = references.is_delegate_target(vs.object);
                virtual_service::check(spec, delegate_target, &mut findings);
                references.check_delegates(namespace, spec, &mut findings);
                references.check_delegated(vs.object, spec, &mut findings);
                references.check_subsets(namespace, spec, &mut findings);
                references.check_gateways(namespace, spec, &mut findings);
            }
            findings
        })
        .collect();
    for (vs, findings) in virtual_services.iter_mut().zip(found) {
        vs.findings.0.extend(findings.0);
    }
    for dr in &mut destination_rules {
        if let Some(spec) = &dr.spec {
            destination_rule::check(spec, &mut dr.findings);
        }
    }
    for gw in &mut gateways {
        if let Some(spec) = &gw.spec {
            gateway::check(spec, &mut gw.findings);
        }
    }

    for policy in &mut authorization_policies {
        if let Some(spec) = &policy.spec {
            authorization_policy::check(spec, &mesh, &mut policy.findings);
        }
    }
    for policy in &mut peer_authentications {
        if let Some(spec) = &policy.spec {
            peer_authentication::check(spec, &mut policy.findings);
        }
    }
    // What ReferenceGrants allow (an invalid one allows nothing), and the hosts the
    // VirtualServices route at waypoints.
    let mut context = http_route::Context {
        grants: http_route::Grants(
            reference_grants
                .iter()
                .filter(|grant| !grant.findings.has_errors())
                .filter_map(|grant: &Checked<'_, ReferenceGrantSpec>| {
                    Some((grant.object.namespace(), grant.spec.clone()?))
                })
                .collect(),
        ),
        ..http_route::Context::default()
    };
    for vs in &virtual_services {
        let Some(spec) = vs.spec.as_ref().filter(|_| !vs.findings.has_errors()) else {
            continue;
        };
        if !spec.applies_to_mesh() {
            continue;
        }
        let namespace = vs.object.namespace();
        for host in &spec.hosts {
            context
                .virtual_services
                .entry(crate::hosts::resolve(host, namespace))
                .or_insert_with(|| format!("{namespace}/{}", vs.object.metadata.name));
        }
    }
    for route in &mut http_routes {
        if let Some(spec) = &route.spec {
            let at = ("HTTPRoute", route.object.namespace());
            http_route::check(spec, at, &context, &mut route.findings);
        }
    }
    for route in &mut grpc_routes {
        if let Some(spec) = &route.spec {
            let namespace = route.object.namespace();
            grpc_route::check(spec, namespace, &context, &mut route.findings);
        }
    }
    for route in &mut tcp_routes {
        if let Some(spec) = &route.spec {
            let namespace = route.object.namespace();
            tcp_route::check(spec, namespace, &context, &mut route.findings);
        }
    }
    for route in &mut tls_routes {
        if let Some(spec) = &route.spec {
            let namespace = route.object.namespace();
            tls_route::check(spec, namespace, &context, &mut route.findings);
        }
    }
    for grant in reference_grants {
        grant.conclude(&mut report.diagnostics);
    }
    for mut checked in telemetries {
        if let Some(spec) = &checked.spec {
            telemetry::check(spec, &mut checked.findings);
        }
        if let Some((object, spec)) = checked.conclude(&mut report.diagnostics) {
            report.model.add_telemetry(object, spec);
        }
    }
    for gateway in &mut kubernetes_gateways {
        if let Some(spec) = &gateway.spec {
            kubernetes_gateway::check(spec, gateway.object.namespace(), &mut gateway.findings);
        }
    }

    for vs in virtual_services {
        if let Some((object, spec)) = vs.conclude(&mut report.diagnostics) {
            report.model.add_virtual_service(object, spec);
        }
    }
    for dr in destination_rules {
        if let Some((object, spec)) = dr.conclude(&mut report.diagnostics) {
            report.model.add_destination_rule(object, spec);
        }
    }
    for gw in gateways {
        if let Some((object, spec)) = gw.conclude(&mut report.diagnostics) {
            report.model.add_gateway(object, spec);
        }
    }
    for policy in authorization_policies {
        if let Some((object, spec)) = policy.conclude(&mut report.diagnostics) {
            report.model.add_authorization_policy(object, spec);
        }
    }
    for policy in peer_authentications {
        if let Some((object, spec)) = policy.conclude(&mut report.diagnostics) {
            report.model.add_peer_authentication(object, spec);
        }
    }
    for route in http_routes {
        if let Some((object, spec)) = route.conclude(&mut report.diagnostics) {
            report.model.add_http_route(object, spec);
        }
    }
    for route in grpc_routes {
        if let Some((object, spec)) = route.conclude(&mut report.diagnostics) {
            report.model.add_grpc_route(object, spec);
        }
    }
    for route in tcp_routes {
        if let Some((object, spec)) = route.conclude(&mut report.diagnostics) {
            report.model.add_tcp_route(object, spec);
        }
    }
    for route in tls_routes {
        if let Some((object, spec)) = route.conclude(&mut report.diagnostics) {
            report.model.add_tls_route(object, spec);
        }
    }
    for gateway in kubernetes_gateways {
        if let Some((object, spec)) = gateway.conclude(&mut report.diagnostics) {
            report.model.add_kubernetes_gateway(object, spec);
        }
    }
    for mesh in mesh_configs {
        if let Some((object, spec)) = mesh.conclude(&mut report.diagnostics) {
            report.model.add_mesh_config(object, spec);
        }
    }
    // RequestAuthentication: its shape only; the waypoint checks keys and URIs.
    for policy in request_authentications {
        if let Some((object, spec)) = policy.conclude(&mut report.diagnostics) {
            report.model.add_request_authentication(object, spec);
        }
    }
    report
        .diagnostics
        .sort_by(|a, b| (&a.file, a.document).cmp(&(&b.file, b.document)));
    report
}

/// Pass 1: what the document around the spec must hold. Returns whether the spec
/// should be decoded.
fn check_document(object: &Object, findings: &mut Findings) -> bool {
    let (group, version) = object.api_version.split_once('/').unwrap_or_default();
    let versions = match group {
        gateway_api::GROUP if object.kind == "GRPCRoute" => gateway_api::GRPC_ROUTE_VERSIONS,
        gateway_api::GROUP if object.kind == "TCPRoute" => gateway_api::TCP_ROUTE_VERSIONS,
        gateway_api::GROUP if object.kind == "TLSRoute" => gateway_api::TLS_ROUTE_VERSIONS,
        gateway_api::GROUP if object.kind == "ReferenceGrant" => {
            gateway_api::REFERENCE_GRANT_VERSIONS
        }
        gateway_api::GROUP => gateway_api::VERSIONS,
        group => istio::served_versions(group),
    };
    let served = versions.contains(&version);
    if !served {
        let (first, others) = versions.split_first().unwrap_or((&"v1", &[]));
        findings.add(
            "apiVersion",
            Reason::UnsupportedVersion {
                written: object.api_version.clone(),
                served: format!("{group}/{first} (or {})", others.join(", ")),
            },
        );
    }
    for key in object.extra.keys() {
        let key = key
            .as_str()
            .map_or_else(|| format!("{key:?}"), str::to_owned);
        if key != "status" {
            findings.add(key, Reason::UnknownField);
        }
    }
    let has_spec = !object.spec.is_null();
    if !has_spec {
        findings.add(
            "spec",
            Reason::Required("add a `spec` with the object's settings"),
        );
    }
    served && has_spec
}

/// Validates `yaml` read as the file `file`: each diagnostic as printed, and the report.
#[cfg(test)]
fn validate_file(file: &str, yaml: &str) -> (Vec<String>, Report) {
    let mut manifests = Manifests::default();
    manifests.parse_documents(std::path::Path::new(file), yaml);
    let report = validate(&manifests);
    let lines = report.diagnostics.iter().map(ToString::to_string).collect();
    (lines, report)
}

/// Asserts that `lines` are exactly one containing each of `expected`.
#[cfg(test)]
fn assert_lines(lines: &[String], expected: &[impl AsRef<str>]) {
    for expected in expected {
        let expected = expected.as_ref();
        assert!(
            lines.iter().any(|line| line.contains(expected)),
            "expected {expected:?} in {lines:#?}"
        );
    }
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
}

/// Asserts `lines` are exactly one error of `object` (`ns/name (Kind)`) containing each
/// of `expected`.
#[cfg(test)]
fn assert_errors_of(lines: &[String], object: &str, expected: &[&str]) {
    for expected in expected {
        assert!(
            lines.iter().any(
                |line| line.starts_with(&format!("error: {object}")) && line.contains(expected)
            ),
            "expected {expected:?} in {lines:#?}"
        );
    }
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod security_tests;

#[cfg(test)]
mod gateway_tests;

#[cfg(test)]
mod http_route_tests;

#[cfg(test)]
mod kubernetes_gateway_tests;

#[cfg(test)]
mod delegate_tests;
