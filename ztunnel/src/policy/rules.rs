//! AuthorizationPolicy at L4: the pushed `Authorization` parsed once, then matched
//! against each connection. A policy matches when any rule does; a rule when every
//! clause does; a clause when any of its matches does; a match when every field it sets
//! holds.

use std::net::IpAddr;

use ambit_api::{
    config as pb,
    identity::Identity,
    ip_block::{self, IpNet},
};

use super::{PolicyError, scope::Scope};

/// What ztunnel knows of an inbound connection when it decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub source_ip: IpAddr,
    /// The peer's certificate identity; `None` for plaintext.
    pub source_identity: Option<Identity>,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
}

impl Connection {
    /// The peer's principal as policies write it: the SPIFFE ID without `spiffe://`.
    fn principal(&self) -> Option<String> {
        self.source_identity.as_ref().map(|identity| {
            format!(
                "{}/ns/{}/sa/{}",
                identity.trust_domain, identity.namespace, identity.service_account
            )
        })
    }
}

/// ALLOW or DENY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

/// One AuthorizationPolicy, ready to match.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorization {
    /// `namespace/name`.
    pub name: String,
    pub scope: Scope,
    pub action: Action,
    rules: Vec<Vec<Vec<Match>>>,
}

impl Authorization {
    /// Parses a pushed policy.
    ///
    /// # Errors
    /// An unknown action or scope, or an address that is not a CIDR.
    pub fn parse(policy: &pb::Authorization) -> Result<Self, PolicyError> {
        let name = format!("{}/{}", policy.namespace, policy.name);
        let action = match policy.action() {
            pb::AuthorizationAction::Allow => Action::Allow,
            pb::AuthorizationAction::Deny => Action::Deny,
            pb::AuthorizationAction::Unspecified => {
                return Err(PolicyError::Unspecified {
                    policy: name,
                    what: "action",
                });
            }
        };
        let scope = Scope::parse(&name, policy.scope(), &policy.namespace, &policy.selector)?;
        let rules = policy
            .rules
            .iter()
            .map(|rule| {
                rule.clauses
                    .iter()
                    .map(|clause| {
                        clause
                            .matches
                            .iter()
                            .map(|m| Match::parse(&name, m))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name,
            scope,
            action,
            rules,
        })
    }

    /// Whether any rule matches `connection`.
    #[must_use]
    pub fn matches(&self, connection: &Connection) -> bool {
        let principal = connection.principal();
        let facts = Facts {
            connection,
            principal: principal.as_deref(),
        };
        self.rules.iter().any(|clauses| {
            clauses
                .iter()
                .all(|alternatives| alternatives.iter().any(|m| m.holds(&facts)))
        })
    }
}

struct Facts<'a> {
    connection: &'a Connection,
    principal: Option<&'a str>,
}

/// Conditions on one connection; every non-empty field must hold.
#[derive(Debug, Clone, PartialEq, Default)]
struct Match {
    principals: Vec<Pattern>,
    not_principals: Vec<Pattern>,
    namespaces: Vec<Pattern>,
    not_namespaces: Vec<Pattern>,
    source_ips: Vec<IpNet>,
    not_source_ips: Vec<IpNet>,
    destination_ips: Vec<IpNet>,
    not_destination_ips: Vec<IpNet>,
    destination_ports: Vec<u32>,
    not_destination_ports: Vec<u32>,
}

impl Match {
    fn parse(policy: &str, m: &pb::ConnectionMatch) -> Result<Self, PolicyError> {
        let patterns = |texts: &[String]| texts.iter().map(|t| Pattern::new(t)).collect();
        let nets = |texts: &[String]| {
            texts
                .iter()
                .map(|text| {
                    ip_block::parse(text).map_err(|source| PolicyError::IpBlock {
                        policy: policy.to_owned(),
                        source,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            principals: patterns(&m.principals),
            not_principals: patterns(&m.not_principals),
            namespaces: patterns(&m.namespaces),
            not_namespaces: patterns(&m.not_namespaces),
            source_ips: nets(&m.source_ips)?,
            not_source_ips: nets(&m.not_source_ips)?,
            destination_ips: nets(&m.destination_ips)?,
            not_destination_ips: nets(&m.not_destination_ips)?,
            destination_ports: m.destination_ports.clone(),
            not_destination_ports: m.not_destination_ports.clone(),
        })
    }

    fn holds(&self, facts: &Facts<'_>) -> bool {
        let connection = facts.connection;
        let namespace = connection
            .source_identity
            .as_ref()
            .map(|identity| identity.namespace.as_str());
        let port = u32::from(connection.destination_port);
        // A plaintext peer has no principal or namespace: a positive list cannot hold,
        // a negative one always does.
        let names = |patterns: &[Pattern], value: Option<&str>| {
            patterns.is_empty() || value.is_some_and(|v| patterns.iter().any(|p| p.matches(v)))
        };
        let not_names = |patterns: &[Pattern], value: Option<&str>| {
            value.is_none_or(|v| !patterns.iter().any(|p| p.matches(v)))
        };
        let within =
            |nets: &[IpNet], ip: IpAddr| nets.is_empty() || nets.iter().any(|n| n.contains(&ip));
        let outside = |nets: &[IpNet], ip: IpAddr| !nets.iter().any(|n| n.contains(&ip));
        names(&self.principals, facts.principal)
            && not_names(&self.not_principals, facts.principal)
            && names(&self.namespaces, namespace)
            && not_names(&self.not_namespaces, namespace)
            && within(&self.source_ips, connection.source_ip)
            && outside(&self.not_source_ips, connection.source_ip)
            && within(&self.destination_ips, connection.destination_ip)
            && outside(&self.not_destination_ips, connection.destination_ip)
            && (self.destination_ports.is_empty() || self.destination_ports.contains(&port))
            && !self.not_destination_ports.contains(&port)
    }
}

/// Istio's policy string match: exact, `prefix*`, `*suffix`, or `*` (anything present).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
}

impl Pattern {
    fn new(text: &str) -> Self {
        if text == "*" {
            Self::Any
        } else if let Some(prefix) = text.strip_suffix('*') {
            Self::Prefix(prefix.to_owned())
        } else if let Some(suffix) = text.strip_prefix('*') {
            Self::Suffix(suffix.to_owned())
        } else {
            Self::Exact(text.to_owned())
        }
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(exact) => value == exact,
            Self::Prefix(prefix) => value.starts_with(prefix.as_str()),
            Self::Suffix(suffix) => value.ends_with(suffix.as_str()),
        }
    }
}
