//! An external authorizer over gRPC (`envoy.service.auth.v3.Authorization`, served by
//! tonic), deciding as [`crate::authorizer`] does: `x-ext-authz: allow` is allowed (with
//! a header set upstream, one removed, one added to the response), anything else
//! denied with 401 and a body; `x-ext-authz: crash` fails the call. It keeps the checks
//! it received.

use std::sync::{Arc, Mutex};

use ambit_api::ext_authz::{
    BoolValue, CheckRequest, CheckResponse, DeniedHttpResponse, HeaderValue, HeaderValueOption,
    HttpStatus, OkHttpResponse, Status,
    authorization_server::{Authorization, AuthorizationServer},
    check_response::HttpResponse,
};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

use crate::authorizer::ADDRESS;

/// gRPC's PERMISSION_DENIED.
const PERMISSION_DENIED: i32 = 7;

#[derive(Debug, Clone, Default)]
pub struct GrpcAuthorizer {
    pub port: u16,
    checks: Arc<Mutex<Vec<CheckRequest>>>,
}

impl GrpcAuthorizer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind((ADDRESS, 0))
            .await
            .expect("binding the gRPC authorizer");
        let authorizer = Self {
            port: listener.local_addr().expect("an address").port(),
            checks: Arc::default(),
        };
        let served = authorizer.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AuthorizationServer::new(served))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        authorizer
    }

    /// The checks received so far.
    pub fn checks(&self) -> Vec<CheckRequest> {
        self.checks.lock().expect("not poisoned").clone()
    }
}

fn header(key: &str, value: &str, append: bool) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_owned(),
            value: value.to_owned(),
        }),
        append: Some(BoolValue { value: append }),
    }
}

#[tonic::async_trait]
impl Authorization for GrpcAuthorizer {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let check = request.into_inner();
        self.checks
            .lock()
            .expect("not poisoned")
            .push(check.clone());
        let asked = check
            .attributes
            .and_then(|a| a.request?.http)
            .and_then(|http| http.headers.get("x-ext-authz").cloned());
        let response = match asked.as_deref() {
            Some("allow") => CheckResponse {
                status: Some(Status::default()),
                http_response: Some(HttpResponse::OkResponse(OkHttpResponse {
                    headers: vec![
                        header("x-ext-authz-check-result", "allowed", false),
                        header("x-user", "alice", true),
                    ],
                    headers_to_remove: vec!["x-remove-me".to_owned()],
                    response_headers_to_add: vec![header("x-ext-authz-response", "ok", false)],
                })),
            },
            Some("crash") => return Err(tonic::Status::internal("the policy engine crashed")),
            _ => CheckResponse {
                status: Some(Status {
                    code: PERMISSION_DENIED,
                    message: "no".to_owned(),
                }),
                http_response: Some(HttpResponse::DeniedResponse(DeniedHttpResponse {
                    status: Some(HttpStatus { code: 401 }),
                    headers: vec![header("x-ext-authz-check-result", "denied", false)],
                    body: "denied by the gRPC authorizer".to_owned(),
                })),
            },
        };
        Ok(tonic::Response::new(response))
    }
}
