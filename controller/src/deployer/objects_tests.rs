use serde_json::{Value, json};

use super::*;
use crate::deployer::{DEFAULT_CA_ADDRESS, DEFAULT_CONTROLLER_ADDRESS, DEFAULT_IMAGE};

const OWNER: Owner<'static> = Owner {
    namespace: "shop",
    name: "waypoint",
    uid: "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
    role: &Role::Waypoint,
};

fn template() -> Template {
    Template {
        flags: WaypointDeployment {
            waypoint_image: "registry.example/ambit:test".into(),
            waypoint_controller_address: "https://push.example:15010".into(),
            waypoint_ca_address: "https://ca.example:15012".into(),
            waypoint_token_audience: "mesh-ca".into(),
            waypoint_zipkin_address: None,
            waypoint_trace_sampling: None,
            resync_secs: 300,
        },
        trust_domain: "example.org".into(),
        root_pem: "ROOT".into(),
    }
}

fn json_of(object: &impl serde::Serialize) -> Value {
    serde_json::to_value(object).expect("JSON")
}

#[test]
fn every_object_is_named_labelled_and_owned_like_istios() {
    let template = template();
    let expected_metadata = json!({
        "name": "waypoint",
        "namespace": "shop",
        "labels": {
            "gateway.networking.k8s.io/gateway-name": "waypoint",
            "istio.io/gateway-name": "waypoint",
        },
        "ownerReferences": [{
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "name": "waypoint",
            "uid": "4f1c2d3e-5a6b-4c7d-8e9f-0a1b2c3d4e5f",
            "controller": true,
        }],
    });
    for (kind, object) in [
        ("ServiceAccount", json_of(&template.service_account(OWNER))),
        ("Deployment", json_of(&template.deployment(OWNER))),
        ("Service", json_of(&template.service(OWNER))),
    ] {
        assert_eq!(object["kind"], kind, "{object:#}");
        assert_eq!(object["metadata"], expected_metadata, "{kind}");
    }
}

#[test]
fn the_deployment_runs_one_waypoint_as_the_gateways_account_outside_the_mesh() {
    let deployment = json_of(&template().deployment(OWNER));
    let spec = &deployment["spec"];
    assert_eq!(deployment["apiVersion"], "apps/v1");
    assert_eq!(spec["replicas"], 1);
    assert_eq!(
        spec["selector"],
        json!({"matchLabels": {"gateway.networking.k8s.io/gateway-name": "waypoint"}})
    );
    let pod = &spec["template"];
    assert_eq!(
        pod["metadata"]["labels"],
        json!({
            "gateway.networking.k8s.io/gateway-name": "waypoint",
            "istio.io/gateway-name": "waypoint",
            "istio.io/dataplane-mode": "none",
        }),
        "found by the model by its Gateway's name; never captured"
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "waypoint");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);

    let containers = pod["spec"]["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{containers:#?}");
    let container = &containers[0];
    assert_eq!(container["image"], "registry.example/ambit:test");
    assert_eq!(container["command"], json!(["ambit-waypoint"]));
    assert_eq!(
        container["args"],
        json!([
            "--name=waypoint",
            "--namespace=shop",
            "--service-account=waypoint",
            "--trust-domain=example.org",
            "--controller-address=https://push.example:15010",
            "--ca-address=https://ca.example:15012",
            "--ca-token-file=/var/run/secrets/tokens/ambit-ca-token",
            "--ca-root-file=/var/run/secrets/ambit/root-cert.pem",
            "--listen=[::]:15008",
            "--metrics-listen=[::]:15020",
        ])
    );
    assert_eq!(
        container["env"],
        json!([
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ])
    );
    assert_eq!(
        container["ports"],
        json!([
            {"name": "mesh", "containerPort": 15008, "protocol": "TCP"},
            {"name": "metrics", "containerPort": 15020, "protocol": "TCP"},
        ])
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/healthz/ready", "port": "metrics"})
    );
    assert_eq!(
        container["resources"]["requests"],
        json!({"cpu": "100m", "memory": "64Mi"})
    );
}

#[test]
fn the_waypoints_report_spans_where_the_controller_is_told() {
    let mut template = template();
    template.flags.waypoint_zipkin_address = Some("zipkin.istio-system:9411".into());
    template.flags.waypoint_trace_sampling = Some(10.0);
    let deployment = json_of(&template.deployment(OWNER));
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    let args: Vec<&str> = args
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        args[args.len() - 2..],
        [
            "--zipkin-address=zipkin.istio-system:9411",
            "--trace-sampling=10"
        ]
    );
}

#[test]
fn the_ca_token_and_the_mesh_root_are_mounted_where_the_waypoint_reads_them() {
    let deployment = json_of(&template().deployment(OWNER));
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([
            {"name": "ambit-root-cert", "configMap": {"name": "ambit-root-cert"}},
            {
                "name": "ambit-ca-token",
                "projected": {"sources": [{"serviceAccountToken": {
                    "audience": "mesh-ca",
                    "expirationSeconds": 43200,
                    "path": "ambit-ca-token",
                }}]},
            },
        ])
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        json!([
            {"name": "ambit-ca-token", "mountPath": "/var/run/secrets/tokens", "readOnly": true},
            {"name": "ambit-root-cert", "mountPath": "/var/run/secrets/ambit", "readOnly": true},
        ])
    );
    let root = json_of(&root_config_map("shop", "ROOT"));
    assert_eq!(
        (&root["metadata"]["name"], &root["data"]),
        (&json!("ambit-root-cert"), &json!({"root-cert.pem": "ROOT"})),
        "the ConfigMap the volume names holds the root under the file name the flag gives"
    );
}

#[test]
fn the_service_sends_hbone_to_the_waypoints_pods() {
    let service = json_of(&template().service(OWNER));
    assert_eq!(service["apiVersion"], "v1");
    assert_eq!(
        service["spec"],
        json!({
            "type": "ClusterIP",
            "selector": {"gateway.networking.k8s.io/gateway-name": "waypoint"},
            "ports": [{
                "name": "mesh",
                "port": 15008,
                "targetPort": 15008,
                "protocol": "TCP",
                "appProtocol": "tcp",
            }],
        })
    );
}

#[test]
fn the_defaults_are_what_deploy_kubernetes_runs_and_serves() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/kubernetes/controller.yaml"
    );
    let manifest = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(
        manifest.contains(&format!("image: {DEFAULT_IMAGE}\n")),
        "{path} runs another image than {DEFAULT_IMAGE}"
    );
    // `https://<Service>.<namespace>.svc:<port>` of the controller's Service.
    for (address, port) in [
        (DEFAULT_CONTROLLER_ADDRESS, "15010"),
        (DEFAULT_CA_ADDRESS, "15012"),
    ] {
        assert_eq!(
            address,
            format!("https://ambit-controller.ambit-system.svc:{port}")
        );
        assert!(
            manifest.contains(&format!("      port: {port}\n")),
            "{path}'s Service serves no port {port}"
        );
    }
    assert!(
        manifest.contains(
            "kind: Service\nmetadata:\n  name: ambit-controller\n  namespace: ambit-system\n"
        ),
        "{path} has no Service ambit-controller in ambit-system"
    );
}

#[test]
fn an_ingress_gateway_runs_with_ingress_on_its_listeners_behind_a_load_balancer() {
    let template = template();
    let role = Role::Ingress(vec![("http".into(), 80), ("https".into(), 443)]);
    let owner = Owner {
        name: "bookinfo-gateway",
        role: &role,
        ..OWNER
    };
    let deployment = json_of(&template.deployment(owner));
    assert_eq!(deployment["metadata"]["name"], "bookinfo-gateway-istio");
    assert_eq!(
        deployment["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"],
        "bookinfo-gateway"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "bookinfo-gateway-istio");
    assert_eq!(
        pod["securityContext"]["sysctls"],
        json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}])
    );
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for expected in [
        "--name=bookinfo-gateway",
        "--service-account=bookinfo-gateway-istio",
        "--ingress",
    ] {
        assert!(args.contains(&expected), "{expected} in {args:?}");
    }
    let ports: Vec<&Value> = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|port| &port["containerPort"])
        .collect();
    assert_eq!(ports, [&json!(80), &json!(443), &json!(15020)]);

    let service = json_of(&template.service(owner));
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    assert_eq!(
        service["spec"]["ports"],
        json!([
            {"name": "http", "port": 80, "targetPort": 80, "protocol": "TCP"},
            {"name": "https", "port": 443, "targetPort": 443, "protocol": "TCP"},
        ])
    );
    assert_eq!(
        template.service_account(owner).metadata.name.as_deref(),
        Some("bookinfo-gateway-istio")
    );
}
