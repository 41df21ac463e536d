//! Istio's `MeshConfig`, the part of it Ambit reads: the `extensionProviders` that
//! `CUSTOM` AuthorizationPolicies name. Istio keeps it in the `mesh` key of the `istio`
//! ConfigMap in `istio-system`, which istiod reads as a file; Ambit's controller does
//! the same (`--mesh-config`). Fields Ambit does not read are ignored, as the file holds
//! much that concerns Envoy only.

use serde::{Deserialize, Serialize};

use super::Duration;

/// Istio's `MeshConfig`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MeshConfig {
    pub extension_providers: Vec<ExtensionProvider>,
}

/// One named provider; a `CUSTOM` policy names it in `provider.name`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExtensionProvider {
    pub name: String,
    /// An external authorizer spoken to over HTTP.
    pub envoy_ext_authz_http: Option<ExtAuthzHttp>,
    /// An external authorizer spoken to over gRPC (Envoy's `ext_authz` service).
    pub envoy_ext_authz_grpc: Option<ExtAuthzGrpc>,
}

impl MeshConfig {
    /// The provider of this name.
    #[must_use]
    pub fn provider(&self, name: &str) -> Option<&ExtensionProvider> {
        self.extension_providers.iter().find(|p| p.name == name)
    }
}

/// What every external authorizer sets, whatever it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorizer<'a> {
    /// `envoyExtAuthzHttp` or `envoyExtAuthzGrpc`.
    pub kind: &'static str,
    pub service: &'a str,
    pub port: u32,
    pub timeout: Option<Duration>,
    pub fail_open: bool,
    pub status_on_error: &'a str,
    /// How much of the request's body it is sent, if any.
    pub body: Option<&'a BodyInCheck>,
}

impl ExtensionProvider {
    /// Its external authorizer (HTTP first when both are set); `None` when it is
    /// another kind of provider (tracing, logging).
    #[must_use]
    pub fn authorizer(&self) -> Option<Authorizer<'_>> {
        if let Some(http) = &self.envoy_ext_authz_http {
            return Some(Authorizer {
                kind: "envoyExtAuthzHttp",
                service: &http.service,
                port: http.port,
                timeout: http.timeout,
                fail_open: http.fail_open,
                status_on_error: &http.status_on_error,
                body: http.include_request_body_in_check.as_ref(),
            });
        }
        self.envoy_ext_authz_grpc.as_ref().map(|grpc| Authorizer {
            kind: "envoyExtAuthzGrpc",
            service: &grpc.service,
            port: grpc.port,
            timeout: grpc.timeout,
            fail_open: grpc.fail_open,
            status_on_error: &grpc.status_on_error,
            body: grpc.include_request_body_in_check.as_ref(),
        })
    }
}

/// `envoyExtAuthzHttp`: every request a `CUSTOM` policy matches is first sent, without
/// its body, to `service`; a `200` lets it through, anything else is the answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExtAuthzHttp {
    /// The authorizer's service: `name.namespace.svc.cluster.local`, optionally
    /// prefixed with `namespace/`.
    pub service: String,
    pub port: u32,
    /// How long to wait for its answer (Istio's default: 600 s).
    pub timeout: Option<Duration>,
    /// Put before the request's path in the check request.
    pub path_prefix: String,
    /// Let the request through when the authorizer cannot be asked.
    pub fail_open: bool,
    /// The status answered when the authorizer cannot be asked (default 403).
    pub status_on_error: String,
    /// Request headers sent in the check (besides `Host`, method and path); Istio's
    /// matchers: `exact`, `prefix*`, `*suffix`, case-insensitive.
    pub include_request_headers_in_check: Vec<String>,
    /// Headers set on every check request.
    pub include_additional_headers_in_check: std::collections::BTreeMap<String, String>,
    /// Headers of an allowing answer set on the request sent on; none: the request goes
    /// on unchanged.
    pub headers_to_upstream_on_allow: Vec<String>,
    /// Headers of an allowing answer added to the response to the client.
    pub headers_to_downstream_on_allow: Vec<String>,
    /// Headers of a refusing answer passed to the client; none: all of them.
    pub headers_to_downstream_on_deny: Vec<String>,
    /// Send the request's body too (its start).
    pub include_request_body_in_check: Option<BodyInCheck>,
}

/// `includeRequestBodyInCheck`: the request's body is read (up to `maxRequestBytes`)
/// before the check and sent with it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BodyInCheck {
    /// The most bytes read and sent.
    pub max_request_bytes: u32,
    /// A longer body: send its first `maxRequestBytes` (else it is answered 413).
    pub allow_partial_message: bool,
    /// gRPC: send the body as bytes (`raw_body`), not as text.
    pub pack_as_bytes: bool,
}

/// Istio's default `timeout` of an authorizer.
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// `envoyExtAuthzGrpc`: every request a `CUSTOM` policy matches is first described to
/// `service`'s `envoy.service.auth.v3.Authorization/Check` (headers, path, peers); an
/// `OK` status lets it through, any other answers with the response it gives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExtAuthzGrpc {
    /// The authorizer's service, as for [`ExtAuthzHttp::service`].
    pub service: String,
    pub port: u32,
    /// How long to wait for its answer (Istio's default: 600 s).
    pub timeout: Option<Duration>,
    /// Let the request through when the authorizer cannot be asked.
    pub fail_open: bool,
    /// The status answered when the authorizer cannot be asked (default 403).
    pub status_on_error: String,
    /// Send the request's body too (its start).
    pub include_request_body_in_check: Option<BodyInCheck>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_providers_of_istios_mesh_config_and_ignores_the_rest() {
        let mesh: MeshConfig = serde_yaml_ng::from_str(
            r#"
accessLogFile: /dev/stdout
defaultConfig: {discoveryAddress: istiod.istio-system.svc:15012}
extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: 8000
    timeout: 2s
    includeRequestHeadersInCheck: ["x-ext-authz"]
    headersToUpstreamOnAllow: ["x-ext-authz-check-result"]
- name: opa
  envoyExtAuthzGrpc: {service: opa.opa.svc.cluster.local, port: 9191}
"#,
        )
        .unwrap();
        let http = mesh
            .provider("sample-ext-authz-http")
            .and_then(|p| p.envoy_ext_authz_http.as_ref())
            .unwrap();
        assert_eq!(http.service, "ext-authz.foo.svc.cluster.local");
        assert_eq!(http.port, 8000);
        assert_eq!(
            http.timeout.unwrap().get(),
            std::time::Duration::from_secs(2)
        );
        assert_eq!(http.include_request_headers_in_check, ["x-ext-authz"]);
        assert!(mesh.provider("opa").unwrap().envoy_ext_authz_grpc.is_some());
        assert!(mesh.provider("missing").is_none());
    }
}
