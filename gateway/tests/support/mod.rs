//! Test harness: a gateway on an ephemeral port in front of fake runners, and a client that
//! speaks HTTPS and WSS to it, trusting the gateway's certificate by its fingerprint the way
//! a user would.

#![allow(dead_code)]

pub mod fake_runner;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cellgate_gateway::{GatewayConfig, GatewayError, TlsSettings};
use http::header::{HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::WebSocketStream;
use url::Url;

pub const SECRET: &str = "runner-secret-for-tests";
pub const TOKEN: &str = "test-token";

/// A running gateway; dropping it does not stop it, [`TestGateway::stop`] does.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub fingerprint: String,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), GatewayError>>,
}

pub async fn start_gateway(runners: Vec<Url>, token: Option<&str>) -> TestGateway {
    start_gateway_with(runners, token, SECRET).await
}

pub async fn start_gateway_with(
    runners: Vec<Url>,
    token: Option<&str>,
    secret: &str,
) -> TestGateway {
    start_configured(config(runners, token, secret)).await
}

/// The configuration [`start_gateway_with`] uses, for a test to adjust.
pub fn config(runners: Vec<Url>, token: Option<&str>, secret: &str) -> GatewayConfig {
    let mut config = GatewayConfig::new(
        token.map(str::to_owned),
        runners,
        secret.to_owned(),
        TlsSettings::SelfSigned { dir: None },
    );
    config.timeouts.shutdown_grace = Duration::from_secs(5);
    config
}

pub async fn start_configured(config: GatewayConfig) -> TestGateway {
    let tls = cellgate_gateway::load_tls(&config.tls, &[]).unwrap();
    let fingerprint = tls.sha256_fingerprint.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(cellgate_gateway::run(listener, config, tls, async move {
        let _ = stopped.await;
    }));
    TestGateway {
        addr,
        fingerprint,
        stop: Some(stop),
        handle,
    }
}

impl TestGateway {
    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), GatewayError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(15), &mut self.handle)
            .await
            .expect("the gateway did not stop in time")
            .unwrap()
    }

    async fn tls(&self) -> TlsStream<TcpStream> {
        self.tls_pinned(Some(self.fingerprint.clone())).await
    }

    /// The SHA-256 fingerprint of the certificate a new connection is shown now.
    pub async fn served_fingerprint(&self) -> String {
        let tls = self.tls_pinned(None).await;
        let leaf = &tls.get_ref().1.peer_certificates().unwrap()[0];
        fingerprint(leaf.as_ref())
    }

    /// A keep-alive HTTPS connection for several requests.
    pub async fn connection(&self) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        let io = TokioIo::new(self.tls().await);
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        sender
    }

    async fn tls_pinned(&self, fingerprint: Option<String>) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                fingerprint,
                provider,
            }))
            .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// One HTTPS request on a fresh connection.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let io = TokioIo::new(self.tls().await);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("localhost:{}", self.addr.port()));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A request with the token header.
    pub async fn api(&self, method: Method, path: &str, body: &str) -> Reply {
        let auth = format!("token {TOKEN}");
        self.request(method, path, &[("authorization", &auth)], body)
            .await
    }

    /// Opens a websocket at `path_and_query`, offering `protocol` if given.
    pub async fn websocket(
        &self,
        path_and_query: &str,
        protocol: Option<&str>,
    ) -> Result<
        (WebSocketStream<TlsStream<TcpStream>>, Option<HeaderValue>),
        tokio_tungstenite::tungstenite::Error,
    > {
        let url = format!("wss://localhost:{}{path_and_query}", self.addr.port());
        let mut request = url.into_client_request().unwrap();
        if let Some(protocol) = protocol {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(protocol).unwrap(),
            );
        }
        let (socket, response) = tokio_tungstenite::client_async(request, self.tls().await).await?;
        let chosen = response.headers().get("sec-websocket-protocol").cloned();
        Ok((socket, chosen))
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{error}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|value| value.to_str().unwrap())
            .unwrap_or_default()
    }
}

/// `AA:BB:...`, as the gateway prints it.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Trusts exactly the certificate with the printed fingerprint (any, without one).
#[derive(Debug)]
struct Pinned {
    fingerprint: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = fingerprint(end_entity.as_ref());
        match &self.fingerprint {
            Some(pinned) if *pinned != seen => Err(rustls::Error::General(format!(
                "certificate fingerprint {seen} is not the printed {pinned}"
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
