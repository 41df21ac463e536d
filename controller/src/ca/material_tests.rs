use rcgen::SanType;

use super::*;
use crate::ca::{identity::Identity, sign::Signer};

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A root, and an intermediate it signed, written in the plug-in layout.
fn plug_in(dir: &Path) -> (String, String) {
    let root_key = KeyPair::generate().unwrap();
    let root = ca_params("plug-in root").self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(ca_params("plug-in root"), root_key);
    let intermediate_key = KeyPair::generate().unwrap();
    let intermediate = ca_params("plug-in intermediate")
        .signed_by(&intermediate_key, &root_issuer)
        .unwrap();
    fs::write(dir.join(CA_CERT_FILE), intermediate.pem()).unwrap();
    fs::write(dir.join(CA_KEY_FILE), intermediate_key.serialize_pem()).unwrap();
    fs::write(
        dir.join(CERT_CHAIN_FILE),
        format!("{}{}", intermediate.pem(), root.pem()),
    )
    .unwrap();
    fs::write(dir.join(ROOT_CERT_FILE), root.pem()).unwrap();
    (intermediate.pem(), root.pem())
}

#[test]
fn generates_persists_and_reloads_the_same_root() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("cacerts");

    let first = CaMaterial::load_or_create(&ca_dir, "cluster.local").unwrap();
    assert_eq!(first.origin(), Origin::Generated);
    for file in LAYOUT {
        assert!(ca_dir.join(file).is_file(), "{file} was not written");
    }
    let mode = fs::metadata(ca_dir.join(CA_KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the key must be private, mode {mode:o}"
    );
    let der = pem::parse(first.root_pem()).unwrap().into_contents();
    let (_, root) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert!(root.is_ca());
    assert_eq!(root.subject().to_string(), "O=cluster.local");
    let lifetime = root.validity().not_after.to_datetime() - OffsetDateTime::now_utc();
    assert!(lifetime > Duration::days(3649), "{lifetime}");

    let second = CaMaterial::load_or_create(&ca_dir, "cluster.local").unwrap();
    assert_eq!(second.origin(), Origin::Loaded);
    assert_eq!(second.root_pem(), first.root_pem());
    assert_eq!(second.chain(), [first.root_pem().to_owned()]);
}

#[test]
fn uses_a_plug_in_intermediate_and_sends_the_chain_up_to_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let (intermediate, root) = plug_in(dir.path());

    let material = CaMaterial::load_or_create(dir.path(), "cluster.local").unwrap();
    assert_eq!(material.origin(), Origin::Loaded);
    assert_eq!(material.root_pem(), root);
    assert_eq!(material.chain(), [intermediate.clone(), root]);

    let signer = Signer::new(material, "cluster.local");
    let identity: Identity = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let chain = signer
        .sign(&csr, &identity, std::time::Duration::from_secs(600))
        .unwrap();
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    let leaf_der = pem::parse(&chain[0]).unwrap().into_contents();
    let intermediate_der = pem::parse(&intermediate).unwrap().into_contents();
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
    let (_, signer_cert) = x509_parser::parse_x509_certificate(&intermediate_der).unwrap();
    leaf.verify_signature(Some(signer_cert.public_key()))
        .expect("the leaf is signed by the intermediate");
}

#[test]
fn half_a_layout_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    plug_in(dir.path());
    fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
    fs::remove_file(dir.path().join(ROOT_CERT_FILE)).unwrap();

    let error = CaMaterial::load_or_create(dir.path(), "cluster.local").unwrap_err();

    assert!(
        matches!(error, MaterialError::Incomplete { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("\"ca-key.pem\", \"root-cert.pem\"")
            && message.contains("empty the folder"),
        "{message}"
    );
}

#[test]
fn inconsistent_plug_in_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    plug_in(dir.path());
    let stranger = KeyPair::generate().unwrap();
    fs::write(dir.path().join(CA_KEY_FILE), stranger.serialize_pem()).unwrap();
    let error = CaMaterial::load_or_create(dir.path(), "cluster.local")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("ca-key.pem") && error.contains("does not belong"),
        "{error}"
    );

    let dir = tempfile::tempdir().unwrap();
    plug_in(dir.path());
    let other_root = ca_params("another root")
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap();
    fs::write(dir.path().join(ROOT_CERT_FILE), other_root.pem()).unwrap();
    fs::write(
        dir.path().join(CERT_CHAIN_FILE),
        fs::read(dir.path().join(CA_CERT_FILE)).unwrap(),
    )
    .unwrap();
    let error = CaMaterial::load_or_create(dir.path(), "cluster.local")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("is not signed by") && error.contains("another root"),
        "{error}"
    );

    let dir = tempfile::tempdir().unwrap();
    plug_in(dir.path());
    fs::write(dir.path().join(ROOT_CERT_FILE), "garbage").unwrap();
    let error = CaMaterial::load_or_create(dir.path(), "cluster.local")
        .unwrap_err()
        .to_string();
    assert!(error.contains("root-cert.pem"), "{error}");
}
