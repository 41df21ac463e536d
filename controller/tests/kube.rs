//! The `--kube` source against a fake API server answering with recorded responses
//! (`tests/kube/`): through adds, edits and deletes, a relist after `410 Gone`, and with
//! a CRD missing from the cluster, its model is the one the folder source builds from the
//! same objects written to files — the folder source is the oracle. A rejected object
//! gets one Warning Event per message. A waypoint Gateway gets its ServiceAccount,
//! Deployment and Service server-side applied, an ingress Gateway (class `istio`) its
//! own, and an HTTPRoute its status.

#[path = "kube/fake_api.rs"]
mod fake_api;

use std::{
    collections::BTreeMap,
    fs,
    io::Write,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use ambit_controller::{
    cli::WaypointDeployment,
    deployer::{self, Template},
    mesh::Mesh,
    route_status,
    source::{
        FolderSource, KubeSource, ModelSource,
        kubernetes::kinds::{KINDS, Kind},
    },
};
use hyper::StatusCode;
use serde_json::{Value, json};

use self::fake_api::{FakeApi, Write as ApiWrite, recorded};

const TRUST_DOMAIN: &str = "cluster.local";
const NAMESPACES: &str = "/api/v1/namespaces";
const PODS: &str = "/api/v1/pods";
const SERVICES: &str = "/api/v1/services";
const NODES: &str = "/api/v1/nodes";
const VIRTUAL_SERVICES: &str = "/apis/networking.istio.io/v1/virtualservices";
const GATEWAYS: &str = "/apis/gateway.networking.k8s.io/v1/gateways";
const MESH_CONFIG: &str = "/api/v1/namespaces/istio-system/configmaps";
const SHOP_EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events";
/// Where the objects of the waypoint `shop/waypoint` are applied, in order: the mesh
/// root's ConfigMap, the waypoint's own three, then its Gateway's status.
const WAYPOINT_OBJECTS: [&str; 5] = [
    "/api/v1/namespaces/shop/configmaps/ambit-root-cert",
    "/api/v1/namespaces/shop/serviceaccounts/waypoint",
    "/apis/apps/v1/namespaces/shop/deployments/waypoint",
    "/api/v1/namespaces/shop/services/waypoint",
    "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/waypoint/status",
];

/// Where the objects of the ingress gateway `shop/ingress` (a Gateway of class `istio`)
/// are applied, in order, named `<name>-istio` as Istio names them.
const INGRESS_OBJECTS: [&str; 5] = [
    "/api/v1/namespaces/shop/configmaps/ambit-root-cert",
    "/api/v1/namespaces/shop/serviceaccounts/ingress-istio",
    "/apis/apps/v1/namespaces/shop/deployments/ingress-istio",
    "/api/v1/namespaces/shop/services/ingress-istio",
    "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/ingress/status",
];

/// How long the Kubernetes source may take to reflect a change (a relist waits for
/// kube-rs's backoff, under a second).
const CONVERGE_WITHIN: Duration = Duration::from_secs(10);

/// Where the API serves `kind` in its preferred version.
fn path(kind: &Kind) -> String {
    let version = kind.versions[0];
    if let Some((namespace, _)) = kind.only {
        format!("/api/{version}/namespaces/{namespace}/{}", kind.plural)
    } else if kind.group.is_empty() {
        format!("/api/{version}/{}", kind.plural)
    } else {
        format!("/apis/{}/{version}/{}", kind.group, kind.plural)
    }
}

/// The paths of every kind the model reads, but `missing`.
fn every_kind_but(missing: Option<&str>) -> Vec<String> {
    KINDS
        .iter()
        .map(path)
        .filter(|path| Some(path.as_str()) != missing)
        .collect()
}

/// The model the folder source builds from `objects`, each in a file of its own as the
/// API serves it (JSON is YAML).
fn folder_model(objects: &[Value]) -> Mesh {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for (index, object) in objects.iter().enumerate() {
        let text = serde_json::to_string_pretty(object).expect("JSON");
        fs::write(dir.path().join(format!("{index:03}.yaml")), text).expect("written");
    }
    let source = FolderSource::start(dir.path(), TRUST_DOMAIN).expect("the folder source");
    source.subscribe().borrow().mesh.clone()
}

/// `mesh` with every entry's source file cleared: the two sources name different places
/// (`kube://…`, a temporary folder's files) by design.
fn without_sources(mesh: &Mesh) -> Mesh {
    fn cleared<K: Ord + Clone, V: Clone>(
        entries: &BTreeMap<K, Arc<V>>,
        source: fn(&mut V) -> &mut PathBuf,
    ) -> BTreeMap<K, Arc<V>> {
        entries
            .iter()
            .map(|(key, entry)| {
                let mut entry = V::clone(entry);
                *source(&mut entry) = PathBuf::new();
                (key.clone(), Arc::new(entry))
            })
            .collect()
    }
    Mesh {
        workloads: cleared(&mesh.workloads, |w| &mut w.source),
        services: cleared(&mesh.services, |s| &mut s.source),
        routes: cleared(&mesh.routes, |r| &mut r.source),
        policies: cleared(&mesh.policies, |p| &mut p.source),
        credentials: cleared(&mesh.credentials, |c| &mut c.source),
        waypoints: mesh.waypoints.clone(),
    }
}

/// Waits until `model`, the Kubernetes source's, is the folder source's model of what
/// `api` holds now; returns that model.
async fn converges(model: &mut ModelSource, api: &FakeApi, what: &str) -> Mesh {
    let expected = without_sources(&folder_model(&api.objects()));
    let deadline = tokio::time::Instant::now() + CONVERGE_WITHIN;
    loop {
        let actual = without_sources(&model.borrow_and_update().mesh);
        if actual == expected {
            return expected;
        }
        match tokio::time::timeout_at(deadline, model.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("{what}: the Kubernetes source ended"),
            Err(_) => panic!(
                "{what}: after {CONVERGE_WITHIN:?} the Kubernetes source's model differs from the folder's\nKubernetes: {actual:#?}\nfolder: {expected:#?}"
            ),
        }
    }
}

#[tokio::test]
async fn adds_edits_and_deletes_change_the_model_as_the_same_edits_in_a_folder() {
    let api = FakeApi::start(every_kind_but(None)).await;
    let source = KubeSource::start(api.client(), TRUST_DOMAIN).await;
    let mut model = source.subscribe();
    let mut before = converges(&mut model, &api, "an empty cluster").await;

    let steps = [
        (
            "a pending pod is added",
            PODS,
            "ADDED",
            "pod-cart-pending.json",
        ),
        (
            "its ambient namespace is added",
            NAMESPACES,
            "ADDED",
            "namespace-shop.json",
        ),
        (
            "a service selecting it is added",
            SERVICES,
            "ADDED",
            "service-cart.json",
        ),
        (
            "the pod runs with an IP",
            PODS,
            "MODIFIED",
            "pod-cart-running.json",
        ),
        (
            "its node is seen, with its region and zone",
            NODES,
            "ADDED",
            "node-a.json",
        ),
        (
            "a route to the service is added",
            VIRTUAL_SERVICES,
            "ADDED",
            "virtualservice-cart.json",
        ),
        (
            "the route's timeout and retries change",
            VIRTUAL_SERVICES,
            "MODIFIED",
            "virtualservice-cart-retries.json",
        ),
        (
            "the route is deleted",
            VIRTUAL_SERVICES,
            "DELETED",
            "virtualservice-cart-retries.json",
        ),
        (
            "Istio's mesh config is added, with an external authorizer",
            MESH_CONFIG,
            "ADDED",
            "configmap-istio.json",
        ),
        (
            "the mesh config is deleted",
            MESH_CONFIG,
            "DELETED",
            "configmap-istio.json",
        ),
        (
            "the service is deleted",
            SERVICES,
            "DELETED",
            "service-cart.json",
        ),
        (
            "the pod is deleted",
            PODS,
            "DELETED",
            "pod-cart-running.json",
        ),
    ];
    for (what, path, event, object) in steps {
        api.event(path, event, recorded(object)).await;
        let after = converges(&mut model, &api, what).await;
        assert_ne!(after, before, "{what}: the step should change the model");
        before = after;
    }
}

#[tokio::test]
async fn a_relist_after_410_gone_drops_what_was_deleted_meanwhile() {
    let api = FakeApi::start(every_kind_but(None)).await;
    api.put_quietly(PODS, recorded("pod-cart-pending.json"));
    api.put_quietly(PODS, recorded("pod-web.json"));
    let source = KubeSource::start(api.client(), TRUST_DOMAIN).await;
    let mut model = source.subscribe();
    let listed = converges(&mut model, &api, "the initial list").await;
    assert_eq!(listed.workloads.len(), 2, "{listed:#?}");

    // While the watch is away: one pod is deleted, the other gets its IP.
    api.delete_quietly(PODS, &recorded("pod-web.json"));
    api.put_quietly(PODS, recorded("pod-cart-running.json"));
    api.expire_watch(PODS).await;

    let relisted = converges(&mut model, &api, "the relist after 410 Gone").await;
    let names: Vec<&str> = relisted
        .workloads
        .keys()
        .map(|(_, name)| name.as_str())
        .collect();
    assert_eq!(names, ["cart-7d9f8b6c5d-x2x9q"], "{relisted:#?}");

    api.event(PODS, "ADDED", recorded("pod-web.json")).await;
    converges(&mut model, &api, "an add on the new watch").await;
}

/// Captures this thread's warnings (and worse) until the guard is dropped: the tests
/// that read logs run on one thread, so the source's tasks log here.
fn capture_warnings() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// What the test's tracing subscriber writes.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("the log buffer")
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// The lines with `needle`, once there is one.
    async fn wait_for_lines_with(&self, needle: &str) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + CONVERGE_WITHIN;
        loop {
            let lines = self.lines_with(needle);
            if !lines.is_empty() {
                return lines;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "after {CONVERGE_WITHIN:?}, no log line with {needle:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn lines_with(&self, needle: &str) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().expect("the log buffer")).into_owned();
        text.lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

// The runtime has one thread, so every task of the source logs to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn a_crd_missing_from_the_cluster_is_reported_once_and_the_other_kinds_keep_working() {
    let (logs, _logging) = capture_warnings();
    let api = FakeApi::start(every_kind_but(Some(VIRTUAL_SERVICES))).await;
    api.put_quietly(PODS, recorded("pod-cart-running.json"));
    let source = KubeSource::start(api.client(), TRUST_DOMAIN).await;
    let mut model = source.subscribe();
    converges(&mut model, &api, "the initial list without VirtualServices").await;

    api.event(SERVICES, "ADDED", recorded("service-cart.json"))
        .await;
    let after = converges(&mut model, &api, "a service added").await;
    assert_eq!(after.services.len(), 1, "{after:#?}");

    let warnings = logs.lines_with("virtualservices.networking.istio.io");
    assert_eq!(
        warnings.len(),
        1,
        "one warning about the missing CRD: {warnings:#?}"
    );
    assert!(
        warnings[0].contains("WARN") && warnings[0].contains("kubectl apply -f deploy/crds/"),
        "the warning says how to install the CRD: {}",
        warnings[0]
    );
}

/// Checks `event` is the Warning about the rejected `object` (as the API served it),
/// and that its note names the object and says each of `says`.
fn assert_warns_about(event: &Value, object: &Value, says: &[&str]) {
    let meta = &object["metadata"];
    let regarding = json!({
        "apiVersion": object["apiVersion"],
        "kind": object["kind"],
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta["uid"],
        "resourceVersion": meta["resourceVersion"],
    });
    assert_eq!(
        event["regarding"], regarding,
        "the object it is about: {event:#}"
    );
    assert_eq!(
        event["metadata"]["namespace"], meta["namespace"],
        "{event:#}"
    );
    for (field, value) in [
        ("type", "Warning"),
        ("reason", "InvalidConfig"),
        ("action", "Reject"),
        ("reportingController", "ambit-controller"),
    ] {
        assert_eq!(event[field], value, "{field}: {event:#}");
    }
    let note = event["note"].as_str().unwrap_or_default();
    for said in ["shop/cart (VirtualService) rejected: "].iter().chain(says) {
        assert!(note.contains(said), "{said:?} not in the note {note:?}");
    }
}

#[tokio::test]
async fn a_rejected_object_gets_one_warning_event_per_message() {
    let api = FakeApi::start(every_kind_but(None)).await;
    api.answer_posts(SHOP_EVENTS, |event| (StatusCode::CREATED, event.clone()));
    let source = KubeSource::start(api.client(), TRUST_DOMAIN).await;
    let mut model = source.subscribe();
    converges(&mut model, &api, "an empty cluster").await;

    let bad = recorded("virtualservice-cart-bad-weights.json");
    let bad = api.event(VIRTUAL_SERVICES, "ADDED", bad).await;
    let events = api.posts_to(SHOP_EVENTS, 1).await;
    assert_warns_about(
        &events[0],
        &bad,
        &[
            "spec.http[0].route: weights sum to 90, they must sum to 100",
            "; spec.http[0].route[0].destination.subset: no DestinationRule",
        ],
    );

    // A relist, an unchanged resync and another object's change write nothing.
    api.expire_watch(VIRTUAL_SERVICES).await;
    api.event(VIRTUAL_SERVICES, "MODIFIED", bad).await;
    api.event(SERVICES, "ADDED", recorded("service-cart.json"))
        .await;
    converges(
        &mut model,
        &api,
        "a service added beside the rejected route",
    )
    .await;
    // Fixed: valid, nothing to say.
    let fixed = recorded("virtualservice-cart-retries.json");
    api.event(VIRTUAL_SERVICES, "MODIFIED", fixed).await;
    converges(&mut model, &api, "the route fixed").await;

    // Broken differently. Events are written in order, so any Event written since the
    // first would come before this one.
    let broken = recorded("virtualservice-cart-bad-retry-on.json");
    let broken = api.event(VIRTUAL_SERVICES, "MODIFIED", broken).await;
    let events = api.posts_to(SHOP_EVENTS, 2).await;
    assert_warns_about(
        &events[1],
        &broken,
        &["spec.http[0].retries.retryOn: unknown retry condition `sometimes`"],
    );
    let routes = model.borrow().mesh.routes.len();
    assert_eq!(routes, 1, "the fixed version stays in force");
}

// One thread, so the source's tasks log to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn an_event_the_api_refuses_is_logged_and_the_model_goes_on() {
    let (logs, _logging) = capture_warnings();
    let api = FakeApi::start(every_kind_but(None)).await;
    api.answer_posts(SHOP_EVENTS, |_| {
        (StatusCode::FORBIDDEN, recorded("events-forbidden.json"))
    });
    api.put_quietly(
        VIRTUAL_SERVICES,
        recorded("virtualservice-cart-bad-weights.json"),
    );
    let source = KubeSource::start(api.client(), TRUST_DOMAIN).await;
    let mut model = source.subscribe();
    api.posts_to(SHOP_EVENTS, 1).await;

    api.event(SERVICES, "ADDED", recorded("service-cart.json"))
        .await;
    let after = converges(&mut model, &api, "a service added after a refused Event").await;
    assert_eq!(after.services.len(), 1, "{after:#?}");
    let warnings = logs.wait_for_lines_with("cannot write the Event").await;
    assert_eq!(warnings.len(), 1, "one warning: {warnings:#?}");
    assert!(
        warnings[0].contains("object=\"cart\"") && warnings[0].contains("forbidden"),
        "the warning names the object and the API's reason: {}",
        warnings[0]
    );
}

/// What the test deployer deploys: its own image and addresses, to see them used.
fn waypoint_template() -> Template {
    Template {
        flags: WaypointDeployment {
            waypoint_image: "registry.example/ambit:test".into(),
            waypoint_controller_address: "https://push.example:15010".into(),
            waypoint_ca_address: "https://ca.example:15012".into(),
            waypoint_token_audience: "ambit-ca".into(),
            waypoint_zipkin_address: None,
            waypoint_trace_sampling: None,
            // No resync within a test, unless it sets one.
            resync_secs: 3600,
        },
        trust_domain: TRUST_DOMAIN.into(),
        root_pem: ROOT_PEM.into(),
    }
}

/// The mesh root the test deployer publishes.
const ROOT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

/// Checks `applied` are the server-side applies of the mesh root's ConfigMap, of
/// `gateway`'s three objects, each named, labelled and owned as Istio's are, then of the
/// Gateway's status, programmed at `address`.
fn assert_applied_for(applied: &[ApiWrite], gateway: &Value, address: &Value) {
    let paths: Vec<&str> = applied.iter().map(|write| write.path.as_str()).collect();
    assert_eq!(paths, WAYPOINT_OBJECTS, "{applied:#?}");
    let (root, applied) = (&applied[0].body, &applied[1..]);
    assert_eq!(root["kind"], "ConfigMap", "{root:#}");
    assert_eq!(
        root["data"],
        json!({"root-cert.pem": ROOT_PEM}),
        "the mesh root, as the waypoint mounts it"
    );
    assert!(
        root["metadata"]["ownerReferences"].is_null(),
        "shared by the namespace's waypoints, owned by none: {root:#}"
    );
    let owner = json!([{
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "name": "waypoint",
        "uid": gateway["metadata"]["uid"],
        "controller": true,
    }]);
    for (write, kind) in applied
        .iter()
        .zip(["ServiceAccount", "Deployment", "Service", "Gateway"])
    {
        assert_eq!(
            write.content_type, "application/apply-patch+yaml",
            "a server-side apply: {write:#?}"
        );
        let mut query: Vec<&str> = write.query.split('&').filter(|p| !p.is_empty()).collect();
        query.sort_unstable();
        assert_eq!(
            query,
            ["fieldManager=ambit-controller", "force=true"],
            "{write:#?}"
        );
        let (body, meta) = (&write.body, &write.body["metadata"]);
        assert_eq!(body["kind"], kind, "{body:#}");
        assert_eq!(
            (&meta["namespace"], &meta["name"]),
            (&json!("shop"), &json!("waypoint"))
        );
        if kind == "Gateway" {
            continue;
        }
        assert_eq!(
            meta["ownerReferences"], owner,
            "{kind} owned by the Gateway"
        );
        assert_eq!(
            meta["labels"],
            json!({
                "gateway.networking.k8s.io/gateway-name": "waypoint",
                "istio.io/gateway-name": "waypoint",
            }),
            "{kind}"
        );
    }
    let pod = &applied[1].body["spec"]["template"];
    assert_eq!(
        pod["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"], "waypoint",
        "the label the model finds the waypoint's pods by"
    );
    assert_eq!(pod["metadata"]["labels"]["istio.io/dataplane-mode"], "none");
    assert_eq!(pod["spec"]["serviceAccountName"], "waypoint");
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/ambit:test");
    assert_eq!(container["command"], json!(["ambit-waypoint"]));
    let args = container["args"].as_array().expect("args");
    for arg in [
        "--name=waypoint",
        "--namespace=shop",
        "--controller-address=https://push.example:15010",
        "--ca-address=https://ca.example:15012",
        "--ca-root-file=/var/run/secrets/ambit/root-cert.pem",
    ] {
        assert!(args.contains(&json!(arg)), "{arg} not in {args:?}");
    }
    let ports: Vec<(&Value, &Value)> = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|port| (&port["name"], &port["containerPort"]))
        .collect();
    assert_eq!(
        ports,
        [
            (&json!("mesh"), &json!(15008)),
            (&json!("metrics"), &json!(15020))
        ]
    );
    let service = &applied[2].body["spec"];
    assert_eq!(
        service["selector"],
        json!({"gateway.networking.k8s.io/gateway-name": "waypoint"})
    );
    assert_eq!(
        service["ports"],
        json!([{"name": "mesh", "port": 15008, "targetPort": 15008, "protocol": "TCP", "appProtocol": "tcp"}])
    );
    let status = &applied[3].body["status"];
    assert_eq!(status["addresses"], json!([address]), "{status:#}");
    let conditions: Vec<(&Value, &Value, &Value)> = status["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .map(|c| (&c["type"], &c["status"], &c["reason"]))
        .collect();
    assert_eq!(
        conditions,
        [
            (&json!("Accepted"), &json!("True"), &json!("Accepted")),
            (&json!("Programmed"), &json!("True"), &json!("Programmed")),
        ],
        "{status:#}"
    );
    for condition in status["conditions"].as_array().expect("conditions") {
        let when = condition["lastTransitionTime"].as_str().unwrap_or_default();
        assert!(
            when.ends_with('Z') && when.len() == "2026-01-01T00:00:00Z".len(),
            "an RFC 3339 time to the second: {condition:#}"
        );
    }
}

#[tokio::test]
async fn each_gateway_gets_its_objects_applied_once_per_uid() {
    let api = FakeApi::start(every_kind_but(None)).await;
    api.put_quietly(GATEWAYS, recorded("gateway-ingress.json"));
    // The API gives the Service its cluster IP, which the Gateway's status reports.
    api.answer_patches(WAYPOINT_OBJECTS[3], |service| {
        let mut service = service.clone();
        service["spec"]["clusterIP"] = json!("10.96.0.20");
        (StatusCode::OK, service)
    });
    let source = KubeSource::start(api.client(), TRUST_DOMAIN).await;
    let mut model = source.subscribe();
    converges(&mut model, &api, "a cluster with an ingress Gateway").await;
    let deploying = tokio::spawn(deployer::run(
        api.client(),
        waypoint_template(),
        source.subscribe(),
    ));

    // The ingress Gateway (class istio): its gateway, on its listener, behind a
    // LoadBalancer; its status names the Service (no address from this fake API).
    let applied = api.patches(5).await;
    let paths: Vec<&str> = applied.iter().map(|write| write.path.as_str()).collect();
    assert_eq!(paths, INGRESS_OBJECTS, "{applied:#?}");
    let container = &applied[2].body["spec"]["template"]["spec"]["containers"][0];
    assert!(
        container["args"]
            .as_array()
            .is_some_and(|args| args.contains(&json!("--ingress"))),
        "{container:#}"
    );
    assert_eq!(applied[3].body["spec"]["type"], "LoadBalancer");
    assert_eq!(applied[3].body["spec"]["ports"][0]["port"], 80);
    assert_eq!(
        applied[4].body["status"]["addresses"],
        json!([{"type": "Hostname", "value": "ingress-istio.shop.svc.cluster.local"}])
    );

    let gateway = api
        .event(GATEWAYS, "ADDED", recorded("gateway-waypoint.json"))
        .await;
    let at_cluster_ip = json!({"type": "IPAddress", "value": "10.96.0.20"});
    let applied = api.patches(10).await;
    assert_applied_for(&applied[5..], &gateway, &at_cluster_ip);

    // Changes that leave the Gateways as they are apply nothing; a recreated one (a new
    // uid) is applied again, for its new uid.
    api.event(PODS, "ADDED", recorded("pod-web.json")).await;
    converges(&mut model, &api, "a pod added beside the waypoint").await;
    api.event(GATEWAYS, "DELETED", gateway.clone()).await;
    converges(&mut model, &api, "the waypoint Gateway deleted").await;
    let mut recreated = gateway;
    recreated["metadata"]["uid"] = json!("0b2d4f6a-8c1e-4d3f-a5b7-9c1e3a5b7d9f");
    let recreated = api.event(GATEWAYS, "ADDED", recreated).await;
    let applied = api.patches(15).await;
    assert_applied_for(&applied[10..], &recreated, &at_cluster_ip);
    assert_eq!(applied.len(), 15, "{applied:#?}");

    drop(source);
    tokio::time::timeout(CONVERGE_WITHIN, deploying)
        .await
        .expect("the deployer stops with the model source")
        .expect("the deployer task");
}

#[tokio::test]
async fn an_http_route_gets_its_parents_status_as_the_model_changes() {
    const ROUTES: &str = "/apis/gateway.networking.k8s.io/v1/httproutes";
    const STATUS: &str =
        "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/cart/status";
    let api = FakeApi::start(every_kind_but(None)).await;
    api.put_quietly(ROUTES, recorded("httproute-cart.json"));
    let source = KubeSource::start(api.client(), TRUST_DOMAIN).await;
    let mut model = source.subscribe();
    converges(&mut model, &api, "a cluster with an HTTPRoute").await;
    tokio::spawn(route_status::run(api.client(), source.subscribe()));

    // Neither its parent Service nor its backend exists yet.
    let applied = api.patches(1).await;
    let parent = |applied: &[ApiWrite], at: usize| applied[at].body["status"]["parents"][0].clone();
    let first = parent(&applied, 0);
    assert_eq!(applied[0].path, STATUS, "{applied:#?}");
    assert_eq!(first["controllerName"], route_status::CONTROLLER_NAME);
    assert_eq!(
        first["parentRef"],
        json!({"group": "", "kind": "Service", "name": "cart"})
    );
    let condition = |parent: &Value, at: usize| {
        let condition = &parent["conditions"][at];
        (
            condition["type"].clone(),
            condition["status"].clone(),
            condition["reason"].clone(),
            condition["observedGeneration"].clone(),
        )
    };
    assert_eq!(
        condition(&first, 0),
        (
            json!("Accepted"),
            json!("False"),
            json!("NoMatchingParent"),
            json!(2)
        )
    );
    assert_eq!(
        condition(&first, 1),
        (
            json!("ResolvedRefs"),
            json!("False"),
            json!("BackendNotFound"),
            json!(2)
        )
    );

    // The Service appears: accepted, the backend still missing.
    api.event(SERVICES, "ADDED", recorded("service-cart.json"))
        .await;
    let applied = api.patches(2).await;
    let second = parent(&applied, 1);
    assert_eq!(
        condition(&second, 0),
        (
            json!("Accepted"),
            json!("True"),
            json!("Accepted"),
            json!(2)
        )
    );
    assert_eq!(condition(&second, 1).2, json!("BackendNotFound"));
}

/// A cluster whose Gateway API serves TLSRoute as `v1alpha3` only: the status patch in
/// `v1alpha2` is not found, and the same status goes out in `v1alpha3`.
#[tokio::test]
async fn a_tls_route_status_is_written_in_the_version_the_cluster_serves() {
    const ROUTES: &str = "/apis/gateway.networking.k8s.io/v1alpha2/tlsroutes";
    let status = |version: &str| {
        format!("/apis/gateway.networking.k8s.io/{version}/namespaces/shop/tlsroutes/secure/status")
    };
    let api = FakeApi::start(every_kind_but(None)).await;
    api.answer_patches(&status("v1alpha2"), |_| {
        (StatusCode::NOT_FOUND, recorded("not-found.json"))
    });
    api.put_quietly(
        ROUTES,
        json!({
            "kind": "TLSRoute",
            "apiVersion": "gateway.networking.k8s.io/v1alpha2",
            "metadata": {"name": "secure", "namespace": "shop", "generation": 1},
            "spec": {
                "parentRefs": [{"group": "", "kind": "Service", "name": "cart"}],
                "hostnames": ["secure.example.com"],
                "rules": [{"backendRefs": [{"name": "cart", "port": 443}]}],
            },
        }),
    );
    let source = KubeSource::start(api.client(), TRUST_DOMAIN).await;
    let mut model = source.subscribe();
    converges(&mut model, &api, "a cluster with a TLSRoute").await;
    tokio::spawn(route_status::run(api.client(), source.subscribe()));

    let applied = api.patches(2).await;
    let paths: Vec<&str> = applied.iter().map(|write| write.path.as_str()).collect();
    assert_eq!(
        paths[..2],
        [status("v1alpha2"), status("v1alpha3")],
        "{applied:#?}"
    );
    assert_eq!(
        applied[1].body["apiVersion"],
        "gateway.networking.k8s.io/v1alpha3"
    );
}

#[tokio::test]
async fn a_resync_applies_the_objects_again_but_not_the_status() {
    let api = FakeApi::start(every_kind_but(None)).await;
    let gateway = api.put_quietly(GATEWAYS, recorded("gateway-waypoint.json"));
    let source = KubeSource::start(api.client(), TRUST_DOMAIN).await;
    let mut template = waypoint_template();
    template.flags.resync_secs = 1;
    tokio::spawn(deployer::run(api.client(), template, source.subscribe()));

    // Deployed once with its status; a second later, the root and the three objects
    // again (an object deleted or edited by hand is put back), with no status: its
    // `lastTransitionTime` stays the first apply's.
    let applied = api.patches(9).await;
    let by_name = json!({"type": "Hostname", "value": "waypoint.shop.svc.cluster.local"});
    assert_applied_for(&applied[..5], &gateway, &by_name);
    let again: Vec<&str> = applied[5..9]
        .iter()
        .map(|write| write.path.as_str())
        .collect();
    assert_eq!(again, WAYPOINT_OBJECTS[..4], "{applied:#?}");
}

// One thread, so the deployer's task logs to this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn an_apply_the_api_refuses_is_logged_and_retried() {
    let (logs, _logging) = capture_warnings();
    let api = FakeApi::start(every_kind_but(None)).await;
    let refused = Arc::new(AtomicBool::new(false));
    let refuse_once = Arc::clone(&refused);
    api.answer_patches(WAYPOINT_OBJECTS[2], move |deployment| {
        if refuse_once.swap(true, Ordering::SeqCst) {
            (StatusCode::OK, deployment.clone())
        } else {
            (
                StatusCode::FORBIDDEN,
                recorded("deployments-forbidden.json"),
            )
        }
    });
    let gateway = api.put_quietly(GATEWAYS, recorded("gateway-waypoint.json"));
    let source = KubeSource::start(api.client(), TRUST_DOMAIN).await;
    tokio::spawn(deployer::run(
        api.client(),
        waypoint_template(),
        source.subscribe(),
    ));

    // The root, the ServiceAccount, the refused Deployment; then, with no change, all
    // four and the status, at the Service's host name (this API gives it no cluster IP).
    let applied = api.patches(8).await;
    let paths: Vec<&str> = applied.iter().map(|write| write.path.as_str()).collect();
    assert_eq!(paths[..3], WAYPOINT_OBJECTS[..3], "{applied:#?}");
    let by_name = json!({"type": "Hostname", "value": "waypoint.shop.svc.cluster.local"});
    assert_applied_for(&applied[3..], &gateway, &by_name);
    let warnings = logs.wait_for_lines_with("gateway not deployed").await;
    assert_eq!(warnings.len(), 1, "one warning: {warnings:#?}");
    assert!(
        warnings[0].contains("cannot apply Deployment shop/waypoint")
            && warnings[0].contains("forbidden")
            && warnings[0].contains("controller-rbac.yaml"),
        "the warning names the object, the API's reason and what to check: {}",
        warnings[0]
    );
}
