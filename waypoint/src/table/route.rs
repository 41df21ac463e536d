//! One compiled VirtualService HTTP route (`http[i]`): its conditions, and what it does
//! with a request that meets them.

use std::{sync::Arc, time::Duration};

use ambit_api::istio::{
    Percent,
    virtual_service::{Abort, Delay, Destination, Headers, HttpDirectResponse, HttpRoute},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use bytes::Bytes;
use http::StatusCode;

use super::{
    Problem,
    cluster::{Cluster, ClusterIndex},
    rewrite::{Redirect, Rewrite},
};
use crate::{
    cors::Cors,
    headers::HeaderRules,
    host::qualify,
    matcher::{RequestMatch, RequestView, Semantics},
    retry::RetryPolicy,
};

/// A compiled HTTP route.
#[derive(Debug)]
pub struct Route {
    /// `namespace/name#route` (the route's name, or its index), for logs.
    pub name: String,
    /// Any one holds (OR); none means every request.
    matches: Vec<RequestMatch>,
    pub action: Action,
    pub headers: HeaderRules,
    pub rewrite: Option<Rewrite>,
    pub fault: Fault,
    /// The whole request's deadline, retries included; `None` waits forever (Istio's
    /// default).
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    /// Where copies of the requests go (`mirror`, `mirrors`).
    pub mirrors: Vec<Mirror>,
    pub cors: Option<Cors>,
}

/// A destination that receives a share of a route's requests as copies, whose
/// responses are dropped.
#[derive(Debug)]
pub struct Mirror {
    pub target: Target,
    /// The share of requests copied, in percent.
    pub percent: f64,
}

/// What a route does.
#[derive(Debug)]
pub enum Action {
    /// Forward to one of these, chosen by weight.
    Forward(WeightedTargets),
    Redirect(Redirect),
    Respond {
        status: StatusCode,
        body: Bytes,
    },
}

/// How a route matched: what part of the path a `rewrite.uri` replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matched {
    /// This many bytes of the path: the `uri` prefix matched (or `/`, for a match
    /// without `uri`, as Istio routes it).
    Prefix(usize),
    /// The whole path (an `exact` or `regex` uri).
    WholePath,
}

/// Destinations with their weights.
#[derive(Debug)]
pub struct WeightedTargets {
    targets: Vec<(u32, Target)>,
    total: u32,
}

/// A route destination: a service (or subset of it), resolved to its clusters.
#[derive(Debug)]
pub struct Target {
    /// The destination's FQDN.
    pub host: String,
    subset: String,
    port: Option<u16>,
    /// The clusters of the subset, one per service port.
    clusters: Vec<(u16, Arc<Cluster>)>,
    /// Destination-level header operations.
    pub headers: HeaderRules,
}

/// `fault`: a delay and an abort, each applied to a share of requests.
#[derive(Debug, Default)]
pub struct Fault {
    pub delay: Option<(Duration, f64)>,
    pub abort: Option<(AbortReply, f64)>,
}

/// How an injected abort answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReply {
    /// `httpStatus`.
    Http(StatusCode),
    /// `grpcStatus`: a gRPC status (its number), answered as Envoy does: `200` with
    /// the status in a trailers-only response.
    Grpc(u8),
}

impl Route {
    /// Compiles `spec`, route `field` (`http[0]`, named `index` when `spec` has no
    /// name) of `object` (`ns/name`) in `namespace`, read with `semantics`; problems go
    /// to `problems` with their path.
    pub fn compile(
        (object, namespace): (&str, &str),
        (field, index): (&str, usize),
        spec: &HttpRoute,
        semantics: Semantics,
        clusters: &ClusterIndex,
        problems: &mut Vec<Problem>,
    ) -> Option<Self> {
        let before = problems.len();
        let matches: Vec<RequestMatch> = spec
            .matches
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                RequestMatch::compile(&format!("{field}.match[{i}]"), namespace, m, semantics)
                    .map_err(|errors| problems.extend(errors.into_iter().map(Problem::from)))
                    .ok()
            })
            .collect();
        let action = compile_action(field, namespace, spec, semantics, clusters, problems);
        let headers = HeaderRules::compile(&format!("{field}.headers"), spec.headers.as_ref())
            .map_err(|errors| problems.extend(errors.into_iter().map(Problem::from)))
            .unwrap_or_default();
        let rewrite = spec
            .rewrite
            .as_ref()
            .and_then(|r| Rewrite::compile(field, r, semantics, problems));
        let fault = spec
            .fault
            .as_ref()
            .map(|f| Fault::compile(field, f.delay.as_ref(), f.abort.as_ref(), problems))
            .unwrap_or_default();
        let retry = RetryPolicy::compile(&format!("{field}.retries"), spec.retries.as_ref())
            .map_err(|e| problems.push(e.into()))
            .ok()
            .flatten();
        let mirrors = Mirror::compile_all(field, namespace, spec, clusters, problems);
        let cors = spec.cors_policy.as_ref().and_then(|policy| {
            Cors::compile(&format!("{field}.corsPolicy"), policy)
                .map_err(|errors| problems.extend(errors.into_iter().map(Problem::from)))
                .ok()
        });
        if spec.delegate.is_some() {
            problems.push(Problem::unsupported(field, "delegate"));
        }
        let action = action?;
        (problems.len() == before).then(|| Self {
            name: format!(
                "{object}#{}",
                if spec.name.is_empty() {
                    index.to_string()
                } else {
                    spec.name.clone()
                }
            ),
            matches,
            action,
            headers,
            rewrite,
            fault,
            timeout: spec.timeout.map(|t| t.get()).filter(|t| !t.is_zero()),
            retry,
            mirrors,
            cors,
        })
    }

    /// The route Istio gives a service no VirtualService covers: all its endpoints,
    /// Istio's default retries, no timeout.
    #[must_use]
    pub fn service_default(host: &str, clusters: Vec<(u16, Arc<Cluster>)>) -> Self {
        Self {
            name: format!("{host}#default"),
            matches: Vec::new(),
            action: Action::Forward(WeightedTargets::single(Target::service(host, clusters))),
            headers: HeaderRules::default(),
            rewrite: None,
            fault: Fault::default(),
            timeout: None,
            retry: Some(RetryPolicy::istio_default()),
            mirrors: Vec::new(),
            cors: None,
        }
    }

    /// How the route matches `request`, or `None`.
    #[must_use]
    pub fn matched(&self, request: &RequestView<'_>) -> Option<Matched> {
        if self.matches.is_empty() {
            return Some(Matched::Prefix(1));
        }
        let entry = self.matches.iter().find(|m| m.matches(request))?;
        Some(match (entry.uri_prefix(), entry.has_uri()) {
            (Some(prefix), _) => Matched::Prefix(prefix.len()),
            (None, true) => Matched::WholePath,
            (None, false) => Matched::Prefix(1),
        })
    }
}

fn compile_action(
    field: &str,
    namespace: &str,
    spec: &HttpRoute,
    semantics: Semantics,
    clusters: &ClusterIndex,
    problems: &mut Vec<Problem>,
) -> Option<Action> {
    match (&spec.redirect, &spec.direct_response, spec.route.is_empty()) {
        (Some(redirect), None, true) => {
            Redirect::compile(field, redirect, semantics, problems).map(Action::Redirect)
        }
        (None, Some(direct), true) => respond(field, direct, problems),
        (None, None, false) => {
            let destinations: Vec<WeightedDestination<'_>> = spec
                .route
                .iter()
                .map(|route| WeightedDestination {
                    destination: &route.destination,
                    weight: route.weight,
                    headers: route.headers.as_ref(),
                })
                .collect();
            WeightedTargets::compile(field, namespace, &destinations, clusters, problems)
                .map(Action::Forward)
        }
        _ => {
            problems.push(Problem::Action {
                field: field.to_owned(),
            });
            None
        }
    }
}

fn respond(field: &str, spec: &HttpDirectResponse, problems: &mut Vec<Problem>) -> Option<Action> {
    let field = format!("{field}.directResponse");
    let status = status(&format!("{field}.status"), spec.status, problems)?;
    let body = spec.body.as_ref().map_or(Some(Bytes::new()), |body| {
        let Some(encoded) = &body.bytes else {
            return Some(Bytes::from(body.string.clone().unwrap_or_default()));
        };
        STANDARD
            .decode(encoded)
            .map(Bytes::from)
            .map_err(|error| {
                problems.push(Problem::Base64 {
                    field: format!("{field}.body.bytes"),
                    reason: error.to_string(),
                });
            })
            .ok()
    })?;
    Some(Action::Respond { status, body })
}

fn status(field: &str, code: u32, problems: &mut Vec<Problem>) -> Option<StatusCode> {
    let status = u16::try_from(code)
        .ok()
        .filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok());
    if status.is_none() {
        problems.push(Problem::Status {
            field: field.to_owned(),
            code,
        });
    }
    status
}

/// One destination of a route's `route` list, HTTP's or TCP's.
#[derive(Debug, Clone, Copy)]
pub struct WeightedDestination<'a> {
    pub destination: &'a Destination,
    pub weight: Option<i32>,
    /// Header operations (HTTP routes only).
    pub headers: Option<&'a Headers>,
}

impl WeightedTargets {
    /// Resolves the destinations of route field `field` (`http[0]`, `tcp[1]`) in
    /// `namespace`; a single destination needs no weight. Problems go to `problems`.
    pub fn compile(
        field: &str,
        namespace: &str,
        specs: &[WeightedDestination<'_>],
        clusters: &ClusterIndex,
        problems: &mut Vec<Problem>,
    ) -> Option<Self> {
        let only_one = specs.len() == 1;
        let mut targets = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let field = format!("{field}.route[{i}]");
            let weight = match spec.weight {
                _ if only_one => 1,
                None => 0,
                Some(weight) => match u32::try_from(weight) {
                    Ok(weight) => weight,
                    Err(_) => {
                        problems.push(Problem::Weight { field, weight });
                        continue;
                    }
                },
            };
            if let Some(target) = Target::compile(
                &field,
                namespace,
                spec.destination,
                spec.headers,
                clusters,
                problems,
            ) {
                targets.push((weight, target));
            }
        }
        let total = targets.iter().map(|(w, _)| *w).sum();
        if total == 0 && !targets.is_empty() {
            problems.push(Problem::Weights {
                field: field.to_owned(),
            });
            return None;
        }
        Some(Self { targets, total })
    }

    /// All traffic to `target`.
    #[must_use]
    pub fn single(target: Target) -> Self {
        Self {
            targets: vec![(1, target)],
            total: 1,
        }
    }

    /// A target chosen at random in proportion to the weights.
    #[must_use]
    pub fn choose(&self) -> &Target {
        let mut roll = fastrand::u32(0..self.total);
        for (weight, target) in &self.targets {
            if roll < *weight {
                return target;
            }
            roll -= weight;
        }
        unreachable!("the roll is below the sum of the weights")
    }
}

impl Target {
    /// All endpoints of service `host`, whose clusters are `clusters`.
    #[must_use]
    pub fn service(host: &str, clusters: Vec<(u16, Arc<Cluster>)>) -> Self {
        Self {
            host: host.to_owned(),
            subset: String::new(),
            port: None,
            clusters,
            headers: HeaderRules::default(),
        }
    }

    /// Resolves `destination` (of route field `field`, in `namespace`) to its clusters;
    /// a host or subset that does not exist resolves to none (`NC` when chosen).
    fn compile(
        field: &str,
        namespace: &str,
        destination: &Destination,
        headers: Option<&Headers>,
        clusters: &ClusterIndex,
        problems: &mut Vec<Problem>,
    ) -> Option<Self> {
        let port = match destination
            .port
            .map(|p| (p.number, u16::try_from(p.number)))
        {
            None => None,
            Some((_, Ok(port))) if port != 0 => Some(port),
            Some((number, _)) => {
                problems.push(Problem::Port {
                    field: format!("{field}.destination.port"),
                    port: number,
                });
                return None;
            }
        };
        let headers = HeaderRules::compile(&format!("{field}.headers"), headers)
            .map_err(|errors| problems.extend(errors.into_iter().map(Problem::from)))
            .ok()?;
        let host = qualify(&destination.host.to_ascii_lowercase(), namespace);
        Some(Self {
            clusters: clusters.get(&host, &destination.subset),
            host,
            subset: destination.subset.clone(),
            port,
            headers,
        })
    }

    /// The cluster for a request that arrived on `request_port`: the destination's
    /// `port`, else the service's only port, else the service port the request came on.
    /// `None` when the host, subset or port does not exist (Envoy's `NC`).
    #[must_use]
    pub fn cluster(&self, request_port: u16) -> Option<&Arc<Cluster>> {
        let find = |port: u16| self.clusters.iter().find(|(p, _)| *p == port);
        match (self.port, self.clusters.as_slice()) {
            (Some(port), _) => find(port),
            (None, [only]) => Some(only),
            (None, _) => find(request_port),
        }
        .map(|(_, cluster)| cluster)
    }

    /// `host` with its subset, for logs (`reviews.shop.svc.cluster.local/v2`).
    #[must_use]
    pub fn display_name(&self) -> String {
        if self.subset.is_empty() {
            self.host.clone()
        } else {
            format!("{}/{}", self.host, self.subset)
        }
    }
}

impl Mirror {
    /// `mirror` with `mirrorPercentage` (or the deprecated `mirrorPercent`), then each
    /// of `mirrors`; a share left out means every request, as Istio has it.
    fn compile_all(
        field: &str,
        namespace: &str,
        spec: &HttpRoute,
        clusters: &ClusterIndex,
        problems: &mut Vec<Problem>,
    ) -> Vec<Self> {
        let single = spec.mirror.as_ref().map(|destination| {
            let deprecated = spec.mirror_percent.map(f64::from);
            let percent = spec.mirror_percentage.map(|p| p.value).or(deprecated);
            (format!("{field}.mirror"), destination, percent)
        });
        let listed = spec.mirrors.iter().enumerate().map(|(i, mirror)| {
            let percent = mirror.percentage.map(|p| p.value);
            (
                format!("{field}.mirrors[{i}]"),
                &mirror.destination,
                percent,
            )
        });
        single
            .into_iter()
            .chain(listed)
            .filter_map(|(field, destination, percent)| {
                let percent = percent.unwrap_or(100.0);
                if !(0.0..=100.0).contains(&percent) {
                    problems.push(Problem::Percentage {
                        field: format!("{field}.percentage"),
                        value: percent,
                    });
                    return None;
                }
                let target =
                    Target::compile(&field, namespace, destination, None, clusters, problems)?;
                Some(Self { target, percent })
            })
            .collect()
    }
}

/// The share of requests a fault applies to. Istio: without a percentage, none.
fn share(
    field: &str,
    percentage: Option<Percent>,
    deprecated_percent: Option<i32>,
    problems: &mut Vec<Problem>,
) -> Option<f64> {
    let value = percentage.map_or_else(|| f64::from(deprecated_percent.unwrap_or(0)), |p| p.value);
    if (0.0..=100.0).contains(&value) {
        Some(value)
    } else {
        problems.push(Problem::Percentage {
            field: format!("{field}.percentage"),
            value,
        });
        None
    }
}

impl Fault {
    fn compile(
        field: &str,
        delay: Option<&Delay>,
        abort: Option<&Abort>,
        problems: &mut Vec<Problem>,
    ) -> Self {
        let field = format!("{field}.fault");
        let delay = delay.and_then(|d| {
            let share = share(&format!("{field}.delay"), d.percentage, d.percent, problems);
            if d.exponential_delay.is_some() {
                problems.push(Problem::unsupported(
                    &format!("{field}.delay"),
                    "exponentialDelay",
                ));
            }
            Some((d.fixed_delay?.get(), share?))
        });
        let abort = abort.and_then(|a| {
            let share = share(&format!("{field}.abort"), a.percentage, None, problems);
            if a.http2_error.is_some() {
                problems.push(Problem::unsupported(
                    &format!("{field}.abort"),
                    "http2Error",
                ));
            }
            if let Some(grpc) = a.grpc_status {
                if a.http_status.is_some() {
                    problems.push(Problem::AbortKind {
                        field: format!("{field}.abort"),
                    });
                }
                return Some((AbortReply::Grpc(grpc.code()), share?));
            }
            let code = a.http_status.and_then(|c| u32::try_from(c).ok())?;
            Some((
                AbortReply::Http(status(
                    &format!("{field}.abort.httpStatus"),
                    code,
                    problems,
                )?),
                share?,
            ))
        });
        Self { delay, abort }
    }
}

/// Whether this request falls in a share of `percent` percent (faults, mirrors).
#[must_use]
pub fn sampled(percent: f64) -> bool {
    percent >= 100.0 || fastrand::f64() * 100.0 < percent
}
