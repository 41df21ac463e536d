//! Pass 3 for a Gateway API `Gateway` of class `istio` (an ingress gateway): its
//! listeners as the Gateway API's CRD rules say, and what Ambit's gateway serves of them
//! (HTTP, HTTPS terminated with a Secret of the Gateway's namespace, TLS passed through
//! by server name, and TCP; routes from the same namespace or all: HTTPRoutes and
//! GRPCRoutes on HTTP and HTTPS, TLSRoutes on TLS, TCPRoutes on TCP).

use std::collections::BTreeMap;

use ambit_api::gateway_api::gateway::{FromNamespaces, GatewaySpec, Listener, TlsMode};

use super::{Findings, Reason, fields};
use crate::mesh::RouteKind;

/// Checks one Gateway's spec.
pub(super) fn check(spec: &GatewaySpec, namespace: &str, findings: &mut Findings) {
    if spec.listeners.is_empty() {
        findings.add(
            "spec.listeners",
            Reason::Required("list at least one listener (a name, a port and its protocol)"),
        );
    }
    if !spec.addresses.is_empty() {
        findings.add(
            "spec.addresses",
            Reason::NotServed("ignored: Ambit's gateway listens on its pod's addresses".to_owned()),
        );
    }
    let mut names = BTreeMap::new();
    let mut protocols: BTreeMap<u32, (&str, usize)> = BTreeMap::new();
    for (i, listener) in spec.listeners.iter().enumerate() {
        let path = format!("spec.listeners[{i}]");
        fields::required(
            findings,
            &format!("{path}.name"),
            &listener.name,
            "name the listener",
        );
        if let Some(first) = names.insert(listener.name.as_str(), i) {
            findings.add(
                format!("{path}.name"),
                Reason::Conflict(format!(
                    "`{}` is also the name of listeners[{first}]: give each listener its own",
                    listener.name
                )),
            );
        }
        if !(1..=65_535).contains(&listener.port) {
            findings.add(
                format!("{path}.port"),
                Reason::PortOutOfRange(listener.port),
            );
        }
        match protocols.get(&listener.port) {
            Some((protocol, first)) if *protocol != listener.protocol => findings.add(
                format!("{path}.protocol"),
                Reason::Conflict(format!(
                    "port {} is already {protocol} in listeners[{first}]: one port, one protocol",
                    listener.port
                )),
            ),
            Some(_) => {}
            None => {
                protocols.insert(listener.port, (&listener.protocol, i));
            }
        }
        check_listener(listener, namespace, &path, findings);
    }
}

fn check_listener(listener: &Listener, namespace: &str, path: &str, findings: &mut Findings) {
    match listener.protocol.as_str() {
        "HTTP" if listener.tls.is_some() => findings.add(
            format!("{path}.tls"),
            Reason::Conflict("an HTTP listener has no TLS: remove `tls`, or use HTTPS".to_owned()),
        ),
        "HTTP" => {}
        "HTTPS" => check_tls(listener, namespace, path, findings),
        "TCP" if listener.tls.is_some() => findings.add(
            format!("{path}.tls"),
            Reason::Conflict("a TCP listener relays bytes and has no TLS: remove `tls`".to_owned()),
        ),
        "TCP" => {}
        "TLS" => check_passthrough(listener, path, findings),
        _ => findings.add(
            format!("{path}.protocol"),
            Reason::Unsupported("not served by Ambit's gateway yet: use HTTP, HTTPS, TLS or TCP"),
        ),
    }
    if let Some(hostname) = &listener.hostname {
        fields::hostname(findings, &format!("{path}.hostname"), hostname);
    }
    let from = listener
        .allowed_routes
        .as_ref()
        .and_then(|allowed| allowed.namespaces.as_ref()?.from);
    if from == Some(FromNamespaces::Selector) {
        findings.add(
            format!("{path}.allowedRoutes.namespaces.from"),
            Reason::Unsupported(
                "Selector is not served by Ambit's gateway yet: use Same (the default) or All",
            ),
        );
    }
    let kinds = listener
        .allowed_routes
        .iter()
        .flat_map(|allowed| &allowed.kinds)
        .enumerate();
    let served = RouteKind::on_listener(&listener.protocol);
    for (i, kind) in kinds {
        if !served.iter().any(|served| served.as_str() == kind.kind) {
            let names: Vec<&str> = served.iter().map(|kind| kind.as_str()).collect();
            findings.add(
                format!("{path}.allowedRoutes.kinds[{i}]"),
                Reason::NotServed(format!(
                    "ignored: a {} listener of Ambit's gateway takes {}, not {}",
                    listener.protocol,
                    names.join(" and "),
                    kind.kind
                )),
            );
        }
    }
}

/// An HTTPS listener terminates TLS with one Secret of the Gateway's namespace.
fn check_tls(listener: &Listener, namespace: &str, path: &str, findings: &mut Findings) {
    let Some(tls) = &listener.tls else {
        findings.add(
            format!("{path}.tls"),
            Reason::Required("an HTTPS listener needs `tls.certificateRefs` (a Secret)"),
        );
        return;
    };
    if tls.mode == Some(TlsMode::Passthrough) {
        findings.add(
            format!("{path}.tls.mode"),
            Reason::Unsupported(
                "an HTTPS listener terminates TLS to route requests: use Terminate, or a TLS listener to pass TLS through (with TLSRoutes)",
            ),
        );
    }
    match tls.certificate_refs.as_slice() {
        [] => findings.add(
            format!("{path}.tls.certificateRefs"),
            Reason::Required("name the Secret holding the certificate and key"),
        ),
        [secret] => {
            let core = secret.group.as_deref().unwrap_or_default().is_empty();
            if !core || secret.kind.as_deref().unwrap_or("Secret") != "Secret" {
                findings.add(
                    format!("{path}.tls.certificateRefs[0].kind"),
                    Reason::Unsupported("Ambit reads certificates from Secrets only"),
                );
            }
            if secret
                .namespace
                .as_deref()
                .is_some_and(|ns| ns != namespace)
            {
                findings.add(
                    format!("{path}.tls.certificateRefs[0].namespace"),
                    Reason::Unsupported(
                        "a Secret of another namespace needs a ReferenceGrant, which Ambit does not read yet: put the Secret in the Gateway's namespace",
                    ),
                );
            }
        }
        [_, ..] => findings.add(
            format!("{path}.tls.certificateRefs"),
            Reason::Unsupported("one certificate per listener in Ambit's gateway: keep one"),
        ),
    }
}

/// A TLS listener passes TLS through to the backend its TLSRoutes choose by server name:
/// Ambit's gateway does not terminate TLS for TLSRoutes (an HTTPS listener terminates it
/// for HTTPRoutes), so the mode must be Passthrough, and certificates go unused.
fn check_passthrough(listener: &Listener, path: &str, findings: &mut Findings) {
    let Some(tls) = &listener.tls else {
        findings.add(
            format!("{path}.tls"),
            Reason::Required("a TLS listener needs `tls: {mode: Passthrough}`"),
        );
        return;
    };
    if tls.mode.unwrap_or_default() == TlsMode::Terminate {
        findings.add(
            format!("{path}.tls.mode"),
            Reason::Unsupported(
                "Ambit's gateway passes TLS through only (Terminate is the default): set `mode: Passthrough`, or use an HTTPS listener to terminate TLS",
            ),
        );
    } else if !tls.certificate_refs.is_empty() {
        findings.add(
            format!("{path}.tls.certificateRefs"),
            Reason::NotServed(
                "ignored: a Passthrough listener does not terminate TLS, so it presents no certificate — remove `certificateRefs`".to_owned(),
            ),
        );
    }
}
