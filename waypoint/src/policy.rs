//! L7 security, in Istio's order: `RequestAuthentication` verifies a request's JSON Web
//! Token, then `AuthorizationPolicy` decides from the peer, the request and the token's
//! claims whether it may go on. Both run before routing, so a refused request never
//! reaches faults, retries or an endpoint.
//!
//! Which policies the waypoint enforces: those whose `targetRefs` (or `targetRef`) name
//! it, as Istio's waypoints do. A reference of `kind: Gateway` (group
//! `gateway.networking.k8s.io`) whose name is [`Config::name`] and whose namespace is
//! the waypoint's covers every request; a reference of `kind: Service` (core group) in
//! the policy's namespace covers the requests addressed to that service (the service the
//! request's authority names), if the waypoint serves it. Policies with a `selector`, or
//! with neither, are workload policies: ztunnel's, skipped by a waypoint; an ingress
//! gateway enforces those of its namespace or the root namespace whose selector (if any)
//! matches its pod's labels, as Istio's gateways do. References to other kinds and
//! names, to other namespaces, and (not yet supported) to the `istio-waypoint`
//! GatewayClass from the root namespace are skipped.
//!
//! # Layout
//! - this file: [`Policies`] (compiled from a [`Config`]), [`Verdict`], [`PolicyError`];
//! - string patterns and IP blocks: [`ambit_api::policy_match`] (shared with ztunnel);
//! - [`authz`]: `AuthorizationPolicy` (CUSTOM, DENY, ALLOW, AUDIT);
//! - [`ext_authz`]: a CUSTOM policy's external authorizer (HTTP or gRPC);
//! - [`jwt`]: `RequestAuthentication`; [`jwks`]: its key sets, inline or fetched.

pub mod authz;
pub mod ext_authz;
pub mod jwks;
pub mod jwt;

use ambit_api::{
    istio::{
        DEFAULT_ROOT_NAMESPACE, WorkloadSelector, authorization_policy::PolicyTargetReference,
    },
    policy_match::BlocksError,
};
use ext_authz::{Checked, Decision};
use http::request::Parts;
use thiserror::Error;

pub use self::{
    authz::{Attributes, Authorization},
    ext_authz::{Answer, ResponseHeaders},
    jwks::Fetcher,
    jwt::{Authentication, Claims, JwtFailure},
};
use crate::{
    config::{CLUSTER_DOMAIN, Config, Role},
    proxy::{Downstream, received::ReceivedBody, upstream::Upstreams},
    table::{ClusterIndex, ConfigError, Problem},
};

/// Why a policy cannot be enforced as written.
#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("`{field}` is empty: a CUSTOM policy names an extension provider of the mesh config")]
    NoProvider { field: String },
    #[error("`{field}: {name}`: {reason}")]
    Provider {
        field: String,
        name: String,
        reason: String,
    },
    #[error(transparent)]
    IpBlock(#[from] BlocksError),
    #[error("`{field}: {value}` is not a port: use a number from 1 to 65535")]
    Port { field: String, value: String },
    #[error("`{field}`: unknown key `{key}`: use one of {known}", known = ambit_api::istio::authorization_policy::ConditionKey::DOCUMENTED)]
    UnknownKey { field: String, key: String },
    #[error("`{field}`: the waypoint cannot check `{key}` yet: remove the condition")]
    UnsupportedKey { field: String, key: String },
    #[error("`{field}`: `{name}` is not a valid header name: use letters, digits and `-`")]
    HeaderName { field: String, name: String },
    #[error("`{field}`: the issuer is empty: set it to the `iss` of the tokens to accept")]
    NoIssuer { field: String },
    #[error("`{field}`: issuer `{issuer}` already has a rule in this policy: merge the two rules")]
    DuplicateIssuer { field: String, issuer: String },
    #[error("`{field}.jwksUri: {uri}` cannot be fetched: {reason}")]
    JwksUri {
        field: String,
        uri: String,
        reason: String,
    },
    #[error("`{field}` needs `jwks` or `jwksUri`: give the issuer's key set")]
    NoJwks { field: String },
    #[error("`{field}.jwks` is not a JSON Web Key Set: {reason}")]
    Jwks { field: String, reason: String },
    #[error("`{field}`: header `{header}` names no claim: set `claim` (`a.b` for a nested one)")]
    NoClaim { field: String, header: String },
}

/// What the policies decided about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Allowed,
    /// 401: it carries a token that does not verify.
    Unauthenticated(JwtFailure),
    /// 403: an AuthorizationPolicy refuses it; names the DENY policy, or none when no
    /// ALLOW policy matched.
    Denied { policy: Option<String> },
    /// A CUSTOM policy's authorizer refused it with this answer (or could not be asked).
    Refused { provider: String, answer: Answer },
}

/// What the policies reach outside the waypoint through.
#[derive(Debug, Clone, Copy)]
pub struct Reach<'a> {
    /// RequestAuthentication key sets (`jwksUri`).
    pub jwks: &'a Fetcher,
    /// External authorizers' services.
    pub upstreams: &'a Upstreams,
}

/// The RequestAuthentications and AuthorizationPolicies this waypoint enforces.
#[derive(Debug, Default)]
pub struct Policies {
    authentication: Authentication,
    authorization: Authorization,
}

impl Policies {
    /// Compiles the policies in `config` that target this waypoint, adding every
    /// problem to `errors`; external authorizers are reached through `clusters`.
    pub fn compile(
        config: &Config,
        clusters: &ClusterIndex,
        errors: &mut Vec<ConfigError>,
    ) -> Self {
        Self {
            authentication: Authentication::compile(config, errors),
            authorization: Authorization::compile(config, clusters, errors),
        }
    }

    /// Authenticates, then authorizes a request for `authority` that arrived on
    /// `downstream`; `service` is the FQDN the authority names, if the waypoint
    /// serves it. An external authorizer may read the start of `body`. A
    /// verified token is removed from the headers unless its rule forwards it. Remote
    /// key sets and external authorizers are reached through `reach`. Headers an
    /// authorizer has for the response are left in the request's extensions
    /// ([`ResponseHeaders`]).
    pub async fn check(
        &self,
        parts: &mut Parts,
        downstream: &Downstream,
        body: &mut ReceivedBody,
        (authority, service): (&str, Option<&str>),
        reach: Reach<'_>,
    ) -> Verdict {
        let query = parts.uri.query();
        let authenticated = self
            .authentication
            .authenticate(&mut parts.headers, query, service, reach.jwks)
            .await;
        let claims = match authenticated {
            Ok(claims) => claims,
            Err(failure) => return Verdict::Unauthenticated(failure),
        };
        let claims = claims.as_ref();
        let custom = Attributes::of(parts, downstream, authority, claims);
        if let Some(authorizer) = self.authorization.custom(&custom, service) {
            let checked = Checked {
                authority,
                peer: &downstream.peer,
                destination: downstream.destination,
            };
            match authorizer
                .check(parts, body, checked, reach.upstreams)
                .await
            {
                Decision::Allowed { downstream } => {
                    if !downstream.is_empty() {
                        parts.extensions.insert(ResponseHeaders(downstream));
                    }
                }
                Decision::Denied(answer) => {
                    return Verdict::Refused {
                        provider: authorizer.provider().to_owned(),
                        answer,
                    };
                }
            }
        }
        // The authorizer may have changed the headers.
        let attributes = Attributes::of(parts, downstream, authority, claims);
        self.authorization.decide(&attributes, service)
    }
}

/// How a policy says what it applies to: a workload `selector`, or references.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    pub selector: Option<&'a WorkloadSelector>,
    pub target_ref: Option<&'a PolicyTargetReference>,
    pub target_refs: &'a [PolicyTargetReference],
}

/// Which requests a policy covers on this waypoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    /// Every request (the policy targets the waypoint).
    All,
    /// Requests for these services (FQDNs).
    Services(Vec<String>),
}

impl Coverage {
    /// How a policy in `namespace` attached by `attachment` applies to the proxy of
    /// `config`; `None` when it does not.
    #[must_use]
    pub fn of(config: &Config, namespace: &str, attachment: Attachment<'_>) -> Option<Self> {
        let Attachment {
            selector,
            target_ref,
            target_refs,
        } = attachment;
        if target_ref.is_none() && target_refs.is_empty() {
            // A workload policy: ztunnel's, and an ingress gateway's when it selects
            // the gateway's pod, as Istio applies it to a gateway's Envoy.
            let selects = |selector: &WorkloadSelector| {
                selector
                    .match_labels
                    .iter()
                    .all(|(key, value)| config.labels.get(key) == Some(value))
            };
            let ingress = matches!(config.role, Role::Ingress(_));
            let in_scope = namespace == config.namespace || namespace == DEFAULT_ROOT_NAMESPACE;
            return (ingress && in_scope && selector.is_none_or(selects)).then_some(Self::All);
        }
        let mut services = Vec::new();
        for reference in target_ref.into_iter().chain(target_refs) {
            let same_namespace = reference.namespace.is_empty() || reference.namespace == namespace;
            if !same_namespace {
                continue;
            }
            match (reference.group.as_str(), reference.kind.as_str()) {
                ("gateway.networking.k8s.io", "Gateway")
                    if reference.name == config.name && namespace == config.namespace =>
                {
                    return Some(Self::All);
                }
                ("" | "core", "Service") => {
                    let host = format!("{}.{namespace}.svc.{CLUSTER_DOMAIN}", reference.name);
                    if config.services.iter().any(|s| s.hostname() == host) {
                        services.push(host);
                    }
                }
                _ => {}
            }
        }
        (!services.is_empty()).then_some(Self::Services(services))
    }

    /// Whether a request for `service` is covered.
    #[must_use]
    pub fn covers(&self, service: Option<&str>) -> bool {
        match self {
            Self::All => true,
            Self::Services(services) => service.is_some_and(|s| services.iter().any(|c| c == s)),
        }
    }
}

/// A problem in one policy object, as a [`ConfigError`].
fn config_error(kind: &'static str, object: String, problem: PolicyError) -> ConfigError {
    ConfigError {
        kind,
        object,
        problem: Problem::Policy(problem),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Service;

    fn reference(group: &str, kind: &str, name: &str) -> PolicyTargetReference {
        PolicyTargetReference {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
            namespace: String::new(),
        }
    }

    #[test]
    fn policies_cover_the_waypoint_or_the_services_they_name() {
        let config = Config {
            namespace: "shop".into(),
            name: "waypoint".into(),
            services: vec![Service {
                namespace: "shop".into(),
                name: "cart".into(),
                ..Service::default()
            }],
            ..Config::default()
        };
        let gateway = reference("gateway.networking.k8s.io", "Gateway", "waypoint");
        assert_eq!(
            Coverage::of(&config, "shop", refs(None, std::slice::from_ref(&gateway))),
            Some(Coverage::All)
        );
        assert_eq!(
            Coverage::of(&config, "other", refs(None, &[gateway])),
            None,
            "a Gateway reference names a waypoint of the policy's namespace"
        );
        let cart = Coverage::of(
            &config,
            "shop",
            refs(Some(&reference("", "Service", "cart")), &[]),
        )
        .expect("the waypoint serves cart");
        assert!(cart.covers(Some("cart.shop.svc.cluster.local")));
        assert!(!cart.covers(Some("web.shop.svc.cluster.local")));
        assert!(!cart.covers(None));
        assert_eq!(
            Coverage::of(
                &config,
                "shop",
                refs(None, &[reference("", "Service", "web")])
            ),
            None,
            "a service the waypoint does not serve"
        );
        assert_eq!(
            Coverage::of(
                &config,
                "shop",
                refs(
                    None,
                    &[reference("gateway.networking.k8s.io", "Gateway", "ingress")]
                )
            ),
            None,
            "another gateway"
        );
        assert_eq!(
            Coverage::of(&config, "shop", refs(None, &[])),
            None,
            "a workload policy is ztunnel's"
        );
    }

    fn refs<'a>(
        target_ref: Option<&'a PolicyTargetReference>,
        target_refs: &'a [PolicyTargetReference],
    ) -> Attachment<'a> {
        Attachment {
            selector: None,
            target_ref,
            target_refs,
        }
    }

    #[test]
    fn workload_policies_cover_the_ingress_gateway_they_select() {
        let config = Config {
            namespace: "istio-system".into(),
            name: "ingress".into(),
            role: Role::Ingress(Vec::new()),
            labels: [("istio".to_owned(), "ingressgateway".to_owned())].into(),
            ..Config::default()
        };
        let selector = |labels: &[(&str, &str)]| WorkloadSelector {
            match_labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        fn by(selector: Option<&WorkloadSelector>) -> Attachment<'_> {
            Attachment {
                selector,
                target_ref: None,
                target_refs: &[],
            }
        }
        let gateway = selector(&[("istio", "ingressgateway")]);
        let other = selector(&[("app", "cart")]);
        assert_eq!(
            Coverage::of(&config, "istio-system", by(Some(&gateway))),
            Some(Coverage::All)
        );
        assert_eq!(
            Coverage::of(&config, "istio-system", by(None)),
            Some(Coverage::All),
            "a root-namespace policy without a selector covers every workload"
        );
        assert_eq!(
            Coverage::of(&config, "istio-system", by(Some(&other))),
            None
        );
        assert_eq!(
            Coverage::of(&config, "shop", by(Some(&gateway))),
            None,
            "a policy of another namespace"
        );
        let waypoint = Config {
            role: Role::Waypoint,
            ..config
        };
        assert_eq!(
            Coverage::of(&waypoint, "istio-system", by(Some(&gateway))),
            None,
            "a waypoint leaves workload policies to ztunnel"
        );
    }
}
