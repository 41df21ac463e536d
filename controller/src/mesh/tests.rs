use std::path::Path;

use ambit_api::enrolment::{EnrolReason, SkipReason};

use super::*;

/// A Namespace in ambient mode with pods on node-a and node-b, a namespace outside the
/// mesh, a Service, a VirtualService and a DestinationRule.
pub(crate) const FIXTURE: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
---
apiVersion: v1
kind: Pod
metadata: {name: cart, namespace: shop, uid: u-cart, labels: {app: cart}}
spec: {nodeName: node-a, serviceAccountName: cart-sa}
status: {podIP: 10.0.0.1, podIPs: [{ip: 10.0.0.1}, {ip: 'fd00::1'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: cart-2, namespace: shop, labels: {app: cart}}
spec: {nodeName: node-b, serviceAccountName: cart-sa}
status: {podIP: 10.0.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: node-b}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: legacy, namespace: plain, labels: {app: cart}}
spec: {nodeName: node-a}
status: {podIP: 10.0.2.1}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  selector: {app: cart}
  ports: [{name: http, port: 80, targetPort: 8080, appProtocol: http}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart]
  http: [{route: [{destination: {host: cart}}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: shop}
spec: {host: cart, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}
";

fn manifests(files: &[(&str, &str)]) -> Manifests {
    let mut manifests = Manifests::default();
    for (file, text) in files {
        manifests.parse_documents(Path::new(file), text);
    }
    manifests
}

pub(crate) fn fixture() -> Mesh {
    let built = build(
        &manifests(&[("all.yaml", FIXTURE)]),
        "cluster.local",
        &Mesh::default(),
    );
    assert!(built.diagnostics.is_empty(), "{:?}", built.diagnostics);
    built.mesh
}

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_owned(), name.to_owned())
}

#[test]
fn resolves_workloads_with_identity_ips_and_enrolment() {
    let mesh = fixture();
    assert_eq!(mesh.workloads.len(), 4);
    let cart = &mesh.workloads[&key("shop", "cart")];
    assert_eq!(cart.node.as_deref(), Some("node-a"));
    assert_eq!(cart.uid.as_deref(), Some("u-cart"));
    assert_eq!(
        cart.identity.as_ref().map(ToString::to_string).as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/cart-sa")
    );
    let ips: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()];
    assert_eq!(cart.ips, ips);
    assert_eq!(cart.decision, Decision::Enrol(EnrolReason::NamespaceLabel));
    let web = &mesh.workloads[&key("shop", "web")];
    assert_eq!(web.service_account, "default");
    let legacy = &mesh.workloads[&key("plain", "legacy")];
    assert_eq!(
        legacy.decision,
        Decision::Skip(SkipReason::NamespaceNotAmbient)
    );
}

#[test]
fn service_endpoints_are_the_matching_workloads_of_its_namespace() {
    let mesh = fixture();
    let cart = &mesh.services[&key("shop", "cart")];
    assert_eq!(cart.hostname, "cart.shop.svc.cluster.local");
    assert_eq!(cart.cluster_ips, ["10.96.0.10".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        cart.ports,
        [ServicePort {
            name: "http".into(),
            port: 80,
            target_port: Some(8080),
            protocol: "TCP".into(),
            app_protocol: "http".into(),
        }]
    );
    // plain/legacy has the label too, but lives in another namespace.
    let endpoints: Vec<String> = cart.endpoints.iter().map(ToString::to_string).collect();
    assert_eq!(endpoints, ["10.0.0.1", "10.0.1.2", "fd00::1"]);
}

#[test]
fn routes_hold_accepted_objects_with_fqdn_hosts() {
    let mesh = fixture();
    let vs = &mesh.routes[&(RouteKind::VirtualService, key("shop", "cart"))];
    assert_eq!(vs.hosts, ["cart.shop.svc.cluster.local"]);
    assert_eq!(vs.spec["hosts"][0], "cart");
    let dr = &mesh.routes[&(RouteKind::DestinationRule, key("shop", "cart"))];
    assert_eq!(
        dr.spec["trafficPolicy"]["loadBalancer"]["simple"],
        "ROUND_ROBIN"
    );
}

#[test]
fn the_bookinfo_ingress_gateway_and_its_bound_routes_are_modelled() {
    let examples =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/istio");
    let manifests = Manifests::load_dir(&examples).expect("the Bookinfo examples");
    let built = build(&manifests, "cluster.local", &Mesh::default());
    assert!(built.diagnostics.is_empty(), "{:?}", built.diagnostics);
    let gateway = &built.mesh.routes[&(RouteKind::Gateway, key("bookinfo", "bookinfo-gateway"))];
    assert_eq!(gateway.hosts, ["*"]);
    assert_eq!(gateway.spec["selector"]["istio"], "ingressgateway");
    assert_eq!(gateway.spec["servers"][0]["port"]["number"], 8080);
    let vs = &built.mesh.routes[&(RouteKind::VirtualService, key("bookinfo", "bookinfo"))];
    assert_eq!(vs.hosts, ["*"]);
    assert_eq!(vs.spec["gateways"][0], "bookinfo-gateway");
    assert_eq!(vs.spec["http"][0]["match"][1]["uri"]["prefix"], "/static");
    assert_eq!(
        vs.spec["http"][0]["route"][0]["destination"]["host"],
        "productpage"
    );
    // The same with the Gateway API: the Gateway pushed as the Istio Gateway made of it.
    let gateway_api = &built.mesh.routes[&(
        RouteKind::KubernetesGateway,
        key("bookinfo", "bookinfo-gateway-api"),
    )];
    assert_eq!(
        gateway_api.spec["selector"]["gateway.networking.k8s.io/gateway-name"],
        "bookinfo-gateway-api"
    );
    assert_eq!(
        gateway_api.spec["servers"][0]["hosts"],
        serde_json::json!(["./*"])
    );
    assert!(
        built
            .mesh
            .routes
            .contains_key(&(RouteKind::HttpRoute, key("bookinfo", "bookinfo")))
    );
}

/// The route `shop/name` of `kind` built from a folder of [`FIXTURE`] and `routes`
/// (without a diagnostic), once it is seen pushed as a route of that kind for its hosts.
fn pushed_route(routes: &str, kind: RouteKind, name: &str) -> Arc<Route> {
    let folder = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(folder.path().join("all.yaml"), FIXTURE).expect("written");
    std::fs::write(folder.path().join("routes.yaml"), routes).expect("written");
    let manifests = Manifests::load_dir(folder.path()).expect("the folder");
    let built = build(&manifests, "cluster.local", &Mesh::default());
    assert!(built.diagnostics.is_empty(), "{:?}", built.diagnostics);
    let route = Arc::clone(&built.mesh.routes[&(kind, key("shop", name))]);
    let pushed = crate::push::convert::route(&route);
    let kind = kind.as_str();
    assert_eq!(pushed.key, format!("{}/shop/{name}", kind.to_lowercase()));
    let Some(ambit_api::config::resource::Kind::Route(pushed)) = pushed.kind else {
        panic!("a {kind} is pushed as a route: {pushed:?}");
    };
    assert_eq!(pushed.kind, kind);
    assert_eq!(pushed.hosts, route.hosts);
    route
}

#[test]
fn a_tcp_route_in_a_folder_is_pushed_for_its_parent_service() {
    let database = "apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: 10.96.0.20, selector: {app: db}, ports: [{name: tcp-pg, port: 5432}]}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: shop, generation: 4}
spec:
  parentRefs: [{group: '', kind: Service, name: db}]
  rules: [{backendRefs: [{name: db, port: 5432}]}]
";
    let tcp = pushed_route(database, RouteKind::TcpRoute, "db");
    assert_eq!(tcp.hosts, ["db.shop.svc.cluster.local"]);
    assert_eq!(tcp.generation, Some(4));
    assert_eq!(tcp.spec["rules"][0]["backendRefs"][0]["port"], 5432);
}

#[test]
fn a_tls_route_in_a_folder_is_pushed_for_its_parent_service() {
    let secure = "apiVersion: v1
kind: Service
metadata: {name: secure, namespace: shop}
spec: {clusterIP: 10.96.0.30, selector: {app: secure}, ports: [{name: tls, port: 443}]}
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: TLSRoute
metadata: {name: secure, namespace: shop, generation: 2}
spec:
  parentRefs: [{group: '', kind: Service, name: secure}]
  hostnames: [secure.example.com]
  rules: [{backendRefs: [{name: secure, port: 443}]}]
";
    let tls = pushed_route(secure, RouteKind::TlsRoute, "secure");
    assert_eq!(tls.hosts, ["secure.shop.svc.cluster.local"]);
    assert_eq!(tls.generation, Some(2));
    assert_eq!(tls.spec["hostnames"][0], "secure.example.com");
    assert_eq!(tls.spec["rules"][0]["backendRefs"][0]["port"], 443);
}

const VS_V1: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: shop}\nspec: {hosts: [r], http: [{route: [{destination: {host: r}}]}]}\n";
const VS_BAD: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: shop}\nspec: {hosts: [r], http: [{route: [{destination: {host: r}, weight: 30}, {destination: {host: s}, weight: 30}]}]}\n";
const POD: &str =
    "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: shop}\nspec: {nodeName: node-a}\n";

#[test]
fn an_object_turned_invalid_keeps_its_last_good_version() {
    let first = build(
        &manifests(&[("vs.yaml", VS_V1)]),
        "cluster.local",
        &Mesh::default(),
    );
    let route = (RouteKind::VirtualService, key("shop", "r"));
    assert!(first.mesh.routes.contains_key(&route));

    let second = build(
        &manifests(&[("vs.yaml", VS_BAD)]),
        "cluster.local",
        &first.mesh,
    );
    assert_eq!(
        second.mesh.routes.get(&route),
        first.mesh.routes.get(&route)
    );
    assert_eq!(second.kept, ["shop/r (VirtualService)"]);
    let diagnostic = second.diagnostics[0].to_string();
    assert!(
        diagnostic.contains("spec.http[0].route") && diagnostic.contains("sum to 100"),
        "{diagnostic}"
    );

    // Invalid with no previous version: not in the model.
    let fresh = build(
        &manifests(&[("vs.yaml", VS_BAD)]),
        "cluster.local",
        &Mesh::default(),
    );
    assert!(fresh.mesh.routes.is_empty() && fresh.kept.is_empty());

    // Deleted: gone.
    let deleted = build(&manifests(&[]), "cluster.local", &second.mesh);
    assert!(deleted.mesh.routes.is_empty(), "{:?}", deleted.mesh.routes);
}

#[test]
fn an_unreadable_file_keeps_its_objects_and_others_still_apply() {
    let first = build(
        &manifests(&[("a.yaml", POD), ("b.yaml", VS_V1)]),
        "cluster.local",
        &Mesh::default(),
    );
    let second = build(
        &manifests(&[("a.yaml", "kind: [unclosed"), ("b.yaml", "")]),
        "cluster.local",
        &first.mesh,
    );
    assert!(second.mesh.workloads.contains_key(&key("shop", "p")));
    assert_eq!(second.kept, ["shop/p (Pod)"]);
    assert!(
        second.mesh.routes.is_empty(),
        "b.yaml was emptied: its route is deleted"
    );
}

#[test]
fn a_waypoint_gateway_its_pods_and_the_services_that_use_it() {
    let mut manifests = Manifests::default();
    manifests.parse_documents(
        Path::new("waypoint.yaml"),
        "apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop, uid: 4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Pod
metadata:
  name: waypoint-1
  namespace: shop
  labels: {gateway.networking.k8s.io/gateway-name: waypoint, istio.io/dataplane-mode: none}
spec: {nodeName: n1, serviceAccountName: waypoint}
status: {podIP: 10.0.9.9}
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: direct, namespace: shop, labels: {istio.io/use-waypoint: none}}
spec: {clusterIP: 10.96.0.2, ports: [{port: 80}]}
",
    );
    let mesh = build(&manifests, "cluster.local", &Mesh::default()).mesh;
    let key = ("shop".to_owned(), "waypoint".to_owned());
    let waypoint = &mesh.waypoints[&key];
    assert_eq!(
        waypoint.uid.as_deref(),
        Some("4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"),
        "what the objects deployed for it are owned by"
    );
    assert_eq!(
        waypoint.addresses,
        ["10.0.9.9".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(
        waypoint
            .identity
            .as_ref()
            .map(ToString::to_string)
            .as_deref(),
        Some("spiffe://cluster.local/ns/shop/sa/waypoint")
    );
    let service = |name: &str| &mesh.services[&("shop".to_owned(), name.to_owned())];
    assert_eq!(
        service("cart").waypoint.as_ref(),
        Some(&key),
        "from the namespace label"
    );
    assert_eq!(
        service("direct").waypoint,
        None,
        "`none` on the service opts out"
    );
}

const ROOT: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: root, namespace: shop}\nspec: {hosts: [r], http: [{name: a, match: [{uri: {prefix: /a}}], delegate: {name: leaf}}, {name: rest, route: [{destination: {host: r}}]}]}\n";
const LEAF_V1: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: leaf, namespace: shop}\nspec: {http: [{name: v1, route: [{destination: {host: r1}}]}]}\n";
const LEAF_V2: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: leaf, namespace: shop}\nspec: {http: [{name: v2, route: [{destination: {host: r2}}]}]}\n";
const LEAF_BAD: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: leaf, namespace: shop}\nspec: {http: [{name: bad, route: [{destination: {host: r1}, weight: 30}]}]}\n";

/// The names and first destinations of the routes a waypoint receives for `root`.
fn delegated(mesh: &Mesh) -> Vec<(String, String)> {
    let root = &mesh.routes[&(RouteKind::VirtualService, key("shop", "root"))];
    let spec = root.delegated.as_ref().expect("the root is merged");
    spec["http"]
        .as_array()
        .expect("http routes")
        .iter()
        .map(|r| {
            let host = r["route"][0]["destination"]["host"].as_str().unwrap_or("");
            (r["name"].as_str().unwrap_or("").to_owned(), host.to_owned())
        })
        .collect()
}

#[test]
fn a_root_is_merged_with_its_delegate_and_follows_its_changes() {
    let first = build(
        &manifests(&[("root.yaml", ROOT), ("leaf.yaml", LEAF_V1)]),
        "cluster.local",
        &Mesh::default(),
    );
    assert!(first.diagnostics.is_empty(), "{:?}", first.diagnostics);
    assert_eq!(
        delegated(&first.mesh),
        [
            ("a-v1".to_owned(), "r1.shop.svc.cluster.local".to_owned()),
            ("rest".to_owned(), "r".to_owned())
        ]
    );
    let second = build(
        &manifests(&[("root.yaml", ROOT), ("leaf.yaml", LEAF_V2)]),
        "cluster.local",
        &first.mesh,
    );
    assert_eq!(delegated(&second.mesh)[0].0, "a-v2");
}

#[test]
fn an_invalid_delegate_serves_its_last_good_version_and_a_missing_one_only_its_route() {
    let first = build(
        &manifests(&[("root.yaml", ROOT), ("leaf.yaml", LEAF_V1)]),
        "cluster.local",
        &Mesh::default(),
    );
    let broken = build(
        &manifests(&[("root.yaml", ROOT), ("leaf.yaml", LEAF_BAD)]),
        "cluster.local",
        &first.mesh,
    );
    assert_eq!(broken.kept, ["shop/leaf (VirtualService)"]);
    assert_eq!(delegated(&broken.mesh), delegated(&first.mesh));

    let missing = build(
        &manifests(&[("root.yaml", ROOT)]),
        "cluster.local",
        &first.mesh,
    );
    assert_eq!(
        delegated(&missing.mesh),
        [("rest".to_owned(), "r".to_owned())],
        "the delegating route is left out, the root's others apply"
    );
}
