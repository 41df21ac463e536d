//! Sockets made inside a pod's network namespace: the pod's listeners, and the
//! upstream connections ztunnel opens on the pod's behalf (marked 0x539 so the capture
//! programs leave them alone).

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use ambit_ebpf_common::{DELIVERY_MARK, INBOUND_PLAINTEXT_PORT, OUTBOUND_PORT, ZTUNNEL_MARK};
use ambit_hbone::HBONE_PORT;
use ambit_netns::{Netns, NetnsError};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use crate::config::UPSTREAM_CONNECT_TIMEOUT_SECS;

const LISTEN_BACKLOG: i32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A pod's listeners (non-blocking; they join a runtime's reactor on the worker that
/// serves the pod).
#[derive(Debug)]
pub struct PodListeners {
    /// 127.0.0.1:15001, and [::1]:15001 when the pod has IPv6.
    pub outbound: Vec<std::net::TcpListener>,
    /// [::]:15006 (dual-stack), or 0.0.0.0:15006 when the pod has no IPv6.
    pub inbound: std::net::TcpListener,
}

/// Binds the pod's listeners inside its namespace.
///
/// # Errors
/// The address that failed and why.
pub fn bind_pod_listeners(netns: &Netns) -> Result<PodListeners, (SocketAddr, SocketError)> {
    let v4_outbound = SocketAddr::from((Ipv4Addr::LOCALHOST, OUTBOUND_PORT));
    let v6_outbound = SocketAddr::from((Ipv6Addr::LOCALHOST, OUTBOUND_PORT));
    let dual_inbound = SocketAddr::from((Ipv6Addr::UNSPECIFIED, INBOUND_PLAINTEXT_PORT));
    let v4_inbound = SocketAddr::from((Ipv4Addr::UNSPECIFIED, INBOUND_PLAINTEXT_PORT));

    let mut outbound = vec![listen(netns, v4_outbound).map_err(|e| (v4_outbound, e))?];
    let inbound = match listen(netns, dual_inbound) {
        Ok(listener) => {
            // The pod has IPv6: capture it too.
            outbound.push(listen(netns, v6_outbound).map_err(|e| (v6_outbound, e))?);
            listener
        }
        Err(SocketError::Io(error))
            if error.raw_os_error() == Some(libc::EAFNOSUPPORT)
                || error.raw_os_error() == Some(libc::EADDRNOTAVAIL) =>
        {
            listen(netns, v4_inbound).map_err(|e| (v4_inbound, e))?
        }
        Err(error) => return Err((dual_inbound, error)),
    };
    Ok(PodListeners { outbound, inbound })
}

/// Binds the pod's HBONE listener, [::]:15008 (dual-stack), or 0.0.0.0:15008 when the
/// pod has no IPv6.
///
/// # Errors
/// The address that failed and why.
pub fn bind_hbone_listener(
    netns: &Netns,
) -> Result<std::net::TcpListener, (SocketAddr, SocketError)> {
    let dual = SocketAddr::from((Ipv6Addr::UNSPECIFIED, HBONE_PORT));
    let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, HBONE_PORT));
    match listen(netns, dual) {
        Ok(listener) => Ok(listener),
        Err(SocketError::Io(error))
            if error.raw_os_error() == Some(libc::EAFNOSUPPORT)
                || error.raw_os_error() == Some(libc::EADDRNOTAVAIL) =>
        {
            listen(netns, v4).map_err(|e| (v4, e))
        }
        Err(error) => Err((dual, error)),
    }
}

fn listen(netns: &Netns, addr: SocketAddr) -> Result<std::net::TcpListener, SocketError> {
    let socket = netns.run(|| -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_mark(ZTUNNEL_MARK)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        Ok(socket)
    })??;
    Ok(socket.into())
}

/// Connects to `destination` from inside the pod's namespace with ztunnel's mark.
///
/// # Errors
/// [`SocketError`] from creating the socket or connecting.
pub async fn connect(netns: &Netns, destination: SocketAddr) -> Result<TcpStream, SocketError> {
    let socket = netns.run(|| marked_socket(destination, ZTUNNEL_MARK))??;
    connect_within(TcpSocket::from_std_stream(socket.into()), destination).await
}

/// Connects to the app at `destination` from the client's address `client`
/// (`IP_TRANSPARENT`), marked so that the capture programs let it through and the
/// pod's delivery route sends the app's replies back here.
///
/// # Errors
/// [`SocketError`] from creating, binding or connecting the socket.
pub async fn deliver_as(
    netns: &Netns,
    client: SocketAddr,
    destination: SocketAddr,
) -> Result<TcpStream, SocketError> {
    let socket = netns.run(|| -> io::Result<Socket> {
        let socket = marked_socket(destination, DELIVERY_MARK)?;
        if destination.is_ipv4() {
            socket.set_ip_transparent_v4(true)?;
        } else {
            socket.set_ip_transparent_v6(true)?;
        }
        socket.bind(&SocketAddr::new(client.ip(), 0).into())?;
        Ok(socket)
    })??;
    connect_within(TcpSocket::from_std_stream(socket.into()), destination).await
}

/// Connects, giving up after [`UPSTREAM_CONNECT_TIMEOUT_SECS`].
async fn connect_within(
    socket: TcpSocket,
    destination: SocketAddr,
) -> Result<TcpStream, SocketError> {
    let limit = Duration::from_secs(UPSTREAM_CONNECT_TIMEOUT_SECS);
    match tokio::time::timeout(limit, socket.connect(destination)).await {
        Ok(connected) => Ok(connected?),
        Err(_) => Err(SocketError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer from {destination} within {limit:?}"),
        ))),
    }
}

fn marked_socket(destination: SocketAddr, mark: u32) -> io::Result<Socket> {
    let socket = Socket::new(
        Domain::for_address(destination),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_mark(mark)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket)
}
