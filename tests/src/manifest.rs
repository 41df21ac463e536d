//! Kubernetes objects written as YAML files into the test's config folder (the folder
//! Ambit's binaries read instead of an API server), one object per file.

use std::{
    collections::BTreeMap,
    fs,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::PodSpec;

/// Writes `object` as YAML to `dir/file_name`, atomically (a reader never sees half a
/// file: it is written under a hidden non-YAML name and renamed).
pub(crate) fn write(dir: &Path, file_name: &str, object: &Value) -> Result<PathBuf> {
    if file_name.contains('/') || file_name.starts_with('.') {
        bail!("manifest file name {file_name:?} must be a plain name");
    }
    let path = dir.join(file_name);
    let staging = dir.join(format!(".{file_name}.tmp"));
    let yaml = serde_yaml_ng::to_string(object)
        .with_context(|| format!("cannot render {file_name} as YAML"))?;
    fs::write(&staging, yaml).with_context(|| format!("cannot write {}", staging.display()))?;
    fs::rename(&staging, &path)
        .with_context(|| format!("cannot rename {} to {}", staging.display(), path.display()))?;
    Ok(path)
}

/// A Namespace object.
pub(crate) fn namespace(name: &str, labels: &BTreeMap<String, String>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": name, "labels": labels },
    })
}

/// The file a Namespace is written to.
pub(crate) fn namespace_file(name: &str) -> String {
    format!("namespace-{name}.yaml")
}

/// The file a Pod is written to.
pub(crate) fn pod_file(namespace: &str, name: &str) -> String {
    format!("pod-{namespace}-{name}.yaml")
}

/// A Pod object on node `node_name` (whose underlay address is `host_ip`, when it has
/// one): `Pending` until it has addresses, then `Running` at `ips`, as the kubelet
/// reports it.
pub(crate) fn pod(
    spec: &PodSpec,
    uid: &str,
    node_name: &str,
    host_ip: Option<Ipv4Addr>,
    ips: Option<(Ipv4Addr, Ipv6Addr)>,
) -> Value {
    let mut status = json!({ "phase": "Pending" });
    if let Some(host_ip) = host_ip {
        status["hostIP"] = json!(host_ip.to_string());
    }
    if let Some((ipv4, ipv6)) = ips {
        status["phase"] = json!("Running");
        status["podIP"] = json!(ipv4.to_string());
        status["podIPs"] = json!([{ "ip": ipv4.to_string() }, { "ip": ipv6.to_string() }]);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "uid": uid,
            "labels": spec.labels,
            "annotations": spec.annotations,
        },
        "spec": {
            "nodeName": node_name,
            "serviceAccountName": spec.service_account.as_deref().unwrap_or("default"),
            "containers": [{ "name": "app", "image": "pod-app" }],
        },
        "status": status,
    })
}
