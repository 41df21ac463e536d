//! The serving certificate as clients verify it: with webpki against the CA root, for
//! the names it carries and not for others.

use std::time::{Duration, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use webpki::{EndEntityCert, KeyUsage, anchor_from_trusted_cert};

use super::*;
use crate::ca::material::CaMaterial;

fn signer(dir: &std::path::Path) -> Arc<Signer> {
    let material = CaMaterial::load_or_create(dir, "cluster.local").expect("CA material");
    Arc::new(Signer::new(material, "cluster.local"))
}

/// Whether the served chain verifies against `root_pem` for `name`, now.
fn verifies(served: &CertifiedKey, root_pem: &str, name: &str) -> Result<(), webpki::Error> {
    let root = CertificateDer::from(pem::parse(root_pem).expect("PEM root").into_contents());
    let anchors = [anchor_from_trusted_cert(&root).expect("a trust anchor")];
    let leaf = EndEntityCert::try_from(&served.cert[0]).expect("a leaf");
    let now = UnixTime::since_unix_epoch(
        std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970"),
    );
    leaf.verify_for_usage(
        provider::default_provider()
            .signature_verification_algorithms
            .all,
        &anchors,
        &served.cert[1..],
        now,
        KeyUsage::server_auth(),
        None,
        None,
    )?;
    leaf.verify_is_valid_for_subject_name(&ServerName::try_from(name).expect("a server name"))
}

#[test]
fn the_served_certificate_chains_to_the_ca_root_for_each_name() {
    let dir = tempfile::tempdir().expect("a scratch folder");
    let signer = signer(dir.path());
    let root_pem = signer.material().root_pem().to_owned();
    let names = server_names(
        &["ambit.example".to_owned(), "10.0.0.7".to_owned()],
        Some("ambit-system"),
        "198.19.255.1:15010".parse().expect("an address"),
    );
    let cert = ServingCert::issue(signer, &names, Duration::from_secs(3600)).expect("issued");
    let served = cert.current();
    for name in [
        "ambit-controller",
        "ambit-controller.ambit-system.svc",
        "localhost",
        "198.19.255.1",
        "ambit.example",
        "10.0.0.7",
    ] {
        verifies(&served, &root_pem, name)
            .unwrap_or_else(|error| panic!("the certificate should be valid for {name}: {error}"));
    }
    let error = verifies(&served, &root_pem, "other.example")
        .expect_err("a name the certificate does not carry");
    assert!(
        matches!(error, webpki::Error::CertNotValidForName(_)),
        "{error:?}"
    );
    let other = tempfile::tempdir().expect("a scratch folder");
    let other_root = signer_root(other.path());
    let error = verifies(&served, &other_root, "ambit-controller")
        .expect_err("another CA's root does not verify it");
    // Both roots are named `O=cluster.local`: webpki finds the name, not the key.
    assert!(
        matches!(
            error,
            webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey
        ),
        "{error:?}"
    );
}

fn signer_root(dir: &std::path::Path) -> String {
    signer(dir).material().root_pem().to_owned()
}

#[test]
fn names_are_checked_and_wildcard_listeners_add_no_ip() {
    let names = server_names(
        &["localhost".to_owned()],
        None,
        "[::]:15012".parse().unwrap(),
    );
    assert_eq!(names, ["ambit-controller", "localhost"]);
    let dir = tempfile::tempdir().expect("a scratch folder");
    let error = ServingCert::issue(
        signer(dir.path()),
        &["not a name!".to_owned()],
        Duration::from_secs(60),
    )
    .expect_err("a bad name");
    assert!(error.to_string().contains("--server-name"), "{error}");
}
