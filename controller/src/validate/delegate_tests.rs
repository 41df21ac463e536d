//! Delegation as validation reports it: by object and field path, warnings where Istio
//! leaves a route out, errors where Istio refuses the object.

use std::path::Path;

use super::*;

fn validate_yaml(yaml: &str) -> Report {
    let mut manifests = Manifests::default();
    manifests.parse_documents(Path::new("x.yaml"), yaml);
    validate(&manifests)
}

fn lines(report: &Report) -> Vec<String> {
    report.diagnostics.iter().map(ToString::to_string).collect()
}

const ROOT: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: shop}
spec:
  hosts: [bookinfo.example.com]
  http:
  - route: [{destination: {host: details}}]
    match: [{uri: {prefix: /details}}]
  - match: [{uri: {prefix: /productpage}}]
    delegate: {name: productpage, namespace: team}
";

const DELEGATE: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: productpage, namespace: team}
spec:
  http:
  - match: [{uri: {prefix: /productpage/v1}}]
    route: [{destination: {host: productpage, subset: v1}}]
  - route: [{destination: {host: productpage}}]
";

fn both(root: &str, delegate: &str) -> Report {
    validate_yaml(&format!("{root}---\n{delegate}"))
}

#[test]
fn a_delegate_within_the_roots_match_is_accepted_silently() {
    let report = both(ROOT, &DELEGATE.replace(", subset: v1", ""));
    assert_eq!(lines(&report), Vec::<String>::new());
    assert_eq!(report.model.len(), 2);
}

#[test]
fn a_conflicting_match_is_a_warning_on_the_delegate_naming_field_and_root() {
    let report = both(
        ROOT,
        &DELEGATE
            .replace("/productpage/v1", "/reviews")
            .replace(", subset: v1", ""),
    );
    assert_eq!(
        lines(&report),
        [
            "warning: team/productpage (VirtualService) in x.yaml document 2: spec.http[0].match[0]: `uri` prefix `/reviews` is not within the root's prefix `/productpage`, so this route is left out of shop/bookinfo (VirtualService) spec.http[1], which delegates here: a delegate's match must narrow the root's"
        ]
    );
    assert_eq!(report.model.len(), 2, "a warning rejects neither object");
}

#[test]
fn a_missing_delegate_is_a_warning_on_the_delegating_route() {
    let report = validate_yaml(ROOT);
    assert_eq!(
        lines(&report),
        [
            "warning: shop/bookinfo (VirtualService) in x.yaml document 1: spec.http[1].delegate: no VirtualService team/productpage: correct the delegate's `name` and `namespace`, or add it; until then this route is left out and the others apply"
        ]
    );
    assert_eq!(report.model.len(), 1);
}

#[test]
fn a_delegate_not_exported_to_the_root_is_a_warning() {
    let private = DELEGATE
        .replace("spec:\n", "spec:\n  exportTo: ['.']\n")
        .replace(", subset: v1", "");
    let report = both(ROOT, &private);
    assert_eq!(report.count(Severity::Warning), 1, "{:?}", lines(&report));
    assert!(
        lines(&report)[0].contains(
            "spec.http[1].delegate: team/productpage is not exported to namespace `shop`"
        ),
        "{:?}",
        lines(&report)
    );
}

#[test]
fn a_delegate_that_delegates_again_is_refused() {
    let nested = DELEGATE.replace(
        "  - route: [{destination: {host: productpage}}]\n",
        "  - delegate: {name: deeper}\n",
    );
    let report = both(ROOT, &nested.replace(", subset: v1", ""));
    assert_eq!(
        lines(&report),
        [
            "error: team/productpage (VirtualService) in x.yaml document 2: spec.http[1].delegate: a delegate cannot delegate again (Istio supports one level): give this route a `route`, a `redirect` or a `directResponse`"
        ]
    );
    assert_eq!(report.model.len(), 1, "the root stays");
}

#[test]
fn a_delegating_route_takes_no_route_and_a_delegate_no_gateways() {
    let root = ROOT.replace(
        "    delegate: {name: productpage, namespace: team}\n",
        "    delegate: {name: productpage, namespace: team}\n    redirect: {uri: /elsewhere}\n",
    );
    let delegate = DELEGATE
        .replace("spec:\n", "spec:\n  gateways: [mesh]\n")
        .replace(", subset: v1", "");
    let found = lines(&both(&root, &delegate));
    assert_eq!(
        found,
        [
            "error: shop/bookinfo (VirtualService) in x.yaml document 1: spec.http[1].delegate: `delegate` cannot be combined with `redirect`: keep one",
            "error: team/productpage (VirtualService) in x.yaml document 2: spec.gateways: a delegate takes only `http` routes, the root decides the rest: remove it",
        ]
    );
}
