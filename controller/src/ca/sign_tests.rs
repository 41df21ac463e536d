use rcgen::KeyPair;
use x509_parser::prelude::X509Certificate;

use super::*;
use crate::ca::material::CaMaterial;

fn signer() -> (tempfile::TempDir, Signer) {
    let dir = tempfile::tempdir().unwrap();
    let material = CaMaterial::load_or_create(dir.path(), "cluster.local").unwrap();
    (dir, Signer::new(material, "cluster.local"))
}

fn csr(uris: &[&str]) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = uris
        .iter()
        .map(|uri| SanType::URI((*uri).try_into().unwrap()))
        .collect();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn der(pem: &str) -> Vec<u8> {
    pem::parse(pem).unwrap().into_contents()
}

fn uris(cert: &X509Certificate<'_>) -> Vec<String> {
    let san = cert.subject_alternative_name().unwrap().expect("a SAN");
    assert!(
        san.critical,
        "the SAN must be critical when the subject is empty"
    );
    san.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::URI(uri) => (*uri).to_owned(),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect()
}

const CART: &str = "spiffe://cluster.local/ns/shop/sa/cart";

#[test]
fn issues_a_leaf_for_the_identity_signed_by_the_root() {
    let (_dir, signer) = signer();
    let identity: Identity = CART.parse().unwrap();
    let ttl = Duration::from_secs(3600);
    let before = OffsetDateTime::now_utc();

    let chain = signer.sign(&csr(&[CART]), &identity, ttl).unwrap();

    assert_eq!(chain.len(), 2, "leaf then root: {chain:?}");
    assert_eq!(chain[1], signer.material().root_pem());
    let (leaf_der, root_der) = (der(&chain[0]), der(&chain[1]));
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    let (_, root) = X509Certificate::from_der(&root_der).unwrap();
    leaf.verify_signature(Some(root.public_key()))
        .expect("the leaf is signed by the root");
    assert_eq!(uris(&leaf), [CART]);
    assert!(!leaf.is_ca());
    let usage = leaf.key_usage().unwrap().expect("key usage").value;
    assert!(usage.digital_signature() && usage.key_encipherment() && !usage.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().expect("EKU").value;
    assert!(eku.server_auth && eku.client_auth);
    let not_before = leaf.validity().not_before.to_datetime();
    let not_after = leaf.validity().not_after.to_datetime();
    assert!(
        not_before <= before - time::Duration::seconds(59),
        "{not_before}"
    );
    let expected = before + time::Duration::seconds(3600);
    assert!(
        (not_after - expected).abs() < time::Duration::seconds(5),
        "not_after {not_after}, expected about {expected}"
    );
}

#[test]
fn a_csr_without_a_uri_san_gets_the_authorized_identity() {
    let (_dir, signer) = signer();
    let identity: Identity = CART.parse().unwrap();
    let chain = signer
        .sign(&csr(&[]), &identity, Duration::from_secs(60))
        .unwrap();
    let leaf_der = der(&chain[0]);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    assert_eq!(uris(&leaf), [CART]);
}

#[test]
fn refuses_a_csr_asking_for_another_identity() {
    let (_dir, signer) = signer();
    let identity: Identity = CART.parse().unwrap();
    let other = "spiffe://cluster.local/ns/shop/sa/admin";
    let error = signer
        .sign(&csr(&[other]), &identity, Duration::from_secs(60))
        .unwrap_err();
    assert!(matches!(error, SignError::SanMismatch { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(other) && message.contains(CART),
        "{message}"
    );
    let error = signer
        .sign(&csr(&[CART, other]), &identity, Duration::from_secs(60))
        .unwrap_err();
    assert!(matches!(error, SignError::SanMismatch { .. }), "{error:?}");
}

#[test]
fn refuses_bad_lifetimes_and_bad_csrs() {
    let (_dir, signer) = signer();
    let identity: Identity = CART.parse().unwrap();
    let request = csr(&[CART]);
    let zero = signer
        .sign(&request, &identity, Duration::ZERO)
        .unwrap_err();
    assert!(matches!(zero, SignError::TtlZero), "{zero:?}");
    let long = Duration::from_secs(MAX_CERT_TTL_SECS + 1);
    let error = signer.sign(&request, &identity, long).unwrap_err();
    assert!(error.to_string().contains("maximum"), "{error}");
    assert!(check_ttl(Duration::from_secs(MAX_CERT_TTL_SECS)).is_ok());

    let garbage = signer
        .sign("not a csr", &identity, Duration::from_secs(60))
        .unwrap_err();
    assert!(matches!(garbage, SignError::CsrPem(_)), "{garbage:?}");
    let cert = signer.material().root_pem().to_owned();
    let wrong_block = signer
        .sign(&cert, &identity, Duration::from_secs(60))
        .unwrap_err();
    assert!(
        matches!(wrong_block, SignError::CsrPem(_)),
        "{wrong_block:?}"
    );

    // Flip a byte of the signature (the CSR's last bytes): it must no longer verify.
    let mut block = pem::parse(&request).unwrap();
    let mut contents = block.contents().to_vec();
    let last = contents.len() - 1;
    contents[last] ^= 0x01;
    block = pem::Pem::new(block.tag(), contents);
    let tampered = signer
        .sign(&pem::encode(&block), &identity, Duration::from_secs(60))
        .unwrap_err();
    assert!(
        matches!(tampered, SignError::CsrSignature | SignError::CsrDer(_)),
        "{tampered:?}"
    );
}

#[test]
fn serials_are_random() {
    let a = random_serial().unwrap();
    let b = random_serial().unwrap();
    assert_ne!(a, b);
    assert_eq!(a.len(), 16);
}
