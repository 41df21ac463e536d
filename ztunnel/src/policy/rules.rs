//! AuthorizationPolicy at L4: the pushed `Authorization` parsed once, then matched
//! against each connection (fields match as the waypoint's do:
//! [`ambit_api::policy_match`]). A policy matches when any rule does; a rule when every
//! clause does; a clause when any of its matches does; a match when every field it sets
//! holds.

use std::net::IpAddr;

use ambit_api::{
    config as pb,
    identity::Identity,
    policy_match::{Blocks, Strings},
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
#[derive(Debug, Clone)]
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

/// Conditions on one connection; every field that is set must hold.
#[derive(Debug, Clone)]
struct Match {
    principals: Strings,
    namespaces: Strings,
    source_ips: Blocks,
    destination_ips: Blocks,
    destination_ports: Vec<u32>,
    not_destination_ports: Vec<u32>,
}

impl Match {
    fn parse(policy: &str, m: &pb::ConnectionMatch) -> Result<Self, PolicyError> {
        let blocks = |field: &str, any: &[String], none: &[String]| {
            Blocks::new(field, any, none).map_err(|source| PolicyError::IpBlock {
                policy: policy.to_owned(),
                source,
            })
        };
        Ok(Self {
            principals: Strings::new(&m.principals, &m.not_principals, false),
            namespaces: Strings::new(&m.namespaces, &m.not_namespaces, false),
            source_ips: blocks("source.ip", &m.source_ips, &m.not_source_ips)?,
            destination_ips: blocks("destination.ip", &m.destination_ips, &m.not_destination_ips)?,
            destination_ports: m.destination_ports.clone(),
            not_destination_ports: m.not_destination_ports.clone(),
        })
    }

    /// A plaintext peer has no principal or namespace: a positive list cannot hold for
    /// it, a negative one always does.
    fn holds(&self, facts: &Facts<'_>) -> bool {
        let connection = facts.connection;
        let namespace = connection
            .source_identity
            .as_ref()
            .map(|identity| identity.namespace.as_str());
        let port = u32::from(connection.destination_port);
        self.principals.matches(facts.principal)
            && self.namespaces.matches(namespace)
            && self.source_ips.matches(connection.source_ip)
            && self.destination_ips.matches(connection.destination_ip)
            && (self.destination_ports.is_empty() || self.destination_ports.contains(&port))
            && !self.not_destination_ports.contains(&port)
    }
}
