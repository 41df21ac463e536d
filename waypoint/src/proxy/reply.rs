//! Responses the waypoint gives itself, with Envoy's bodies so clients and tests that
//! know Istio see the same text.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use super::Body;
use crate::{
    policy::{Answer, JwtFailure},
    table::AbortReply,
};

/// A body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A plain-text response.
pub fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = Response::new(full(message));
    *response.status_mut() = status;
    if !message.is_empty() {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    response
}

/// 404 for a request no route takes (`NR`).
pub fn no_route() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "")
}

/// 301 to the same host and path over `https://` (a Gateway server's `httpsRedirect`).
pub fn https_redirect(host: &str, path_and_query: &str) -> Response<Body> {
    let mut response = text(StatusCode::MOVED_PERMANENTLY, "");
    if let Ok(location) = HeaderValue::try_from(format!("https://{host}{path_and_query}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// 503 for a destination without endpoints (`UH`).
pub fn no_healthy_upstream() -> Response<Body> {
    text(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
}

/// 503 for a destination host, subset or port that does not exist (`NC`).
pub fn no_cluster() -> Response<Body> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "no cluster for the destination",
    )
}

/// 503 when the endpoint could not be reached (`UF`).
pub fn connect_failure() -> Response<Body> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
    )
}

/// 503 when the endpoint ended the request before answering (`UC`).
pub fn reset() -> Response<Body> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
    )
}

/// 503 when a `connectionPool` limit refused the request (`UO`).
pub fn overflow() -> Response<Body> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream connect error or disconnect/reset before headers. reset reason: overflow",
    )
}

/// 504 when the route's timeout or the last attempt's `perTryTimeout` expired (`UT`).
pub fn timeout() -> Response<Body> {
    text(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
}

/// The injected abort (`FI`).
pub fn fault_abort(abort: AbortReply) -> Response<Body> {
    const MESSAGE: &str = "fault filter abort";
    match abort {
        AbortReply::Http(status) => text(status, MESSAGE),
        AbortReply::Grpc(code) => {
            let mut response = Response::new(full(Bytes::new()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            headers.insert("grpc-status", HeaderValue::from(u16::from(code)));
            headers.insert("grpc-message", HeaderValue::from_static(MESSAGE));
            response
        }
    }
}

/// 400 for a request the waypoint cannot forward as sent.
pub fn bad_request() -> Response<Body> {
    text(StatusCode::BAD_REQUEST, "bad request")
}

/// 403 for a request an AuthorizationPolicy refuses, with Envoy's RBAC text.
pub fn access_denied() -> Response<Body> {
    text(StatusCode::FORBIDDEN, "RBAC: access denied")
}

/// An external authorizer's refusal, as it answered.
pub fn answer(answer: Answer) -> Response<Body> {
    let mut response = Response::new(full(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    response
}

/// 401 for a request whose token does not verify, with Envoy's `jwt_authn` text and
/// challenge.
pub fn unauthenticated(failure: JwtFailure) -> Response<Body> {
    let mut response = text(StatusCode::UNAUTHORIZED, failure.message());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    response
}
