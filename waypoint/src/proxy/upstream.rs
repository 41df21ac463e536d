//! Clients towards endpoints: one pooled hyper client per endpoint, protocol and worker
//! thread, created on first use, dialling through the [`Connect`] seam; and single
//! streams for relayed TCP connections, through the same seam. A pooled connection's
//! task runs on the worker that dialled it, so each worker keeps its own pool: a request
//! never waits on a connection another thread drives.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use ambit_workers::WorkerId;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{
        Client,
        connect::{CaptureConnection, capture_connection},
    },
    rt::{TokioExecutor, TokioTimer},
};

use super::{
    Body,
    connector::{EndpointConnector, RequestCount, UpstreamStream, connect_in_time},
};
use crate::{
    proxy::Connect,
    table::{Pooling, TcpPolicy},
};

type EndpointClient = Client<EndpointConnector, Body>;

/// Whose pool: the endpoint, its cluster's pooling, and the worker thread.
type ClientKey = (SocketAddr, Pooling, Option<WorkerId>);

/// The clients of every endpoint the waypoint has sent to.
#[derive(Debug)]
pub struct Upstreams {
    connector: Arc<dyn Connect>,
    clients: Mutex<HashMap<ClientKey, EndpointClient>>,
}

impl Upstreams {
    pub fn new(connector: Arc<dyn Connect>) -> Self {
        Self {
            connector,
            clients: Mutex::default(),
        }
    }

    /// Sends `request` (absolute URI, the authority being the request's) to
    /// `endpoint` on a connection pooled as `pooling` says.
    pub async fn send(
        &self,
        endpoint: SocketAddr,
        pooling: Pooling,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        let client = self.client((endpoint, pooling, ambit_workers::current()));
        let Some(max) = pooling.max_requests_per_connection else {
            return client.request(request).await;
        };
        let captured = capture_connection(&mut request);
        let response = client.request(request).await;
        retire_if_spent(&captured, max);
        response
    }

    /// A new stream to `endpoint`, for one relayed TCP connection (not pooled), with
    /// the cluster's keepalive, or an error once its `connectTimeout` has passed.
    pub async fn open(
        &self,
        endpoint: SocketAddr,
        tcp: &TcpPolicy,
    ) -> std::io::Result<UpstreamStream> {
        connect_in_time(
            &*self.connector,
            endpoint,
            tcp.connect_timeout,
            tcp.keepalive,
        )
        .await
    }

    fn client(&self, key: ClientKey) -> EndpointClient {
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        let (endpoint, pooling, _) = key;
        clients
            .entry(key)
            .or_insert_with(|| {
                Client::builder(TokioExecutor::new())
                    .http2_only(pooling.http2)
                    .pool_idle_timeout(pooling.idle_timeout)
                    .pool_timer(TokioTimer::new())
                    .build(EndpointConnector {
                        connector: Arc::clone(&self.connector),
                        endpoint,
                        timeout: pooling.connect_timeout,
                        keepalive: pooling.keepalive,
                    })
            })
            .clone()
    }
}

/// Counts a request on the connection `captured` names, and keeps the pool from reusing
/// it once it has carried `max` (it closes when its last response ends).
fn retire_if_spent(captured: &CaptureConnection, max: u32) {
    let metadata = captured.connection_metadata();
    let Some(connected) = metadata.as_ref() else {
        return;
    };
    let mut extras = http::Extensions::new();
    connected.get_extras(&mut extras);
    if extras
        .get::<RequestCount>()
        .is_some_and(|count| count.add_one() >= max)
    {
        connected.poison();
    }
}
