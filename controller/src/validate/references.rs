//! Pass 4: references between objects. A subset a VirtualService route names must be
//! defined by a DestinationRule for that host, visible from the route's namespace; a
//! Gateway a VirtualService binds to should exist (a warning, as `istioctl analyze`
//! gives: the VirtualService applies as soon as the Gateway appears). A route's
//! `delegate` should be usable from the root, and each delegate route's match should
//! narrow the delegating route's (warnings on the root and on the delegate: the route
//! is left out, the rest applies, [`crate::delegation`]).
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

use std::collections::{BTreeMap, BTreeSet};

use ambit_api::{
    istio::{
        self, VirtualServiceSpec,
        virtual_service::{Destination, HttpRoute},
    },
    manifests::Object,
};
use serde_yaml_ng::Value;

use super::{Checked, Findings, ObjectRef, Reason};
use crate::{
    delegation::{self, Target},
    hosts,
};

/// What a DestinationRule says about subsets.
#[derive(Debug)]
struct RuleSubsets {
    namespace: String,
    /// Resolved in `namespace`.
    host: String,
    export_to: Vec<String>,
    subsets: Vec<String>,
}

/// An HTTP route of a root VirtualService that delegates.
#[derive(Debug)]
struct Delegation<'a> {
    /// `namespace/name (VirtualService) spec.http[i]`.
    root: String,
    root_namespace: &'a str,
    route: &'a HttpRoute,
}

/// Everything pass 4 needs to know about the other objects.
#[derive(Debug)]
pub(super) struct References<'a> {
    rules: Vec<RuleSubsets>,
    /// Every VirtualService; `None` for one whose spec cannot be read.
    virtual_services: BTreeMap<Target, Option<&'a VirtualServiceSpec>>,
    /// The HTTP routes that delegate to each VirtualService.
    delegations: BTreeMap<Target, Vec<Delegation<'a>>>,
    /// Istio Gateways (`namespace`, `name`).
    gateways: BTreeSet<(String, String)>,
}

impl<'a> References<'a> {
    pub(super) fn new(
        objects: &[Object],
        virtual_services: &'a [Checked<'a, VirtualServiceSpec>],
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
        let mut delegations: BTreeMap<Target, Vec<Delegation<'a>>> = BTreeMap::new();
        // Only a root (with hosts) delegates: a delegate's delegations are refused.
        let roots = virtual_services
            .iter()
            .filter_map(|vs| Some((vs.object, vs.spec.as_ref()?)))
            .filter(|(_, spec)| !spec.hosts.is_empty());
        for (object, spec) in roots {
            for (index, route) in spec.http.iter().enumerate() {
                let Some(delegate) = &route.delegate else {
                    continue;
                };
                let root_namespace = object.namespace();
                delegations
                    .entry(delegation::target(delegate, root_namespace))
                    .or_default()
                    .push(Delegation {
                        root: format!("{} spec.http[{index}]", ObjectRef::of(object)),
                        root_namespace,
                        route,
                    });
            }
        }
        Self {
            rules,
            virtual_services: virtual_services
                .iter()
                .map(|vs| (key_of(vs.object), vs.spec.as_ref()))
                .collect(),
            delegations,
            gateways,
        }
    }

    /// Warns about each HTTP route of a root VirtualService in `namespace` whose delegate
    /// it cannot use (missing, with hosts, not exported there). A delegate that cannot be
    /// read has its own errors, and so has a delegate that delegates again (pass 3).
    pub(super) fn check_delegates(
        &self,
        namespace: &str,
        spec: &VirtualServiceSpec,
        findings: &mut Findings,
    ) {
        if spec.hosts.is_empty() {
            return;
        }
        for (index, route) in spec.http.iter().enumerate() {
            let Some(delegate) = &route.delegate else {
                continue;
            };
            let target = delegation::target(delegate, namespace);
            let found = self.virtual_services.get(&target);
            if matches!(found, Some(None)) {
                continue;
            }
            if let Err(unusable) = delegation::usable(&target, found.copied().flatten(), namespace)
            {
                findings.add(
                    format!("spec.http[{index}].delegate"),
                    Reason::DelegateUnusable(unusable),
                );
            }
        }
    }

    /// Warns about each match of a delegate's route that narrows no match of a route
    /// delegating to it (from a root that may use it).
    pub(super) fn check_delegated(
        &self,
        object: &Object,
        spec: &VirtualServiceSpec,
        findings: &mut Findings,
    ) {
        let key = key_of(object);
        let Some(delegations) = self.delegations.get(&key) else {
            return;
        };
        for delegation in delegations {
            if delegation::usable(&key, Some(spec), delegation.root_namespace).is_err() {
                continue;
            }
            for (index, leaf) in spec.http.iter().enumerate() {
                if let Err(conflict) =
                    delegation::merge_matches(&delegation.route.matches, &leaf.matches)
                {
                    findings.add(
                        format!("spec.http[{index}].match[{}]", conflict.index),
                        Reason::DelegateConflict {
                            root: delegation.root.clone(),
                            conflict,
                        },
                    );
                }
            }
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
        self.delegations.contains_key(&key_of(object))
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

fn key_of(object: &Object) -> Target {
    (object.namespace().to_owned(), object.metadata.name.clone())
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
