//! How Istio's telemetry names a workload: the `source_*` / `destination_*` labels
//! every proxy reports (ztunnel's TCP metrics, the waypoint's request metrics), with
//! Istio's fallbacks for app, version and canonical service; and, with the `metrics`
//! feature, Istio's TCP metrics themselves ([`tcp`]).

#[cfg(feature = "metrics")]
pub mod tcp;

use std::collections::BTreeMap;

/// Istio's name for the cluster when none is configured.
pub const CLUSTER: &str = "Kubernetes";
/// What a label says when the proxy cannot know the value.
pub const UNKNOWN: &str = "unknown";

/// Where [`Party::workload`] reads a workload's labels: a map, or a proxy's own compact
/// form of them.
pub trait LabelLookup {
    /// The value of label `key`, if the workload has it.
    fn label(&self, key: &str) -> Option<&str>;
}

impl LabelLookup for BTreeMap<String, String> {
    fn label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

/// One end of a connection, as telemetry names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Party {
    pub workload: String,
    pub namespace: String,
    pub principal: String,
    pub app: String,
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
}

/// A service's name and namespace, read from its FQDN (`name.namespace.svc.<domain>`);
/// `unknown` for what the FQDN does not hold.
#[must_use]
pub fn service_name_and_namespace(hostname: &str) -> (&str, &str) {
    let mut labels = hostname.split('.');
    let name = labels.next().filter(|n| !n.is_empty()).unwrap_or(UNKNOWN);
    (name, labels.next().unwrap_or(UNKNOWN))
}

impl Party {
    /// An end the proxy knows nothing about (a plaintext peer).
    #[must_use]
    pub fn unknown() -> Self {
        Self {
            workload: UNKNOWN.to_owned(),
            namespace: UNKNOWN.to_owned(),
            principal: UNKNOWN.to_owned(),
            app: UNKNOWN.to_owned(),
            version: UNKNOWN.to_owned(),
            canonical_service: UNKNOWN.to_owned(),
            canonical_revision: UNKNOWN.to_owned(),
        }
    }

    /// A workload with its labels, by Istio's rules: canonical service from
    /// `service.istio.io/canonical-name`, `app.kubernetes.io/name`, `app`, else the
    /// workload name; canonical revision from `service.istio.io/canonical-revision`,
    /// `app.kubernetes.io/version`, `version`, else `latest`.
    #[must_use]
    pub fn workload(
        name: &str,
        namespace: &str,
        principal: String,
        labels: &impl LabelLookup,
    ) -> Self {
        let first = |keys: &[&str]| keys.iter().find_map(|k| labels.label(k)).map(str::to_owned);
        Self {
            workload: name.to_owned(),
            namespace: namespace.to_owned(),
            principal,
            app: first(&["app"]).unwrap_or_else(|| UNKNOWN.to_owned()),
            version: first(&["version"]).unwrap_or_else(|| UNKNOWN.to_owned()),
            canonical_service: first(&[
                "service.istio.io/canonical-name",
                "app.kubernetes.io/name",
                "app",
            ])
            .unwrap_or_else(|| name.to_owned()),
            canonical_revision: first(&[
                "service.istio.io/canonical-revision",
                "app.kubernetes.io/version",
                "version",
            ])
            .unwrap_or_else(|| "latest".to_owned()),
        }
    }
}
