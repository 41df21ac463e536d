//! Pods and Services read from their manifests: the fields the model needs, bad values
//! logged with the object and field and skipped.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use ambit_api::{
    enrolment::{self, Decision},
    identity::Identity,
    manifests::{Manifests, Object},
};
use serde_yaml_ng::Value;

use super::{Service, ServicePort, Workload};
use crate::hosts;

/// What the enrolment decision reads, indexed once per build: each namespace and each
/// pod's first definition, the objects [`enrolment::decide_from_manifests`] finds, without
/// its scan of every object for every pod.
pub(super) struct EnrolmentInputs<'a> {
    namespaces: HashMap<&'a str, &'a Object>,
    pods: HashMap<(&'a str, &'a str), &'a Object>,
}

impl<'a> EnrolmentInputs<'a> {
    pub(super) fn new(manifests: &'a Manifests) -> Self {
        let mut namespaces = HashMap::new();
        let mut pods = HashMap::new();
        for object in &manifests.objects {
            let name = object.metadata.name.as_str();
            match object.kind.as_str() {
                "Namespace" => {
                    namespaces.entry(name).or_insert(object);
                }
                "Pod" => {
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

pub(super) fn workload(enrolment: &EnrolmentInputs, pod: &Object, trust_domain: &str) -> Workload {
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
    Workload {
        decision: enrolment.decide(&namespace, &pod.metadata.name),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        node: pod.spec_str("nodeName").map(str::to_owned),
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

pub(super) fn service(object: &Object) -> Service {
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
    })
}
