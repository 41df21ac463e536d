//! A key set served over HTTP (a RequestAuthentication's `jwksUri`), counting requests.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;

use crate::issuer::Issuer;

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
