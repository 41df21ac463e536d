//! One request's way through the waypoint: find the route, inject faults, rewrite,
//! edit headers, pick a cluster and endpoint, send with retries under the timeouts, and
//! edit the response.
//!
//! Retries and mirrors need the request body again, so a body is replayed only when its
//! length is known and at most [`MAX_REPLAYED_BODY_BYTES`] (Envoy likewise stops
//! retrying past its buffer limit); a streaming body of unknown length is sent once
//! and not mirrored. Hop-by-hop headers are dropped both ways, except `te: trailers`,
//! which gRPC needs end to end. The route's
//! `timeout` runs from the first attempt until the response headers arrive, retries and
//! backoff included.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header,
    request::Parts,
};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, Incoming};

use super::{
    Body, Downstream, Engine, ProxyError,
    inspect::Inspected,
    mirror::{self, Shadow},
    received::{Prefixed, ReceivedBody},
    reply,
    upgrade::Upgrade,
};
use crate::{
    cors::Preflight,
    flags::ResponseFlags,
    headers::strip_hop_by_hop,
    host::authority_host,
    matcher::RequestView,
    path,
    policy::{Reach, ResponseHeaders, Verdict},
    retry::Attempt,
    table::{
        Action, ActiveRequest, Admission, Cluster, Health, Matched, Overflow, RequestHash,
        RequestKeys, Route, RouteTable, Target, sampled,
    },
    telemetry::{Exchange, trace},
};

/// The largest request body kept to be sent again on a retry.
pub const MAX_REPLAYED_BODY_BYTES: u64 = 64 * 1024;

/// Checks, routes and forwards `request`, which arrived over `downstream`; the response
/// carries its [`ResponseFlags`] as an extension, and is recorded (metrics, access log)
/// when its body ends.
pub async fn handle(
    engine: &Engine,
    mut request: Request<Incoming>,
    downstream: &Downstream,
) -> Response<Body> {
    let peer = &downstream.peer;
    let started = Instant::now();
    let table = engine.table();
    path::normalize(request.uri_mut());
    let reporter = engine.spans.as_ref();
    let continues_trace = reporter.is_some() && trace::arrived_with_context(request.headers());
    let request_id = trace::prepare(request.headers_mut(), table.trace_sampling_percent());
    let span = reporter.and_then(|reporter| {
        let ids = trace::open_span(request.headers_mut(), continues_trace)?;
        Some(reporter.open(ids, downstream.destination.port()))
    });
    let authority = authority(request.uri(), request.headers());
    let mut exchange = Exchange::start(started, &request, authority.as_deref(), request_id);
    exchange.source = downstream.source.party(&table, peer);
    exchange.mutual_tls = peer.identity.is_some();
    exchange.span = span;
    let mut response = dispatch(
        engine,
        &table,
        request,
        authority,
        downstream,
        &mut exchange,
    )
    .await;
    response.extensions_mut().insert(exchange.flags);
    exchange.finish(&table);
    engine.metrics.observe(exchange, response)
}

async fn dispatch(
    engine: &Engine,
    table: &RouteTable,
    request: Request<Incoming>,
    authority: Option<String>,
    downstream: &Downstream,
    outcome: &mut Exchange,
) -> Response<Body> {
    let (peer, port) = (&downstream.peer, downstream.destination.port());
    let (mut parts, body) = request.into_parts();
    let mut body = ReceivedBody::Untouched(body);
    let Some(authority) = authority else {
        outcome.flags.insert(ResponseFlags::NO_ROUTE_FOUND);
        return reply::no_route();
    };
    if let Some(servers) = table.ingress() {
        let host = authority_host(&authority);
        match servers.on_port(port) {
            Some(server) if server.accepts(&host) && server.https_redirect => {
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                return reply::https_redirect(&host, path);
            }
            Some(server) if server.accepts(&host) => {}
            _ => {
                outcome.flags.insert(ResponseFlags::NO_ROUTE_FOUND);
                return reply::no_route();
            }
        }
    }
    // The service the client addressed, when known (HBONE), else the `Host` it named.
    let routing = downstream.service.as_deref().unwrap_or(&authority);
    let service = table.service(routing);
    outcome.service = service.map(str::to_owned);
    let verdict = table
        .policies()
        .check(
            &mut parts,
            downstream,
            &mut body,
            (&authority, service),
            Reach {
                jwks: &engine.jwks,
                upstreams: &engine.upstreams,
            },
        )
        .await;
    match verdict {
        Verdict::Allowed => {}
        Verdict::Unauthenticated(failure) => {
            tracing::debug!(
                failure = failure.message(),
                "request refused: invalid token"
            );
            return reply::unauthenticated(failure);
        }
        Verdict::Denied { policy } => {
            tracing::debug!(
                policy = policy.as_deref().unwrap_or("no ALLOW policy matched"),
                "request refused by AuthorizationPolicy"
            );
            return reply::access_denied();
        }
        Verdict::Refused { provider, answer } => {
            tracing::debug!(
                provider,
                status = answer.status.as_u16(),
                "request refused by an external authorizer"
            );
            outcome
                .flags
                .insert(ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE);
            return reply::answer(answer);
        }
    }
    let authorizer_headers = parts.extensions.remove::<ResponseHeaders>();
    let view = RequestView {
        method: parts.method.as_str(),
        scheme: "http",
        authority: &authority,
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &parts.headers,
        port,
        source: table.workloads().matching_source(peer),
        gateways: table.bound_as(),
    };
    let Some((route, matched)) = table
        .routes(routing, port)
        .and_then(|routes| routes.iter().find_map(|r| Some((r, r.matched(&view)?))))
    else {
        outcome.flags.insert(ResponseFlags::NO_ROUTE_FOUND);
        return reply::no_route();
    };
    outcome.route = Some(route.name.clone());
    let cors = route.cors.as_ref();
    if let Some(Preflight::Answer(headers)) =
        cors.and_then(|cors| cors.preflight(&parts.method, &parts.headers))
    {
        let mut response = reply::text(StatusCode::OK, "");
        response.headers_mut().extend(headers);
        return response;
    }
    let origin = parts.headers.get(header::ORIGIN).cloned();
    let mut response = match &route.action {
        Action::Redirect(redirect) => {
            let mut response = reply::text(redirect.status, "");
            if let Ok(location) = HeaderValue::try_from(redirect.location(&view, matched)) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            route.headers.response.apply(response.headers_mut());
            response
        }
        Action::Respond { status, body } => {
            let mut response = Response::new(reply::full(body.clone()));
            *response.status_mut() = *status;
            route.headers.response.apply(response.headers_mut());
            response
        }
        Action::Forward(targets) => {
            let target = targets.choose();
            let forwarding = Forwarding {
                engine,
                route,
                target,
                matched,
                port,
                source: peer.ip,
            };
            forwarding.run(parts, authority, body, outcome).await
        }
    };
    if let Some(cors) = cors {
        cors.decorate(origin.as_ref(), response.headers_mut());
    }
    if let Some(ResponseHeaders(headers)) = authorizer_headers {
        response.headers_mut().extend(headers);
    }
    response
}

/// The authority the client addressed: the URI's (HTTP/2, absolute-form) or `Host`.
fn authority(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    if let Some(authority) = uri.authority() {
        return Some(authority.as_str().to_owned());
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    Some(host.to_owned())
}

/// A request on its way to one destination.
struct Forwarding<'a> {
    engine: &'a Engine,
    route: &'a Route,
    target: &'a Target,
    matched: Matched,
    port: u16,
    /// The client's address, for a consistent hash on `useSourceIp`.
    source: IpAddr,
}

/// The request as each attempt sends it.
struct Prepared {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

/// What a forwarded response holds until its body ends: the endpoint's in-flight
/// count and the cluster's admission.
struct InFlight {
    _request: ActiveRequest,
    _admission: Option<Admission>,
}

/// The request body: kept to be replayed, or streamed once.
enum RequestBody {
    Replayable(Bytes),
    Streaming(Option<Body>),
}

/// How the attempts ended, when no response is forwarded.
enum Failure {
    Overflow,
    NoEndpoint,
    Connect,
    Reset,
    PerTryTimeout,
}

impl Forwarding<'_> {
    async fn run(
        &self,
        mut parts: Parts,
        authority: String,
        body: ReceivedBody,
        outcome: &mut Exchange,
    ) -> Response<Body> {
        let upgrade = Upgrade::requested(&mut parts);
        let fault = &self.route.fault;
        if let Some((delay, percent)) = fault.delay
            && sampled(percent)
        {
            tokio::time::sleep(delay).await;
            outcome.flags.insert(ResponseFlags::DELAY_INJECTED);
        }
        if let Some((abort, percent)) = fault.abort
            && sampled(percent)
        {
            outcome.flags.insert(ResponseFlags::FAULT_INJECTED);
            return reply::fault_abort(abort);
        }
        let Some(cluster) = self.target.cluster(self.port) else {
            outcome.flags.insert(ResponseFlags::NO_CLUSTER_FOUND);
            tracing::debug!(
                destination = self.target.display_name(),
                port = self.port,
                "no such destination"
            );
            return reply::no_cluster();
        };
        outcome.cluster = Some(cluster.name.clone());
        let hashed = cluster.hash(RequestKeys {
            headers: &parts.headers,
            query: parts.uri.query(),
            source: self.source,
        });
        let http2 = cluster.http2_for(parts.version);
        let prepared = match self.prepare(parts, &authority, http2, upgrade.as_ref()) {
            Ok(prepared) => prepared,
            Err(error) => {
                tracing::debug!(%error, side = ?error.side(), "cannot forward");
                return reply::bad_request();
            }
        };
        let replay_wanted = self.route.retry.is_some() || !self.route.mirrors.is_empty();
        let body = match RequestBody::read(body, replay_wanted).await {
            Ok(body) => body,
            Err(error) => {
                tracing::debug!(%error, side = ?error.side(), "cannot forward");
                outcome
                    .flags
                    .insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
                return reply::bad_request();
            }
        };
        if let RequestBody::Replayable(bytes) = &body {
            self.mirror(&prepared, bytes);
        }
        let attempts = self.attempts(cluster, hashed.hash, &prepared, body, outcome);
        let result = match self.route.timeout {
            None => attempts.await,
            Some(timeout) => match tokio::time::timeout(timeout, attempts).await {
                Ok(result) => result,
                Err(_) => {
                    outcome
                        .flags
                        .insert(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT);
                    return reply::timeout();
                }
            },
        };
        match result {
            Ok((response, in_flight)) => self.respond(response, in_flight, upgrade, hashed),
            Err(Failure::Overflow) => {
                outcome.flags.insert(ResponseFlags::UPSTREAM_OVERFLOW);
                reply::overflow()
            }
            Err(Failure::NoEndpoint) => {
                outcome.flags.insert(ResponseFlags::NO_HEALTHY_UPSTREAM);
                reply::no_healthy_upstream()
            }
            Err(Failure::Connect) => {
                outcome
                    .flags
                    .insert(ResponseFlags::UPSTREAM_CONNECT_FAILURE);
                reply::connect_failure()
            }
            Err(Failure::Reset) => {
                outcome
                    .flags
                    .insert(ResponseFlags::UPSTREAM_CONNECTION_TERMINATION);
                reply::reset()
            }
            Err(Failure::PerTryTimeout) => {
                outcome
                    .flags
                    .insert(ResponseFlags::UPSTREAM_REQUEST_TIMEOUT);
                reply::timeout()
            }
        }
    }

    /// The upstream request's head: rewritten path and authority, hop-by-hop headers
    /// dropped (but an upgrade asked for again), destination then route header
    /// operations applied (so the route's win, as in Envoy), and the version of the
    /// upstream protocol (HTTP/1.1 for an upgrade).
    fn prepare(
        &self,
        parts: Parts,
        authority: &str,
        http2: bool,
        upgrade: Option<&Upgrade>,
    ) -> Result<Prepared, ProxyError> {
        let Parts {
            method,
            uri,
            mut headers,
            ..
        } = parts;
        let rewrite = self.route.rewrite.as_ref();
        let path = rewrite
            .and_then(|r| r.path(self.matched, uri.path()))
            .unwrap_or_else(|| uri.path().to_owned());
        let path_and_query = match uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path,
        };
        let authority = match rewrite.and_then(|r| r.authority.as_ref()) {
            Some(rewritten) => rewritten.to_str().unwrap_or(authority).to_owned(),
            None => authority.to_owned(),
        };
        strip_hop_by_hop(&mut headers);
        if let Some(upgrade) = upgrade {
            upgrade.ask(&mut headers);
        }
        headers.remove(header::HOST);
        self.target.headers.request.apply(&mut headers);
        self.route.headers.request.apply(&mut headers);
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query(path_and_query)
            .build()
            .map_err(|source| ProxyError::Authority { authority, source })?;
        Ok(Prepared {
            method,
            uri,
            version: protocol_version(http2 && upgrade.is_none()),
            headers,
        })
    }

    /// Sends a copy of the request to each mirror whose share it falls in.
    fn mirror(&self, prepared: &Prepared, body: &Bytes) {
        for mirror in &self.route.mirrors {
            if !sampled(mirror.percent) {
                continue;
            }
            let Some(cluster) = mirror.target.cluster(self.port) else {
                tracing::debug!(
                    destination = mirror.target.display_name(),
                    "no such mirror destination"
                );
                continue;
            };
            let Some(uri) = mirror::shadow_uri(&prepared.uri) else {
                continue;
            };
            let mut request = prepared.request(reply::full(body.clone()));
            *request.uri_mut() = uri;
            *request.version_mut() = protocol_version(cluster.speaks_http2());
            let shadow = Shadow {
                cluster: Arc::clone(cluster),
                request,
                timeout: self.route.timeout,
            };
            mirror::send(&self.engine.upstreams, shadow);
        }
    }

    /// Sends attempts until one is not retried; returns the response to forward (with
    /// the endpoint's in-flight count held) or how the last attempt failed.
    async fn attempts(
        &self,
        cluster: &Cluster,
        hash: Option<u64>,
        prepared: &Prepared,
        mut body: RequestBody,
        outcome: &mut Exchange,
    ) -> Result<(Response<Incoming>, InFlight), Failure> {
        let policy = self.route.retry.as_ref();
        let retries = match (&body, policy) {
            (RequestBody::Replayable(_), Some(policy)) => policy.retries,
            _ => 0,
        };
        let mut tried = Vec::new();
        let mut retry_slot = None;
        for attempt in 0..=retries {
            if attempt > 0 {
                let wait = policy
                    .map(|p| p.backoff_before(attempt))
                    .unwrap_or_default();
                tokio::time::sleep(wait).await;
            }
            let admission = cluster
                .admit()
                .await
                .map_err(|Overflow| Failure::Overflow)?;
            let endpoint = cluster.pick(hash, &tried).ok_or(Failure::NoEndpoint)?;
            tried.push(endpoint.address);
            outcome.attempts = attempt + 1;
            outcome.endpoint = Some(endpoint.address);
            let in_flight = InFlight {
                _request: endpoint.start_request(),
                _admission: admission,
            };
            let request = prepared.request(body.for_attempt());
            let sent = self.engine.upstreams.send(
                endpoint.address,
                cluster.pooling(prepared.version == Version::HTTP_2),
                request,
            );
            let per_try = policy.and_then(|p| p.per_try_timeout);
            let result = match per_try {
                None => Ok(sent.await),
                Some(limit) => tokio::time::timeout(limit, sent).await,
            };
            let (ended, failure) = match &result {
                Ok(Ok(response)) => (
                    Attempt::Responded {
                        status: response.status(),
                        headers: response.headers(),
                    },
                    None,
                ),
                Ok(Err(source)) if source.is_connect() => {
                    (Attempt::ConnectFailure, Some(Failure::Connect))
                }
                Ok(Err(source)) => (
                    Attempt::Reset {
                        refused: is_refused_stream(source),
                    },
                    Some(Failure::Reset),
                ),
                Err(_elapsed) => (Attempt::PerTryTimeout, Some(Failure::PerTryTimeout)),
            };
            cluster.record(&endpoint, health(ended));
            let retriable = policy.is_some_and(|p| p.retries_on(ended));
            if retriable && attempt < retries {
                // This request's previous retry, if any, ends with this decision.
                drop(retry_slot.take());
                if let Ok(slot) = cluster.admit_retry() {
                    retry_slot = slot;
                    log_failed_attempt(result, endpoint.address, attempt);
                    continue;
                }
                outcome.flags.insert(ResponseFlags::UPSTREAM_OVERFLOW);
            } else if retriable && retries > 0 {
                outcome
                    .flags
                    .insert(ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED);
            }
            return match (result, failure) {
                (Ok(Ok(response)), _) => Ok((response, in_flight)),
                (result, Some(failure)) => {
                    log_failed_attempt(result, endpoint.address, attempt);
                    Err(failure)
                }
                (_, None) => unreachable!("only a response has no failure"),
            };
        }
        unreachable!("the last attempt always returns")
    }

    /// The response to forward: hop-by-hop headers dropped, destination then route
    /// response header operations applied, a consistent hash's generated cookie set,
    /// the endpoint counted busy until the body ends; on `101 Switching Protocols` the
    /// connections spliced.
    fn respond(
        &self,
        mut response: Response<Incoming>,
        in_flight: InFlight,
        upgrade: Option<Upgrade>,
        hashed: RequestHash,
    ) -> Response<Body> {
        let switched = upgrade.and_then(|upgrade| upgrade.accepted(&mut response));
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(switched) = switched {
            switched.splice(&mut parts.headers);
        }
        self.target.headers.response.apply(&mut parts.headers);
        self.route.headers.response.apply(&mut parts.headers);
        if let Some(cookie) = hashed.set_cookie {
            parts.headers.append(header::SET_COOKIE, cookie);
        }
        parts.version = Version::default();
        let body = Inspected::new(body, move |_: &Frame<Bytes>| {
            let _held = &in_flight;
        })
        .boxed_unsync();
        Response::from_parts(parts, body)
    }
}

impl Prepared {
    fn request(&self, body: Body) -> Request<Body> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

impl RequestBody {
    /// Reads a body that may need replaying into memory when it is small and its
    /// length known; otherwise keeps it streaming.
    async fn read(body: ReceivedBody, may_retry: bool) -> Result<Self, ProxyError> {
        let body = match body {
            ReceivedBody::Untouched(body) => body,
            ReceivedBody::Read { head, rest: None } => return Ok(Self::Replayable(head)),
            ReceivedBody::Read {
                head,
                rest: Some(rest),
            } => return Ok(Self::Streaming(Some(Prefixed::boxed(head, rest)))),
        };
        let small = body
            .size_hint()
            .exact()
            .is_some_and(|len| len <= MAX_REPLAYED_BODY_BYTES);
        if body.is_end_stream() {
            return Ok(Self::Replayable(Bytes::new()));
        }
        if may_retry && small {
            let collected = body.collect().await.map_err(ProxyError::DownstreamBody)?;
            return Ok(Self::Replayable(collected.to_bytes()));
        }
        Ok(Self::Streaming(Some(body.boxed_unsync())))
    }

    fn for_attempt(&mut self) -> Body {
        match self {
            Self::Replayable(bytes) => reply::full(bytes.clone()),
            Self::Streaming(body) => body.take().unwrap_or_else(|| reply::full(Bytes::new())),
        }
    }
}

/// The version of requests to an HTTP/2 or HTTP/1.1 cluster.
fn protocol_version(http2: bool) -> Version {
    if http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    }
}

/// How an attempt counts for outlier detection.
fn health(attempt: Attempt<'_>) -> Health {
    match attempt {
        Attempt::Responded { status, .. } if status.is_server_error() => Health::ServerError {
            gateway: matches!(status.as_u16(), 502..=504),
        },
        Attempt::Responded { .. } => Health::Succeeded,
        Attempt::ConnectFailure | Attempt::Reset { .. } | Attempt::PerTryTimeout => {
            Health::LocalFailure
        }
    }
}

fn log_failed_attempt(
    result: Result<
        Result<Response<Incoming>, hyper_util::client::legacy::Error>,
        tokio::time::error::Elapsed,
    >,
    endpoint: SocketAddr,
    attempt: u32,
) {
    let error = match result {
        Ok(Ok(response)) => {
            tracing::debug!(%endpoint, attempt, status = response.status().as_u16(), "attempt answered with a retriable status");
            return;
        }
        Ok(Err(source)) if source.is_connect() => ProxyError::UpstreamConnect { endpoint, source },
        Ok(Err(source)) => ProxyError::UpstreamReset { endpoint, source },
        Err(_elapsed) => {
            tracing::debug!(%endpoint, attempt, "attempt exceeded perTryTimeout");
            return;
        }
    };
    tracing::debug!(%error, side = ?error.side(), attempt, "attempt failed");
}

/// Whether an HTTP/2 stream was refused (`REFUSED_STREAM`): the request was not
/// processed and is safe to retry.
fn is_refused_stream(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = error.source();
    }
    false
}
