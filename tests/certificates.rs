//! A running gateway process takes a renewed TLS certificate on SIGHUP, without a restart:
//! new connections are shown the new certificate.

mod support;

use std::time::Duration;

use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};
use support::cluster::{GatewayProcess, RunnerProcess};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Writes a fresh self-signed pair and returns the certificate's SHA-256 fingerprint.
fn write_certificate(dir: &std::path::Path) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    // Written next to the files and renamed over them, as certbot and friends do, so the
    // gateway never reads half a file.
    for (name, contents) in [("key.pem", key.serialize_pem()), ("cert.pem", cert.pem())] {
        let staged = dir.join(format!("{name}.new"));
        std::fs::write(&staged, contents).unwrap();
        std::fs::rename(&staged, dir.join(name)).unwrap();
    }
    fingerprint(cert.der())
}

fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The fingerprint of the certificate a new connection is shown.
async fn served(address: &str) -> String {
    let tcp = TcpStream::connect(address).await.unwrap();
    let tls = TlsConnector::from(support::client::tls_config())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let leaf = &tls.get_ref().1.peer_certificates().unwrap()[0];
    fingerprint(leaf.as_ref())
}

#[tokio::test]
async fn sighup_makes_the_gateway_serve_a_renewed_certificate() {
    let dir = std::env::temp_dir().join(format!("cellgate-certs-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = write_certificate(&dir);
    let runner = RunnerProcess::start(&[]).await;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let gateway = GatewayProcess::start(
        &[&runner.url],
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            // Only the signal may reload here, so the test shows SIGHUP works.
            "--tls-reload-interval",
            "0",
        ],
    )
    .await;
    assert_eq!(served(&gateway.address).await, first);

    let second = write_certificate(&dir);
    assert_eq!(
        served(&gateway.address).await,
        first,
        "without a signal nothing changes"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gateway.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while served(&gateway.address).await != second {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was not served after SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The gateway still serves the API with the new certificate.
    let health = gateway.client().get("/healthz").await;
    assert_eq!(health.status, 200);
    std::fs::remove_dir_all(dir).unwrap();
}
