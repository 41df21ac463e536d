//! The servers of the Istio Gateways an ingress gateway serves, by port: which hosts
//! each port accepts, whether it is HTTP, HTTPS, TLS passed through or TCP, and whether
//! it redirects to HTTPS; and which VirtualServices bind to those Gateways.

use std::collections::BTreeMap;

use ambit_api::istio::{
    GatewaySpec, VirtualServiceSpec,
    gateway::{ServerProtocol, ServerTlsMode, split_server_host},
};

use crate::{config::Named, host::HostPattern};

/// What a port serves (ordered: when servers disagree, which the controller refuses,
/// the last wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum PortProtocol {
    /// HTTP in the clear.
    #[default]
    Http,
    /// HTTP over TLS terminated here (`HTTPS`, `tls.mode: SIMPLE` or `MUTUAL`).
    Https,
    /// TLS forwarded by SNI without terminating it (`tls.mode: PASSTHROUGH`).
    Passthrough,
    /// Bytes relayed by the bound VirtualServices' `tcp:` routes (`TCP`, `MONGO`).
    Tcp,
    /// TLS terminated here, then relayed by `tcp:` routes (`TLS` with `SIMPLE` or
    /// `MUTUAL`).
    TlsTerminated,
}

/// One port's servers, merged.
#[derive(Debug, Clone, Default)]
pub struct PortServers {
    pub protocol: PortProtocol,
    /// Every request is answered with a 301 to `https://` (`tls.httpsRedirect`).
    pub https_redirect: bool,
    hosts: Vec<ServerHost>,
}

/// One host of a server.
#[derive(Debug, Clone)]
struct ServerHost {
    /// The Gateway of the server, as `namespace/name`.
    gateway: String,
    /// The namespaces whose VirtualServices may route it (`namespace/host`): `None` for
    /// any (`*/`).
    namespace: Option<String>,
    pattern: HostPattern,
}

/// What decides where a VirtualService applies on an ingress gateway.
#[derive(Debug, Clone)]
pub struct Binding {
    pub namespace: String,
    pub hosts: Vec<HostPattern>,
    /// The Gateways it binds to, as `namespace/name`.
    pub gateways: Vec<String>,
}

impl PortServers {
    /// Whether a request for `host` (no port) is accepted here.
    #[must_use]
    pub fn accepts(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts
            .iter()
            .any(|server| server.pattern.matches(&host))
    }

    /// Whether the port's connections are relayed by `tcp:` routes (they name no host).
    #[must_use]
    pub fn relays_tcp(&self) -> bool {
        matches!(
            self.protocol,
            PortProtocol::Tcp | PortProtocol::TlsTerminated
        )
    }

    /// Whether the VirtualService `binding` describes routes this port's traffic, as
    /// Istio builds each port's routes: a server here of a Gateway it binds to has a
    /// host that is also one of its hosts (for TCP, which names no host, this is all
    /// that ties them), in a namespace that host admits (`shop/…` only `shop`'s).
    #[must_use]
    pub fn routes_for(&self, binding: &Binding) -> bool {
        self.hosts.iter().any(|server| {
            binding.gateways.contains(&server.gateway)
                && server
                    .namespace
                    .as_ref()
                    .is_none_or(|namespace| *namespace == binding.namespace)
                && binding
                    .hosts
                    .iter()
                    .any(|host| server.pattern.overlaps(host))
        })
    }
}

/// Every port the Gateways listen on.
#[derive(Debug, Clone, Default)]
pub struct Servers {
    by_port: BTreeMap<u16, PortServers>,
}

impl Servers {
    /// The servers of `gateways` (validated by the controller: ports in range, HTTP,
    /// HTTPS, TLS passed through or TCP; anything else is skipped).
    #[must_use]
    pub fn compile(gateways: &[Named<GatewaySpec>]) -> Self {
        let mut by_port: BTreeMap<u16, PortServers> = BTreeMap::new();
        for gateway in gateways {
            for server in &gateway.spec.servers {
                let Ok(port) = u16::try_from(server.port.number) else {
                    continue;
                };
                let passthrough = server
                    .tls
                    .as_ref()
                    .is_some_and(|tls| tls.mode == Some(ServerTlsMode::Passthrough));
                let protocol = match (server.port.kind(), passthrough) {
                    (Some(ServerProtocol::Https | ServerProtocol::Tls), true) => {
                        PortProtocol::Passthrough
                    }
                    (Some(ServerProtocol::Http), _) => PortProtocol::Http,
                    (Some(ServerProtocol::Https), false) => PortProtocol::Https,
                    (Some(ServerProtocol::Tcp), _) => PortProtocol::Tcp,
                    (Some(ServerProtocol::Tls), false) => PortProtocol::TlsTerminated,
                    (None, _) => continue,
                };
                let entry = by_port.entry(port).or_default();
                entry.protocol = entry.protocol.max(protocol);
                entry.https_redirect |= server.tls.as_ref().is_some_and(|tls| tls.https_redirect);
                entry.hosts.extend(server.hosts.iter().map(|host| {
                    let (namespace, host) = split_server_host(host);
                    ServerHost {
                        gateway: gateway.key(),
                        namespace: match namespace {
                            "*" => None,
                            "." => Some(gateway.namespace.clone()),
                            namespace => Some(namespace.to_owned()),
                        },
                        pattern: HostPattern::resolve(host, &gateway.namespace),
                    }
                }));
            }
        }
        Self { by_port }
    }

    /// The servers on `port`, if any Gateway listens there.
    #[must_use]
    pub fn on_port(&self, port: u16) -> Option<&PortServers> {
        self.by_port.get(&port)
    }

    /// The ports whose servers take the VirtualService `binding` describes
    /// ([`PortServers::routes_for`]).
    #[must_use]
    pub fn ports_routing(&self, binding: &Binding) -> Vec<u16> {
        self.by_port
            .iter()
            .filter(|(_, servers)| servers.routes_for(binding))
            .map(|(port, _)| *port)
            .collect()
    }

    /// Every port listened on, and what it serves.
    pub fn ports(&self) -> impl Iterator<Item = (u16, PortProtocol)> + '_ {
        self.by_port
            .iter()
            .map(|(port, servers)| (*port, servers.protocol))
    }
}

/// The Gateways of `gateways` that `vs` binds to, as `namespace/name`: those it names in
/// `gateways:` as `namespace/name`, or as `name` from its own namespace.
#[must_use]
pub fn bound_gateways(
    vs: &Named<VirtualServiceSpec>,
    gateways: &[Named<GatewaySpec>],
) -> Vec<String> {
    let names = |gateway: &Named<GatewaySpec>, reference: &String| {
        let (namespace, name) = reference
            .split_once('/')
            .unwrap_or((vs.namespace.as_str(), reference.as_str()));
        gateway.namespace == namespace && gateway.name == name
    };
    gateways
        .iter()
        .filter(|gateway| vs.spec.gateways.iter().any(|r| names(gateway, r)))
        .map(Named::key)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(yaml: &str) -> Named<GatewaySpec> {
        Named {
            namespace: "istio-system".into(),
            name: "ingress".into(),
            spec: serde_yaml_ng::from_str(yaml).expect("a Gateway spec"),
        }
    }

    #[test]
    fn ports_merge_their_servers_hosts_and_redirects() {
        let gateways = [gateway(
            "servers:
- port: {number: 80, protocol: HTTP}
  hosts: [\"shop/*.example.com\"]
  tls: {httpsRedirect: true}
- port: {number: 80, protocol: HTTP}
  hosts: [api.example.org]
- port: {number: 443, protocol: HTTPS}
  hosts: [\"*\"]
  tls: {mode: SIMPLE, credentialName: cert}
- port: {number: 8443, protocol: HTTPS}
  hosts: [secure.example.com]
  tls: {mode: PASSTHROUGH}
- port: {number: 9443, protocol: TLS}
  hosts: [\"*\"]
  tls: {mode: PASSTHROUGH}
- port: {number: 9000, protocol: TCP}
  hosts: [\"shop/*\"]
- port: {number: 9001, protocol: TLS}
  hosts: [\"*\"]
  tls: {mode: SIMPLE, credentialName: cert}
",
        )];
        let servers = Servers::compile(&gateways);
        assert_eq!(
            servers.ports().collect::<Vec<_>>(),
            [
                (80, PortProtocol::Http),
                (443, PortProtocol::Https),
                (8443, PortProtocol::Passthrough),
                (9000, PortProtocol::Tcp),
                (9001, PortProtocol::TlsTerminated),
                (9443, PortProtocol::Passthrough)
            ]
        );
        assert!(
            servers
                .on_port(8443)
                .expect("8443")
                .accepts("secure.example.com")
        );
        let http = servers.on_port(80).expect("port 80");
        assert!(http.https_redirect);
        assert!(http.accepts("www.Example.com"));
        assert!(http.accepts("api.example.org."));
        assert!(!http.accepts("example.com"));
        assert!(servers.on_port(443).expect("443").accepts("anything"));
        let tcp = servers.on_port(9000).expect("9000");
        assert!(tcp.relays_tcp());
        assert!(servers.on_port(9001).expect("9001").relays_tcp());
        assert!(!servers.on_port(9443).expect("9443").relays_tcp());
        let binding = |namespace: &str, host: &str| Binding {
            namespace: namespace.into(),
            hosts: vec![HostPattern::resolve(host, namespace)],
            gateways: vec!["istio-system/ingress".into()],
        };
        assert!(tcp.routes_for(&binding("shop", "db")));
        assert!(
            !tcp.routes_for(&binding("other", "db")),
            "`shop/*` admits shop's VirtualServices only"
        );
        let http = servers.on_port(80).expect("port 80");
        assert!(http.routes_for(&binding("shop", "www.example.com")));
        assert!(http.routes_for(&binding("other", "api.example.org")));
        assert!(!http.routes_for(&binding("other", "www.example.com")));
        assert!(
            !http.routes_for(&Binding {
                gateways: vec!["istio-system/other".into()],
                ..binding("shop", "www.example.com")
            }),
            "bound to another Gateway"
        );
    }

    #[test]
    fn a_virtual_service_binds_by_qualified_or_same_namespace_name() {
        let other = Named {
            name: "admin".into(),
            ..gateway("servers: []")
        };
        let gateways = [gateway("servers: []"), other];
        let vs = |namespace: &str, bound: &[&str]| Named {
            namespace: namespace.into(),
            name: "web".into(),
            spec: VirtualServiceSpec {
                gateways: bound.iter().map(|g| (*g).to_owned()).collect(),
                ..VirtualServiceSpec::default()
            },
        };
        let bound = |vs| bound_gateways(&vs, &gateways);
        assert_eq!(
            bound(vs("shop", &["istio-system/ingress"])),
            ["istio-system/ingress"]
        );
        assert_eq!(
            bound(vs("istio-system", &["admin", "ingress", "mesh"])),
            ["istio-system/ingress", "istio-system/admin"]
        );
        assert!(bound(vs("shop", &["ingress"])).is_empty());
        assert!(bound(vs("shop", &["mesh"])).is_empty());
        assert!(bound(vs("shop", &[])).is_empty());
    }
}
