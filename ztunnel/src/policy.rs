//! L4 policy at the receiving side: AuthorizationPolicy (ALLOW / DENY on principals,
//! namespaces, IPs and ports) and PeerAuthentication (STRICT refuses plaintext), as the
//! controller pushes them, checked for every inbound connection — HBONE on 15008 and
//! plaintext on 15006 alike.
//!
//! The decision, as Istio makes it: a plaintext connection to a port in STRICT mode is
//! refused; then any matching DENY policy denies; then, if ALLOW policies apply to the
//! workload, one of them must match; otherwise the connection is allowed.
//!
//! Every admitted connection stays registered ([`live`]) while open: a policy change
//! checks them all again and closes those now forbidden. Each denial is logged with the
//! policy that decided and counted in `ambit_policy_denials_total`.
//!
//! # Layout
//! - [`rules`]: AuthorizationPolicy matching;
//! - [`peer_authentication`]: the mTLS mode in force for a workload's port;
//! - [`scope`]: which workloads a policy applies to;
//! - [`live`]: the admitted connections, for re-checking on a change.

pub mod live;
pub mod peer_authentication;
pub mod rules;
pub mod scope;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, PoisonError, RwLock},
};

use ambit_api::config::{ConfigUpdate, resource::Kind};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use tracing::warn;

use self::peer_authentication::{Mode, PeerAuthentication};
pub use self::{
    live::Admission,
    rules::{Action, Authorization, Connection},
    scope::Workload,
};

/// Why a pushed policy cannot be used (the update is NACKed).
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy {policy}: no {what} given; is the controller newer than this ztunnel?")]
    Unspecified { policy: String, what: &'static str },
    #[error("policy {policy}: {source}")]
    IpBlock {
        policy: String,
        source: ambit_api::policy_match::BlocksError,
    },
}

/// Why a connection is refused; the text names the policy that decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error(
        "plaintext refused on port {port}: PeerAuthentication {policy} requires mutual TLS (the client is not in the mesh)"
    )]
    PlaintextRefused { policy: String, port: u16 },
    #[error("denied by AuthorizationPolicy {policy} (DENY)")]
    Denied { policy: String },
    #[error("no ALLOW policy matches ({count} apply to this workload: {names})")]
    NotAllowed { count: usize, names: String },
    #[error(
        "{source_identity} must go through the waypoint {waypoint}: this workload's service uses it (istio.io/use-waypoint)"
    )]
    BypassedWaypoint {
        waypoint: String,
        source_identity: String,
    },
}

impl Denial {
    /// The `policy` label of the denial counter.
    fn policy(&self) -> String {
        match self {
            Self::PlaintextRefused { policy, .. } | Self::Denied { policy } => policy.clone(),
            Self::BypassedWaypoint { waypoint, .. } => waypoint.clone(),
            Self::NotAllowed { .. } => "-".to_owned(),
        }
    }

    /// The `reason` label of the denial counter.
    fn reason(&self) -> &'static str {
        match self {
            Self::PlaintextRefused { .. } => "plaintext_refused",
            Self::Denied { .. } => "denied",
            Self::NotAllowed { .. } => "not_allowed",
            Self::BypassedWaypoint { .. } => "waypoint_bypassed",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    destination_workload: String,
    destination_workload_namespace: String,
    policy: String,
    reason: &'static str,
}

/// The policies and local workloads' labels, replaced by full updates and patched by
/// deltas, as resources by key.
#[derive(Debug, Default, Clone)]
pub struct State {
    authorizations: BTreeMap<String, Authorization>,
    peer_authentications: BTreeMap<String, PeerAuthentication>,
    labels: HashMap<String, BTreeMap<String, String>>,
}

impl State {
    fn check(&self, workload: &Workload, connection: &Connection) -> Result<(), Denial> {
        let labels = self.labels.get(&format!(
            "workload/{}/{}",
            workload.namespace, workload.name
        ));
        let workload = &Workload {
            labels: labels.cloned().unwrap_or_default(),
            ..workload.clone()
        };
        if connection.source_identity.is_none() {
            let port = connection.destination_port;
            let (mode, decided_by) =
                peer_authentication::effective(self.peer_authentications.values(), workload, port);
            if mode == Mode::Strict {
                return Err(Denial::PlaintextRefused {
                    policy: decided_by.map(|p| p.name.clone()).unwrap_or_default(),
                    port,
                });
            }
        }
        let applying: Vec<&Authorization> = self
            .authorizations
            .values()
            .filter(|policy| policy.scope.applies_to(workload))
            .collect();
        if let Some(deny) = applying
            .iter()
            .find(|p| p.action == Action::Deny && p.matches(connection))
        {
            return Err(Denial::Denied {
                policy: deny.name.clone(),
            });
        }
        let allows: Vec<&&Authorization> = applying
            .iter()
            .filter(|p| p.action == Action::Allow)
            .collect();
        if allows.is_empty() || allows.iter().any(|p| p.matches(connection)) {
            return Ok(());
        }
        Err(Denial::NotAllowed {
            count: allows.len(),
            names: allows
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }
}

/// The L4 policies in force on this node, and the connections they admitted.
#[derive(Debug, Default)]
pub struct Policies {
    state: RwLock<Arc<State>>,
    live: Arc<live::Registry>,
    denials: Family<DenialLabels, Counter>,
}

impl Policies {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `ambit_policy_denials_total`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "ambit_policy_denials",
            "Inbound connections refused or closed by L4 policy",
            self.denials.clone(),
        );
    }

    /// The state `update` would produce, or why it cannot be applied. Nothing changes
    /// until [`Self::commit`].
    ///
    /// # Errors
    /// A policy that cannot be parsed.
    pub fn stage(&self, update: &ConfigUpdate) -> Result<State, PolicyError> {
        let mut state = if update.full {
            State::default()
        } else {
            (*self.current()).clone()
        };
        for key in &update.removed {
            state.authorizations.remove(key);
            state.peer_authentications.remove(key);
            state.labels.remove(key);
        }
        for resource in &update.upserted {
            let key = resource.key.clone();
            state.authorizations.remove(&key);
            state.peer_authentications.remove(&key);
            state.labels.remove(&key);
            match &resource.kind {
                Some(Kind::Authorization(policy)) => {
                    state
                        .authorizations
                        .insert(key, Authorization::parse(policy)?);
                }
                Some(Kind::PeerAuthentication(policy)) => {
                    state
                        .peer_authentications
                        .insert(key, PeerAuthentication::parse(policy)?);
                }
                Some(Kind::Workload(workload)) => {
                    state
                        .labels
                        .insert(key, workload.labels.clone().into_iter().collect());
                }
                Some(_) | None => {}
            }
        }
        Ok(state)
    }

    /// Puts `state` in force and closes every open connection it forbids; returns how
    /// many were closed.
    pub fn commit(&self, state: State) -> usize {
        let state = Arc::new(state);
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&state);
        self.live.revoke_where(
            |workload, connection| state.check(workload, connection).err(),
            |workload, connection, denial| {
                warn!(
                    target: "access",
                    direction = "Inbound",
                    src = %connection.source_ip,
                    dst_port = connection.destination_port,
                    workload = %format!("{}/{}", workload.namespace, workload.name),
                    %denial,
                    "closing connection: the new policy forbids it"
                );
                self.count(workload, &denial);
            },
        )
    }

    /// Checks a new inbound connection to `workload`; an admitted one stays registered
    /// (for re-checks on policy changes) until the [`Admission`] is dropped. A denial is
    /// counted; the caller logs it with the connection's details.
    ///
    /// # Errors
    /// The [`Denial`], naming the policy that decided.
    pub fn admit(&self, workload: Workload, connection: Connection) -> Result<Admission, Denial> {
        if let Err(denial) = self.current().check(&workload, &connection) {
            self.count(&workload, &denial);
            return Err(denial);
        }
        Ok(self.live.admit(workload, connection))
    }

    /// How many connections are admitted and open.
    #[must_use]
    pub fn open_connections(&self) -> usize {
        self.live.len()
    }

    /// The policies in force, for the admin config dump.
    #[must_use]
    pub fn dump(&self) -> serde_json::Value {
        let state = self.current();
        serde_json::json!({
            "authorizationPolicies": state.authorizations.values().map(|p| serde_json::json!({
                "name": p.name,
                "action": format!("{:?}", p.action).to_uppercase(),
            })).collect::<Vec<_>>(),
            "peerAuthentications": state
                .peer_authentications
                .values()
                .map(|p| p.name.clone())
                .collect::<Vec<_>>(),
            "openConnections": self.open_connections(),
        })
    }

    fn current(&self) -> Arc<State> {
        Arc::clone(&self.state.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Counts a denial decided outside the policies (a bypassed waypoint).
    pub fn count(&self, workload: &Workload, denial: &Denial) {
        self.denials
            .get_or_create(&DenialLabels {
                destination_workload: workload.name.clone(),
                destination_workload_namespace: workload.namespace.clone(),
                policy: denial.policy(),
                reason: denial.reason(),
            })
            .inc();
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
