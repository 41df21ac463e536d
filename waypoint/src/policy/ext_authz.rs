//! External authorization: the provider a `CUSTOM` AuthorizationPolicy names, asked as
//! Envoy's `ext_authz` filter asks it — over HTTP ([`over_http`], `envoyExtAuthzHttp`)
//! or gRPC ([`over_grpc`], `envoyExtAuthzGrpc`).
//!
//! The check goes to the provider's service like any request (its cluster: endpoints,
//! load balancing, the mesh's mutual TLS), without the request's body. What the
//! provider answers decides: let the request through (possibly with headers changed),
//! or answer the client. No answer within `timeout`, a connection that fails or a
//! server error is an error: the request goes through with `failOpen`, otherwise it is
//! refused with `statusOnError` (403).

mod over_grpc;
mod over_http;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use ambit_api::istio::mesh_config::{BodyInCheck, DEFAULT_TIMEOUT, MeshConfig};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, request::Parts};
use http_body_util::{BodyExt, Limited};

use super::PolicyError;
use crate::{
    config::CLUSTER_DOMAIN,
    proxy::{Body, Peer, received::ReceivedBody, upstream::Upstreams},
    table::{Cluster, ClusterIndex},
};

/// The largest answer read from a provider.
const MAX_ANSWER: usize = 64 * 1024;

/// One provider, ready to ask.
#[derive(Debug)]
pub struct ExtAuthz {
    provider: String,
    /// The provider's service, `host:port`: a gRPC call's authority.
    authority: String,
    cluster: Arc<Cluster>,
    timeout: Duration,
    fail_open: bool,
    status_on_error: StatusCode,
    /// How much of the body the check carries.
    body: Option<BodyInCheck>,
    protocol: Protocol,
}

#[derive(Debug)]
enum Protocol {
    Http(Box<over_http::HttpCheck>),
    Grpc,
}

/// What the provider decided.
#[derive(Debug)]
pub enum Decision {
    /// Go on (the request's headers changed as the provider said); `downstream` is
    /// added to the response.
    Allowed { downstream: HeaderMap },
    /// Answer the client this.
    Denied(Answer),
}

/// An answer of the provider: a refusal, as the client gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// An answer of `status` alone: what the waypoint says when it cannot pass on the
    /// provider's.
    fn status_only(status: StatusCode) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }
}

/// Headers to add to the response of a request the provider allowed: kept in the
/// request's extensions until the response is made.
#[derive(Debug, Clone)]
pub struct ResponseHeaders(pub HeaderMap);

/// The request being checked, as the provider is told of it.
#[derive(Debug, Clone, Copy)]
pub struct Checked<'a> {
    pub authority: &'a str,
    pub peer: &'a Peer,
    /// The address the client addressed.
    pub destination: SocketAddr,
}

/// The start of the body a check carries, and whether it is only the start.
#[derive(Debug, Clone, Default)]
pub struct BodySent {
    pub bytes: Bytes,
    pub partial: bool,
    /// gRPC: as bytes (`raw_body`), not text.
    pub as_bytes: bool,
}

/// The header telling the authorizer whether the body it got was cut (Envoy's).
pub const PARTIAL_BODY_HEADER: &str = "x-envoy-auth-partial-body";

impl ExtAuthz {
    /// The provider `name` of `mesh`, sending to its service's cluster in `clusters`;
    /// `field` names the policy's reference in errors.
    pub fn compile(
        field: &str,
        name: &str,
        mesh: &MeshConfig,
        clusters: &ClusterIndex,
    ) -> Result<Self, PolicyError> {
        let bad = |reason: String| PolicyError::Provider {
            field: field.to_owned(),
            name: name.to_owned(),
            reason,
        };
        if name.is_empty() {
            return Err(PolicyError::NoProvider {
                field: field.to_owned(),
            });
        }
        let provider = mesh.provider(name).ok_or_else(|| {
            bad("the mesh config (`extensionProviders`) has no provider of this name".to_owned())
        })?;
        let Some(authorizer) = provider.authorizer() else {
            return Err(bad(
                "it is no external authorizer: give it `envoyExtAuthzHttp` or `envoyExtAuthzGrpc`"
                    .to_owned(),
            ));
        };
        let body = match authorizer.body {
            Some(body) if body.max_request_bytes == 0 => {
                return Err(bad(
                    "`includeRequestBodyInCheck.maxRequestBytes` is 0: send 1 byte or more"
                        .to_owned(),
                ));
            }
            body => body.copied(),
        };
        let protocol = match &provider.envoy_ext_authz_http {
            Some(http) => {
                Protocol::Http(Box::new(over_http::HttpCheck::compile(http).map_err(bad)?))
            }
            None => Protocol::Grpc,
        };
        let status_on_error = match authorizer.status_on_error {
            "" => StatusCode::FORBIDDEN,
            text => text
                .parse::<u16>()
                .ok()
                .and_then(|code| StatusCode::from_u16(code).ok())
                .filter(|code| code.as_u16() >= 200)
                .ok_or_else(|| {
                    bad(format!(
                        "`statusOnError: {text}` is not an HTTP status: use 200 to 599"
                    ))
                })?,
        };
        let (host, cluster) =
            service_cluster(authorizer.service, authorizer.port, clusters).map_err(bad)?;
        Ok(Self {
            provider: name.to_owned(),
            authority: format!("{host}:{}", authorizer.port),
            cluster,
            timeout: authorizer.timeout.map_or(DEFAULT_TIMEOUT, |t| t.get()),
            fail_open: authorizer.fail_open,
            status_on_error,
            body,
            protocol,
        })
    }

    /// The provider's name, for logs.
    #[must_use]
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Asks the provider about the request `parts` (and the start of `body`, if it
    /// wants it); on allow, the headers it has for the upstream are set in `parts`.
    pub async fn check(
        &self,
        parts: &mut Parts,
        body: &mut ReceivedBody,
        request: Checked<'_>,
        upstreams: &Upstreams,
    ) -> Decision {
        let sent = match self.body {
            None => None,
            Some(wanted) => match self.read_body(body, wanted).await {
                Ok(sent) => Some(sent),
                Err(refusal) => return refusal,
            },
        };
        let sent = sent.as_ref();
        let asking = async {
            match &self.protocol {
                Protocol::Http(http) => {
                    http.ask(self, parts, (request.authority, sent), upstreams)
                        .await
                }
                Protocol::Grpc => over_grpc::ask(self, parts, (request, sent), upstreams).await,
            }
        };
        match tokio::time::timeout(self.timeout, asking).await {
            Ok(Ok(decision)) => decision,
            Ok(Err(reason)) => self.failed(&reason),
            Err(_) => self.failed(&format!("no answer within {:?}", self.timeout)),
        }
    }

    /// Reads up to `wanted.maxRequestBytes` of `body`; a longer body without
    /// `allowPartialMessage` is answered 413, as Envoy does, and one that cannot be read
    /// 400.
    async fn read_body(
        &self,
        body: &mut ReceivedBody,
        wanted: BodyInCheck,
    ) -> Result<BodySent, Decision> {
        let limit = usize::try_from(wanted.max_request_bytes).unwrap_or(usize::MAX);
        let refuse = |status| Decision::Denied(Answer::status_only(status));
        let (mut bytes, complete) = body.read_up_to(limit).await.map_err(|error| {
            tracing::debug!(%error, "the request's body could not be read for its check");
            refuse(StatusCode::BAD_REQUEST)
        })?;
        let partial = !complete || bytes.len() > limit;
        if partial && !wanted.allow_partial_message {
            return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE));
        }
        bytes.truncate(limit);
        Ok(BodySent {
            bytes,
            partial,
            as_bytes: wanted.pack_as_bytes,
        })
    }

    /// The provider could not be asked: allowed when `failOpen`, else refused.
    fn failed(&self, reason: &str) -> Decision {
        tracing::warn!(
            provider = self.provider,
            reason,
            fail_open = self.fail_open,
            "external authorization failed"
        );
        if self.fail_open {
            return Decision::Allowed {
                downstream: HeaderMap::new(),
            };
        }
        Decision::Denied(Answer::status_only(self.status_on_error))
    }

    /// Sends `request` to an endpoint of the provider (HTTP/2 when `http2`); its whole
    /// answer, with the trailers, or why there is none.
    async fn send(
        &self,
        request: Request<Body>,
        http2: bool,
        upstreams: &Upstreams,
    ) -> Result<(Answer, Option<HeaderMap>), String> {
        let cluster = &self.cluster;
        let _admission = cluster
            .admit()
            .await
            .map_err(|_| "its connection pool is full".to_owned())?;
        let endpoint = cluster
            .pick(None, &[])
            .ok_or_else(|| format!("{} has no endpoint", cluster.name))?;
        let _in_flight = endpoint.start_request();
        let response = upstreams
            .send(endpoint.address, cluster.pooling(http2), request)
            .await
            .map_err(|e| format!("sending to {}: {e}", endpoint.address))?;
        let (head, body) = response.into_parts();
        let collected = Limited::new(body, MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading its answer: {e}"))?;
        let trailers = collected.trailers().cloned();
        let answer = Answer {
            status: head.status,
            headers: head.headers,
            body: collected.to_bytes(),
        };
        Ok((answer, trailers))
    }
}

/// The host of a provider's `service` (`[namespace/]host`) and its cluster on `port`.
fn service_cluster<'s>(
    service: &'s str,
    port: u32,
    clusters: &ClusterIndex,
) -> Result<(&'s str, Arc<Cluster>), String> {
    let host = service.split_once('/').map_or(service, |(_, host)| host);
    if !host.contains('.') {
        return Err(format!(
            "`service: {service}`: write the service's full name (`name.namespace.svc.{CLUSTER_DOMAIN}`)"
        ));
    }
    let ports = clusters.get(host, "");
    if ports.is_empty() {
        return Err(format!("`service: {service}` is no service the mesh knows"));
    }
    u16::try_from(port)
        .ok()
        .and_then(|port| ports.iter().find(|(p, _)| *p == port))
        .map(|(_, cluster)| (host, Arc::clone(cluster)))
        .ok_or_else(|| format!("`port: {port}` is not a port of {host}"))
}
