//! An external authorizer over HTTP, deciding as Istio's `ext-authz` sample does: a
//! request carrying `x-ext-authz: allow` is allowed (200 with
//! `x-ext-authz-check-result: allowed`), any other is denied (403 with a body saying
//! why); `x-ext-authz: crash` gets a 500. It keeps the checks it received.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, request::Parts};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

/// Where the authorizer listens.
pub const ADDRESS: &str = "127.0.0.14";

/// A check the authorizer received.
#[derive(Debug, Clone)]
pub struct Check {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The authorizer, serving until the test ends.
#[derive(Debug)]
pub struct Authorizer {
    pub port: u16,
    checks: Arc<Mutex<Vec<Check>>>,
}

impl Authorizer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind((ADDRESS, 0))
            .await
            .expect("binding the authorizer");
        let port = listener.local_addr().expect("an address").port();
        let checks = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&checks);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = Arc::clone(&kept);
                let service = service_fn(move |request: Request<Incoming>| {
                    let kept = Arc::clone(&kept);
                    async move {
                        let (head, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        Ok::<_, Infallible>(decide(&head, body, &kept))
                    }
                });
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { port, checks }
    }

    /// The checks received so far.
    pub fn checks(&self) -> Vec<Check> {
        self.checks.lock().expect("not poisoned").clone()
    }
}

fn decide(request: &Parts, body: Bytes, checks: &Mutex<Vec<Check>>) -> Response<Full<Bytes>> {
    checks.lock().expect("not poisoned").push(Check {
        method: request.method.to_string(),
        path: request
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned(),
        headers: request.headers.clone(),
        body,
    });
    let asked = request
        .headers
        .get("x-ext-authz")
        .and_then(|v| v.to_str().ok());
    let (status, result, body) = match asked {
        Some("allow") => (StatusCode::OK, "allowed", ""),
        Some("crash") => (StatusCode::INTERNAL_SERVER_ERROR, "crashed", "boom"),
        _ => (
            StatusCode::FORBIDDEN,
            "denied",
            "denied by ext_authz for not found header `x-ext-authz: allow` in the request",
        ),
    };
    Response::builder()
        .status(status)
        .header("x-ext-authz-check-result", result)
        .header("x-ext-authz-secret", "internal")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a valid response")
}
