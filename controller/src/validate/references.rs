//! Pass 4: references between objects. A subset a VirtualService route names must be
//! defined by a DestinationRule for that host, visible from the route's namespace; a
//! Gateway a VirtualService binds to should exist (a warning, as `istioctl analyze`
//! gives: the VirtualService applies as soon as the Gateway appears).
//!
//! Hosts are compared resolved ([`hosts::resolve`]): `reviews` in a VirtualService of
//! `shop` and `reviews` in a DestinationRule of `shop` are both
//! `reviews.shop.svc.cluster.local`; a DestinationRule for `*.shop.svc.cluster.local`
//! covers it too. A subset defined by any visible DestinationRule for the host counts
//! (Istio picks one rule per host; this check is deliberately lenient there).
//!
//! The index of subsets is read from every DestinationRule's raw `spec`, even one
//! rejected for another reason, so one mistake in a rule does not also flag every route
//! that uses it.

use std::collections::BTreeSet;

use ambit_api::{
    istio::{self, VirtualServiceSpec, virtual_service::Destination},
    manifests::Object,
};
use serde_yaml_ng::Value;

use super::{Checked, Findings, Reason};
use crate::hosts;

/// What a DestinationRule says about subsets.
#[derive(Debug)]
struct RuleSubsets {
    namespace: String,
    /// Resolved in `namespace`.
    host: String,
    export_to: Vec<String>,
    subsets: Vec<String>,
}

/// Everything pass 4 needs to know about the other objects.
#[derive(Debug)]
pub(super) struct References {
    rules: Vec<RuleSubsets>,
    /// VirtualServices (`namespace`, `name`) that an HTTP route delegates to.
    delegate_targets: BTreeSet<(String, String)>,
    /// Istio Gateways (`namespace`, `name`).
    gateways: BTreeSet<(String, String)>,
}

impl References {
    pub(super) fn new(
        objects: &[Object],
        virtual_services: &[Checked<'_, VirtualServiceSpec>],
    ) -> Self {
        let networking = |o: &&Object, kind: &str| {
            o.kind == kind
                && o.api_version.split_once('/').map(|(group, _)| group)
                    == Some(istio::NETWORKING_GROUP)
        };
        let gateways = objects
            .iter()
            .filter(|o| networking(o, "Gateway"))
            .map(|o| (o.namespace().to_owned(), o.metadata.name.clone()))
            .collect();
        let rules = objects
            .iter()
            .filter(|o| networking(o, "DestinationRule"))
            .filter_map(|o| {
                let host = o.spec.get("host")?.as_str()?;
                Some(RuleSubsets {
                    namespace: o.namespace().to_owned(),
                    host: hosts::resolve(host, o.namespace()),
                    export_to: strings(o.spec.get("exportTo"), Value::as_str),
                    subsets: strings(o.spec.get("subsets"), |s| s.get("name")?.as_str()),
                })
            })
            .collect();
        let delegate_targets = virtual_services
            .iter()
            .filter_map(|vs| Some((vs.object, vs.spec.as_ref()?)))
            .flat_map(|(object, spec)| {
                spec.http.iter().filter_map(|route| {
                    let delegate = route.delegate.as_ref()?;
                    let namespace = if delegate.namespace.is_empty() {
                        object.namespace()
                    } else {
                        &delegate.namespace
                    };
                    Some((namespace.to_owned(), delegate.name.clone()))
                })
            })
            .collect();
        Self {
            rules,
            delegate_targets,
            gateways,
        }
    }

    /// Warns about each Gateway a VirtualService in `namespace` binds to that does not
    /// exist (`mesh` is not a Gateway).
    pub(super) fn check_gateways(
        &self,
        namespace: &str,
        spec: &VirtualServiceSpec,
        findings: &mut Findings,
    ) {
        for (i, reference) in spec.gateways.iter().enumerate() {
            if reference == "mesh" {
                continue;
            }
            let (gateway_namespace, name) =
                reference.split_once('/').unwrap_or((namespace, reference));
            if !self
                .gateways
                .contains(&(gateway_namespace.to_owned(), name.to_owned()))
            {
                findings.add(
                    format!("spec.gateways[{i}]"),
                    Reason::UnknownGateway(format!("{gateway_namespace}/{name}")),
                );
            }
        }
    }

    /// Whether another VirtualService delegates to `object`.
    pub(super) fn is_delegate_target(&self, object: &Object) -> bool {
        self.delegate_targets
            .contains(&(object.namespace().to_owned(), object.metadata.name.clone()))
    }

    /// Checks every destination of a VirtualService in `namespace` that names a subset.
    pub(super) fn check_subsets(
        &self,
        namespace: &str,
        spec: &VirtualServiceSpec,
        findings: &mut Findings,
    ) {
        let mut check = |path: String, destination: &Destination| {
            if !destination.subset.is_empty() && !destination.host.is_empty() {
                self.check_subset(namespace, &path, destination, findings);
            }
        };
        for (i, route) in spec.http.iter().enumerate() {
            for (j, target) in route.route.iter().enumerate() {
                check(
                    format!("spec.http[{i}].route[{j}].destination"),
                    &target.destination,
                );
            }
            if let Some(mirror) = &route.mirror {
                check(format!("spec.http[{i}].mirror"), mirror);
            }
            for (j, mirror) in route.mirrors.iter().enumerate() {
                check(
                    format!("spec.http[{i}].mirrors[{j}].destination"),
                    &mirror.destination,
                );
            }
        }
        for (i, route) in spec.tls.iter().enumerate() {
            for (j, target) in route.route.iter().enumerate() {
                check(
                    format!("spec.tls[{i}].route[{j}].destination"),
                    &target.destination,
                );
            }
        }
        for (i, route) in spec.tcp.iter().enumerate() {
            for (j, target) in route.route.iter().enumerate() {
                check(
                    format!("spec.tcp[{i}].route[{j}].destination"),
                    &target.destination,
                );
            }
        }
    }

    fn check_subset(
        &self,
        namespace: &str,
        path: &str,
        destination: &Destination,
        findings: &mut Findings,
    ) {
        let host = hosts::resolve(&destination.host, namespace);
        let defined: BTreeSet<&str> = self
            .rules
            .iter()
            .filter(|rule| {
                hosts::matches(&rule.host, &host)
                    && hosts::visible(&rule.export_to, &rule.namespace, namespace)
            })
            .flat_map(|rule| rule.subsets.iter().map(String::as_str))
            .collect();
        if !defined.contains(destination.subset.as_str()) {
            findings.add(
                format!("{path}.subset"),
                Reason::UnknownSubset {
                    subset: destination.subset.clone(),
                    host,
                    defined: defined.into_iter().map(str::to_owned).collect(),
                },
            );
        }
    }
}

/// The strings `pick` finds in each item of a YAML list (none when it is not a list).
fn strings(list: Option<&Value>, pick: impl Fn(&Value) -> Option<&str>) -> Vec<String> {
    list.and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|item| pick(item).map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use ambit_api::manifests::Manifests;

    use super::*;
    use crate::validate::{decode, fields::tests::found};

    /// Reads `yaml`, then checks the subsets of the VirtualService called `name`.
    fn check(yaml: &str, name: &str) -> Vec<(String, String)> {
        let mut manifests = Manifests::default();
        manifests.parse_documents(std::path::Path::new("t.yaml"), yaml);
        assert!(manifests.errors.is_empty(), "{:?}", manifests.errors);
        let virtual_services: Vec<Checked<'_, VirtualServiceSpec>> = manifests
            .of_kind("VirtualService")
            .map(|object| {
                let mut findings = Findings::default();
                let spec = decode::spec(&object.spec, &mut findings);
                Checked {
                    object,
                    spec,
                    findings,
                }
            })
            .collect();
        let references = References::new(&manifests.objects, &virtual_services);
        let vs = virtual_services
            .iter()
            .find(|vs| vs.object.metadata.name == name)
            .expect("the VirtualService under test");
        let mut findings = Findings::default();
        references.check_subsets(
            vs.object.namespace(),
            vs.spec.as_ref().unwrap(),
            &mut findings,
        );
        found(findings)
    }

    const RULE: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews, namespace: shop}\nspec:\n  host: reviews\n  subsets: [{name: v1}, {name: v2}]\n";

    fn route_to(host: &str, subset: &str, namespace: &str) -> String {
        format!(
            "---\napiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {{name: vs, namespace: {namespace}}}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: {host}, subset: {subset}}}\n"
        )
    }

    #[test]
    fn a_defined_subset_resolves_by_short_name_and_fqdn() {
        assert_eq!(
            check(
                &format!("{RULE}{}", route_to("reviews", "v2", "shop")),
                "vs"
            ),
            []
        );
        let fqdn = route_to("reviews.shop.svc.cluster.local", "v1", "web");
        assert_eq!(check(&format!("{RULE}{fqdn}"), "vs"), []);
    }

    #[test]
    fn an_undefined_subset_lists_the_defined_ones() {
        assert_eq!(
            check(&format!("{RULE}{}", route_to("reviews", "v3", "shop")), "vs"),
            [(
                "spec.http[0].route[0].destination.subset".to_owned(),
                "no DestinationRule for reviews.shop.svc.cluster.local defines subset `v3` (defined: v1, v2): correct the name, or add the subset to the DestinationRule".to_owned()
            )]
        );
    }

    #[test]
    fn a_short_name_resolves_in_the_routes_own_namespace() {
        // `reviews` in namespace `web` is reviews.web…, which no rule covers.
        let found = check(&format!("{RULE}{}", route_to("reviews", "v1", "web")), "vs");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].1.starts_with(
                "no DestinationRule for reviews.web.svc.cluster.local defines subset `v1` (none defines any)"
            ),
            "{found:?}"
        );
    }

    #[test]
    fn wildcard_rules_count_and_export_to_hides_rules() {
        let wildcard = RULE.replace("host: reviews", "host: '*.shop.svc.cluster.local'");
        let route = route_to("reviews", "v1", "shop");
        assert_eq!(check(&format!("{wildcard}{route}"), "vs"), []);
        let private = RULE.replace("  subsets:", "  exportTo: ['.']\n  subsets:");
        let from_web = route_to("reviews.shop.svc.cluster.local", "v1", "web");
        assert_eq!(check(&format!("{private}{from_web}"), "vs").len(), 1);
    }
}
