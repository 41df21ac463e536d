//! Pods, Services and Secrets read from their manifests: the fields the model needs,
//! bad values logged with the object and field and skipped. Nodes matter only for their
//! labels: a pod's locality.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

use ambit_api::{
    enrolment::{self, Decision},
    identity::Identity,
    locality::Locality,
    manifests::{Manifests, Object},
};
use serde_yaml_ng::Value;

use super::{Key, Mesh, Service, ServicePort, Workload, credentials};
use crate::hosts;

/// The namespaces whose workloads and services are resolved.
#[derive(Debug)]
pub(super) enum Scope {
    All,
    Namespaces(BTreeSet<String>),
}

impl Scope {
    fn contains(&self, namespace: &str) -> bool {
        match self {
            Self::All => true,
            Self::Namespaces(namespaces) => namespaces.contains(namespace),
        }
    }
}

/// Replaces the workloads, services and TLS credentials of `scope` in `mesh` with those
/// `manifests` defines (the last definition of a name wins); an entry that is the same keeps its
/// `Arc`. Endpoints are left to [`resolve_endpoints`].
pub(super) fn resolve(mesh: &mut Mesh, manifests: &Manifests, trust_domain: &str, scope: &Scope) {
    let in_scope = |object: &&Object| scope.contains(object.namespace());
    let enrolment = EnrolmentInputs::new(manifests, scope);
    let nodes: HashMap<&str, &BTreeMap<String, String>> = manifests
        .of_kind("Node")
        .map(|node| (node.metadata.name.as_str(), &node.metadata.labels))
        .collect();
    let workloads = manifests
        .of_kind("Pod")
        .filter(in_scope)
        .map(|pod| workload(&enrolment, &nodes, pod, trust_domain))
        .map(|w| ((w.namespace.clone(), w.name.clone()), w))
        .collect();
    replace_in_scope(&mut mesh.workloads, workloads, scope);
    let services = manifests
        .of_kind("Service")
        .filter(in_scope)
        .map(service)
        .map(|s| ((s.namespace.clone(), s.name.clone()), s))
        .collect();
    replace_in_scope(&mut mesh.services, services, scope);
    let credentials = manifests
        .of_kind("Secret")
        .filter(in_scope)
        .filter_map(credentials::from_secret)
        .map(|c| ((c.namespace.clone(), c.name.clone()), c))
        .collect();
    replace_in_scope(&mut mesh.credentials, credentials, scope);
}

/// Puts `fresh` in place of the entries of `scope`, keeping the `Arc` of an entry that
/// is the same.
fn replace_in_scope<V: PartialEq>(
    held: &mut BTreeMap<Key, Arc<V>>,
    fresh: BTreeMap<Key, V>,
    scope: &Scope,
) {
    held.retain(|key, _| !scope.contains(&key.0) || fresh.contains_key(key));
    for (key, value) in fresh {
        if held.get(&key).is_none_or(|was| **was != value) {
            held.insert(key, Arc::new(value));
        }
    }
}

/// Sets the [`endpoints`] of every service of `scope`.
pub(super) fn resolve_endpoints(mesh: &mut Mesh, scope: &Scope) {
    let Mesh {
        workloads,
        services,
        ..
    } = mesh;
    for (key, service) in services.iter_mut() {
        if !scope.contains(&key.0) {
            continue;
        }
        let endpoints = endpoints(service, workloads);
        if service.endpoints != endpoints {
            Arc::make_mut(service).endpoints = endpoints;
        }
    }
}

/// A service's endpoints: the IPs of the workloads of its namespace whose labels hold
/// every entry of its selector (a Service without a selector has none), sorted.
fn endpoints(service: &Service, workloads: &BTreeMap<Key, Arc<Workload>>) -> Vec<IpAddr> {
    if service.selector.is_empty() {
        return Vec::new();
    }
    let mut endpoints: Vec<IpAddr> = workloads
        .range((service.namespace.clone(), String::new())..)
        .take_while(|((namespace, _), _)| *namespace == service.namespace)
        .map(|(_, w)| w)
        .filter(|w| {
            service
                .selector
                .iter()
                .all(|(k, v)| w.labels.get(k) == Some(v))
        })
        .flat_map(|w| w.ips.iter().copied())
        .collect();
    endpoints.sort();
    endpoints.dedup();
    endpoints
}

/// What the enrolment decision reads, indexed once per build: each namespace and each
/// pod's first definition, the objects [`enrolment::decide_from_manifests`] finds, without
/// its scan of every object for every pod.
struct EnrolmentInputs<'a> {
    namespaces: HashMap<&'a str, &'a Object>,
    pods: HashMap<(&'a str, &'a str), &'a Object>,
}

impl<'a> EnrolmentInputs<'a> {
    /// The namespaces, and the pods of `scope`.
    fn new(manifests: &'a Manifests, scope: &Scope) -> Self {
        let mut namespaces = HashMap::new();
        let mut pods = HashMap::new();
        for object in &manifests.objects {
            let name = object.metadata.name.as_str();
            match object.kind.as_str() {
                "Namespace" => {
                    namespaces.entry(name).or_insert(object);
                }
                "Pod" if scope.contains(object.namespace()) => {
                    pods.entry((object.namespace(), name)).or_insert(object);
                }
                _ => {}
            }
        }
        Self { namespaces, pods }
    }

    /// [`enrolment::decide_from_manifests`] for the pod `namespace/name`.
    fn decide(&self, namespace: &str, name: &str) -> Decision {
        let unlabelled = BTreeMap::new();
        let namespace_labels = self
            .namespaces
            .get(namespace)
            .map_or(&unlabelled, |o| &o.metadata.labels);
        let pod = self.pods.get(&(namespace, name));
        let pod_labels = pod.map_or(&unlabelled, |o| &o.metadata.labels);
        let host_network = pod.is_some_and(|o| o.spec_flag("hostNetwork"));
        enrolment::decide(namespace_labels, pod_labels, host_network)
    }
}

/// Node name → its labels.
type NodeLabels<'a> = HashMap<&'a str, &'a BTreeMap<String, String>>;

fn workload(
    enrolment: &EnrolmentInputs,
    nodes: &NodeLabels<'_>,
    pod: &Object,
    trust_domain: &str,
) -> Workload {
    let namespace = pod.namespace().to_owned();
    let service_account = pod
        .spec_str("serviceAccountName")
        .unwrap_or("default")
        .to_owned();
    let identity = match Identity::new(trust_domain, &namespace, &service_account) {
        Ok(identity) => Some(identity),
        Err(error) => {
            tracing::warn!(pod = %pod.metadata.name, %namespace, %error, "pod names no valid identity");
            None
        }
    };
    let node = pod.spec_str("nodeName");
    Workload {
        decision: enrolment.decide(&namespace, &pod.metadata.name),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        locality: Locality::of_pod(
            &pod.metadata.labels,
            node.and_then(|node| nodes.get(node).copied()),
        ),
        node: node.map(str::to_owned),
        service_account,
        identity,
        ips: pod_ips(pod),
        labels: pod.metadata.labels.clone(),
        source: pod.source.file.clone(),
        namespace,
    }
}

/// `status.podIPs[].ip`, else `status.podIP`; unparsable addresses are logged and skipped.
fn pod_ips(pod: &Object) -> Vec<IpAddr> {
    let status = pod.extra.get("status");
    let listed: Vec<&str> = status
        .and_then(|s| s.get("podIPs"))
        .and_then(Value::as_sequence)
        .map(|ips| ips.iter().filter_map(|ip| ip.get("ip")?.as_str()).collect())
        .unwrap_or_default();
    let single = status.and_then(|s| s.get("podIP")).and_then(Value::as_str);
    let texts = if listed.is_empty() {
        single.into_iter().collect()
    } else {
        listed
    };
    parse_ips(&texts, &pod.metadata.name, "status.podIPs")
}

fn parse_ips(texts: &[&str], object: &str, field: &str) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for text in texts {
        match text.parse() {
            Ok(ip) if !ips.contains(&ip) => ips.push(ip),
            Ok(_) => {}
            Err(_) => tracing::warn!(%object, %field, value = %text, "not an IP address; skipped"),
        }
    }
    ips
}

fn service(object: &Object) -> Service {
    let namespace = object.namespace().to_owned();
    let name = object.metadata.name.clone();
    let listed: Vec<&str> = object
        .spec
        .get("clusterIPs")
        .and_then(Value::as_sequence)
        .map(|ips| ips.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let single = object.spec_str("clusterIP").filter(|ip| *ip != "None");
    let texts = if listed.is_empty() {
        single.into_iter().collect()
    } else {
        listed
    };
    let cluster_ips = parse_ips(
        &texts
            .into_iter()
            .filter(|ip| *ip != "None")
            .collect::<Vec<_>>(),
        &name,
        "spec.clusterIPs",
    );
    let ports = object
        .spec
        .get("ports")
        .and_then(Value::as_sequence)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| service_port(p, &name))
                .collect()
        })
        .unwrap_or_default();
    let selector = object
        .spec
        .get("selector")
        .and_then(|s| serde_yaml_ng::from_value(s.clone()).ok())
        .unwrap_or_default();
    Service {
        hostname: format!("{name}.{namespace}.svc.{}", hosts::DEFAULT_DOMAIN_SUFFIX),
        namespace,
        name,
        cluster_ips,
        ports,
        selector,
        endpoints: Vec::new(),
        waypoint: None,
        source: object.source.file.clone(),
    }
}

fn service_port(port: &Value, service: &str) -> Option<ServicePort> {
    let number = port.get("port").and_then(Value::as_u64);
    let Some(number) = number
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
    else {
        tracing::warn!(%service, field = "spec.ports[].port", "port missing or out of range (use 1 to 65535); skipped");
        return None;
    };
    let text = |field: &str| port.get(field).and_then(Value::as_str).unwrap_or_default();
    Some(ServicePort {
        name: text("name").to_owned(),
        port: number,
        target_port: port
            .get("targetPort")
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok()),
        protocol: if text("protocol").is_empty() {
            "TCP"
        } else {
            text("protocol")
        }
        .to_owned(),
        app_protocol: text("appProtocol").to_owned(),
    })
}
