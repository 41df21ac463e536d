//! PeerAuthentication at L4: which mode is in force for a workload's port. The most
//! specific policy that says something decides — a port-level setting over the policy's
//! own mode, a selector's over the namespace's over the mesh's; `UNSET` passes the
//! decision up; when nothing decides, PERMISSIVE.

use std::collections::BTreeMap;

use ambit_api::config as pb;

use super::{
    PolicyError,
    scope::{Scope, Workload},
};

/// What a workload accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Unset,
    Disable,
    Permissive,
    Strict,
}

impl From<pb::MtlsMode> for Mode {
    fn from(mode: pb::MtlsMode) -> Self {
        match mode {
            pb::MtlsMode::Unset => Self::Unset,
            pb::MtlsMode::Disable => Self::Disable,
            pb::MtlsMode::Permissive => Self::Permissive,
            pb::MtlsMode::Strict => Self::Strict,
        }
    }
}

/// One PeerAuthentication, ready to resolve.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerAuthentication {
    /// `namespace/name`.
    pub name: String,
    pub scope: Scope,
    mode: Mode,
    port_modes: BTreeMap<u32, Mode>,
}

impl PeerAuthentication {
    /// Parses a pushed policy.
    ///
    /// # Errors
    /// An unspecified scope.
    pub fn parse(policy: &pb::PeerAuthentication) -> Result<Self, PolicyError> {
        let name = format!("{}/{}", policy.namespace, policy.name);
        let scope = Scope::parse(&name, policy.scope(), &policy.namespace, &policy.selector)?;
        let port_modes = policy
            .port_modes
            .iter()
            .map(|(port, mode)| {
                let mode = pb::MtlsMode::try_from(*mode).unwrap_or(pb::MtlsMode::Unset);
                (*port, Mode::from(mode))
            })
            .collect();
        Ok(Self {
            name,
            scope,
            mode: policy.mode().into(),
            port_modes,
        })
    }
}

/// The mode in force for `workload` on `port`, and the policy that set it (`None`: no
/// policy decides, so PERMISSIVE).
pub fn effective<'a>(
    policies: impl IntoIterator<Item = &'a PeerAuthentication>,
    workload: &Workload,
    port: u16,
) -> (Mode, Option<&'a PeerAuthentication>) {
    let mut applying: Vec<&PeerAuthentication> = policies
        .into_iter()
        .filter(|policy| policy.scope.applies_to(workload))
        .collect();
    // Most specific first; among equals, by name, so the choice is stable.
    applying
        .sort_by(|a, b| (b.scope.specificity(), &a.name).cmp(&(a.scope.specificity(), &b.name)));
    for policy in applying {
        let port_mode = policy.port_modes.get(&u32::from(port)).copied();
        for mode in [port_mode, Some(policy.mode)].into_iter().flatten() {
            if mode != Mode::Unset {
                return (mode, Some(policy));
            }
        }
    }
    (Mode::Permissive, None)
}
