//! Whether a pod belongs in the mesh, decided the way Istio's ambient mode decides it.
//!
//! - a pod labelled `istio.io/dataplane-mode=none` is never enrolled;
//! - a pod labelled `istio.io/dataplane-mode=ambient` is enrolled;
//! - otherwise a pod is enrolled when its namespace is labelled
//!   `istio.io/dataplane-mode=ambient`;
//! - a pod on the host network is never enrolled (it has no network namespace of its own).

use std::{collections::BTreeMap, fmt};

use crate::manifests::Manifests;

/// The label that puts a namespace or pod in (or out of) the mesh.
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// [`DATAPLANE_MODE_LABEL`] value that enrols.
pub const DATAPLANE_MODE_AMBIENT: &str = "ambient";
/// [`DATAPLANE_MODE_LABEL`] value on a pod that opts it out.
pub const DATAPLANE_MODE_NONE: &str = "none";

/// The outcome, with the reason for logs and CNI CHECK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Enrol(EnrolReason),
    Skip(SkipReason),
}

impl Decision {
    #[must_use]
    pub fn enrols(self) -> bool {
        matches!(self, Self::Enrol(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrolReason {
    PodLabel,
    NamespaceLabel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    PodOptedOut,
    HostNetwork,
    NamespaceNotAmbient,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Enrol(EnrolReason::PodLabel) => {
                "enrolled: pod labelled istio.io/dataplane-mode=ambient"
            }
            Self::Enrol(EnrolReason::NamespaceLabel) => {
                "enrolled: namespace labelled istio.io/dataplane-mode=ambient"
            }
            Self::Skip(SkipReason::PodOptedOut) => {
                "not enrolled: pod labelled istio.io/dataplane-mode=none"
            }
            Self::Skip(SkipReason::HostNetwork) => "not enrolled: pod uses the host network",
            Self::Skip(SkipReason::NamespaceNotAmbient) => {
                "not enrolled: namespace not labelled istio.io/dataplane-mode=ambient"
            }
        })
    }
}

/// Decides from the labels of the pod and of its namespace.
#[must_use]
pub fn decide(
    namespace_labels: &BTreeMap<String, String>,
    pod_labels: &BTreeMap<String, String>,
    host_network: bool,
) -> Decision {
    let mode = |labels: &BTreeMap<String, String>| labels.get(DATAPLANE_MODE_LABEL).cloned();
    if host_network {
        return Decision::Skip(SkipReason::HostNetwork);
    }
    match mode(pod_labels).as_deref() {
        Some(DATAPLANE_MODE_NONE) => return Decision::Skip(SkipReason::PodOptedOut),
        Some(DATAPLANE_MODE_AMBIENT) => return Decision::Enrol(EnrolReason::PodLabel),
        _ => {}
    }
    if mode(namespace_labels).as_deref() == Some(DATAPLANE_MODE_AMBIENT) {
        Decision::Enrol(EnrolReason::NamespaceLabel)
    } else {
        Decision::Skip(SkipReason::NamespaceNotAmbient)
    }
}

/// Decides for the pod `namespace/name` from the objects of a config folder. A pod or
/// namespace the folder does not describe counts as unlabelled.
#[must_use]
pub fn decide_from_manifests(manifests: &Manifests, namespace: &str, pod: &str) -> Decision {
    let empty = BTreeMap::new();
    let ns_labels = manifests
        .namespace(namespace)
        .map_or(&empty, |o| &o.metadata.labels);
    let pod_object = manifests.pod(namespace, pod);
    let pod_labels = pod_object.map_or(&empty, |o| &o.metadata.labels);
    let host_network = pod_object.is_some_and(|o| o.spec_flag("hostNetwork"));
    decide(ns_labels, pod_labels, host_network)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(mode: Option<&str>) -> BTreeMap<String, String> {
        mode.map(|m| (DATAPLANE_MODE_LABEL.to_owned(), m.to_owned()))
            .into_iter()
            .collect()
    }

    #[test]
    fn namespace_label_enrols_and_pod_label_overrides() {
        let cases = [
            (None, None, false, false),
            (Some("ambient"), None, false, true),
            (Some("ambient"), Some("none"), false, false),
            (None, Some("ambient"), false, true),
            (Some("ambient"), None, true, false),
            (Some("sidecar"), None, false, false),
        ];
        for (ns, pod, host, expected) in cases {
            let decision = decide(&labels(ns), &labels(pod), host);
            assert_eq!(
                decision.enrols(),
                expected,
                "namespace {ns:?}, pod {pod:?}, hostNetwork {host}: got {decision}"
            );
        }
    }
}
