//! The server refuses clients whose certificate it must not trust, and says why.

#[expect(
    dead_code,
    reason = "support serves several test files; this one uses part of it"
)]
mod support;

use std::time::Duration;

use ambit_hbone::WorkloadCertificate;
use http::HeaderMap;
use rcgen::{CertificateParams, date_time_ymd};
use support::{CLIENT, SERVER, TestCa};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(30);

/// Connects with `client` to a server whose certificate `ca` issued, and returns the
/// server's reason for rejecting the handshake (failing if a tunnel was granted).
async fn rejection(ca: &TestCa, client: &WorkloadCertificate) -> String {
    let mut server = support::hbone_server(&ca.leaf(SERVER)).await;
    let echo = support::echo_server().await;
    let attempt = async {
        let connection = support::connect(client, server.addr, SERVER).await?;
        connection
            .open(echo, None, HeaderMap::new())
            .await
            .map(drop)
            .map_err(|error| error.to_string())
    };
    let result = timeout(LIMIT, attempt)
        .await
        .expect("the client learns the outcome");
    assert!(
        result.is_err(),
        "the server granted a tunnel to a client it must refuse"
    );
    timeout(LIMIT, server.rejected.recv())
        .await
        .expect("the server reports the rejection in time")
        .expect("the server reports the rejected handshake")
        .to_string()
}

#[tokio::test]
async fn a_client_certificate_from_another_trust_root_is_rejected() {
    let mesh = TestCa::new();
    let foreign = TestCa::new();
    // Signed by a foreign root, though the client itself trusts the mesh's.
    let client = WorkloadCertificate {
        roots: vec![mesh.root()],
        ..foreign.leaf(CLIENT)
    };
    let reason = rejection(&mesh, &client).await;
    // Both test roots carry the same name, so webpki finds the mesh root and then a
    // signature it did not make; with distinct names it says UnknownIssuer.
    assert!(
        reason.contains("BadSignature") || reason.contains("UnknownIssuer"),
        "the server should say the chain does not lead to its root, it said: {reason}"
    );
}

#[tokio::test]
async fn an_expired_client_certificate_is_rejected() {
    let ca = TestCa::new();
    let mut expired = CertificateParams::default();
    expired.not_before = date_time_ymd(2020, 1, 1);
    expired.not_after = date_time_ymd(2021, 1, 1);
    let client = ca.leaf_valid(CLIENT, expired);
    let reason = rejection(&ca, &client).await;
    assert!(
        reason.contains("certificate expired"),
        "the server should say the certificate expired, it said: {reason}"
    );
}

#[tokio::test]
async fn the_client_refuses_a_server_with_another_identity() {
    let ca = TestCa::new();
    let server = support::hbone_server(&ca.leaf(SERVER)).await;
    let expected = "spiffe://cluster.local/ns/shop/sa/someone-else";
    let refused = timeout(
        LIMIT,
        support::connect(&ca.leaf(CLIENT), server.addr, expected),
    )
    .await
    .expect("the handshake ends in time")
    .expect_err("a server with another identity must be refused");
    assert!(
        refused.contains(SERVER) && refused.contains(expected),
        "the client should name the identity it expected and the one it got: {refused}"
    );
}
