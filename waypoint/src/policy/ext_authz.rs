//! External authorization: the `envoyExtAuthzHttp` provider a `CUSTOM`
//! AuthorizationPolicy names, asked as Envoy's HTTP `ext_authz` filter asks it.
//!
//! The check is the request without its body: same method, `Host`, the path with
//! `pathPrefix` before it, the headers `includeRequestHeadersInCheck` names and those
//! `includeAdditionalHeadersInCheck` sets. It goes to the provider's service like any
//! request (its cluster: endpoints, load balancing, the mesh's mutual TLS). A `200`
//! lets the request through, with the answer's headers `headersToUpstreamOnAllow` names
//! replacing the request's and those `headersToDownstreamOnAllow` names added to the
//! response. Any other answer below 500 is the client's answer: its status, body and
//! headers (those `headersToDownstreamOnDeny` names, or all). No answer in `timeout`, a
//! connection that fails or a 5xx is an error: the request goes through with
//! `failOpen`, otherwise it is refused with `statusOnError` (403).

use std::{sync::Arc, time::Duration};

use ambit_api::{
    istio::mesh_config::{ExtAuthzHttp, MeshConfig},
    policy_match::Strings,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri, header, request::Parts};
use http_body_util::{BodyExt, Limited};

use super::PolicyError;
use crate::{
    config::CLUSTER_DOMAIN,
    proxy::{reply, upstream::Upstreams},
    table::{Cluster, ClusterIndex},
};

/// The largest refusal body passed on to the client.
const MAX_DENIAL_BODY: usize = 64 * 1024;

/// Headers a check never copies: they describe one hop, or the body, not the request.
const HOP_HEADERS: [HeaderName; 6] = [
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::HOST,
    header::UPGRADE,
    header::TE,
];

/// One `envoyExtAuthzHttp` provider, ready to ask.
#[derive(Debug)]
pub struct ExtAuthz {
    provider: String,
    cluster: Arc<Cluster>,
    timeout: Duration,
    path_prefix: String,
    fail_open: bool,
    status_on_error: StatusCode,
    request_headers: Strings,
    additional_headers: HeaderMap,
    upstream_on_allow: Option<Strings>,
    downstream_on_allow: Option<Strings>,
    downstream_on_deny: Option<Strings>,
}

/// What the provider decided.
#[derive(Debug)]
pub enum Decision {
    /// Go on, these headers replacing the request's; `downstream` is added to the
    /// response.
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

/// Headers to add to the response of a request the provider allowed: kept in the
/// request's extensions until the response is made.
#[derive(Debug, Clone)]
pub struct ResponseHeaders(pub HeaderMap);

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
        let Some(http) = &provider.envoy_ext_authz_http else {
            let reason = if provider.envoy_ext_authz_grpc.is_some() {
                "it is an `envoyExtAuthzGrpc` provider, which the waypoint cannot call yet: give the authorizer an `envoyExtAuthzHttp` provider"
            } else {
                "it is no external authorizer: give it `envoyExtAuthzHttp`"
            };
            return Err(bad(reason.to_owned()));
        };
        if http.include_request_body_in_check.is_some() {
            return Err(bad(
                "`includeRequestBodyInCheck` is not supported yet: remove it".to_owned(),
            ));
        }
        let cluster = service_cluster(http, clusters).map_err(bad)?;
        let status_on_error = match http.status_on_error.as_str() {
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
        let mut additional_headers = HeaderMap::new();
        for (key, value) in &http.include_additional_headers_in_check {
            let header = HeaderName::from_bytes(key.as_bytes())
                .ok()
                .zip(HeaderValue::from_str(value).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "`includeAdditionalHeadersInCheck`: `{key}: {value}` is not a valid header"
                    ))
                })?;
            additional_headers.insert(header.0, header.1);
        }
        let patterns =
            |names: &[String]| (!names.is_empty()).then(|| Strings::new(names, &[], true));
        Ok(Self {
            provider: name.to_owned(),
            cluster,
            timeout: http
                .timeout
                .map_or(ExtAuthzHttp::DEFAULT_TIMEOUT, |t| t.get()),
            path_prefix: http.path_prefix.clone(),
            fail_open: http.fail_open,
            status_on_error,
            request_headers: Strings::new(&http.include_request_headers_in_check, &[], true),
            additional_headers,
            upstream_on_allow: patterns(&http.headers_to_upstream_on_allow),
            downstream_on_allow: patterns(&http.headers_to_downstream_on_allow),
            downstream_on_deny: patterns(&http.headers_to_downstream_on_deny),
        })
    }

    /// The provider's name, for logs.
    #[must_use]
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Asks the provider about the request `parts` (for `authority`); on allow, its
    /// headers for the upstream are set in `parts`.
    pub async fn check(
        &self,
        parts: &mut Parts,
        authority: &str,
        upstreams: &Upstreams,
    ) -> Decision {
        let asked = tokio::time::timeout(self.timeout, self.ask(parts, authority, upstreams)).await;
        let answer = match asked {
            Ok(Ok(answer)) => answer,
            Ok(Err(reason)) => return self.failed(&reason),
            Err(_) => return self.failed(&format!("no answer within {:?}", self.timeout)),
        };
        if answer.status == StatusCode::OK {
            if let Some(patterns) = &self.upstream_on_allow {
                for name in answer.headers.keys().filter(|n| matching(patterns, n)) {
                    parts.headers.remove(name);
                }
                for (name, value) in &answer.headers {
                    if matching(patterns, name) {
                        parts.headers.append(name.clone(), value.clone());
                    }
                }
            }
            let downstream = self
                .downstream_on_allow
                .as_ref()
                .map(|patterns| selected(&answer.headers, |n| matching(patterns, n)))
                .unwrap_or_default();
            return Decision::Allowed { downstream };
        }
        let headers = match &self.downstream_on_deny {
            // As Envoy: these go with a refusal even when not listed.
            Some(patterns) => selected(&answer.headers, |n| {
                matching(patterns, n) || n == header::WWW_AUTHENTICATE || n == header::LOCATION
            }),
            None => selected(&answer.headers, |_| true),
        };
        Decision::Denied(Answer {
            status: answer.status,
            headers,
            body: answer.body,
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
        Decision::Denied(Answer {
            status: self.status_on_error,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        })
    }

    /// Sends the check; the answer, or why there is none.
    async fn ask(
        &self,
        parts: &Parts,
        authority: &str,
        upstreams: &Upstreams,
    ) -> Result<Answer, String> {
        let cluster = &self.cluster;
        let _admission = cluster
            .admit()
            .await
            .map_err(|_| "its connection pool is full".to_owned())?;
        let endpoint = cluster
            .pick(None, &[])
            .ok_or_else(|| format!("{} has no endpoint", cluster.name))?;
        let _in_flight = endpoint.start_request();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = format!("http://{authority}{}{path}", self.path_prefix)
            .parse()
            .map_err(|e| format!("the check's URI is not valid: {e}"))?;
        let mut request = Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .body(reply::full(Bytes::new()))
            .map_err(|e| format!("the check request is not valid: {e}"))?;
        let headers = request.headers_mut();
        for (name, value) in &parts.headers {
            if !HOP_HEADERS.contains(name) && self.request_headers.matches([name.as_str()]) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.extend(self.additional_headers.clone());
        if let Ok(host) = HeaderValue::from_str(authority) {
            headers.insert(header::HOST, host);
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        let response = upstreams
            .send(endpoint.address, cluster.pooling(cluster.http2), request)
            .await
            .map_err(|e| format!("sending to {}: {e}", endpoint.address))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(format!("it answered {status}"));
        }
        let (head, body) = response.into_parts();
        let body = Limited::new(body, MAX_DENIAL_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading its answer: {e}"))?
            .to_bytes();
        Ok(Answer {
            status,
            headers: head.headers,
            body,
        })
    }
}

/// The cluster of the provider's `service` (`[namespace/]host`) on its `port`.
fn service_cluster(http: &ExtAuthzHttp, clusters: &ClusterIndex) -> Result<Arc<Cluster>, String> {
    let host = http
        .service
        .split_once('/')
        .map_or(http.service.as_str(), |(_, host)| host);
    let host = if host.contains('.') {
        host.to_owned()
    } else {
        return Err(format!(
            "`service: {}`: write the service's full name (`name.namespace.svc.{CLUSTER_DOMAIN}`)",
            http.service
        ));
    };
    let ports = clusters.get(&host, "");
    if ports.is_empty() {
        return Err(format!(
            "`service: {}` is no service the mesh knows",
            http.service
        ));
    }
    u16::try_from(http.port)
        .ok()
        .and_then(|port| ports.iter().find(|(p, _)| *p == port))
        .map(|(_, cluster)| Arc::clone(cluster))
        .ok_or_else(|| format!("`port: {}` is not a port of {host}", http.port))
}

fn matching(patterns: &Strings, name: &HeaderName) -> bool {
    !HOP_HEADERS.contains(name) && patterns.matches([name.as_str()])
}

/// The headers of `from` whose names `keep` accepts (never the hop-by-hop ones).
fn selected(from: &HeaderMap, keep: impl Fn(&HeaderName) -> bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in from {
        if !HOP_HEADERS.contains(name) && keep(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers
}
