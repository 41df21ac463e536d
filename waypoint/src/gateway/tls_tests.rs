//! Real TLS handshakes against the configs [`port_configs`] builds: the certificate is
//! chosen by SNI, MUTUAL refuses a client without a certificate from its CAs, and a
//! missing Secret is reported by Gateway, server and name.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

/// A CA that signs leaf certificates, PEM.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    /// A CA named `name` (distinct names, so one CA's leaf never looks issued by another).
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("a key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).expect("a CA").pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for `names` and its key, PEM.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("a key");
        let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let cert = CertificateParams::new(names)
            .expect("params")
            .signed_by(&key, &self.issuer)
            .expect("a leaf");
        (cert.pem(), key.serialize_pem())
    }

    fn secret(&self, names: &[&str]) -> Credential {
        let (cert_chain, private_key) = self.leaf(names);
        Credential {
            cert_chain,
            private_key,
            ca_certificates: String::new(),
        }
    }

    fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("PEM"))
            .expect("a root");
        roots
    }
}

fn gateway(yaml: &str) -> Vec<Named<GatewaySpec>> {
    vec![Named {
        namespace: "istio-system".into(),
        name: "public".into(),
        spec: serde_yaml_ng::from_str(yaml).expect("a Gateway spec"),
    }]
}

fn key(name: &str) -> (String, String) {
    ("istio-system".to_owned(), name.to_owned())
}

/// A handshake with `server` for `sni`, as a client trusting `roots` and presenting
/// `client_cert` when given; the error text if it fails.
async fn handshake(
    server: Arc<ServerConfig>,
    sni: &str,
    roots: RootCertStore,
    client_cert: Option<(String, String)>,
) -> Result<(), String> {
    let builder = ClientConfig::builder_with_provider(Arc::clone(&PROVIDER))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let client = match client_cert {
        Some((chain, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(chain.as_bytes())
                    .collect::<Result<_, _>>()
                    .expect("PEM"),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("PEM"),
            )
            .expect("a client certificate"),
        None => builder.with_no_client_auth(),
    };
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let accept = tokio::spawn(async move {
        let mut stream = TlsAcceptor::from(server).accept(server_io).await?;
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"ok").await
    });
    let name = ServerName::try_from(sni.to_owned()).expect("a server name");
    let connected = TlsConnector::from(Arc::new(client))
        .connect(name, client_io)
        .await;
    let mut stream = connected.map_err(|e| e.to_string())?;
    let mut reply = [0u8; 2];
    // TLS 1.3 reports a refused client certificate on the first read.
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut reply)
        .await
        .map_err(|e| e.to_string())?;
    accept
        .await
        .expect("the server task")
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_certificate_is_chosen_by_sni_among_a_ports_servers() {
    let ca = TestCa::new("gateway CA");
    let credentials = Credentials::from([
        (key("shop"), ca.secret(&["shop.example.com"])),
        (key("api"), ca.secret(&["*.api.example.com"])),
    ]);
    let gateways = gateway(
        "servers:
- port: {number: 443, protocol: HTTPS}
  hosts: [shop.example.com]
  tls: {mode: SIMPLE, credentialName: shop}
- port: {number: 443, protocol: HTTPS}
  hosts: ['*.api.example.com']
  tls: {mode: SIMPLE, credentialName: api}
",
    );
    let (configs, errors) = port_configs(&gateways, "istio-system", &credentials);
    assert!(errors.is_empty(), "{errors:?}");
    let config = &configs[&443];
    for sni in ["shop.example.com", "v1.api.example.com"] {
        handshake(Arc::clone(config), sni, ca.roots(), None)
            .await
            .unwrap_or_else(|e| panic!("{sni}: {e}"));
    }
    // No server names it: the first server's certificate, which does not match.
    let error = handshake(Arc::clone(config), "other.example.org", ca.roots(), None)
        .await
        .expect_err("a certificate for another name");
    assert!(error.contains("not valid for name"), "{error}");
}

#[tokio::test]
async fn a_tls_server_terminating_into_tcp_routes_offers_no_alpn() {
    let ca = TestCa::new("gateway CA");
    let credentials = Credentials::from([(key("db"), ca.secret(&["db.example.com"]))]);
    let gateways = gateway(
        "servers:
- port: {number: 443, protocol: HTTPS}
  hosts: ['*']
  tls: {mode: SIMPLE, credentialName: db}
- port: {number: 31443, protocol: TLS}
  hosts: [db.example.com]
  tls: {mode: SIMPLE, credentialName: db}
- port: {number: 8443, protocol: TLS}
  hosts: ['*']
  tls: {mode: PASSTHROUGH}
",
    );
    let (configs, errors) = port_configs(&gateways, "istio-system", &credentials);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(configs.keys().collect::<Vec<_>>(), [&443, &31443]);
    assert_eq!(
        configs[&443].alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert!(configs[&31443].alpn_protocols.is_empty());
    handshake(
        Arc::clone(&configs[&31443]),
        "db.example.com",
        ca.roots(),
        None,
    )
    .await
    .expect("a handshake on the TLS port");
}

#[tokio::test]
async fn mutual_requires_a_client_certificate_from_the_cacert_secret() {
    let server_ca = TestCa::new("server CA");
    let client_ca = TestCa::new("client CA");
    let credentials = Credentials::from([
        (key("shop"), server_ca.secret(&["shop.example.com"])),
        (
            key("shop-cacert"),
            Credential {
                ca_certificates: client_ca.pem.clone(),
                ..Credential::default()
            },
        ),
    ]);
    let gateways = gateway(
        "servers:
- port: {number: 443, protocol: HTTPS}
  hosts: ['*']
  tls: {mode: MUTUAL, credentialName: shop}
",
    );
    let (configs, errors) = port_configs(&gateways, "istio-system", &credentials);
    assert!(errors.is_empty(), "{errors:?}");
    let config = &configs[&443];
    let sni = "shop.example.com";
    handshake(
        Arc::clone(config),
        sni,
        server_ca.roots(),
        Some(client_ca.leaf(&["client.example.com"])),
    )
    .await
    .expect("a client certificate from the CA is accepted");
    let error = handshake(Arc::clone(config), sni, server_ca.roots(), None)
        .await
        .expect_err("no client certificate");
    assert!(error.contains("CertificateRequired"), "{error}");
    let error = handshake(
        Arc::clone(config),
        sni,
        server_ca.roots(),
        Some(server_ca.leaf(&["client.example.com"])),
    )
    .await
    .expect_err("a client certificate from another CA");
    assert!(error.contains("UnknownCA"), "{error}");
}

#[test]
fn a_missing_secret_names_the_gateway_server_and_secret_and_spares_other_ports() {
    let ca = TestCa::new("gateway CA");
    let credentials = Credentials::from([(key("good"), ca.secret(&["a.example.com"]))]);
    let gateways = gateway(
        "servers:
- port: {number: 443, protocol: HTTPS}
  hosts: ['*']
  tls: {mode: SIMPLE, credentialName: missing}
- port: {number: 8443, protocol: HTTPS}
  hosts: ['*']
  tls: {mode: SIMPLE, credentialName: good}
",
    );
    let (configs, errors) = port_configs(&gateways, "istio-system", &credentials);
    assert_eq!(configs.keys().collect::<Vec<_>>(), [&8443]);
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "Gateway istio-system/public, server 0 (port 443): no Secret `istio-system/missing` with `tls.crt` and `tls.key`: create it in the gateway's namespace"
        ]
    );
}
