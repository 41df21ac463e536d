//! TLS end to end with `openssl` (Debian package openssl), for what must pass TLS
//! through untouched (`tls:` routes, `PASSTHROUGH` gateway servers): a server in a pod
//! presenting a self-signed certificate of its own name (`s_server`), and a client that
//! reports whose certificate it was shown for the server name it sent (`s_client`).

use std::{
    fs,
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};
use rcgen::{Certificate, CertificateParams, DnType, KeyPair};

use crate::{ChildGuard, app::Place};

/// Starts `openssl s_server` in `place` on `port` (every address), presenting a
/// self-signed certificate for `name` written into `dir`.
///
/// # Errors
/// The certificate cannot be made or written, or openssl cannot start.
pub fn serve(place: &impl Place, port: u16, name: &str, dir: &Path) -> Result<ChildGuard> {
    let (certificate, key_pair) =
        self_signed(name).with_context(|| format!("a self-signed certificate for {name}"))?;
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    fs::write(&cert, certificate.pem()).with_context(|| format!("writing {}", cert.display()))?;
    fs::write(&key, key_pair.serialize_pem())
        .with_context(|| format!("writing {}", key.display()))?;
    place
        .spawn(
            Command::new("openssl")
                .args(["s_server", "-quiet", "-accept", &port.to_string()])
                .arg("-cert")
                .arg(&cert)
                .arg("-key")
                .arg(&key),
        )
        .context("starting openssl s_server (Debian package openssl)")
}

/// A certificate for `name`, as its subject's common name and its one DNS name.
fn self_signed(name: &str) -> Result<(Certificate, KeyPair), rcgen::Error> {
    let mut params = CertificateParams::new(vec![name.to_owned()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    let key_pair = KeyPair::generate()?;
    Ok((params.self_signed(&key_pair)?, key_pair))
}

/// The name in the certificate a TLS server at `to` presented to a client in `place`
/// that asked for `server_name` (SNI); `None` when the handshake did not complete.
///
/// # Errors
/// openssl cannot start or runs past `timeout`.
pub fn presented_to(
    place: &impl Place,
    to: SocketAddr,
    server_name: &str,
    timeout: Duration,
) -> Result<Option<String>> {
    let done = place
        .exec(
            Command::new("openssl")
                .args(["s_client", "-brief", "-connect", &to.to_string()])
                .args(["-servername", server_name])
                .stdin(Stdio::null()),
            timeout,
        )
        .context("running openssl s_client (Debian package openssl)")?;
    Ok(format!("{}{}", done.stdout, done.stderr)
        .lines()
        .find_map(|line| line.strip_prefix("Peer certificate: CN = "))
        .map(str::to_owned))
}
