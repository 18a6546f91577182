//! The CLI's HTTPS client for the gateway: one TLS connection per request, the token in the
//! `Authorization` header, and a certificate check that `--insecure` turns off for servers
//! with a self-signed certificate.

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use url::Url;

pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Where the server is and how to prove who we are.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The gateway's base URL, e.g. https://127.0.0.1:8888.
    #[arg(long, env = "CELLGATE_URL")]
    pub url: Url,
    /// The gateway's access token.
    #[arg(long, env = "CELLGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Accept any certificate, e.g. the self-signed one a gateway makes on its first run.
    #[arg(long)]
    pub insecure: bool,
}

#[derive(Clone)]
pub struct Client {
    url: Url,
    host: String,
    port: u16,
    tls: Option<TlsConnector>,
    authorization: Option<HeaderValue>,
}

impl Client {
    pub fn new(args: &ServerArgs) -> anyhow::Result<Client> {
        let url = args.url.clone();
        let host = url
            .host_str()
            .context("the server URL has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url
            .port_or_known_default()
            .context("the server URL has no port")?;
        let tls = match url.scheme() {
            "https" => Some(TlsConnector::from(cellgate::tls_client::config(
                args.insecure,
            ))),
            "http" => None,
            other => bail!("the server URL's scheme {other:?} is neither https nor http"),
        };
        let authorization = match args.token.as_deref().filter(|token| !token.is_empty()) {
            Some(token) => Some(
                HeaderValue::from_str(&format!("token {token}"))
                    .context("the token cannot be sent in an HTTP header")?,
            ),
            None => None,
        };
        Ok(Client {
            url,
            host,
            port,
            tls,
            authorization,
        })
    }

    /// Sends a request to `path` (with its query) and returns the response, body unread.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: http::HeaderMap,
        body: Body,
    ) -> anyhow::Result<http::Response<Incoming>> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("cannot connect to {}", self.url))?;
        tcp.set_nodelay(true)?;
        let base = self.url.path().trim_end_matches('/');
        let uri = format!("{base}{path}");
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .context("building a request")?;
        *request.headers_mut() = headers;
        let authority = match self.url.port() {
            Some(port) => format!("{}:{port}", self.url.host_str().unwrap_or_default()),
            None => self.url.host_str().unwrap_or_default().to_owned(),
        };
        request
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_str(&authority)?);
        if let Some(authorization) = &self.authorization {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, authorization.clone());
        }
        match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone())
                    .context("the server's host is not a valid TLS name")?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .with_context(|| format!("TLS with {} failed", self.url))?;
                exchange(TokioIo::new(stream), request).await
            }
            None => exchange(TokioIo::new(tcp), request).await,
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<http::Response<Incoming>> {
        self.send(Method::GET, path, http::HeaderMap::new(), empty())
            .await
    }

    /// A request whose answer is JSON; a status other than 2xx becomes an error with the
    /// server's message.
    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> anyhow::Result<T> {
        let response = self
            .send(method, path, http::HeaderMap::new(), empty())
            .await?;
        let bytes = read_success(response).await?;
        serde_json::from_slice(&bytes).context("the server's answer is not the expected JSON")
    }
}

async fn exchange<I>(io: I, request: Request<Body>) -> anyhow::Result<http::Response<Incoming>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .context("HTTP handshake with the server failed")?;
    // The connection is driven until the response body is read, then dropped with it.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .context("the request to the server failed")
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The whole body of a successful response; otherwise an error that carries the server's
/// `{reason, message}`.
pub async fn read_success(response: http::Response<Incoming>) -> anyhow::Result<Bytes> {
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .context("reading the server's answer failed")?
        .to_bytes();
    if !status.is_success() {
        bail!("{}", server_message(status, &bytes));
    }
    Ok(bytes)
}

/// The message of a server's error answer, or its status when it has none.
pub fn server_message(status: StatusCode, body: &[u8]) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value.get("message")?.as_str().map(str::to_owned));
    match message {
        Some(message) => format!("the server answered {status}: {message}"),
        None => format!("the server answered {status}"),
    }
}
