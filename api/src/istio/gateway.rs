//! `Gateway` (`networking.istio.io`): the ports, protocols, hosts and TLS settings an
//! ingress gateway serves. VirtualServices attach routes to it by naming it in their
//! `gateways:`.
//!
//! Follows Istio's reference (`networking.istio.io/v1`, Gateway). Not to be confused
//! with the Gateway API's `Gateway` (`gateway.networking.k8s.io`), which declares
//! waypoints.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The spec of an Istio `Gateway`.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "networking.istio.io",
    version = "v1",
    kind = "Gateway",
    namespaced,
    shortname = "gw",
    derive = "PartialEq"
)]
#[serde(default, rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The gateway pods serving this, by labels (`istio: ingressgateway`), in any
    /// namespace.
    pub selector: BTreeMap<String, String>,
    pub servers: Vec<Server>,
}

/// One port the gateway listens on, the hosts it accepts there and its TLS settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Server {
    pub port: ServerPort,
    /// Accepted hosts, each optionally `namespace/host`: the namespace (`*` any, `.`
    /// the Gateway's own) whose VirtualServices may bind to it. `*` accepts any host.
    pub hosts: Vec<String>,
    pub tls: Option<ServerTls>,
    /// The address or Unix socket to bind instead of every address.
    pub bind: String,
    /// Where traffic goes without a VirtualService (sidecar ingress only).
    pub default_endpoint: String,
    /// A name for the server, unique within the Gateway.
    pub name: String,
}

/// A server's port and protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ServerPort {
    pub number: u32,
    /// `HTTP`, `HTTPS`, `HTTP2`, `GRPC`, `GRPC-WEB`, `TCP`, `TLS` or `MONGO`, in any
    /// case.
    pub protocol: String,
    pub name: String,
    /// Deprecated by Istio; the port the gateway pod listens on.
    pub target_port: u32,
}

/// How a server terminates TLS (`HTTPS`, `TLS`), or redirects to it (`HTTP`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ServerTls {
    /// On an HTTP server: answer every request with a 301 to `https://`.
    pub https_redirect: bool,
    pub mode: Option<ServerTlsMode>,
    /// A PEM certificate chain file on the gateway (instead of `credentialName`).
    pub server_certificate: String,
    /// A PEM private key file on the gateway.
    pub private_key: String,
    /// A PEM file of the CAs client certificates must chain to (`MUTUAL`).
    pub ca_certificates: String,
    pub ca_crl: String,
    /// A Secret in the gateway pod's namespace holding the certificate (`tls.crt`,
    /// `tls.key`, and for `MUTUAL` `ca.crt`, or `<name>-cacert`).
    pub credential_name: String,
    pub credential_names: Vec<String>,
    /// Client certificates must carry one of these SANs (`MUTUAL`).
    pub subject_alt_names: Vec<String>,
    pub verify_certificate_spki: Vec<String>,
    pub verify_certificate_hash: Vec<String>,
    pub min_protocol_version: Option<TlsProtocol>,
    pub max_protocol_version: Option<TlsProtocol>,
    pub cipher_suites: Vec<String>,
}

/// `tls.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Forward the TLS stream by SNI without terminating it.
    Passthrough,
    /// Terminate TLS with the server certificate.
    Simple,
    /// Terminate TLS and require a client certificate from `caCertificates`.
    Mutual,
    AutoPassthrough,
    IstioMutual,
    /// Like `MUTUAL`, but a client without a certificate is admitted.
    OptionalMutual,
}

/// A TLS protocol version bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsProtocol {
    TlsAuto,
    #[serde(rename = "TLSV1_0")]
    TlsV1_0,
    #[serde(rename = "TLSV1_1")]
    TlsV1_1,
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}

/// A server's protocol, as far as a gateway serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerProtocol {
    /// `HTTP`, `HTTP2`, `GRPC`, `GRPC-WEB`: HTTP in the clear.
    Http,
    /// `HTTPS`: HTTP over TLS terminated by the gateway.
    Https,
    /// `TCP`, `MONGO`: connections relayed as bytes by `tcp` routes.
    Tcp,
    /// `TLS`: TLS connections, passed through by `tls` routes (by SNI) or terminated.
    Tls,
}

impl ServerPort {
    /// What the protocol means to a gateway; `None` for a protocol Istio does not know.
    #[must_use]
    pub fn kind(&self) -> Option<ServerProtocol> {
        match self.protocol.to_ascii_uppercase().as_str() {
            "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => Some(ServerProtocol::Http),
            "HTTPS" => Some(ServerProtocol::Https),
            "TCP" | "MONGO" => Some(ServerProtocol::Tcp),
            "TLS" => Some(ServerProtocol::Tls),
            _ => None,
        }
    }
}

/// A server host, `namespace/host` split; a bare host is `*/host`.
#[must_use]
pub fn split_server_host(host: &str) -> (&str, &str) {
    host.split_once('/').unwrap_or(("*", host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_getting_started_gateway_reads() {
        let spec: GatewaySpec = serde_yaml_ng::from_str(
            "selector: {istio: ingressgateway}
servers:
- port: {number: 443, name: https, protocol: HTTPS}
  hosts: [\"shop/*.example.com\"]
  tls: {mode: SIMPLE, credentialName: shop-cert, minProtocolVersion: TLSV1_2}
",
        )
        .expect("a Gateway spec");
        let server = &spec.servers[0];
        assert_eq!(server.port.kind(), Some(ServerProtocol::Https));
        let tls = server.tls.as_ref().expect("tls");
        assert_eq!(tls.mode, Some(ServerTlsMode::Simple));
        assert_eq!(tls.min_protocol_version, Some(TlsProtocol::TlsV1_2));
        assert_eq!(
            split_server_host(&server.hosts[0]),
            ("shop", "*.example.com")
        );
        assert_eq!(split_server_host("*"), ("*", "*"));
    }
}
