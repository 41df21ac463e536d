//! The passes together: what reaches the model, what is reported, and how it reads.

use std::path::Path;

use super::*;

fn validate_yaml(yaml: &str) -> Report {
    let mut manifests = Manifests::default();
    manifests.parse_documents(Path::new("deploy/x.yaml"), yaml);
    validate(&manifests)
}

fn lines(report: &Report) -> Vec<String> {
    report.diagnostics.iter().map(ToString::to_string).collect()
}

const RULE: &str = "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
";

const ROUTES: &str = "apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v2}
      weight: 50
";

#[test]
fn valid_objects_reach_the_model_without_diagnostics() {
    let report = validate_yaml(&format!("{RULE}---\n{ROUTES}"));
    assert_eq!(lines(&report), Vec::<String>::new());
    assert_eq!(report.checked, 2);
    let vs = report
        .model
        .virtual_service("shop", "reviews")
        .expect("the VirtualService");
    assert_eq!(vs.spec.http[0].route.len(), 2);
    assert!(report.model.destination_rule("shop", "reviews").is_some());
    assert_eq!(report.model.virtual_services[0].source.document, 2);
}

#[test]
fn a_diagnostic_names_object_file_document_path_and_reason() {
    let report = validate_yaml(&format!(
        "{RULE}---\n{}",
        ROUTES.replace(
            "weight: 50\n    - destination: {host: reviews, subset: v2}\n      weight: 50",
            "weight: 50\n    - destination: {host: reviews, subset: v2}\n      weight: 40"
        )
    ));
    assert_eq!(
        lines(&report),
        [
            "error: shop/reviews (VirtualService) in deploy/x.yaml document 2: spec.http[0].route: weights sum to 90, they must sum to 100"
        ]
    );
    assert!(report.model.virtual_services.is_empty());
    assert_eq!(
        report.model.destination_rules.len(),
        1,
        "the valid sibling stays"
    );
    assert_eq!(
        report.summary(),
        "1 error, 0 warnings: 1 of 2 Istio objects valid"
    );
}

#[test]
fn a_broken_rule_does_not_take_its_routes_down() {
    let broken = RULE.replace(
        "  subsets:",
        "  trafficPolicy: {loadBalancer: {simple: FASTEST}}\n  subsets:",
    );
    let report = validate_yaml(&format!("{broken}---\n{ROUTES}"));
    assert_eq!(report.diagnostics.len(), 1, "{:?}", lines(&report));
    let diagnostic = &report.diagnostics[0];
    assert_eq!(diagnostic.path, "spec.trafficPolicy.loadBalancer.simple");
    assert_eq!(diagnostic.object.as_ref().unwrap().kind, "DestinationRule");
    assert!(report.model.virtual_service("shop", "reviews").is_some());
    assert!(report.model.destination_rule("shop", "reviews").is_none());
}

#[test]
fn a_document_that_does_not_parse_is_reported_and_the_rest_still_checked() {
    let report = validate_yaml(&format!("{RULE}---\napiVersion: v1\nkind: [\n"));
    assert_eq!(report.diagnostics.len(), 1, "{:?}", lines(&report));
    let line = report.diagnostics[0].to_string();
    assert!(
        line.starts_with("error: deploy/x.yaml document 2: not a Kubernetes object: "),
        "{line}"
    );
    assert_eq!(report.model.len(), 1);
}

#[test]
fn the_document_around_the_spec_is_checked() {
    let report = validate_yaml(
        "apiVersion: networking.istio.io/v1alpha2
kind: VirtualService
metadata: {name: a}
spec: {hosts: [a]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b}
spce: {hosts: [b]}
status: {}
",
    );
    let found: Vec<(&str, String)> = report
        .diagnostics
        .iter()
        .map(|d| (d.path.as_str(), d.reason.to_string()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "apiVersion",
                "`networking.istio.io/v1alpha2` is not a version Istio serves: use networking.istio.io/v1 (or v1beta1, v1alpha3)".to_owned()
            ),
            (
                "spce",
                "unknown field: remove it or correct its name (Istio's fields are camelCase)".to_owned()
            ),
            ("spec", "required: add a `spec` with the object's settings".to_owned()),
        ]
    );
    assert_eq!(
        report.diagnostics[0].object.as_ref().unwrap().to_string(),
        "default/a (VirtualService)",
        "an object without a namespace is in `default`"
    );
}

#[test]
fn a_second_object_with_the_same_name_is_refused() {
    let report = validate_yaml(&format!("{RULE}---\n{RULE}"));
    assert_eq!(
        lines(&report),
        [
            "error: shop/reviews (DestinationRule) in deploy/x.yaml document 2: metadata.name: also defined in deploy/x.yaml (document 1): keep one (this one is ignored)"
        ]
    );
    assert_eq!(report.model.destination_rules.len(), 1);
}

#[test]
fn other_kinds_are_counted_not_checked() {
    let report = validate_yaml(
        "apiVersion: v1
kind: Service
metadata: {name: reviews}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external}
spec: {whatever: 1}
",
    );
    assert_eq!(report.diagnostics, []);
    assert_eq!((report.checked, report.skipped), (0, 2));
    assert_eq!(
        report.summary(),
        "0 errors, 0 warnings: 0 of 0 Istio objects valid (2 objects of other kinds not checked)"
    );
}

#[test]
fn a_delegate_target_needs_no_hosts() {
    let report = validate_yaml(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: root, namespace: shop}
spec:
  hosts: [shop.example.com]
  http:
  - delegate: {name: reviews-routes}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-routes, namespace: shop}
spec:
  http:
  - route:
    - destination: {host: reviews}
",
    );
    assert_eq!(lines(&report), Vec::<String>::new());
    assert_eq!(report.model.len(), 2);
}

#[test]
fn warnings_do_not_reject() {
    let report = validate_yaml(&ROUTES.replace(
        "  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 50\n    - destination: {host: reviews, subset: v2}\n      weight: 50\n",
        "  - route:\n    - destination: {host: reviews}\n    mirror: {host: shadow}\n    mirrorPercent: 5\n",
    ));
    assert_eq!(report.count(Severity::Warning), 1, "{:?}", lines(&report));
    assert_eq!(report.count(Severity::Error), 0);
    assert!(lines(&report)[0].starts_with("warning: shop/reviews (VirtualService)"));
    assert_eq!(report.model.len(), 1);
}
