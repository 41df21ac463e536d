//! Merging a root's route with its delegate's routes: order, matches, inheritance,
//! conflicts and usable delegates.

use super::*;

fn spec(yaml: &str) -> VirtualServiceSpec {
    serde_yaml_ng::from_str(yaml).expect("a VirtualService spec")
}

/// The Bookinfo root: `/productpage` delegated to `productpage-routes` of `team`.
const ROOT: &str = "
hosts: [bookinfo.example.com]
http:
- name: login
  match: [{uri: {exact: /login}}]
  route: [{destination: {host: productpage}}]
- name: product
  match: [{uri: {prefix: /productpage}}]
  timeout: 5s
  headers: {request: {set: {x-root: 'yes'}}}
  delegate: {name: productpage-routes, namespace: team}
- name: rest
  route: [{destination: {host: productpage}}]
";

const DELEGATE: &str = "
http:
- name: v1
  match: [{uri: {prefix: /productpage/v1}, headers: {end-user: {exact: jason}}}]
  timeout: 1s
  route: [{destination: {host: productpage, subset: v1}}]
- route: [{destination: {host: productpage}}]
";

fn delegates(yaml: &str) -> BTreeMap<Target, VirtualServiceSpec> {
    BTreeMap::from([(
        ("team".to_owned(), "productpage-routes".to_owned()),
        spec(yaml),
    )])
}

fn names(spec: &VirtualServiceSpec) -> Vec<&str> {
    spec.http.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn delegate_routes_take_the_delegating_routes_place_in_order() {
    let expanded = expand(&spec(ROOT), "shop", &delegates(DELEGATE));
    assert_eq!(
        names(&expanded),
        ["login", "product-v1", "product", "rest"],
        "the two delegate routes replace `product`, between `login` and `rest`"
    );
    assert!(expanded.http.iter().all(|r| r.delegate.is_none()));
}

#[test]
fn matches_merge_and_unset_fields_come_from_the_root() {
    let expanded = expand(&spec(ROOT), "shop", &delegates(DELEGATE));
    let v1 = &expanded.http[1];
    assert_eq!(v1.matches.len(), 1);
    assert_eq!(
        v1.matches[0].uri,
        Some(StringMatch::Prefix("/productpage/v1".into()))
    );
    assert_eq!(
        v1.matches[0].headers["end-user"],
        StringMatch::Exact("jason".into())
    );
    assert_eq!(
        v1.timeout.map(|t| t.get().as_secs()),
        Some(1),
        "the delegate's own timeout wins"
    );
    assert!(
        v1.headers.is_some(),
        "the root's header edits are inherited"
    );
    let catch_all = &expanded.http[2];
    assert_eq!(
        catch_all.matches[0].uri,
        Some(StringMatch::Prefix("/productpage".into())),
        "a delegate route without match takes the root's"
    );
    assert_eq!(catch_all.timeout.map(|t| t.get().as_secs()), Some(5));
}

#[test]
fn short_hosts_resolve_in_the_delegates_namespace() {
    let expanded = expand(&spec(ROOT), "shop", &delegates(DELEGATE));
    assert_eq!(
        expanded.http[1].route[0].destination.host,
        "productpage.team.svc.cluster.local"
    );
    assert_eq!(
        expanded.http[0].route[0].destination.host, "productpage",
        "the root's own routes are untouched"
    );
}

#[test]
fn a_conflicting_delegate_route_is_left_out_and_the_others_stay() {
    let conflicting = DELEGATE.replace("/productpage/v1", "/reviews");
    let expanded = expand(&spec(ROOT), "shop", &delegates(&conflicting));
    assert_eq!(names(&expanded), ["login", "product", "rest"]);

    let root = spec(ROOT);
    let leaf = spec(&conflicting);
    let conflict = merge_matches(&root.http[1].matches, &leaf.http[0].matches)
        .expect_err("/reviews is not under /productpage");
    assert_eq!(conflict.index, 0);
    assert_eq!(
        conflict.detail,
        "`uri` prefix `/reviews` is not within the root's prefix `/productpage`"
    );
}

#[test]
fn narrowing_follows_istio() {
    let matches = |yaml: &str| {
        spec(&format!("http: [{{match: [{yaml}]}}]")).http[0]
            .matches
            .clone()
    };
    let cases = [
        ("{uri: {exact: /a}}", "{uri: {exact: /a}}", true),
        ("{uri: {exact: /a}}", "{uri: {prefix: /a}}", false),
        ("{uri: {prefix: /a}}", "{uri: {exact: /a/b}}", true),
        ("{uri: {regex: '/a.*'}}", "{uri: {prefix: /a}}", false),
        ("{headers: {x: {}}}", "{headers: {x: {exact: '1'}}}", true),
        ("{port: 80}", "{port: 8080}", false),
        (
            "{sourceLabels: {app: a}}",
            "{sourceLabels: {app: b}}",
            false,
        ),
        ("{gateways: [gw]}", "{gateways: [other]}", false),
        ("{uri: {prefix: /a}}", "{method: {exact: GET}}", true),
    ];
    for (root, leaf, narrows) in cases {
        assert_eq!(
            merge_matches(&matches(root), &matches(leaf)).is_ok(),
            narrows,
            "root {root}, delegate {leaf}"
        );
    }
}

#[test]
fn each_delegate_match_merges_with_every_root_match_it_narrows() {
    let root = spec("http: [{match: [{method: {exact: GET}}, {method: {exact: HEAD}}]}]");
    let leaf = spec("http: [{match: [{uri: {prefix: /a}}]}]");
    let merged = merge_matches(&root.http[0].matches, &leaf.http[0].matches).expect("narrows");
    let methods: Vec<_> = merged.iter().map(|m| m.method.clone()).collect();
    assert_eq!(
        methods,
        [
            Some(StringMatch::Exact("GET".into())),
            Some(StringMatch::Exact("HEAD".into()))
        ]
    );
}

#[test]
fn an_unusable_delegate_leaves_its_route_out() {
    let root = spec(ROOT);
    let without = expand(&root, "shop", &BTreeMap::new());
    assert_eq!(names(&without), ["login", "rest"]);

    let private = format!("exportTo: ['.']\n{DELEGATE}");
    let target = ("team".to_owned(), "productpage-routes".to_owned());
    let private = spec(&private);
    assert_eq!(
        usable(&target, Some(&private), "shop").map(|_| ()),
        Err(Unusable::NotExported {
            target: "team/productpage-routes".into(),
            namespace: "shop".into()
        })
    );
    assert!(usable(&target, Some(&private), "team").is_ok());
    let with_hosts = spec(&format!("hosts: [productpage]\n{DELEGATE}"));
    assert_eq!(
        usable(&target, Some(&with_hosts), "shop").map(|_| ()),
        Err(Unusable::HasHosts("team/productpage-routes".into()))
    );
}
