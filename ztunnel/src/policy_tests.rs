//! The L4 decision as Istio documents it, on pushed policies.

use std::collections::HashMap;

use ambit_api::{
    config::{self as pb, Resource},
    identity::Identity,
};

use super::*;

fn authorization(
    name: &str,
    scope: pb::PolicyScope,
    selector: &[(&str, &str)],
    action: pb::AuthorizationAction,
    rules: Vec<pb::AuthorizationRule>,
) -> Resource {
    Resource {
        key: format!("authorizationpolicy/shop/{name}"),
        kind: Some(Kind::Authorization(pb::Authorization {
            namespace: if scope == pb::PolicyScope::Mesh {
                "istio-system"
            } else {
                "shop"
            }
            .into(),
            name: name.into(),
            scope: scope.into(),
            selector: labels(selector),
            action: action.into(),
            rules,
        })),
    }
}

fn peer_authentication(
    name: &str,
    scope: pb::PolicyScope,
    selector: &[(&str, &str)],
    mode: pb::MtlsMode,
    port_modes: &[(u32, pb::MtlsMode)],
) -> Resource {
    Resource {
        key: format!("peerauthentication/shop/{name}"),
        kind: Some(Kind::PeerAuthentication(pb::PeerAuthentication {
            namespace: "shop".into(),
            name: name.into(),
            scope: scope.into(),
            selector: labels(selector),
            mode: mode.into(),
            port_modes: port_modes.iter().map(|(p, m)| (*p, (*m).into())).collect(),
        })),
    }
}

fn server_workload() -> Resource {
    Resource {
        key: "workload/shop/server".into(),
        kind: Some(Kind::Workload(pb::Workload {
            namespace: "shop".into(),
            name: "server".into(),
            labels: labels(&[("app", "server")]),
            ..Default::default()
        })),
    }
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// One rule with one clause holding `m`.
fn rule(m: pb::ConnectionMatch) -> pb::AuthorizationRule {
    pb::AuthorizationRule {
        clauses: vec![pb::AuthorizationClause { matches: vec![m] }],
    }
}

fn principals(names: &[&str]) -> pb::ConnectionMatch {
    pb::ConnectionMatch {
        principals: names.iter().map(|n| (*n).to_owned()).collect(),
        ..Default::default()
    }
}

fn policies(resources: Vec<Resource>) -> Policies {
    let policies = Policies::new();
    let mut upserted = vec![server_workload()];
    upserted.extend(resources);
    let update = ConfigUpdate {
        version: 1,
        full: true,
        upserted,
        removed: Vec::new(),
        more: false,
    };
    policies.commit(policies.stage(&update).expect("the policies parse"));
    policies
}

fn server() -> Workload {
    Workload {
        namespace: "shop".into(),
        name: "server".into(),
        labels: BTreeMap::new(),
    }
}

fn from(namespace: &str, service_account: &str) -> Connection {
    Connection {
        source_ip: "198.18.1.2".parse().expect("ip"),
        source_identity: Some(
            Identity::new("cluster.local", namespace, service_account).expect("identity"),
        ),
        destination_ip: "198.18.2.2".parse().expect("ip"),
        destination_port: 8080,
    }
}

fn plaintext(port: u16) -> Connection {
    Connection {
        source_identity: None,
        destination_port: port,
        ..from("x", "y")
    }
}

fn decide(policies: &Policies, connection: Connection) -> Result<(), Denial> {
    policies.admit(server(), connection).map(drop)
}

use pb::{AuthorizationAction::*, PolicyScope::*};

#[test]
fn without_policies_everything_is_allowed() {
    let policies = policies(Vec::new());
    assert_eq!(decide(&policies, from("shop", "alpha")), Ok(()));
    assert_eq!(decide(&policies, plaintext(8080)), Ok(()));
}

#[test]
fn allow_by_principal_denies_everything_else() {
    let allow = rule(principals(&["cluster.local/ns/shop/sa/alpha"]));
    let policies = policies(vec![authorization(
        "allow-alpha",
        WorkloadSelector,
        &[("app", "server")],
        Allow,
        vec![allow],
    )]);
    assert_eq!(decide(&policies, from("shop", "alpha")), Ok(()));
    let denial = decide(&policies, from("lab", "mallory")).expect_err("not alpha");
    assert!(
        denial.to_string().contains("shop/allow-alpha"),
        "the denial names the policies that could have allowed: {denial}"
    );
    assert!(
        decide(&policies, plaintext(8080)).is_err(),
        "plaintext has no principal, so it cannot match"
    );
}

#[test]
fn a_selector_that_does_not_match_leaves_the_workload_alone() {
    let policies = policies(vec![authorization(
        "allow-nothing",
        WorkloadSelector,
        &[("app", "other")],
        Allow,
        Vec::new(),
    )]);
    assert_eq!(decide(&policies, from("lab", "mallory")), Ok(()));
}

#[test]
fn an_allow_policy_without_rules_denies_everything() {
    let policies = policies(vec![authorization(
        "deny-all",
        Namespace,
        &[],
        Allow,
        Vec::new(),
    )]);
    assert!(decide(&policies, from("shop", "alpha")).is_err());
}

#[test]
fn an_empty_rule_allows_everything() {
    let policies = policies(vec![authorization(
        "allow-all",
        Namespace,
        &[],
        Allow,
        vec![pb::AuthorizationRule::default()],
    )]);
    assert_eq!(decide(&policies, plaintext(8080)), Ok(()));
}

#[test]
fn deny_wins_over_allow() {
    let by_namespace = rule(pb::ConnectionMatch {
        namespaces: vec!["lab".into()],
        ..Default::default()
    });
    let everyone = pb::AuthorizationRule::default();
    let policies = policies(vec![
        authorization("deny-lab", Mesh, &[], Deny, vec![by_namespace]),
        authorization("allow-all", Namespace, &[], Allow, vec![everyone]),
    ]);
    assert_eq!(
        decide(&policies, from("lab", "mallory")),
        Err(Denial::Denied {
            policy: "istio-system/deny-lab".into()
        })
    );
    assert_eq!(decide(&policies, from("shop", "alpha")), Ok(()));
}

#[test]
fn wildcards_negations_ports_and_ip_blocks() {
    let shop_but_not_admin = pb::ConnectionMatch {
        principals: vec!["cluster.local/ns/shop/*".into()],
        not_principals: vec!["*/sa/admin".into()],
        ..Default::default()
    };
    let port_and_block = pb::ConnectionMatch {
        destination_ports: vec![8080],
        source_ips: vec!["198.18.0.0/15".into()],
        not_source_ips: vec!["198.18.9.0/24".into()],
        ..Default::default()
    };
    let both = pb::AuthorizationRule {
        clauses: vec![
            pb::AuthorizationClause {
                matches: vec![shop_but_not_admin],
            },
            pb::AuthorizationClause {
                matches: vec![port_and_block],
            },
        ],
    };
    let policies = policies(vec![authorization(
        "narrow",
        Namespace,
        &[],
        Allow,
        vec![both],
    )]);
    assert_eq!(decide(&policies, from("shop", "alpha")), Ok(()));
    assert!(
        decide(&policies, from("shop", "admin")).is_err(),
        "notPrincipals"
    );
    assert!(
        decide(&policies, from("lab", "alpha")).is_err(),
        "principal prefix"
    );
    let other_port = Connection {
        destination_port: 9090,
        ..from("shop", "alpha")
    };
    assert!(decide(&policies, other_port).is_err(), "ports");
    let excluded = Connection {
        source_ip: "198.18.9.7".parse().expect("ip"),
        ..from("shop", "alpha")
    };
    assert!(decide(&policies, excluded).is_err(), "notIpBlocks");
}

#[test]
fn strict_refuses_plaintext_with_port_and_scope_precedence() {
    let policies = policies(vec![
        peer_authentication("mesh", Mesh, &[], pb::MtlsMode::Permissive, &[]),
        peer_authentication("strict", Namespace, &[], pb::MtlsMode::Strict, &[]),
        peer_authentication(
            "server-9090",
            WorkloadSelector,
            &[("app", "server")],
            pb::MtlsMode::Unset,
            &[(9090, pb::MtlsMode::Permissive)],
        ),
    ]);
    assert_eq!(
        decide(&policies, plaintext(8080)),
        Err(Denial::PlaintextRefused {
            policy: "shop/strict".into(),
            port: 8080
        }),
        "the selector's UNSET passes to the namespace's STRICT"
    );
    assert_eq!(
        decide(&policies, plaintext(9090)),
        Ok(()),
        "the port override"
    );
    assert_eq!(
        decide(&policies, from("lab", "mallory")),
        Ok(()),
        "mutual TLS passes STRICT"
    );
}

#[test]
fn a_policy_change_revokes_what_it_now_forbids() {
    let policies = policies(Vec::new());
    let alpha = policies
        .admit(server(), from("shop", "alpha"))
        .expect("no policy yet");
    let mallory = policies
        .admit(server(), from("lab", "mallory"))
        .expect("no policy yet");
    let deny_alpha = rule(principals(&["cluster.local/ns/shop/sa/alpha"]));
    let update = ConfigUpdate {
        version: 2,
        full: false,
        upserted: vec![authorization(
            "deny-alpha",
            Namespace,
            &[],
            Deny,
            vec![deny_alpha],
        )],
        removed: Vec::new(),
        more: false,
    };
    let closed = policies.commit(policies.stage(&update).expect("parses"));
    assert_eq!(closed, 1, "only alpha's connection is forbidden now");
    let revoked = futures_ready(alpha.revoked());
    assert!(revoked, "alpha's connection is revoked");
    assert!(!futures_ready(mallory.revoked()), "mallory's stays");
    drop(alpha);
    assert_eq!(
        policies.open_connections(),
        1,
        "a closed connection is forgotten"
    );
}

#[test]
fn a_bad_policy_is_refused_whole() {
    let policies = policies(Vec::new());
    let bad = authorization(
        "bad",
        Namespace,
        &[],
        Allow,
        vec![rule(pb::ConnectionMatch {
            source_ips: vec!["not-a-cidr".into()],
            ..Default::default()
        })],
    );
    let update = ConfigUpdate {
        version: 2,
        full: false,
        upserted: vec![bad],
        removed: Vec::new(),
        more: false,
    };
    let error = policies.stage(&update).expect_err("a bad CIDR").to_string();
    assert!(
        error.contains("shop/bad") && error.contains("not-a-cidr"),
        "{error}"
    );
}

/// Whether `future` is ready on its first poll.
fn futures_ready(future: impl std::future::Future<Output = ()>) -> bool {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    future.as_mut().poll(&mut cx).is_ready()
}
