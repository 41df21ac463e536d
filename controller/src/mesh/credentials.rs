//! TLS credentials from Secrets, for the ingress gateways whose HTTPS servers name them
//! (`tls.credentialName`). Istio reads the same keys: `tls.crt`, `tls.key` and `ca.crt`
//! (a `kubernetes.io/tls` Secret), or `cert`, `key` and `cacert` (a generic one); the
//! client CAs of a MUTUAL server may also come from a Secret named `<name>-cacert`.

use ambit_api::manifests::Object;
use base64::Engine as _;
use serde_yaml_ng::Value;

use super::TlsCredential;

/// The credential a Secret holds; `None` for a Secret with none of the keys, or one whose
/// values cannot be read (logged with the Secret and key).
pub(super) fn from_secret(secret: &Object) -> Option<TlsCredential> {
    let value = |keys: [&str; 2]| keys.iter().find_map(|key| read(secret, key));
    let credential = TlsCredential {
        namespace: secret.namespace().to_owned(),
        name: secret.metadata.name.clone(),
        cert_chain: value(["tls.crt", "cert"]).unwrap_or_default(),
        private_key: value(["tls.key", "key"]).unwrap_or_default(),
        ca_certificates: value(["ca.crt", "cacert"]).unwrap_or_default(),
        source: secret.source.file.clone(),
    };
    let holds_any = !(credential.cert_chain.is_empty()
        && credential.private_key.is_empty()
        && credential.ca_certificates.is_empty());
    holds_any.then_some(credential)
}

/// `stringData[key]` as written, else `data[key]` decoded from base64.
fn read(secret: &Object, key: &str) -> Option<String> {
    let field = |name: &str| {
        secret
            .extra
            .get(name)
            .and_then(|map| map.get(key))
            .and_then(Value::as_str)
    };
    if let Some(text) = field("stringData") {
        return Some(text.to_owned());
    }
    let encoded = field("data")?;
    let cleaned: String = encoded.split_whitespace().collect();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(cleaned)
        .map_err(|error| error.to_string())
        .and_then(|bytes| String::from_utf8(bytes).map_err(|error| error.to_string()));
    match decoded {
        Ok(text) => Some(text),
        Err(error) => {
            tracing::warn!(
                secret = %format!("{}/{}", secret.namespace(), secret.metadata.name),
                file = %secret.source,
                key = %format!("data.{key}"),
                %error,
                "Secret value is not base64-encoded PEM text: skipped"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use ambit_api::manifests::Manifests;

    use super::*;

    #[test]
    fn tls_and_generic_secrets_are_read_and_others_skipped() {
        let mut manifests = Manifests::default();
        manifests.parse_documents(
            Path::new("s.yaml"),
            "apiVersion: v1
kind: Secret
metadata: {name: shop-cert, namespace: istio-system}
type: kubernetes.io/tls
data: {tls.crt: Q0VSVA==, tls.key: S0VZ}
---
apiVersion: v1
kind: Secret
metadata: {name: generic, namespace: istio-system}
stringData: {cert: CERT, key: KEY, cacert: CA}
---
apiVersion: v1
kind: Secret
metadata: {name: password, namespace: istio-system}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Secret
metadata: {name: broken, namespace: istio-system}
data: {tls.crt: '%%%'}
",
        );
        let read: Vec<TlsCredential> = manifests
            .of_kind("Secret")
            .filter_map(from_secret)
            .collect();
        assert_eq!(read.len(), 2, "{read:?}");
        assert_eq!(
            (read[0].cert_chain.as_str(), read[0].private_key.as_str()),
            ("CERT", "KEY")
        );
        assert_eq!(read[1].name, "generic");
        assert_eq!(read[1].ca_certificates, "CA");
    }
}
