//! `envoyExtAuthzHttp`, as Envoy's HTTP `ext_authz` service asks: the check is the
//! request — same method, `Host`, the path with `pathPrefix` before it,
//! the headers `includeRequestHeadersInCheck` names and those
//! `includeAdditionalHeadersInCheck` sets, and with `includeRequestBodyInCheck` the
//! start of the body (`x-envoy-auth-partial-body` saying whether it was cut). A `200` lets the request through, with the
//! answer's headers `headersToUpstreamOnAllow` names replacing the request's and those
//! `headersToDownstreamOnAllow` names added to the response. Any other answer below 500
//! is the client's answer: its status, body and headers (those
//! `headersToDownstreamOnDeny` names, or all). A 5xx is an error.

use ambit_api::{istio::mesh_config::ExtAuthzHttp, policy_match::Strings};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Uri, header, request::Parts};

use super::{Answer, BodySent, Decision, ExtAuthz, PARTIAL_BODY_HEADER};
use crate::proxy::{reply, upstream::Upstreams};

/// Headers never copied to or from a check: they describe one hop, or the body.
const HOP_HEADERS: [HeaderName; 6] = [
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::HOST,
    header::UPGRADE,
    header::TE,
];

/// What an `envoyExtAuthzHttp` provider sends and passes on.
#[derive(Debug)]
pub struct HttpCheck {
    path_prefix: String,
    request_headers: Strings,
    additional_headers: HeaderMap,
    upstream_on_allow: Option<Strings>,
    downstream_on_allow: Option<Strings>,
    downstream_on_deny: Option<Strings>,
}

impl HttpCheck {
    /// The provider's settings; the reason when they cannot be used.
    pub fn compile(http: &ExtAuthzHttp) -> Result<Self, String> {
        let mut additional_headers = HeaderMap::new();
        for (key, value) in &http.include_additional_headers_in_check {
            let (name, value) = HeaderName::from_bytes(key.as_bytes())
                .ok()
                .zip(HeaderValue::from_str(value).ok())
                .ok_or_else(|| {
                    format!(
                        "`includeAdditionalHeadersInCheck`: `{key}: {value}` is not a valid header"
                    )
                })?;
            additional_headers.insert(name, value);
        }
        let patterns =
            |names: &[String]| (!names.is_empty()).then(|| Strings::new(names, &[], true));
        Ok(Self {
            path_prefix: http.path_prefix.clone(),
            request_headers: Strings::new(&http.include_request_headers_in_check, &[], true),
            additional_headers,
            upstream_on_allow: patterns(&http.headers_to_upstream_on_allow),
            downstream_on_allow: patterns(&http.headers_to_downstream_on_allow),
            downstream_on_deny: patterns(&http.headers_to_downstream_on_deny),
        })
    }

    /// Sends the check for `parts` (for `authority`) and reads the answer.
    pub async fn ask(
        &self,
        provider: &ExtAuthz,
        parts: &mut Parts,
        (authority, body): (&str, Option<&BodySent>),
        upstreams: &Upstreams,
    ) -> Result<Decision, String> {
        let request = self.request(parts, authority, body)?;
        let (answer, _) = provider
            .send(request, provider.cluster.speaks_http2(), upstreams)
            .await?;
        if answer.status.is_server_error() {
            return Err(format!("it answered {}", answer.status));
        }
        if answer.status != StatusCode::OK {
            let headers = match &self.downstream_on_deny {
                // As Envoy: these go with a refusal even when not listed.
                Some(patterns) => selected(&answer.headers, |n| {
                    matching(patterns, n) || n == header::WWW_AUTHENTICATE || n == header::LOCATION
                }),
                None => selected(&answer.headers, |_| true),
            };
            return Ok(Decision::Denied(Answer { headers, ..answer }));
        }
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
        Ok(Decision::Allowed { downstream })
    }

    /// The check request for `parts`, carrying `body` when the provider wants it.
    fn request(
        &self,
        parts: &Parts,
        authority: &str,
        body: Option<&BodySent>,
    ) -> Result<Request<crate::proxy::Body>, String> {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = format!("http://{authority}{}{path}", self.path_prefix)
            .parse()
            .map_err(|e| format!("the check's URI is not valid: {e}"))?;
        let bytes = body.map(|body| body.bytes.clone()).unwrap_or_default();
        let length = HeaderValue::from(bytes.len());
        let mut request = Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .body(reply::full(bytes))
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
        headers.insert(header::CONTENT_LENGTH, length);
        if let Some(body) = body {
            let partial = HeaderValue::from_static(if body.partial { "true" } else { "false" });
            headers.insert(PARTIAL_BODY_HEADER, partial);
        }
        Ok(request)
    }
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
