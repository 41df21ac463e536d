//! Which workloads a policy applies to.

use std::collections::{BTreeMap, HashMap};

use ambit_api::config as pb;

use super::PolicyError;

/// A local workload, as policies select it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// The workloads a policy applies to: those of one namespace (`None`: of the mesh) whose
/// labels hold every entry of `selector` (empty: all of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub namespace: Option<String>,
    pub selector: BTreeMap<String, String>,
}

impl Scope {
    /// The scope of a pushed policy of `namespace`.
    ///
    /// # Errors
    /// An unspecified scope.
    pub fn parse(
        policy: &str,
        scope: pb::PolicyScope,
        namespace: &str,
        selector: &HashMap<String, String>,
    ) -> Result<Self, PolicyError> {
        let selector: BTreeMap<String, String> = selector.clone().into_iter().collect();
        let namespace = match scope {
            pb::PolicyScope::Mesh => None,
            pb::PolicyScope::Namespace | pb::PolicyScope::WorkloadSelector => {
                Some(namespace.to_owned())
            }
            pb::PolicyScope::Unspecified => {
                return Err(PolicyError::Unspecified {
                    policy: policy.to_owned(),
                    what: "scope",
                });
            }
        };
        Ok(Self {
            namespace,
            selector,
        })
    }

    /// Whether the policy applies to `workload`.
    #[must_use]
    pub fn applies_to(&self, workload: &Workload) -> bool {
        self.namespace
            .as_ref()
            .is_none_or(|namespace| *namespace == workload.namespace)
            && self
                .selector
                .iter()
                .all(|(k, v)| workload.labels.get(k) == Some(v))
    }

    /// How specific the scope is: workloads by selector (2) over a namespace (1) over
    /// the mesh (0).
    #[must_use]
    pub fn specificity(&self) -> u8 {
        match (&self.namespace, self.selector.is_empty()) {
            (_, false) => 2,
            (Some(_), true) => 1,
            (None, true) => 0,
        }
    }
}
