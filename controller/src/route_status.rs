//! Route status (`serve --kube`): each accepted HTTPRoute, GRPCRoute, TCPRoute and
//! TLSRoute gets, for each parent Ambit serves or should, the conditions Istio writes
//! under its controller name — `Accepted` (the parent Service exists in the route's
//! namespace, or the class-`istio` Gateway admits the route on the named listener, one
//! whose protocol takes the route's kind: [`RouteKind::on_listener`]) and `ResolvedRefs`
//! (every backend Service exists) — so `kubectl describe` and GitOps health checks
//! (Argo CD reads `status.parents`) see the route taken or why not. Parents of other
//! controllers (Gateways not in the model) get no entry, as Istio leaves them alone.
//!
//! A status is server-side applied (field manager
//! [`crate::deployer::FIELD_MANAGER`]) when it differs from the last one written for
//! the route; a refused write is logged and retried with backoff. The folder source
//! writes nothing. Not yet: a rejected route gets Events (`InvalidConfig`), no status.

use std::collections::BTreeMap;

use ambit_api::{
    gateway_api::{
        self, GrpcRouteSpec, TcpRouteSpec, TlsRouteSpec,
        http_route::{BackendRef, HttpRouteSpec, ParentReference},
        tcp_route::TcpRouteRule,
    },
    istio::GatewaySpec as IstioGatewaySpec,
};
use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::{
    deployer::{FIELD_MANAGER, RETRY_FIRST, RETRY_MAX},
    mesh::{Key, Mesh, Route, RouteKind},
    source::ModelSource,
};

/// The controller the entries are written for: Istio's, which tools know.
pub const CONTROLLER_NAME: &str = "istio.io/gateway-controller";

/// A condition that does not hold: its reason and message.
type Unmet = (&'static str, String);

/// Whether a condition holds, or why not.
type Outcome = Result<(), Unmet>;

/// What one parent of a route gets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParentStatus {
    parent: ParentReference,
    accepted: Outcome,
    resolved_refs: Outcome,
}

/// What one route gets: its parents' statuses, for its generation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RouteStatus {
    generation: Option<i64>,
    parents: Vec<ParentStatus>,
}

/// A route: its kind and key.
type RouteKey = (RouteKind, Key);

/// Keeps the status of every HTTPRoute, GRPCRoute, TCPRoute and TLSRoute of `model`
/// written, through `client`, until the model source ends.
pub async fn run(client: Client, mut model: ModelSource) {
    let mut written: BTreeMap<RouteKey, RouteStatus> = BTreeMap::new();
    let mut retry = RETRY_FIRST;
    loop {
        let wanted = statuses(&model.borrow_and_update().mesh);
        written.retain(|key, _| wanted.contains_key(key));
        let mut failed = false;
        for (key, status) in &wanted {
            if written.get(key) == Some(status) {
                continue;
            }
            match write(&client, key, status).await {
                Ok(()) => {
                    written.insert(key.clone(), status.clone());
                }
                Err(error) => {
                    let (kind, (namespace, name)) = key;
                    tracing::warn!(kind = kind.as_str(), namespace, name, %error, retry_in = ?retry, "route status not written: may the controller patch httproutes/status, grpcroutes/status, tcproutes/status and tlsroutes/status (deploy/kubernetes/controller-rbac.yaml)?");
                    failed = true;
                }
            }
        }
        let wait = if failed {
            let wait = retry;
            retry = (retry * 2).min(RETRY_MAX);
            wait
        } else {
            retry = RETRY_FIRST;
            std::time::Duration::ZERO
        };
        tokio::select! {
            changed = model.changed() => if changed.is_err() {
                return;
            },
            () = tokio::time::sleep(wait), if failed => {}
        }
    }
}

/// The status each HTTPRoute, GRPCRoute, TCPRoute and TLSRoute of `mesh` should have;
/// routes none of whose parents are Ambit's are left out.
fn statuses(mesh: &Mesh) -> BTreeMap<RouteKey, RouteStatus> {
    mesh.routes
        .iter()
        .filter_map(|(key, route)| {
            let (parent_refs, backends) = references(route)?;
            let resolved_refs = backends_exist(mesh, &route.namespace, &backends);
            let parents: Vec<ParentStatus> = parent_refs
                .iter()
                .filter_map(|parent| {
                    Some(ParentStatus {
                        parent: parent.clone(),
                        accepted: accepted(mesh, route, parent)?,
                        resolved_refs: resolved_refs.clone(),
                    })
                })
                .collect();
            let status = RouteStatus {
                generation: route.generation,
                parents,
            };
            (!status.parents.is_empty()).then(|| (key.clone(), status))
        })
        .collect()
}

/// What the status of `route` judges: its parents, and every Service it sends or
/// mirrors to; `None` for a route that gets no status.
fn references(route: &Route) -> Option<(Vec<ParentReference>, Vec<BackendRef>)> {
    let spec = route.spec.clone();
    let http: HttpRouteSpec = match route.kind {
        RouteKind::HttpRoute => serde_json::from_value(spec).ok()?,
        RouteKind::GrpcRoute => serde_json::from_value::<GrpcRouteSpec>(spec)
            .ok()?
            .to_http_route(),
        RouteKind::TcpRoute => {
            let tcp: TcpRouteSpec = serde_json::from_value(spec).ok()?;
            return Some((tcp.parent_refs, weighted_backends(&tcp.rules)));
        }
        RouteKind::TlsRoute => {
            let tls: TlsRouteSpec = serde_json::from_value(spec).ok()?;
            return Some((tls.parent_refs, weighted_backends(&tls.rules)));
        }
        _ => return None,
    };
    let backends = http
        .rules
        .iter()
        .flat_map(|rule| {
            let sent = rule.backend_refs.iter().map(|backend| backend.backend());
            let mirrored = rule
                .filters
                .iter()
                .filter_map(|filter| Some(filter.request_mirror.as_ref()?.backend_ref.clone()));
            sent.chain(mirrored)
        })
        .collect();
    Some((http.parent_refs, backends))
}

/// The Services the rules of a TCPRoute (or TLSRoute) send to.
fn weighted_backends(rules: &[TcpRouteRule]) -> Vec<BackendRef> {
    let backends = rules.iter().flat_map(|rule| &rule.backend_refs);
    backends.map(|backend| backend.backend.clone()).collect()
}

/// Whether `parent` takes `route`; `None` for a parent that is not Ambit's to judge.
fn accepted(mesh: &Mesh, route: &Route, parent: &ParentReference) -> Option<Outcome> {
    let namespace = parent.namespace.as_deref().unwrap_or(&route.namespace);
    let key = (namespace.to_owned(), parent.name.clone());
    if parent.is_service() {
        return Some(if namespace != route.namespace {
            Err((
                "UnsupportedValue",
                "a route for a Service in another namespace (a consumer route) is not applied by Ambit's waypoints yet".to_owned(),
            ))
        } else if mesh.services.contains_key(&key) {
            Ok(())
        } else {
            Err((
                "NoMatchingParent",
                format!("parent service: {:?} not found", parent.name),
            ))
        });
    }
    if !parent.is_gateway() {
        return None;
    }
    let gateway = mesh.routes.get(&(RouteKind::KubernetesGateway, key))?;
    let spec: IstioGatewaySpec = serde_json::from_value(gateway.spec.clone()).ok()?;
    let named: Vec<_> = spec
        .servers
        .iter()
        .filter(|server| parent.names_listener(&server.name, server.port.number))
        .collect();
    if named.is_empty() {
        return Some(Err((
            "NoMatchingParent",
            "no listener of the Gateway has this sectionName and port".to_owned(),
        )));
    }
    let listeners: Vec<_> = named
        .into_iter()
        .filter(|server| RouteKind::on_listener(&server.port.protocol).contains(&route.kind))
        .collect();
    if listeners.is_empty() {
        return Some(Err((
            "NotAllowedByListeners",
            format!(
                "no listener of the Gateway takes a {} (HTTP and HTTPS take HTTPRoutes and GRPCRoutes, TLS takes TLSRoutes, TCP takes TCPRoutes)",
                route.kind.as_str()
            ),
        )));
    }
    let admits = |host: &String| match host.split_once('/') {
        Some(("*", _)) => true,
        Some((".", _)) => namespace == route.namespace,
        _ => false,
    };
    Some(
        if listeners
            .iter()
            .any(|server| server.hosts.iter().any(admits))
        {
            Ok(())
        } else {
            Err((
                "NotAllowedByListeners",
                "the listeners admit routes of the Gateway's namespace only (allowedRoutes)"
                    .to_owned(),
            ))
        },
    )
}

/// Whether every Service of `backends` (of a route in `namespace`) exists.
fn backends_exist(mesh: &Mesh, namespace: &str, backends: &[BackendRef]) -> Outcome {
    for backend in backends {
        let namespace = backend.namespace.as_deref().unwrap_or(namespace);
        if !mesh
            .services
            .contains_key(&(namespace.to_owned(), backend.name.clone()))
        {
            return Err((
                "BackendNotFound",
                format!("backend({}.{namespace}) not found", backend.name),
            ));
        }
    }
    Ok(())
}

/// Applies `status` to the route `key`, in the first of its kind's versions the cluster
/// serves: the experimental channel's TCPRoute and TLSRoute versions come and go
/// (`v1alpha2`, `v1alpha3`), and the model does not keep the one a route was read in.
async fn write(client: &Client, key: &RouteKey, status: &RouteStatus) -> kube::Result<()> {
    let mut written = Ok(());
    for version in versions(key.0) {
        written = write_in(client, version, key, status).await;
        match &written {
            Err(kube::Error::Api(error)) if error.is_not_found() => {}
            _ => break,
        }
    }
    written
}

async fn write_in(
    client: &Client,
    version: &str,
    (kind, (namespace, name)): &RouteKey,
    status: &RouteStatus,
) -> kube::Result<()> {
    let routes = ApiResource {
        group: gateway_api::GROUP.to_owned(),
        version: version.to_owned(),
        api_version: format!("{}/{version}", gateway_api::GROUP),
        kind: kind.as_str().to_owned(),
        plural: format!("{}s", kind.as_str().to_lowercase()),
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let document = document((*kind, version, namespace, name), status);
    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &routes)
        .patch_status(name, &params, &Patch::Apply(document))
        .await
        .map(drop)
}

/// The versions a route of `kind` may be written in, preferred first: its kind's
/// stable one, or the experimental channel's.
fn versions(kind: RouteKind) -> &'static [&'static str] {
    match kind {
        RouteKind::TcpRoute => gateway_api::TCP_ROUTE_VERSIONS,
        RouteKind::TlsRoute => gateway_api::TLS_ROUTE_VERSIONS,
        _ => &["v1"],
    }
}

/// The status document of the route `namespace/name` of `kind`, in `version`.
fn document(
    (kind, version, namespace, name): (RouteKind, &str, &str, &str),
    status: &RouteStatus,
) -> Value {
    let now = Time(Timestamp::now());
    let condition = |kind: &str, outcome: &Outcome, ok: &str| {
        let (state, reason, message) = match outcome {
            Ok(()) => ("True", kind, ok.to_owned()),
            Err((reason, message)) => ("False", *reason, message.clone()),
        };
        let mut condition = json!({
            "type": kind,
            "status": state,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now,
        });
        if let Some(generation) = status.generation {
            condition["observedGeneration"] = json!(generation);
        }
        condition
    };
    let parents: Vec<Value> = status
        .parents
        .iter()
        .map(|parent| {
            json!({
                "parentRef": parent.parent,
                "controllerName": CONTROLLER_NAME,
                "conditions": [
                    condition("Accepted", &parent.accepted, "Route was valid"),
                    condition("ResolvedRefs", &parent.resolved_refs, "All references resolved"),
                ],
            })
        })
        .collect();
    json!({
        "apiVersion": format!("{}/{version}", gateway_api::GROUP),
        "kind": kind.as_str(),
        "metadata": {"name": name, "namespace": namespace},
        "status": {"parents": parents},
    })
}

#[cfg(test)]
#[path = "route_status_tests.rs"]
mod tests;
