//! `envoyExtAuthzGrpc`, as Envoy's gRPC `ext_authz` asks: one
//! `envoy.service.auth.v3.Authorization/Check` call (HTTP/2) describing the request —
//! method, path with query, host, every header, the client's address and identity, the
//! address it addressed — and with `includeRequestBodyInCheck` the start of the body
//! (`body`, or `raw_body` with `packAsBytes`). A `CheckResponse` with status `OK` lets the
//! request through with its `ok_response` applied (headers set, or appended when
//! `append` says so; `headers_to_remove` removed; `response_headers_to_add` added to the
//! response); any other status answers the client with its `denied_response` (403 when
//! it gives no status). A call that fails (a gRPC status other than OK) is an error.

use std::net::SocketAddr;

use ambit_api::ext_authz::{
    Address, AttributeContext, CheckRequest, CheckResponse, HeaderValueOption, SocketAddress,
    attribute_context::{HttpRequest, Peer as AttributePeer, Request as AttributeRequest},
    check_response::HttpResponse,
};
use bytes::{BufMut as _, Bytes, BytesMut};
use http::{
    HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Version, header, request::Parts,
};
use prost::Message as _;

use super::{Answer, BodySent, Checked, Decision, ExtAuthz, PARTIAL_BODY_HEADER};
use crate::{
    proxy::{reply, upstream::Upstreams},
    retry::grpc_status,
};

/// The method a provider serves.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
/// gRPC's OK.
const OK: i32 = 0;

/// Calls the provider about `parts`.
pub async fn ask(
    provider: &ExtAuthz,
    parts: &mut Parts,
    (checked, body): (Checked<'_>, Option<&BodySent>),
    upstreams: &Upstreams,
) -> Result<Decision, String> {
    let message = check_request(parts, checked, body).encode_to_vec();
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).map_err(|_| "the check is too large")?);
    framed.put_slice(&message);
    let request = Request::post(format!("http://{}{CHECK_PATH}", provider.authority))
        .version(Version::HTTP_2)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .body(reply::full(framed.freeze()))
        .map_err(|e| format!("the check request is not valid: {e}"))?;
    let (answer, trailers) = provider.send(request, true, upstreams).await?;
    if answer.status != StatusCode::OK {
        return Err(format!("it answered HTTP {}", answer.status));
    }
    // A trailers-only answer carries its status in the headers.
    let trailers = trailers.unwrap_or_default();
    match grpc_status(&trailers).or_else(|| grpc_status(&answer.headers)) {
        Some(0) => {}
        Some(code) => {
            let message = [&trailers, &answer.headers]
                .into_iter()
                .find_map(|headers| headers.get("grpc-message")?.to_str().ok())
                .unwrap_or_default();
            return Err(format!("the call failed: grpc-status {code} {message}"));
        }
        None => return Err("the call ended without a grpc-status".to_owned()),
    }
    let response = decode(&answer.body)?;
    if response.status.as_ref().map_or(OK, |s| s.code) == OK {
        let ok = match response.http_response {
            Some(HttpResponse::OkResponse(ok)) => ok,
            _ => Default::default(),
        };
        for name in &ok.headers_to_remove {
            parts.headers.remove(name.as_str());
        }
        apply(&mut parts.headers, &ok.headers);
        let mut downstream = HeaderMap::new();
        apply(&mut downstream, &ok.response_headers_to_add);
        return Ok(Decision::Allowed { downstream });
    }
    let denied = match response.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => denied,
        _ => Default::default(),
    };
    let status = denied
        .status
        .and_then(|s| u16::try_from(s.code).ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .filter(|code| code.as_u16() >= 200)
        .unwrap_or(StatusCode::FORBIDDEN);
    let mut headers = HeaderMap::new();
    apply(&mut headers, &denied.headers);
    Ok(Decision::Denied(Answer {
        status,
        headers,
        body: Bytes::from(denied.body),
    }))
}

/// The `CheckRequest` describing the request, with the start of its body if read.
fn check_request(parts: &Parts, checked: Checked<'_>, body: Option<&BodySent>) -> CheckRequest {
    let mut headers = std::collections::HashMap::<String, String>::new();
    for (name, value) in &parts.headers {
        let Ok(value) = value.to_str() else {
            continue;
        };
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push(',');
                joined.push_str(value);
            })
            .or_insert_with(|| value.to_owned());
    }
    let text = |name: HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let size = text(header::CONTENT_LENGTH)
        .and_then(|length| length.parse().ok())
        .unwrap_or(-1);
    if let Some(body) = body {
        headers.insert(PARTIAL_BODY_HEADER.to_owned(), body.partial.to_string());
    }
    let (body_text, raw_body) = match body {
        Some(body) if body.as_bytes => (String::new(), body.bytes.to_vec()),
        Some(body) => (
            String::from_utf8_lossy(&body.bytes).into_owned(),
            Vec::new(),
        ),
        None => (String::new(), Vec::new()),
    };
    let http = HttpRequest {
        id: text(HeaderName::from_static("x-request-id"))
            .unwrap_or_default()
            .to_owned(),
        method: parts.method.to_string(),
        headers,
        path: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
        host: checked.authority.to_owned(),
        scheme: "http".to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        size,
        protocol: protocol(parts.version).to_owned(),
        body: body_text,
        raw_body,
        ..HttpRequest::default()
    };
    let source = AttributePeer {
        address: Some(address(SocketAddr::new(checked.peer.ip, 0))),
        principal: checked
            .peer
            .identity
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        ..AttributePeer::default()
    };
    let destination = AttributePeer {
        address: Some(address(checked.destination)),
        ..AttributePeer::default()
    };
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(source),
            destination: Some(destination),
            request: Some(AttributeRequest { http: Some(http) }),
            ..AttributeContext::default()
        }),
    }
}

fn address(socket: SocketAddr) -> Address {
    Address {
        socket_address: Some(SocketAddress {
            address: socket.ip().to_canonical().to_string(),
            port_value: u32::from(socket.port()),
        }),
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// The one message of a gRPC answer.
fn decode(body: &Bytes) -> Result<CheckResponse, String> {
    let message = body
        .get(5..)
        .filter(|_| body.first() == Some(&0))
        .ok_or("its answer is not one uncompressed gRPC message")?;
    CheckResponse::decode(message).map_err(|e| format!("its answer is not a CheckResponse: {e}"))
}

/// Sets each header of `options` in `headers` (appends when its `append` is true, as
/// Envoy reads an ext_authz answer).
fn apply(headers: &mut HeaderMap, options: &[HeaderValueOption]) {
    for option in options {
        let Some(header) = &option.header else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.key.as_bytes()),
            HeaderValue::from_str(&header.value),
        ) else {
            tracing::debug!(
                key = header.key,
                "an authorizer's header is not valid: skipped"
            );
            continue;
        };
        if option.append.as_ref().is_some_and(|append| append.value) {
            headers.append(name, value);
        } else {
            headers.insert(name, value);
        }
    }
}
