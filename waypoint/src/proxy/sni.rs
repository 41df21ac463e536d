//! The server name a TLS client asks for, read from its ClientHello before a
//! connection is routed (Envoy's `tls_inspector`), for `tls:` routes. Nothing is
//! decrypted or answered: the bytes read are handed back, to be sent on first.

use std::time::Duration;

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// How long a client may take to send its ClientHello (Envoy's listener filter
/// timeout); after it the connection is routed without a server name.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(15);
/// The most read while looking for a ClientHello (TLS allows 16 KiB records; a hello
/// spanning more is routed without a server name).
const MAX_HELLO_BYTES: usize = 64 * 1024;

/// What was read from the client: the server name its ClientHello asked for, if it
/// sent one, and every byte read.
#[derive(Debug, Default)]
pub struct Inspected {
    pub server_name: Option<String>,
    pub read: Vec<u8>,
}

/// Reads from `client` until its ClientHello is complete, the bytes are not TLS, the
/// client stops sending, or [`HELLO_TIMEOUT`] passes.
pub async fn inspect<IO: AsyncRead + Unpin>(client: &mut IO) -> Inspected {
    let mut inspected = Inspected::default();
    let _ = tokio::time::timeout(HELLO_TIMEOUT, read_hello(client, &mut inspected)).await;
    inspected
}

async fn read_hello<IO: AsyncRead + Unpin>(client: &mut IO, inspected: &mut Inspected) {
    let mut acceptor = Acceptor::default();
    let mut chunk = [0; 4096];
    while inspected.read.len() < MAX_HELLO_BYTES {
        let n = match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        inspected.read.extend_from_slice(&chunk[..n]);
        if acceptor.read_tls(&mut &chunk[..n]).is_err() {
            return;
        }
        match acceptor.accept() {
            Ok(None) => {}
            Ok(Some(accepted)) => {
                inspected.server_name = accepted.client_hello().server_name().map(str::to_owned);
                return;
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::{ClientConfig, ClientConnection, RootCertStore, pki_types::ServerName};

    use super::*;

    fn client_hello(server_name: &str) -> Vec<u8> {
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth();
        let name = ServerName::try_from(server_name.to_owned()).expect("test name");
        let mut connection =
            ClientConnection::new(Arc::new(config), name).expect("a client connection");
        let mut hello = Vec::new();
        connection.write_tls(&mut hello).expect("the ClientHello");
        hello
    }

    #[tokio::test]
    async fn reads_the_server_name_and_hands_back_every_byte() {
        let hello = client_hello("login.example.com");
        // Split in two, as a slow client sends it; more bytes follow the hello.
        let (first, rest) = hello.split_at(hello.len() / 2);
        let mut client = client_sending(&[first, rest, b"after"]);
        let inspected = inspect(&mut client).await;
        assert_eq!(inspected.server_name.as_deref(), Some("login.example.com"));
        assert!(inspected.read.starts_with(&hello));
    }

    #[tokio::test]
    async fn plain_bytes_are_not_a_hello() {
        let mut client = client_sending(&[b"GET / HTTP/1.1\r\n\r\n"]);
        let inspected = inspect(&mut client).await;
        assert_eq!(inspected.server_name, None);
        assert_eq!(inspected.read, b"GET / HTTP/1.1\r\n\r\n");
    }

    /// A client that sends `chunks` in separate writes, then closes.
    fn client_sending(chunks: &[&[u8]]) -> tokio::io::DuplexStream {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            for chunk in chunks {
                server.write_all(&chunk).await.expect("the pipe is open");
                tokio::task::yield_now().await;
            }
        });
        client
    }
}
