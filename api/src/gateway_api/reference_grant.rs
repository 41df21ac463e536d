//! `ReferenceGrant`: the owners of a namespace allowing objects of another namespace to
//! refer to theirs — what a route attached to a Gateway needs to send traffic to a
//! Service of another namespace (`gateway.networking.k8s.io/v1beta1`).

use serde::{Deserialize, Serialize};

/// The spec of a `ReferenceGrant` (it lives in the namespace of what may be referred to).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ReferenceGrantSpec {
    /// Who may refer: a group, kind and namespace each.
    pub from: Vec<GrantFrom>,
    /// To what here: a group and kind, and a name (`None`: any of that kind).
    pub to: Vec<GrantTo>,
}

/// Objects that may refer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GrantFrom {
    pub group: String,
    pub kind: String,
    pub namespace: String,
}

/// Objects that may be referred to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GrantTo {
    pub group: String,
    pub kind: String,
    pub name: Option<String>,
}

impl ReferenceGrantSpec {
    /// Whether this grant (in the namespace of the Service `service`) lets a `kind` of
    /// the Gateway API in `namespace` refer to that Service.
    #[must_use]
    pub fn allows(&self, (kind, namespace): (&str, &str), service: &str) -> bool {
        self.from.iter().any(|from| {
            from.group == super::GROUP && from.kind == kind && from.namespace == namespace
        }) && self.to.iter().any(|to| {
            to.group.is_empty()
                && to.kind == "Service"
                && to.name.as_deref().is_none_or(|name| name == service)
        })
    }
}
