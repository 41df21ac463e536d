//! TLS for an ingress gateway's HTTPS ports, and TLS ports terminated into `tcp:` routes
//! (no ALPN offered there: what follows is not HTTP): per port a rustls server config that picks
//! the certificate by SNI among the port's servers (the first server's when no host
//! matches, as Envoy's default filter chain), and for `MUTUAL` requires a client
//! certificate from the server's CAs (`OPTIONAL_MUTUAL`: verifies one when given).
//!
//! Certificates come from a Secret in the gateway's namespace (`credentialName`, pushed
//! by the controller; a MUTUAL server's CAs from its `ca.crt` or the `<name>-cacert`
//! Secret), or from PEM files on the gateway (`serverCertificate`, `privateKey`,
//! `caCertificates`).

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    sync::{Arc, LazyLock},
};

use ambit_api::istio::{
    GatewaySpec,
    gateway::{ServerProtocol, ServerTls, ServerTlsMode, split_server_host},
};
use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};

use crate::{config::Named, host::HostPattern};

pub(crate) static PROVIDER: LazyLock<Arc<CryptoProvider>> =
    LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));

/// A Secret's TLS material, PEM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credential {
    pub cert_chain: String,
    pub private_key: String,
    pub ca_certificates: String,
}

/// Credentials by `(namespace, name)` of their Secret.
pub type Credentials = HashMap<(String, String), Credential>;

/// Why a server's TLS cannot be set up (its port is not served until fixed).
#[derive(Debug, thiserror::Error)]
#[error("Gateway {gateway}, server {server} (port {port}): {problem}")]
pub struct TlsSetupError {
    pub gateway: String,
    pub server: usize,
    pub port: u16,
    pub problem: String,
}

/// The TLS config of every HTTPS port and TLS-terminating port of `gateways`, with
/// certificates from
/// `credentials` in `namespace` (the gateway's own) or from files; and what could not be
/// set up, by server.
#[must_use]
pub fn port_configs(
    gateways: &[Named<GatewaySpec>],
    namespace: &str,
    credentials: &Credentials,
) -> (BTreeMap<u16, Arc<ServerConfig>>, Vec<TlsSetupError>) {
    let mut ports: BTreeMap<u16, PortTls> = BTreeMap::new();
    let mut errors = Vec::new();
    for gateway in gateways {
        for (index, server) in gateway.spec.servers.iter().enumerate() {
            let (
                Ok(port),
                Some(protocol @ (ServerProtocol::Https | ServerProtocol::Tls)),
                Some(tls),
            ) = (
                u16::try_from(server.port.number),
                server.port.kind(),
                server.tls.as_ref(),
            )
            else {
                continue;
            };
            if tls.mode == Some(ServerTlsMode::Passthrough) {
                continue;
            }
            let fail = |problem: String| TlsSetupError {
                gateway: gateway.key(),
                server: index,
                port,
                problem,
            };
            let material = match material(tls, namespace, credentials) {
                Ok(material) => material,
                Err(problem) => {
                    errors.push(fail(problem));
                    continue;
                }
            };
            let entry = ports.entry(port).or_default();
            entry.http |= protocol == ServerProtocol::Https;
            let hosts = server
                .hosts
                .iter()
                .map(|host| HostPattern::resolve(split_server_host(host).1, &gateway.namespace));
            entry
                .certificates
                .extend(hosts.map(|host| (host, Arc::clone(&material.key))));
            if entry.client_cas.is_none()
                && let Some(cas) = material.client_cas
            {
                let optional = tls.mode == Some(ServerTlsMode::OptionalMutual);
                entry.client_cas = Some((cas, optional));
            }
        }
    }
    let mut configs = BTreeMap::new();
    for (port, tls) in ports {
        match tls.server_config() {
            Ok(config) => {
                configs.insert(port, config);
            }
            Err(problem) => errors.push(TlsSetupError {
                gateway: "(merged servers)".to_owned(),
                server: 0,
                port,
                problem,
            }),
        }
    }
    (configs, errors)
}

/// One server's certificate and, for MUTUAL, its client CAs.
struct Material {
    key: Arc<CertifiedKey>,
    client_cas: Option<RootCertStore>,
}

fn material(
    tls: &ServerTls,
    namespace: &str,
    credentials: &Credentials,
) -> Result<Material, String> {
    let mutual = matches!(
        tls.mode,
        Some(ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
    );
    let (chain, key, cas) = if tls.credential_name.is_empty() {
        let read =
            |path: &str| fs::read_to_string(path).map_err(|e| format!("cannot read `{path}`: {e}"));
        let cas = if mutual {
            read(&tls.ca_certificates)?
        } else {
            String::new()
        };
        (read(&tls.server_certificate)?, read(&tls.private_key)?, cas)
    } else {
        let name = &tls.credential_name;
        let secret = credentials
            .get(&(namespace.to_owned(), name.clone()))
            .ok_or_else(|| {
                format!("no Secret `{namespace}/{name}` with `tls.crt` and `tls.key`: create it in the gateway's namespace")
            })?;
        let cas = if mutual && secret.ca_certificates.is_empty() {
            credentials
                .get(&(namespace.to_owned(), format!("{name}-cacert")))
                .map(|ca| ca.ca_certificates.clone())
                .unwrap_or_default()
        } else {
            secret.ca_certificates.clone()
        };
        (secret.cert_chain.clone(), secret.private_key.clone(), cas)
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate chain is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate chain holds no certificate".to_owned());
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| format!("the private key is not a PEM key: {e}"))?;
    let signing = PROVIDER
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the private key cannot sign: {e}"))?;
    let client_cas = if mutual {
        let mut store = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(cas.as_bytes()) {
            let ca = ca.map_err(|e| format!("the client CAs are not PEM: {e}"))?;
            store
                .add(ca)
                .map_err(|e| format!("a client CA cannot be used: {e}"))?;
        }
        if store.is_empty() {
            return Err("MUTUAL needs client CAs: `ca.crt` in the Secret, a `<name>-cacert` Secret, or `caCertificates`".to_owned());
        }
        Some(store)
    } else {
        None
    };
    Ok(Material {
        key: Arc::new(CertifiedKey::new(chain, signing)),
        client_cas,
    })
}

/// The servers of one HTTPS port, merged.
#[derive(Default)]
struct PortTls {
    certificates: Vec<(HostPattern, Arc<CertifiedKey>)>,
    /// The client CAs, and whether a client may go without a certificate.
    client_cas: Option<(RootCertStore, bool)>,
    /// HTTP follows the handshake (HTTPS), so ALPN offers `h2` and `http/1.1`.
    http: bool,
}

impl PortTls {
    fn server_config(self) -> Result<Arc<ServerConfig>, String> {
        let builder = ServerConfig::builder_with_provider(Arc::clone(&PROVIDER))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match self.client_cas {
            Some((roots, optional)) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&PROVIDER),
                );
                let verifier = if optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(Arc::new(BySni(self.certificates)));
        if self.http {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        Ok(Arc::new(config))
    }
}

/// The certificate of the first server whose hosts match the SNI, else the first one.
#[derive(Debug)]
struct BySni(Vec<(HostPattern, Arc<CertifiedKey>)>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = hello.server_name().and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.0.iter().find(|(host, _)| host.matches(&name))
        });
        by_name
            .or_else(|| self.0.first())
            .map(|(_, key)| Arc::clone(key))
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
