//! A Gateway API `Gateway` of class `istio` as the Istio Gateway Istio makes of it: one
//! server per listener (its port, protocol and name; its hostname, `*` when none, open
//! to the routes of the Gateway's namespace or of all, as `allowedRoutes` says; an HTTPS
//! listener's Secret as `credentialName`, a TLS listener as a `PASSTHROUGH` server),
//! selecting the gateway's pods by `gateway.networking.k8s.io/gateway-name`, as Istio
//! labels the pods it deploys.

use ambit_api::{
    gateway_api::gateway::{FromNamespaces, GatewaySpec, Listener, TlsMode},
    istio::gateway::{
        GatewaySpec as IstioGatewaySpec, Server, ServerPort, ServerTls, ServerTlsMode,
    },
};

use super::waypoints::GATEWAY_NAME_LABEL;

/// The Istio Gateway serving the (validated) Gateway `name`.
pub(super) fn istio_gateway(name: &str, spec: &GatewaySpec) -> IstioGatewaySpec {
    IstioGatewaySpec {
        selector: [(GATEWAY_NAME_LABEL.to_owned(), name.to_owned())].into(),
        servers: spec.listeners.iter().map(server).collect(),
    }
}

fn server(listener: &Listener) -> Server {
    let namespaces = match listener
        .allowed_routes
        .as_ref()
        .and_then(|allowed| allowed.namespaces.as_ref()?.from)
        .unwrap_or_default()
    {
        FromNamespaces::All => "*",
        _ => ".",
    };
    let host = listener.hostname.as_deref().unwrap_or("*");
    let tls = listener
        .tls
        .as_ref()
        .map(|tls| match tls.mode.unwrap_or_default() {
            // The ClientHello's server name picks the TLSRoute; no certificate is used.
            TlsMode::Passthrough => ServerTls {
                mode: Some(ServerTlsMode::Passthrough),
                ..ServerTls::default()
            },
            TlsMode::Terminate => ServerTls {
                mode: Some(ServerTlsMode::Simple),
                credential_name: tls
                    .certificate_refs
                    .first()
                    .map(|secret| secret.name.clone())
                    .unwrap_or_default(),
                ..ServerTls::default()
            },
        });
    Server {
        port: ServerPort {
            number: listener.port,
            protocol: listener.protocol.clone(),
            name: listener.name.clone(),
            target_port: 0,
        },
        hosts: vec![format!("{namespaces}/{host}")],
        tls,
        name: listener.name.clone(),
        ..Server::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_become_servers_open_to_the_namespaces_allowed_routes_name() {
        let spec: GatewaySpec = serde_yaml_ng::from_str(
            "
gatewayClassName: istio
listeners:
- {name: http, port: 80, protocol: HTTP}
- name: https
  hostname: shop.example.com
  port: 443
  protocol: HTTPS
  tls: {certificateRefs: [{name: shop-cert}]}
  allowedRoutes: {namespaces: {from: All}}
- {name: tls, hostname: db.example.com, port: 5433, protocol: TLS, tls: {mode: Passthrough}}
",
        )
        .expect("test Gateway is YAML");
        let istio = istio_gateway("edge", &spec);
        assert_eq!(istio.selector[GATEWAY_NAME_LABEL], "edge");
        type Tls<'a> = Option<(Option<ServerTlsMode>, &'a str)>;
        let summary: Vec<(u32, &str, &str, &str, Tls<'_>)> = istio
            .servers
            .iter()
            .map(|server| {
                (
                    server.port.number,
                    server.port.name.as_str(),
                    server.port.protocol.as_str(),
                    server.hosts[0].as_str(),
                    server
                        .tls
                        .as_ref()
                        .map(|tls| (tls.mode, tls.credential_name.as_str())),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (80, "http", "HTTP", "./*", None),
                (
                    443,
                    "https",
                    "HTTPS",
                    "*/shop.example.com",
                    Some((Some(ServerTlsMode::Simple), "shop-cert"))
                ),
                (
                    5433,
                    "tls",
                    "TLS",
                    "./db.example.com",
                    Some((Some(ServerTlsMode::Passthrough), ""))
                ),
            ]
        );
    }
}
