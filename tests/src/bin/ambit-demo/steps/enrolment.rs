//! Pods join the mesh by their namespace's label, with no firewall rule, and get their
//! SPIFFE identity from the mesh CA.

use std::{net::SocketAddr, process::Command, time::Duration};

use ambit_e2e::{PodSpec, app};
use anyhow::{Result, ensure};

use super::{DEFAULT_IDENTITY, READY_TIMEOUT, Step};
use crate::{cluster::Cluster, components::Component};

/// Where every app pod answers: `pod-app serve` (greeting, then echo).
pub const ECHO_PORT: u16 = 8080;
/// Where every app pod answers HTTP with its version.
pub const HTTP_PORT: u16 = 9080;

pub const PODS_JOIN: Step = Step {
    name: "pods join the mesh by namespace label (no sidecar)",
    component: Component::Agent(0),
    run: pods_join,
};

pub const NO_FIREWALL_RULES: Step = Step {
    name: "no iptables or nftables rule anywhere",
    component: Component::Agent(0),
    run: no_firewall_rules,
};

pub const IDENTITIES: Step = Step {
    name: "the mesh CA gives every workload its SPIFFE identity",
    component: Component::Ca,
    run: identities,
};

fn pods_join(cluster: &mut Cluster<'_>) -> Result<String> {
    cluster.add_pod(0, PodSpec::new("shop", "client"))?;
    for (node, version) in [(0, "v1"), (1, "v2")] {
        let spec = PodSpec::new("shop", &format!("app-{version}"))
            .label("app", "app")
            .label("version", version);
        cluster.add_pod(node, spec)?;
    }
    cluster.add_pod(1, PodSpec::new("legacy", "outsider"))?;
    // The waypoint's pod (outside ambient capture) exists from the start; its Gateway
    // and the service using it come later.
    cluster.add_pod(0, PodSpec::waypoint("shop", "waypoint"))?;
    let mut served = cluster.nodes[0].served_workloads()?;
    served.extend(cluster.nodes[1].served_workloads()?);
    served.sort();
    ensure!(
        served == ["app-v1", "app-v2", "client"],
        "ztunnels serve {served:?}"
    );
    for (name, version) in [("app-v1", "v1"), ("app-v2", "v2")] {
        let pod = cluster.pod(name)?;
        let echo = app::serve(pod, SocketAddr::from(([0; 16], ECHO_PORT)))?;
        let http = app::http_serve(pod, SocketAddr::from(([0; 16], HTTP_PORT)), version)?;
        cluster.keep(Component::TestApps, echo);
        cluster.keep(Component::TestApps, http);
    }
    Ok(format!(
        "ztunnels serve {served:?}; legacy/outsider stays outside"
    ))
}

fn no_firewall_rules(cluster: &mut Cluster<'_>) -> Result<String> {
    let mut rules = 0;
    for pod in cluster.pods() {
        for command in [
            vec!["iptables-save"],
            vec!["ip6tables-save"],
            vec!["nft", "list", "ruleset"],
        ] {
            let out = pod
                .exec(
                    Command::new(command[0]).args(&command[1..]),
                    Duration::from_secs(10),
                )?
                .success()?;
            rules += out
                .stdout
                .lines()
                .filter(|l| l.starts_with("-A") || l.starts_with("table"))
                .count();
        }
    }
    ensure!(rules == 0, "{rules} rules found in the pods' namespaces");
    Ok("iptables-save, ip6tables-save and nft list ruleset are empty in every pod".to_owned())
}

fn identities(cluster: &mut Cluster<'_>) -> Result<String> {
    // The CA reads which pods run where when it starts: after the pods.
    let [ca, controller] = cluster.control.start(cluster.net)?;
    cluster.keep(Component::Ca, ca);
    cluster.keep(Component::ConfigPush, controller);
    for mesh in &cluster.nodes {
        mesh.wait_certificate(DEFAULT_IDENTITY, READY_TIMEOUT)?;
    }
    Ok(format!(
        "ambit-controller serve-ca on {} and serve on {}; both ztunnels hold a valid certificate for {DEFAULT_IDENTITY}",
        cluster.control.ca_address(),
        cluster.control.controller_address()
    ))
}
