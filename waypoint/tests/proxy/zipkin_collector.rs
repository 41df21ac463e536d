//! A Zipkin collector: accepts `POST /api/v2/spans` and keeps the spans.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use http::Response;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use serde_json::Value;
use tokio::net::TcpListener;

/// The spans received, in order.
#[derive(Debug, Clone)]
pub struct ZipkinCollector {
    /// `127.0.0.14:<port>`.
    pub address: String,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl ZipkinCollector {
    /// Collects on 127.0.0.14 until the test ends.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.14:0")
            .await
            .expect("binding the collector");
        let address = listener.local_addr().expect("an address").to_string();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&spans);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = Arc::clone(&kept);
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let kept = Arc::clone(&kept);
                    async move {
                        assert_eq!(request.uri().path(), "/api/v2/spans");
                        let body = request.into_body().collect().await.expect("a body");
                        let batch: Vec<Value> =
                            serde_json::from_slice(&body.to_bytes()).expect("a JSON array");
                        kept.lock().unwrap().extend(batch);
                        Ok::<_, Infallible>(Response::new(Full::new(bytes::Bytes::new())))
                    }
                });
                tokio::spawn(
                    auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned(),
                );
            }
        });
        Self { address, spans }
    }

    /// The spans received once there are at least `count` (within 10 s).
    pub async fn wait_for(&self, count: usize) -> Vec<Value> {
        for _ in 0..200 {
            let spans = self.spans.lock().unwrap().clone();
            if spans.len() >= count {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "fewer than {count} spans arrived: {:?}",
            self.spans.lock().unwrap()
        );
    }
}
