//! A JWT issuer for the tests: a P-256 key made per test, its key set as JSON (inline,
//! or served over HTTP), and tokens signed with it.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair},
};
use serde_json::{Value, json};
use tokio::net::TcpListener;

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

/// An HTTP server answering every request with a key set, counting requests.
#[derive(Debug)]
pub struct JwksServer {
    /// `http://<address>/jwks`.
    pub uri: String,
    hits: Arc<AtomicU64>,
}

impl JwksServer {
    /// Serves `issuer`'s key set on 127.0.0.13 until the test ends.
    pub async fn start(issuer: &Issuer) -> Self {
        let listener = TcpListener::bind("127.0.0.13:0")
            .await
            .expect("binding the key server");
        let uri = format!("http://{}/jwks", listener.local_addr().expect("an address"));
        let hits = Arc::new(AtomicU64::new(0));
        let jwks = Bytes::from(issuer.jwks());
        let counted = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (jwks, counted) = (jwks.clone(), Arc::clone(&counted));
                let service = service_fn(move |_request| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let response = Response::new(Full::new(jwks.clone()));
                    async move { Ok::<_, Infallible>(response) }
                });
                tokio::spawn(
                    auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned(),
                );
            }
        });
        Self { uri, hits }
    }

    /// How many times the key set was asked for.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}
