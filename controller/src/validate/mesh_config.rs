//! Istio's mesh config, where istiod reads it: the `mesh` key of ConfigMap `istio` in
//! the root namespace. Only its `extensionProviders` concern Ambit (the authorizers of
//! CUSTOM AuthorizationPolicies); its other fields are Envoy's and istiod's and are
//! neither read nor reported.

use ambit_api::{
    istio::{DEFAULT_ROOT_NAMESPACE, MeshConfig, mesh_config::Authorizer},
    manifests::Object,
};

use super::{Checked, Findings, Reason};

/// The ConfigMap's name and key.
pub const CONFIG_MAP: &str = "istio";
pub const KEY: &str = "mesh";

/// Whether `object` is the ConfigMap holding the mesh config.
pub(super) fn holds_it(object: &Object) -> bool {
    object.api_version == "v1"
        && object.kind == "ConfigMap"
        && object.metadata.name == CONFIG_MAP
        && object.namespace() == DEFAULT_ROOT_NAMESPACE
}

/// Reads and checks the mesh config in `object` (a [`holds_it`] ConfigMap).
pub(super) fn check(object: &Object, mut findings: Findings) -> Checked<'_, MeshConfig> {
    let path = format!("data.{KEY}");
    let text = object
        .extra
        .get("data")
        .and_then(|data| data.get(KEY))
        .map(|mesh| mesh.as_str().ok_or(()));
    let spec = match text {
        // A ConfigMap without the key: Istio's defaults, no providers.
        None => Some(MeshConfig::default()),
        Some(Err(())) => {
            findings.add(path, Reason::Decode("must be a string of YAML".to_owned()));
            None
        }
        // serde_yaml_ng's errors name the field path and the line within the text.
        Some(Ok(text)) => serde_yaml_ng::from_str(text)
            .map_err(|error| findings.add(path, Reason::Decode(error.to_string())))
            .ok(),
    };
    if let Some(mesh) = &spec {
        check_providers(mesh, &mut findings);
    }
    Checked {
        object,
        spec,
        findings,
    }
}

fn check_providers(mesh: &MeshConfig, findings: &mut Findings) {
    for (index, provider) in mesh.extension_providers.iter().enumerate() {
        let path = format!("data.{KEY}.extensionProviders[{index}]");
        if provider.name.is_empty() {
            findings.add(format!("{path}.name"), Reason::Required("name"));
        } else if mesh.extension_providers[..index]
            .iter()
            .any(|earlier| earlier.name == provider.name)
        {
            findings.add(
                format!("{path}.name"),
                Reason::Duplicate(format!("extensionProviders, as `{}`", provider.name)),
            );
        }
        if let Some(authorizer) = provider.authorizer() {
            check_authorizer(
                &authorizer,
                &format!("{path}.{}", authorizer.kind),
                findings,
            );
        }
    }
}

fn check_authorizer(authorizer: &Authorizer<'_>, path: &str, findings: &mut Findings) {
    if authorizer.service.is_empty() {
        findings.add(format!("{path}.service"), Reason::Required("service"));
    }
    if !(1..=65535).contains(&authorizer.port) {
        findings.add(
            format!("{path}.port"),
            Reason::PortOutOfRange(authorizer.port),
        );
    }
    let status = authorizer.status_on_error;
    if !status.is_empty()
        && !status
            .parse::<u16>()
            .is_ok_and(|s| (200..=599).contains(&s))
    {
        findings.add(
            format!("{path}.statusOnError"),
            Reason::Decode(format!("`{status}` is not an HTTP status: use 200 to 599")),
        );
    }
    if authorizer
        .body
        .is_some_and(|body| body.max_request_bytes == 0)
    {
        findings.add(
            format!("{path}.includeRequestBodyInCheck.maxRequestBytes"),
            Reason::Required("how many bytes of the body to send, 1 or more"),
        );
    }
}

/// Why a CUSTOM policy's `provider` cannot be used with `mesh`; `None` when it can.
pub(super) fn provider_problem(mesh: &MeshConfig, name: &str) -> Option<String> {
    let Some(provider) = mesh.provider(name) else {
        return Some(format!(
            "the mesh config (ConfigMap {DEFAULT_ROOT_NAMESPACE}/{CONFIG_MAP}, key `{KEY}`) has no extension provider `{name}`: add it to `extensionProviders` or correct the name"
        ));
    };
    provider.authorizer().is_none().then(|| {
        format!(
            "`{name}` is no external authorizer: give it envoyExtAuthzHttp or envoyExtAuthzGrpc"
        )
    })
}
