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
    client::legacy::Client,
    rt::{TokioExecutor, TokioTimer},
};

use super::{
    Body,
    connector::{EndpointConnector, UpstreamStream, connect_in_time},
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
        request: Request<Body>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        let client = self.client((endpoint, pooling, ambit_workers::current()));
        client.request(request).await
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
