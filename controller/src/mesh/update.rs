//! The model brought up to date after some files of the folder changed, redoing only
//! what those files can affect; the result is the model [`build`] makes from scratch
//! (tested below):
//! - the Istio objects are validated and converted again only when a changed file holds
//!   or held one, or had a diagnostic;
//! - workloads, services, endpoints and TLS credentials are resolved again only in the
//!   namespaces of the Pods, Services, Secrets and Namespaces the changed files hold or
//!   held, and in every namespace when a Node changed (its labels are the locality of
//!   the pods on it, wherever they are);
//! - waypoints are resolved again (they are few).
//!
//! A folder with an unreadable file or document, now or at the last build, is rebuilt
//! in full: what keeps its last good version then depends on every file.

use std::{collections::BTreeSet, path::PathBuf};

use ambit_api::manifests::{Manifests, Object};

use super::{Built, build, delegates, istio, objects, objects::Scope, waypoints};
use crate::validate;

/// The files that changed since the last build, and the objects they held then (those
/// they hold now are in the manifests).
#[derive(Debug, Default)]
pub struct FileChanges {
    pub files: BTreeSet<PathBuf>,
    pub removed: Vec<Object>,
}

/// The model of `manifests`, from `previous`, the last build, and the `changes` since:
/// what [`build`]`(manifests, trust_domain, &previous.mesh)` returns, at the cost of
/// what changed.
#[must_use]
pub fn update(
    manifests: &Manifests,
    trust_domain: &str,
    previous: &Built,
    changes: &FileChanges,
) -> Built {
    // A diagnostic without an object is a file or document that could not be read.
    let was_unreadable = previous.diagnostics.iter().any(|d| d.object.is_none());
    if !manifests.errors.is_empty() || was_unreadable {
        return build(manifests, trust_domain, &previous.mesh);
    }
    let touched: Vec<&Object> = changes
        .removed
        .iter()
        .chain(
            manifests
                .objects
                .iter()
                .filter(|o| changes.files.contains(&o.source.file)),
        )
        .collect();
    let mut mesh = previous.mesh.clone();
    let istio_touched = touched.iter().any(|o| validate::checks(o))
        || previous
            .diagnostics
            .iter()
            .any(|d| changes.files.contains(&d.file));
    let (diagnostics, kept) = if istio_touched {
        let resolved = istio::resolve(manifests, &previous.mesh, &mut mesh);
        delegates::resolve(&mut mesh);
        resolved
    } else {
        (previous.diagnostics.clone(), previous.kept.clone())
    };
    let scope = if touched.iter().any(|o| o.kind == "Node") {
        Scope::All
    } else {
        Scope::Namespaces(namespaces(&touched))
    };
    objects::resolve(&mut mesh, manifests, trust_domain, &scope);
    objects::resolve_endpoints(&mut mesh, &scope);
    waypoints::resolve(manifests, &mut mesh);
    Built {
        mesh,
        diagnostics,
        kept,
    }
}

/// The namespaces whose workloads or services `objects` can change.
fn namespaces(objects: &[&Object]) -> BTreeSet<String> {
    objects
        .iter()
        .filter_map(|object| match object.kind.as_str() {
            "Pod" | "Service" | "Secret" => Some(object.namespace()),
            "Namespace" => Some(object.metadata.name.as_str()),
            _ => None,
        })
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::{mesh::Mesh, source::folder::Folder};

    const NAMESPACES: &str = "apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
";

    fn pod(name: &str, namespace: &str, app: &str, node: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{app: {app}}}}}\nspec: {{nodeName: {node}}}\nstatus: {{podIP: {ip}}}\n---\n"
        )
    }

    fn node(name: &str, zone: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{topology.kubernetes.io/region: r1, topology.kubernetes.io/zone: {zone}}}}}\n---\n"
        )
    }

    fn service(name: &str, namespace: &str, app: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {{clusterIP: 10.96.0.1, selector: {{app: {app}}}, ports: [{{port: 80}}]}}\n---\n"
        )
    }

    fn route(name: &str, weight: u32) -> String {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{hosts: [{name}], http: [{{route: [{{destination: {{host: {name}}}, weight: {weight}}}]}}]}}\n---\n"
        )
    }

    fn policy(name: &str, namespace: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec: {{rules: [{{from: [{{source: {{namespaces: [{namespace}]}}}}]}}]}}\n---\n"
        )
    }

    const WAYPOINT: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec: {gatewayClassName: istio-waypoint}
---
apiVersion: v1
kind: Pod
metadata: {name: waypoint-1, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: waypoint}}
spec: {nodeName: n2, serviceAccountName: waypoint}
status: {podIP: 10.0.9.9}
";

    fn secret(name: &str, namespace: &str, cert: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {namespace}}}\ntype: kubernetes.io/tls\nstringData: {{tls.crt: {cert}, tls.key: KEY}}\n---\n"
        )
    }

    const GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 443, protocol: HTTPS}, hosts: ['*'], tls: {mode: SIMPLE, credentialName: cert}}]
";

    /// One edit of the folder: a file written (`Some`) or deleted (`None`).
    type Edit<'a> = (&'a str, &'a str, Option<String>);

    #[test]
    fn updating_after_each_edit_gives_the_model_a_full_build_gives() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let write =
            |file: &str, text: &str| fs::write(dir.path().join(file), text).expect("written");
        write("namespaces.yaml", NAMESPACES);
        write(
            "pods-a.yaml",
            &(pod("cart", "shop", "cart", "n1", "10.0.0.1")
                + &pod("legacy", "plain", "cart", "n1", "10.0.0.2")),
        );
        write("pods-b.yaml", &pod("web", "shop", "web", "n2", "10.0.1.1"));
        write(
            "services.yaml",
            &(service("cart", "shop", "cart") + &service("web", "shop", "web")),
        );
        write("routes.yaml", &(route("cart", 100) + &route("web", 100)));
        write("policies.yaml", &policy("p1", "shop"));
        let mut folder = Folder::load(dir.path()).expect("loaded");
        let mut built = build(folder.manifests(), "cluster.local", &Mesh::default());

        let three_pods = pod("cart", "shop", "cart", "n1", "10.0.0.1")
            + &pod("cart-2", "shop", "cart", "n2", "10.0.0.3")
            + &pod("legacy", "plain", "cart", "n1", "10.0.0.2");
        let edits: Vec<Edit<'_>> = vec![
            (
                "pod relabelled",
                "pods-b.yaml",
                Some(pod("web", "shop", "cart", "n2", "10.0.1.1")),
            ),
            ("pod added", "pods-a.yaml", Some(three_pods.clone())),
            (
                "pod moved and readdressed",
                "pods-a.yaml",
                Some(
                    three_pods
                        .replace("n2", "n3")
                        .replace("10.0.0.3", "10.0.0.4"),
                ),
            ),
            ("node labelled", "nodes.yaml", Some(node("n1", "a"))),
            (
                "node relabelled and another added",
                "nodes.yaml",
                Some(node("n1", "b") + &node("n3", "c")),
            ),
            ("pod deleted", "pods-b.yaml", Some(String::new())),
            (
                "pod defined twice",
                "pods-b.yaml",
                Some(pod("cart", "shop", "other", "n2", "10.0.0.9")),
            ),
            (
                "service changed",
                "services.yaml",
                Some(service("cart", "shop", "other") + &service("web", "shop", "web")),
            ),
            (
                "service added in a new file",
                "more-services.yaml",
                Some(service("extra", "plain", "cart")),
            ),
            (
                "service deleted",
                "services.yaml",
                Some(service("cart", "shop", "other")),
            ),
            (
                "namespace joins the mesh",
                "namespaces.yaml",
                Some(NAMESPACES.replace(
                    "{name: plain}",
                    "{name: plain, labels: {istio.io/dataplane-mode: ambient}}",
                )),
            ),
            (
                "route changed",
                "routes.yaml",
                Some(
                    route("cart", 100)
                        + &route("web", 100)
                            .replace("host: web}", "host: web, port: {number: 80}}"),
                ),
            ),
            (
                "route turned invalid",
                "routes.yaml",
                Some(route("cart", 100) + &route("web", 90)),
            ),
            (
                "pod edited while a route is invalid",
                "pods-b.yaml",
                Some(pod("cart", "shop", "web", "n2", "10.0.0.9")),
            ),
            ("route fixed", "routes.yaml", Some(route("cart", 100))),
            (
                "policy added",
                "policies.yaml",
                Some(policy("p1", "shop") + &policy("p2", "plain")),
            ),
            (
                "policy deleted",
                "policies.yaml",
                Some(policy("p2", "plain")),
            ),
            ("waypoint added", "waypoint.yaml", Some(WAYPOINT.to_owned())),
            (
                "secret added",
                "secrets.yaml",
                Some(secret("cert", "shop", "CERT-1")),
            ),
            (
                "secret renewed",
                "secrets.yaml",
                Some(secret("cert", "shop", "CERT-2")),
            ),
            (
                "istio gateway added",
                "gateway.yaml",
                Some(GATEWAY.to_owned()),
            ),
            ("secret deleted", "secrets.yaml", None),
            (
                "namespace uses the waypoint",
                "namespaces.yaml",
                Some(NAMESPACES.replace(
                    "{istio.io/dataplane-mode: ambient}",
                    "{istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}",
                )),
            ),
            (
                "pods file broken",
                "pods-a.yaml",
                Some("kind: [unclosed".to_owned()),
            ),
            (
                "another file edited while one is broken",
                "policies.yaml",
                Some(policy("p3", "shop")),
            ),
            ("pods file fixed", "pods-a.yaml", Some(three_pods)),
            ("nodes file deleted", "nodes.yaml", None),
            ("pods file deleted", "pods-a.yaml", None),
            ("routes file deleted", "routes.yaml", None),
        ];
        for (what, file, text) in edits {
            match text {
                Some(text) => write(file, &text),
                None => fs::remove_file(dir.path().join(file)).expect("deleted"),
            }
            let changes = folder.reread().expect("reread");
            let updated = update(folder.manifests(), "cluster.local", &built, &changes);
            let full = build(folder.manifests(), "cluster.local", &built.mesh);
            assert!(
                full.mesh != built.mesh || full.diagnostics != built.diagnostics,
                "{what}: the edit changes the model or its diagnostics"
            );
            assert_eq!(
                updated.mesh, full.mesh,
                "{what}: the updated model differs from a full build"
            );
            assert_eq!(
                updated.diagnostics, full.diagnostics,
                "{what}: the diagnostics differ"
            );
            assert_eq!(updated.kept, full.kept, "{what}: the objects kept differ");
            built = updated;
        }
    }
}
