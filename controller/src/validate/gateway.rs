//! Pass 3 for an Istio Gateway: each server's port, protocol, hosts and TLS settings, as
//! Istio validates them, and what Ambit's gateway does not serve yet
//! (`AUTO_PASSTHROUGH`, `ISTIO_MUTUAL`). TLS passed through (`tls.mode: PASSTHROUGH`, on
//! an HTTPS or TLS server) needs no certificate; a TCP (or MONGO) server, and a TLS
//! server terminating TLS, relay connections as bytes by the VirtualServices' `tcp:`
//! routes.

use std::collections::BTreeMap;

use ambit_api::istio::gateway::{GatewaySpec, Server, ServerProtocol, ServerTlsMode};

use super::{Findings, Reason, fields};

/// Checks one Gateway's spec.
pub(super) fn check(spec: &GatewaySpec, findings: &mut Findings) {
    if spec.servers.is_empty() {
        findings.add(
            "spec.servers",
            Reason::Required("list at least one server (a port, its protocol and hosts)"),
        );
    }
    let mut protocols: BTreeMap<u32, ((ServerProtocol, bool), String)> = BTreeMap::new();
    for (i, server) in spec.servers.iter().enumerate() {
        let path = format!("spec.servers[{i}]");
        let Some(protocol) = check_port(server, &path, findings) else {
            continue;
        };
        let served = (protocol, passes_through(server));
        if let Some((first, at)) = protocols.get(&server.port.number) {
            if *first != served {
                findings.add(
                    format!("{path}.port.protocol"),
                    Reason::Conflict(format!(
                        "port {} is already served with another protocol or TLS mode by {at}: one port, one protocol (TLS passed through or terminated, not both)",
                        server.port.number
                    )),
                );
            }
        } else {
            protocols.insert(server.port.number, (served, path.clone()));
        }
        if server.hosts.is_empty() {
            findings.add(
                format!("{path}.hosts"),
                Reason::Required("list the hosts this server accepts (`*` for any)"),
            );
        }
        for (j, host) in server.hosts.iter().enumerate() {
            check_host(host, &format!("{path}.hosts[{j}]"), findings);
        }
        if !server.bind.is_empty() {
            findings.add(
                format!("{path}.bind"),
                Reason::Unsupported("not supported by Ambit's gateway yet: remove it (it listens on every address of its pod)"),
            );
        }
        check_tls(server, protocol, &path, findings);
    }
}

/// The port's number and protocol; the protocol if the gateway can serve it.
fn check_port(server: &Server, path: &str, findings: &mut Findings) -> Option<ServerProtocol> {
    let port = &server.port;
    if port.number == 0 {
        findings.add(
            format!("{path}.port.number"),
            Reason::Required("the port the gateway listens on (80, 443, …)"),
        );
    }
    fields::port(findings, &format!("{path}.port.number"), Some(port.number));
    match port.kind() {
        Some(protocol) => Some(protocol),
        None => {
            findings.add(
                format!("{path}.port.protocol"),
                Reason::UnknownProtocol(port.protocol.clone()),
            );
            None
        }
    }
}

/// `namespace/host`: the namespace part is `*`, `.`, `~` or a name, the host a DNS name
/// with at most a leading `*`.
fn check_host(host: &str, path: &str, findings: &mut Findings) {
    let (namespace, name) = ambit_api::istio::gateway::split_server_host(host);
    let wildcard_ok = name == "*" || !name[1..].contains('*');
    if namespace.is_empty() || name.is_empty() || !wildcard_ok {
        findings.add(path, Reason::ServerHost(host.to_owned()));
    }
}

/// Whether the server forwards TLS by SNI without terminating it.
fn passes_through(server: &Server) -> bool {
    server
        .tls
        .as_ref()
        .is_some_and(|tls| tls.mode == Some(ServerTlsMode::Passthrough))
}

fn check_tls(server: &Server, protocol: ServerProtocol, path: &str, findings: &mut Findings) {
    let tls_path = format!("{path}.tls");
    let Some(tls) = &server.tls else {
        match protocol {
            ServerProtocol::Https => findings.add(
                tls_path,
                Reason::Required(
                    "an HTTPS server needs `tls` with `mode: SIMPLE` and a `credentialName`",
                ),
            ),
            ServerProtocol::Tls => findings.add(
                tls_path,
                Reason::Required(
                    "a TLS server needs `tls`: `mode: PASSTHROUGH`, or `SIMPLE` with a `credentialName` to terminate it",
                ),
            ),
            ServerProtocol::Http | ServerProtocol::Tcp => {}
        }
        return;
    };
    if protocol == ServerProtocol::Http {
        if tls.mode.is_some() {
            findings.add(
                format!("{tls_path}.mode"),
                Reason::Conflict(
                    "an HTTP server does not terminate TLS: use protocol HTTPS, or keep only `httpsRedirect`".to_owned(),
                ),
            );
        }
        return;
    }
    if protocol == ServerProtocol::Tcp {
        findings.add(
            tls_path,
            Reason::Conflict(
                "a TCP server relays bytes as they come: remove `tls`, or use protocol TLS with `mode: PASSTHROUGH`".to_owned(),
            ),
        );
        return;
    }
    match tls.mode {
        Some(ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual) => {}
        // Nothing to terminate with: the VirtualServices' `tls:` routes pick the
        // destination by SNI.
        Some(ServerTlsMode::Passthrough) => return,
        None => findings.add(
            format!("{tls_path}.mode"),
            Reason::Required("SIMPLE or MUTUAL for an HTTPS or TLS server (or PASSTHROUGH)"),
        ),
        Some(_) => findings.add(
            format!("{tls_path}.mode"),
            Reason::Unsupported(
                "AUTO_PASSTHROUGH and ISTIO_MUTUAL are not served by Ambit's gateway yet: use SIMPLE, MUTUAL or PASSTHROUGH",
            ),
        ),
    }
    let from_files = !tls.server_certificate.is_empty() || !tls.private_key.is_empty();
    if !tls.credential_name.is_empty() && from_files {
        findings.add(
            format!("{tls_path}.credentialName"),
            Reason::Exclusive("credentialName", "serverCertificate"),
        );
    } else if tls.credential_name.is_empty() {
        fields::required(
            findings,
            &format!("{tls_path}.credentialName"),
            &tls.server_certificate,
            "the Secret with the server's certificate (or `serverCertificate` and `privateKey` files)",
        );
        if !tls.server_certificate.is_empty() {
            fields::required(
                findings,
                &format!("{tls_path}.privateKey"),
                &tls.private_key,
                "the PEM key file of `serverCertificate`",
            );
        }
    }
    let mutual = matches!(
        tls.mode,
        Some(ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
    );
    if mutual && tls.credential_name.is_empty() {
        fields::required(
            findings,
            &format!("{tls_path}.caCertificates"),
            &tls.ca_certificates,
            "MUTUAL needs the CAs client certificates chain to (or a `credentialName` with `ca.crt`)",
        );
    }
    for (field, given) in [
        ("credentialNames", !tls.credential_names.is_empty()),
        ("caCrl", !tls.ca_crl.is_empty()),
        (
            "verifyCertificateSpki",
            !tls.verify_certificate_spki.is_empty(),
        ),
        (
            "verifyCertificateHash",
            !tls.verify_certificate_hash.is_empty(),
        ),
        ("cipherSuites", !tls.cipher_suites.is_empty()),
    ] {
        if given {
            findings.add(
                format!("{tls_path}.{field}"),
                Reason::Unsupported("not supported by Ambit's gateway yet: remove it"),
            );
        }
    }
}
