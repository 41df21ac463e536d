//! `RequestAuthentication`: which JSON Web Tokens a workload (or a waypoint's services)
//! accepts, and where it finds them.
//!
//! Follows Istio's reference (`security.istio.io/v1`, RequestAuthentication). A request
//! without a token passes authentication (an `AuthorizationPolicy` with
//! `requestPrincipals` decides whether one is needed); a request with a token that does
//! not verify against the rule of its issuer is refused. A verified token makes its
//! `iss/sub` the request principal and its claims readable by `AuthorizationPolicy`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Duration, WorkloadSelector, authorization_policy::PolicyTargetReference};

/// The spec of a `RequestAuthentication`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "security.istio.io",
    version = "v1",
    kind = "RequestAuthentication",
    namespaced,
    shortname = "ra",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase")]
pub struct RequestAuthenticationSpec {
    /// The workloads this applies to; absent: every workload of the namespace (or of the
    /// mesh, in the root namespace).
    pub selector: Option<WorkloadSelector>,
    /// Deprecated single form of `targetRefs`.
    pub target_ref: Option<PolicyTargetReference>,
    /// The waypoints, gateways or services this applies to (instead of `selector`).
    pub target_refs: Vec<PolicyTargetReference>,
    /// One rule per accepted issuer.
    pub jwt_rules: Vec<JwtRule>,
}

/// How tokens of one issuer are found and verified.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct JwtRule {
    /// The token's `iss`, which selects this rule.
    pub issuer: String,
    /// Accepted `aud` values; empty: any (the audience is not checked).
    pub audiences: Vec<String>,
    /// Where the JSON Web Key Set is fetched from (when `jwks` is not given).
    pub jwks_uri: String,
    /// The JSON Web Key Set itself, as JSON text.
    pub jwks: String,
    /// Headers that carry the token; with `fromParams` and `fromCookies` all empty:
    /// `Authorization: Bearer <token>` and the `access_token` query parameter.
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters that carry the token.
    pub from_params: Vec<String>,
    /// Cookies that carry the token.
    pub from_cookies: Vec<String>,
    /// A header to put the verified token's payload in (base64url).
    pub output_payload_to_header: String,
    /// Headers to copy single claims into.
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Keep the token in the forwarded request (it is removed otherwise).
    pub forward_original_token: bool,
    /// How long fetching `jwksUri` may take.
    pub timeout: Option<Duration>,
}

/// A header that carries a token, after an optional prefix (`Bearer `).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct JwtHeader {
    pub name: String,
    pub prefix: String,
}

/// `{header: x-user, claim: sub}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ClaimToHeader {
    pub header: String,
    pub claim: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istios_example_decodes() {
        let spec: RequestAuthenticationSpec = serde_yaml_ng::from_str(
            "
targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
jwtRules:
- issuer: issuer-foo
  audiences: [bookstore]
  jwksUri: https://example.com/.well-known/jwks.json
  fromHeaders: [{name: x-jwt-assertion, prefix: 'Bearer '}]
  fromParams: [my_token]
  outputPayloadToHeader: x-jwt-payload
  forwardOriginalToken: true
",
        )
        .expect("Istio's example decodes");
        let rule = &spec.jwt_rules[0];
        assert_eq!(rule.issuer, "issuer-foo");
        assert_eq!(rule.from_headers[0].prefix, "Bearer ");
        assert_eq!(rule.from_params, ["my_token"]);
        assert!(rule.forward_original_token);
        assert_eq!(spec.target_refs[0].name, "waypoint");
    }
}
