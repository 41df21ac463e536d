//! Connection conditions (`tcp[].match`, Istio's `L4MatchAttributes`, and `tls[].match`):
//! what a TCP route can see of a connection without reading its bytes — the address and
//! port the client connected to (`destinationSubnets`, `port`), who it is
//! (`sourceLabels`, `sourceNamespace`) and what it came through (`gateways`) — and, for
//! a TLS route, the server name its ClientHello asked for (`sniHosts`).

use std::net::IpAddr;

use ambit_api::{
    ip_block::{self, IpNet},
    istio::virtual_service::{L4MatchAttributes, TlsMatchAttributes},
};

use super::{GatewayCondition, MatchError, Source, SourceCondition, port_condition};
use crate::host::HostPattern;

/// The parts of a connection that conditions look at.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionView<'a> {
    /// The address the client connected to (a service VIP).
    pub destination: IpAddr,
    /// The port the client connected to.
    pub port: u16,
    /// Who connected, when known.
    pub source: Option<Source<'a>>,
    /// What the connection came through, as `gateways` names it.
    pub gateways: &'a [String],
    /// The server name a TLS client asked for (SNI), when the connection was inspected.
    pub sni: Option<&'a str>,
}

/// One compiled `match` entry of a TCP route: every condition set must hold.
#[derive(Debug, Clone, Default)]
pub struct ConnectionMatch {
    /// Any one holds; none: any address.
    destination_subnets: Vec<IpNet>,
    port: Option<u16>,
    source: SourceCondition,
    gateways: GatewayCondition,
    /// A TLS route's `sniHosts`: any one holds; none: any connection.
    sni_hosts: Vec<HostPattern>,
}

impl ConnectionMatch {
    /// Compiles one `match` entry of a VirtualService in `namespace`; `field`
    /// (`tcp[0].match[1]`) prefixes error paths. Every problem is reported.
    pub fn compile(
        field: &str,
        namespace: &str,
        spec: &L4MatchAttributes,
    ) -> Result<Self, Vec<MatchError>> {
        let mut errors = Vec::new();
        let destination_subnets = spec
            .destination_subnets
            .iter()
            .enumerate()
            .filter_map(|(i, subnet)| {
                ip_block::parse(subnet)
                    .map_err(|source| {
                        errors.push(MatchError::Subnet {
                            field: format!("{field}.destinationSubnets[{i}]"),
                            source,
                        });
                    })
                    .ok()
            })
            .collect();
        let port = port_condition(spec.port)
            .map_err(|e| errors.push(e))
            .ok()
            .flatten();
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            destination_subnets,
            port,
            source: SourceCondition::new(&spec.source_labels, &spec.source_namespace),
            gateways: GatewayCondition::new(&spec.gateways, namespace),
            sni_hosts: Vec::new(),
        })
    }

    /// Compiles one `match` entry of a TLS route: the TCP conditions and `sniHosts`.
    pub fn compile_tls(
        field: &str,
        namespace: &str,
        spec: &TlsMatchAttributes,
    ) -> Result<Self, Vec<MatchError>> {
        let l4 = L4MatchAttributes {
            destination_subnets: spec.destination_subnets.clone(),
            port: spec.port,
            source_labels: spec.source_labels.clone(),
            gateways: spec.gateways.clone(),
            source_namespace: spec.source_namespace.clone(),
        };
        Ok(Self {
            sni_hosts: spec
                .sni_hosts
                .iter()
                .map(|host| HostPattern::literal(host))
                .collect(),
            ..Self::compile(field, namespace, &l4)?
        })
    }

    /// Whether every condition holds for `connection`.
    #[must_use]
    pub fn matches(&self, connection: &ConnectionView<'_>) -> bool {
        let destination = connection.destination.to_canonical();
        (self.destination_subnets.is_empty()
            || self
                .destination_subnets
                .iter()
                .any(|net| net.contains(&destination)))
            && self.port.is_none_or(|port| port == connection.port)
            && self.source.holds(connection.source)
            && self.gateways.holds(connection.gateways)
            && (self.sni_hosts.is_empty()
                || connection.sni.is_some_and(|sni| {
                    let sni = sni.trim_end_matches('.').to_ascii_lowercase();
                    self.sni_hosts.iter().any(|host| host.matches(&sni))
                }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn compile(yaml: &str) -> ConnectionMatch {
        let spec: L4MatchAttributes = serde_yaml_ng::from_str(yaml).expect("test match is YAML");
        ConnectionMatch::compile("tcp[0].match[0]", "shop", &spec).expect("test match compiles")
    }

    const MESH: &[String] = &[];

    fn connection(destination: &str, port: u16) -> ConnectionView<'static> {
        ConnectionView {
            destination: destination.parse().expect("test address"),
            port,
            source: None,
            gateways: MESH,
            sni: None,
        }
    }

    #[test]
    fn sni_hosts_need_the_server_name_a_tls_client_sent() {
        let spec: TlsMatchAttributes = serde_yaml_ng::from_str(
            "{sniHosts: [login.example.com, '*.shop.io', reviews], port: 443}",
        )
        .expect("test match is YAML");
        let tls = ConnectionMatch::compile_tls("tls[0].match[0]", "shop", &spec)
            .expect("test match compiles");
        let with_sni = |sni| ConnectionView {
            sni: Some(sni),
            ..connection("10.96.0.1", 443)
        };
        for sni in [
            "login.example.com",
            "LOGIN.example.com.",
            "a.shop.io",
            "reviews",
        ] {
            assert!(tls.matches(&with_sni(sni)), "{sni}");
        }
        for sni in ["example.com", "shop.io", "reviews.shop.svc.cluster.local"] {
            assert!(!tls.matches(&with_sni(sni)), "{sni}");
        }
        assert!(!tls.matches(&connection("10.96.0.1", 443)), "no SNI");
        assert!(!tls.matches(&ConnectionView {
            port: 8443,
            ..with_sni("reviews")
        }));
    }

    #[test]
    fn port_and_destination_subnets_must_hold() {
        let on_port = compile("port: 9000");
        assert!(on_port.matches(&connection("10.96.0.1", 9000)));
        assert!(!on_port.matches(&connection("10.96.0.1", 9001)));
        let in_subnet = compile("destinationSubnets: ['10.96.0.0/16', '2001:db8::1']");
        assert!(in_subnet.matches(&connection("10.96.3.4", 1)));
        assert!(in_subnet.matches(&connection("::ffff:10.96.3.4", 1)));
        assert!(in_subnet.matches(&connection("2001:db8::1", 1)));
        assert!(!in_subnet.matches(&connection("10.97.0.1", 1)));
        assert!(compile("{}").matches(&connection("10.97.0.1", 1)));
    }

    #[test]
    fn source_labels_need_a_known_source() {
        let from_v2 = compile("sourceLabels: {version: v2}");
        let labels: BTreeMap<String, String> = [("version".to_owned(), "v2".to_owned())].into();
        let known = ConnectionView {
            source: Some(Source {
                namespace: "shop",
                labels: &labels,
            }),
            ..connection("10.96.0.1", 80)
        };
        assert!(from_v2.matches(&known));
        assert!(!from_v2.matches(&connection("10.96.0.1", 80)));
    }

    #[test]
    fn every_bad_condition_is_reported_with_its_path() {
        let spec: L4MatchAttributes =
            serde_yaml_ng::from_str("{port: 70000, destinationSubnets: [not-a-net]}")
                .expect("YAML");
        let errors: Vec<String> = ConnectionMatch::compile("tcp[1].match[0]", "shop", &spec)
            .expect_err("both are wrong")
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(
            errors[0].starts_with("`tcp[1].match[0].destinationSubnets[0]`"),
            "{errors:#?}"
        );
        assert!(errors[1].contains("70000"), "{errors:#?}");
    }
}
