//! The kinds the model reads, as the Kubernetes API serves them, and the synthetic file
//! each object stands in: `kube://<group>/<Kind>/<namespace>/<name>` (`core` for the
//! core group; no namespace for a cluster-scoped kind). The model and its incremental
//! update see an object's apply or delete as a change of that one "file".

use std::path::PathBuf;

use ambit_api::{
    gateway_api,
    istio::{
        DEFAULT_ROOT_NAMESPACE, NETWORKING_GROUP, NETWORKING_VERSIONS, SECURITY_GROUP,
        SECURITY_VERSIONS, TELEMETRY_GROUP, TELEMETRY_VERSIONS,
    },
};
use kube::{Api, Client, api::DynamicObject, discovery::ApiResource};

use crate::validate::MESH_CONFIG_MAP;

/// One kind the model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The API group, empty for the core group.
    pub group: &'static str,
    pub kind: &'static str,
    /// The resource's plural, as in its URL and its CRD's name.
    pub plural: &'static str,
    /// The versions to read it in, preferred first: the first the cluster serves is
    /// watched (the API server converts objects written in another version).
    pub versions: &'static [&'static str],
    pub namespaced: bool,
    /// Watch only this one object (`namespace`, `name`), not every one of the kind.
    pub only: Option<(&'static str, &'static str)>,
}

/// Every kind the model reads: what the folder source would find in a folder.
pub const KINDS: [Kind; 19] = [
    core("Namespace", "namespaces", false),
    core("Pod", "pods", true),
    core("Service", "services", true),
    core("Secret", "secrets", true),
    // Only for its labels: the locality of the pods on it.
    core("Node", "nodes", false),
    networking("VirtualService", "virtualservices"),
    networking("DestinationRule", "destinationrules"),
    networking("Gateway", "gateways"),
    security("AuthorizationPolicy", "authorizationpolicies"),
    security("PeerAuthentication", "peerauthentications"),
    security("RequestAuthentication", "requestauthentications"),
    custom(
        TELEMETRY_GROUP,
        TELEMETRY_VERSIONS,
        "Telemetry",
        "telemetries",
    ),
    custom(
        gateway_api::GROUP,
        gateway_api::VERSIONS,
        "Gateway",
        "gateways",
    ),
    custom(
        gateway_api::GROUP,
        gateway_api::VERSIONS,
        "HTTPRoute",
        "httproutes",
    ),
    custom(
        gateway_api::GROUP,
        gateway_api::GRPC_ROUTE_VERSIONS,
        "GRPCRoute",
        "grpcroutes",
    ),
    custom(
        gateway_api::GROUP,
        gateway_api::TCP_ROUTE_VERSIONS,
        "TCPRoute",
        "tcproutes",
    ),
    custom(
        gateway_api::GROUP,
        gateway_api::TLS_ROUTE_VERSIONS,
        "TLSRoute",
        "tlsroutes",
    ),
    custom(
        gateway_api::GROUP,
        gateway_api::REFERENCE_GRANT_VERSIONS,
        "ReferenceGrant",
        "referencegrants",
    ),
    // Istio's mesh config (its `extensionProviders`), where istiod reads it.
    Kind {
        only: Some((DEFAULT_ROOT_NAMESPACE, MESH_CONFIG_MAP)),
        ..core("ConfigMap", "configmaps", true)
    },
];

const fn core(kind: &'static str, plural: &'static str, namespaced: bool) -> Kind {
    Kind {
        group: "",
        kind,
        plural,
        versions: &["v1"],
        namespaced,
        only: None,
    }
}

const fn networking(kind: &'static str, plural: &'static str) -> Kind {
    custom(NETWORKING_GROUP, NETWORKING_VERSIONS, kind, plural)
}

const fn security(kind: &'static str, plural: &'static str) -> Kind {
    custom(SECURITY_GROUP, SECURITY_VERSIONS, kind, plural)
}

/// A namespaced custom resource.
const fn custom(
    group: &'static str,
    versions: &'static [&'static str],
    kind: &'static str,
    plural: &'static str,
) -> Kind {
    Kind {
        group,
        kind,
        plural,
        versions,
        namespaced: true,
        only: None,
    }
}

impl Kind {
    /// The resource in `version`, for a dynamic `kube::Api`.
    #[must_use]
    pub fn resource(&self, version: &str) -> ApiResource {
        let api_version = if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        };
        ApiResource {
            group: self.group.to_owned(),
            version: version.to_owned(),
            api_version,
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        }
    }

    /// The API to list and watch it with: every namespace, or the one of [`Kind::only`].
    #[must_use]
    pub fn api(&self, client: Client, resource: &ApiResource) -> Api<DynamicObject> {
        match self.only {
            Some((namespace, _)) => Api::namespaced_with(client, namespace, resource),
            None => Api::all_with(client, resource),
        }
    }

    /// The field selector that narrows a list or watch to [`Kind::only`]'s object.
    #[must_use]
    pub fn field_selector(&self) -> Option<String> {
        self.only.map(|(_, name)| format!("metadata.name={name}"))
    }

    /// Its name in logs: the CRD's name (`virtualservices.networking.istio.io`), or the
    /// plural of a core kind.
    #[must_use]
    pub fn name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// How to install its CRD when the cluster does not serve it (TCPRoute and TLSRoute
    /// are in the Gateway API's experimental channel only).
    #[must_use]
    pub fn install_hint(&self) -> &'static str {
        match (self.group, self.kind) {
            (gateway_api::GROUP, "TCPRoute" | "TLSRoute") => {
                "install the Gateway API's experimental-channel CRDs (https://gateway-api.sigs.k8s.io/guides/#install-experimental-channel)"
            }
            (gateway_api::GROUP, _) => {
                "install the Gateway API CRDs (https://gateway-api.sigs.k8s.io/guides/#installing-gateway-api)"
            }
            _ => "install Ambit's CRDs: kubectl apply -f deploy/crds/",
        }
    }

    /// The synthetic file that stands for the object `namespace/name` of this kind.
    #[must_use]
    pub fn file(&self, namespace: Option<&str>, name: &str) -> PathBuf {
        let group = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        let mut file = PathBuf::from(format!("kube://{group}/{}", self.kind));
        if self.namespaced {
            file.push(namespace.unwrap_or("default"));
        }
        file.push(name);
        file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_files() {
        let files: std::collections::BTreeSet<PathBuf> = KINDS
            .iter()
            .map(|kind| kind.file(Some("shop"), "x"))
            .collect();
        assert_eq!(files.len(), KINDS.len(), "two kinds share files: {files:?}");
        assert_eq!(
            KINDS[0].file(None, "shop"),
            PathBuf::from("kube://core/Namespace/shop")
        );
        assert_eq!(
            KINDS[5].file(Some("shop"), "reviews"),
            PathBuf::from("kube://networking.istio.io/VirtualService/shop/reviews")
        );
    }
}
