//! `AuthorizationPolicy` at L7: each rule compiled once, then every request decided as
//! Istio documents it. A matching CUSTOM policy's external authorizer is asked first
//! ([`super::ext_authz`]; the first such policy's, in the order policies are listed).
//! Then a DENY policy with a matching rule refuses the request (DENY wins);
//! otherwise, if any ALLOW policy covers the request, one of its rules must match; with no
//! ALLOW policy the request is allowed. AUDIT policies decide nothing: a match is logged.
//! A policy without rules matches nothing (an ALLOW one then denies everything); a rule
//! without `from`, `to` and `when` matches everything.
//!
//! Paths are matched without the query; hosts without case, with or without the port.
//! `remoteIpBlocks` and `remote.ip` read the peer's address, as Istio does without
//! trusted proxies (no `X-Forwarded-For`); `destination.ip` the address the client
//! addressed (over HBONE the service VIP).

use std::{net::SocketAddr, sync::Arc};

use ambit_api::{
    istio::{
        AuthorizationPolicySpec,
        authorization_policy::{
            Action, Condition, ConditionKey, Operation, Rule as RuleSpec, Source,
        },
    },
    policy_match::{Blocks, Strings},
};
use http::{HeaderMap, HeaderName, request::Parts};

use super::{
    Attachment, Coverage, PolicyError, Verdict, config_error, ext_authz::ExtAuthz, jwt::Claims,
};
use crate::{
    config::{Config, Named},
    host::split_authority,
    proxy::{Downstream, Peer},
    table::{ClusterIndex, ConfigError},
};

/// What a request is judged on.
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    pub peer: &'a Peer,
    pub method: &'a str,
    /// As the client sent it, port included.
    pub authority: &'a str,
    /// Without the query.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The address the client addressed: a service VIP and port over HBONE, the
    /// listener's own on a plain listener (`destination.ip`, `destination.port`).
    pub destination: SocketAddr,
    /// The verified token's claims, if the request carried one.
    pub claims: Option<&'a Claims>,
    /// The TLS server name the client asked for, on a port that terminates TLS.
    pub sni: Option<&'a str>,
}

impl<'a> Attributes<'a> {
    /// The attributes of the request `parts` for `authority` on the connection
    /// `downstream`.
    #[must_use]
    pub fn of(
        parts: &'a Parts,
        downstream: &'a Downstream,
        authority: &'a str,
        claims: Option<&'a Claims>,
    ) -> Self {
        Self {
            peer: &downstream.peer,
            method: parts.method.as_str(),
            authority,
            path: parts.uri.path(),
            headers: &parts.headers,
            destination: downstream.destination,
            claims,
            sni: downstream.sni.as_deref(),
        }
    }
}

/// The AuthorizationPolicies that target this waypoint.
#[derive(Debug, Default)]
pub struct Authorization {
    policies: Vec<Policy>,
}

#[derive(Debug)]
struct Policy {
    object: String,
    action: Action,
    coverage: Coverage,
    rules: Vec<Rule>,
    /// A CUSTOM policy's authorizer.
    provider: Option<Arc<ExtAuthz>>,
}

#[derive(Debug)]
struct Rule {
    from: Vec<SourceMatch>,
    to: Vec<OperationMatch>,
    when: Vec<When>,
}

#[derive(Debug)]
struct SourceMatch {
    principals: Strings,
    request_principals: Strings,
    namespaces: Strings,
    ip_blocks: Blocks,
    remote_ip_blocks: Blocks,
}

#[derive(Debug)]
struct OperationMatch {
    hosts: Strings,
    methods: Strings,
    paths: Strings,
    ports: Strings,
}

#[derive(Debug)]
struct When {
    attribute: Attribute,
    test: Test,
}

/// What a `when.key` reads.
#[derive(Debug)]
enum Attribute {
    Header(HeaderName),
    /// `request.auth.claims[a][b]`: the path into nested claims.
    Claim(Vec<String>),
    RequestPrincipal,
    Audiences,
    Presenter,
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    DestinationIp,
    DestinationPort,
    /// `connection.sni`.
    Sni,
}

#[derive(Debug)]
enum Test {
    Strings(Strings),
    Blocks(Blocks),
}

impl Authorization {
    /// Compiles the policies of `config` that target this waypoint; a CUSTOM one's
    /// authorizer is reached through its service's cluster in `clusters`.
    pub fn compile(
        config: &Config,
        clusters: &ClusterIndex,
        errors: &mut Vec<ConfigError>,
    ) -> Self {
        let policies = config
            .authorization_policies
            .iter()
            .filter_map(|named| {
                let spec = &named.spec;
                let coverage = Coverage::of(
                    config,
                    &named.namespace,
                    Attachment {
                        selector: spec.selector.as_ref(),
                        target_ref: spec.target_ref.as_ref(),
                        target_refs: &spec.target_refs,
                    },
                )?;
                Policy::compile(named, coverage, config, clusters)
                    .map_err(|problems| {
                        errors.extend(problems.into_iter().map(|problem| {
                            config_error("AuthorizationPolicy", named.key(), problem)
                        }));
                    })
                    .ok()
            })
            .collect();
        Self { policies }
    }

    /// The external authorizer to ask about `request`: that of the first CUSTOM policy
    /// that matches it.
    pub fn custom(&self, request: &Attributes<'_>, service: Option<&str>) -> Option<&ExtAuthz> {
        self.policies
            .iter()
            .filter(|p| p.action == Action::Custom && p.coverage.covers(service))
            .find(|p| p.matches(request))
            .and_then(|p| p.provider.as_deref())
    }

    /// DENY, then ALLOW, as Istio decides; AUDIT matches are logged.
    pub fn decide(&self, request: &Attributes<'_>, service: Option<&str>) -> Verdict {
        let covering = || self.policies.iter().filter(|p| p.coverage.covers(service));
        for policy in covering().filter(|p| p.action == Action::Audit) {
            if policy.matches(request) {
                tracing::info!(
                    policy = policy.object,
                    path = request.path,
                    "AuthorizationPolicy audit match"
                );
            }
        }
        if let Some(deny) = covering().find(|p| p.action == Action::Deny && p.matches(request)) {
            return Verdict::Denied {
                policy: Some(deny.object.clone()),
            };
        }
        let mut allows = covering().filter(|p| p.action == Action::Allow).peekable();
        if allows.peek().is_none() {
            return Verdict::Allowed;
        }
        if allows.any(|p| p.matches(request)) {
            Verdict::Allowed
        } else {
            Verdict::Denied { policy: None }
        }
    }
}

impl Policy {
    fn compile(
        named: &Named<AuthorizationPolicySpec>,
        coverage: Coverage,
        config: &Config,
        clusters: &ClusterIndex,
    ) -> Result<Self, Vec<PolicyError>> {
        let spec = &named.spec;
        let mut problems = Vec::new();
        let provider = (spec.action == Action::Custom)
            .then(|| {
                let name = spec.provider.as_ref().map_or("", |p| p.name.as_str());
                ExtAuthz::compile("provider.name", name, &config.mesh, clusters)
                    .map_err(|e| problems.push(e))
                    .ok()
                    .map(Arc::new)
            })
            .flatten();
        let rules = spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| Rule::compile(&format!("rules[{i}]"), rule, &mut problems))
            .collect();
        if problems.is_empty() {
            Ok(Self {
                object: named.key(),
                action: spec.action,
                coverage,
                rules,
                provider,
            })
        } else {
            Err(problems)
        }
    }

    fn matches(&self, request: &Attributes<'_>) -> bool {
        self.rules.iter().any(|rule| rule.matches(request))
    }
}

impl Rule {
    fn compile(field: &str, spec: &RuleSpec, problems: &mut Vec<PolicyError>) -> Self {
        let from = spec
            .from
            .iter()
            .enumerate()
            .filter_map(|(i, from)| {
                SourceMatch::compile(&format!("{field}.from[{i}].source"), &from.source)
                    .map_err(|e| problems.push(e))
                    .ok()
            })
            .collect();
        let to = spec
            .to
            .iter()
            .enumerate()
            .filter_map(|(i, to)| {
                OperationMatch::compile(&format!("{field}.to[{i}].operation"), &to.operation)
                    .map_err(|e| problems.push(e))
                    .ok()
            })
            .collect();
        let when = spec
            .when
            .iter()
            .enumerate()
            .filter_map(|(i, condition)| {
                When::compile(&format!("{field}.when[{i}]"), condition)
                    .map_err(|e| problems.push(e))
                    .ok()
            })
            .collect();
        Self { from, to, when }
    }

    fn matches(&self, request: &Attributes<'_>) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(request)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(request)))
            && self.when.iter().all(|w| w.matches(request))
    }
}

impl SourceMatch {
    fn compile(field: &str, source: &Source) -> Result<Self, PolicyError> {
        Ok(Self {
            principals: Strings::new(&source.principals, &source.not_principals, false),
            request_principals: Strings::new(
                &source.request_principals,
                &source.not_request_principals,
                false,
            ),
            namespaces: Strings::new(&source.namespaces, &source.not_namespaces, false),
            ip_blocks: Blocks::new(
                &format!("{field}.ipBlocks"),
                &source.ip_blocks,
                &source.not_ip_blocks,
            )?,
            remote_ip_blocks: Blocks::new(
                &format!("{field}.remoteIpBlocks"),
                &source.remote_ip_blocks,
                &source.not_remote_ip_blocks,
            )?,
        })
    }

    fn matches(&self, request: &Attributes<'_>) -> bool {
        let principal = principal(request.peer);
        let namespace = request
            .peer
            .identity
            .as_ref()
            .map(|id| id.namespace.as_str());
        let request_principal = request.claims.map(|c| c.principal.as_str());
        self.principals.matches(principal.as_deref())
            && self.namespaces.matches(namespace)
            && self.request_principals.matches(request_principal)
            && self.ip_blocks.matches(request.peer.ip)
            && self.remote_ip_blocks.matches(request.peer.ip)
    }
}

impl OperationMatch {
    fn compile(field: &str, operation: &Operation) -> Result<Self, PolicyError> {
        for (name, ports) in [
            ("ports", &operation.ports),
            ("notPorts", &operation.not_ports),
        ] {
            check_ports(&format!("{field}.{name}"), ports)?;
        }
        Ok(Self {
            hosts: Strings::new(&operation.hosts, &operation.not_hosts, true),
            methods: Strings::new(&operation.methods, &operation.not_methods, false),
            paths: Strings::new(&operation.paths, &operation.not_paths, false),
            ports: Strings::new(&operation.ports, &operation.not_ports, false),
        })
    }

    fn matches(&self, request: &Attributes<'_>) -> bool {
        let authority = request.authority.to_ascii_lowercase();
        let host = split_authority(&authority).0;
        let port = request.destination.port().to_string();
        self.hosts.matches([authority.as_str(), host])
            && self.methods.matches([request.method])
            && self.paths.matches([request.path])
            && self.ports.matches([port.as_str()])
    }
}

impl When {
    fn compile(field: &str, condition: &Condition) -> Result<Self, PolicyError> {
        let key = condition.key.as_str();
        let unsupported = || PolicyError::UnsupportedKey {
            field: format!("{field}.key"),
            key: key.to_owned(),
        };
        let attribute = match ConditionKey::parse(key) {
            None => {
                return Err(PolicyError::UnknownKey {
                    field: format!("{field}.key"),
                    key: key.to_owned(),
                });
            }
            Some(ConditionKey::SourceIp) => Attribute::SourceIp,
            Some(ConditionKey::RemoteIp) => Attribute::RemoteIp,
            Some(ConditionKey::SourceNamespace) => Attribute::SourceNamespace,
            Some(ConditionKey::SourcePrincipal) => Attribute::SourcePrincipal,
            Some(ConditionKey::DestinationPort) => Attribute::DestinationPort,
            Some(ConditionKey::DestinationIp) => Attribute::DestinationIp,
            Some(ConditionKey::L7) => l7_attribute(field, key)?.ok_or_else(unsupported)?,
        };
        if matches!(attribute, Attribute::DestinationPort) {
            check_ports(&format!("{field}.values"), &condition.values)?;
            check_ports(&format!("{field}.notValues"), &condition.not_values)?;
        }
        let test = if matches!(
            attribute,
            Attribute::SourceIp | Attribute::RemoteIp | Attribute::DestinationIp
        ) {
            Test::Blocks(Blocks::new(
                &format!("{field}.values"),
                &condition.values,
                &condition.not_values,
            )?)
        } else {
            Test::Strings(Strings::new(
                &condition.values,
                &condition.not_values,
                false,
            ))
        };
        Ok(Self { attribute, test })
    }

    fn matches(&self, request: &Attributes<'_>) -> bool {
        let strings = match &self.test {
            Test::Blocks(blocks) => {
                return blocks.matches(match self.attribute {
                    Attribute::DestinationIp => request.destination.ip().to_canonical(),
                    _ => request.peer.ip,
                });
            }
            Test::Strings(strings) => strings,
        };
        let claims = request.claims;
        match &self.attribute {
            Attribute::Header(name) => {
                let joined = join_header(request.headers, name);
                strings.matches(joined.as_deref())
            }
            Attribute::Claim(path) => {
                strings.matches(claims.map(|c| c.values(path)).unwrap_or_default())
            }
            Attribute::RequestPrincipal => strings.matches(claims.map(|c| c.principal.as_str())),
            Attribute::Audiences => {
                strings.matches(claims.map(|c| c.values(&["aud"])).unwrap_or_default())
            }
            Attribute::Presenter => {
                strings.matches(claims.map(|c| c.values(&["azp"])).unwrap_or_default())
            }
            Attribute::SourceNamespace => strings.matches(
                request
                    .peer
                    .identity
                    .as_ref()
                    .map(|id| id.namespace.as_str()),
            ),
            Attribute::SourcePrincipal => strings.matches(principal(request.peer).as_deref()),
            Attribute::DestinationPort => {
                strings.matches([request.destination.port().to_string().as_str()])
            }
            Attribute::Sni => strings.matches(request.sni),
            Attribute::SourceIp | Attribute::RemoteIp | Attribute::DestinationIp => false,
        }
    }
}

/// The L7 attribute a key names; `None` for the ones the waypoint cannot read yet.
fn l7_attribute(field: &str, key: &str) -> Result<Option<Attribute>, PolicyError> {
    Ok(Some(match key {
        "request.auth.principal" => Attribute::RequestPrincipal,
        "request.auth.audiences" => Attribute::Audiences,
        "request.auth.presenter" => Attribute::Presenter,
        "connection.sni" => Attribute::Sni,
        _ => {
            if let Some(name) = indexed(key, "request.headers[") {
                let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    PolicyError::HeaderName {
                        field: format!("{field}.key"),
                        name: name.to_owned(),
                    }
                })?;
                Attribute::Header(header)
            } else if let Some(path) = indexed(key, "request.auth.claims[") {
                Attribute::Claim(path.split("][").map(str::to_owned).collect())
            } else {
                return Ok(None);
            }
        }
    }))
}

/// `name` in `prefix` + `name]`.
fn indexed<'k>(key: &'k str, prefix: &str) -> Option<&'k str> {
    key.strip_prefix(prefix)?
        .strip_suffix(']')
        .filter(|name| !name.is_empty())
}

fn check_ports(field: &str, ports: &[String]) -> Result<(), PolicyError> {
    match ports
        .iter()
        .find(|p| p.parse::<u16>().map_or(true, |p| p == 0))
    {
        Some(bad) => Err(PolicyError::Port {
            field: field.to_owned(),
            value: bad.clone(),
        }),
        None => Ok(()),
    }
}

/// The peer's principal as policies write it: the identity without `spiffe://`.
fn principal(peer: &Peer) -> Option<String> {
    let id = peer.identity.as_ref()?;
    Some(format!(
        "{}/ns/{}/sa/{}",
        id.trust_domain, id.namespace, id.service_account
    ))
}

/// All values of a header, comma-joined as Envoy's header matcher sees them.
fn join_header(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

#[cfg(test)]
mod tests;
