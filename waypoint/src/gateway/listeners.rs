//! The ingress gateway's listeners: one per Gateway server port, opened and closed as
//! the Gateways change, HTTP in the clear, HTTPS with the port's current TLS config
//! (swapped in place when a certificate changes, without closing the port), or bytes
//! relayed (TLS passed through by SNI, by `tls:` routes; TCP, by `tcp:` routes, with or
//! without TLS terminated first).

use std::{
    collections::BTreeMap,
    io,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError, RwLock},
};

use ambit_workers::Workers;
use rustls::ServerConfig;
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tracing::{Instrument as _, debug, info, warn};

use crate::proxy::{Downstream, Engine, Peer, relay_connection, serve_connection};

/// What a port serves.
#[derive(Debug, Clone)]
pub enum PortMode {
    Http,
    Https(Arc<ServerConfig>),
    /// Bytes relayed: TLS by SNI, not terminated, or TCP by `tcp:` routes.
    Relay,
    /// TLS terminated with the port's config, then relayed by `tcp:` routes.
    TlsRelay(Arc<ServerConfig>),
}

/// A port that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source} (is another process using the port?)")]
pub struct ListenError {
    pub address: SocketAddr,
    pub source: io::Error,
}

type ModeByPort = Arc<RwLock<BTreeMap<u16, PortMode>>>;

/// The open ports and what each serves.
#[derive(Debug)]
pub struct Listeners {
    address: IpAddr,
    engine: Arc<Engine>,
    modes: ModeByPort,
    /// Where accepted connections are served.
    workers: Arc<Workers>,
    open: Mutex<BTreeMap<u16, JoinHandle<()>>>,
}

impl Listeners {
    /// Listeners on `address` serving requests with `engine` on `workers`; none open
    /// yet.
    #[must_use]
    pub fn new(address: IpAddr, engine: Arc<Engine>, workers: Arc<Workers>) -> Self {
        Self {
            address,
            engine,
            modes: Arc::default(),
            workers,
            open: Mutex::default(),
        }
    }

    /// Opens every port of `ports` not open yet, closes the open ones it lacks (their
    /// connections finish), and swaps in each HTTPS port's TLS config. Must run on a
    /// Tokio runtime.
    ///
    /// # Errors
    /// The ports that could not be opened (the others are served).
    pub fn reconcile(&self, ports: &BTreeMap<u16, PortMode>) -> Vec<ListenError> {
        (*self.modes.write().unwrap_or_else(PoisonError::into_inner)).clone_from(ports);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|port, task| {
            let keep = ports.contains_key(port);
            if !keep {
                info!(
                    port,
                    "closing the port: no Gateway server listens on it any more"
                );
                task.abort();
            }
            keep
        });
        let mut errors = Vec::new();
        for port in ports.keys() {
            if open.contains_key(port) {
                continue;
            }
            let address = SocketAddr::new(self.address, *port);
            match bind(address) {
                Ok(listener) => {
                    info!(port, %address, "serving a Gateway port");
                    let task = accept_loop(
                        listener,
                        Arc::clone(&self.engine),
                        Arc::clone(&self.modes),
                        Arc::clone(&self.workers),
                    );
                    open.insert(*port, tokio::spawn(task));
                }
                Err(source) => errors.push(ListenError { address, source }),
            }
        }
        errors
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for task in self
            .open
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            task.abort();
        }
    }
}

fn bind(address: SocketAddr) -> io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

async fn accept_loop(
    listener: TcpListener,
    engine: Arc<Engine>,
    modes: ModeByPort,
    workers: Arc<Workers>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accepting a connection failed");
                tokio::task::yield_now().await;
                continue;
            }
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let port = local.port();
        let Some(mode) = modes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&port)
            .cloned()
        else {
            continue;
        };
        let downstream = Downstream::new(
            local,
            None,
            Peer {
                ip: peer.ip().to_canonical(),
                identity: None,
            },
        );
        let span = tracing::debug_span!("ingress", %peer, port);
        let engine = Arc::clone(&engine);
        let served = workers.spawn_connection(stream, move |stream| {
            serve(stream, mode, engine, downstream).instrument(span)
        });
        if let Err(error) = served {
            debug!(%peer, %error, "cannot hand the connection to a worker thread");
        }
    }
}

async fn serve(stream: TcpStream, mode: PortMode, engine: Arc<Engine>, mut downstream: Downstream) {
    let _ = stream.set_nodelay(true);
    let served = match mode {
        PortMode::Http => serve_connection(stream, engine, downstream).await,
        PortMode::Https(config) => match handshake(stream, config).await {
            Some(stream) => {
                downstream.sni = stream.get_ref().1.server_name().map(str::to_owned);
                serve_connection(stream, engine, downstream).await
            }
            None => return,
        },
        PortMode::Relay => {
            relay_connection(stream, engine, downstream).await;
            return;
        }
        PortMode::TlsRelay(config) => {
            if let Some(stream) = handshake(stream, config).await {
                relay_connection(stream, engine, downstream).await;
            }
            return;
        }
    };
    if let Err(error) = served {
        debug!(%error, "connection ended with an error");
    }
}

/// The server side of a TLS handshake on `stream`; `None` (logged) when it fails.
async fn handshake(stream: TcpStream, config: Arc<ServerConfig>) -> Option<TlsStream<TcpStream>> {
    TlsAcceptor::from(config)
        .accept(stream)
        .await
        .inspect_err(|error| debug!(%error, "TLS handshake failed"))
        .ok()
}
