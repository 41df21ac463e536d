//! A JWT issuer for the tests: a P-256 key made per test, its key set as JSON, and
//! tokens signed with it. Shared with the end-to-end tests (`tests/tests`), so it
//! depends on base64, jsonwebtoken, ring and serde_json only.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use serde_json::{Value, json};

/// An issuer with its own signing key.
pub struct Issuer {
    pub name: &'static str,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// `name` with a new key.
    pub fn new(name: &'static str) -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("ring makes a P-256 key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("the new key reads back");
        Self {
            name,
            pkcs8: pkcs8.as_ref().to_vec(),
            public: pair.public_key().as_ref().to_vec(),
        }
    }

    /// The JSON Web Key Set of the public key (an uncompressed point: 0x04, x, y).
    pub fn jwks(&self) -> String {
        let (x, y) = self.public[1..].split_at(32);
        json!({"keys": [{
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "test",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]})
        .to_string()
    }

    /// A token for `sub`, valid for ten minutes, for audience `app`, with `extra` claims
    /// merged over those.
    pub fn token(&self, sub: &str, extra: &Value) -> String {
        let mut claims = json!({
            "iss": self.name, "sub": sub, "aud": "app",
            "iat": get_current_timestamp(), "exp": get_current_timestamp() + 600,
        });
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            claims.extend(extra.clone());
        }
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("test".into());
        encode(&header, &claims, &EncodingKey::from_ec_der(&self.pkcs8)).expect("the token signs")
    }
}
