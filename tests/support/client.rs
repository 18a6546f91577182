//! A small HTTPS client for the REST API. It trusts any certificate: the servers under test
//! use self-signed ones.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A TLS client configuration that accepts the server's self-signed certificate.
pub fn tls_config() -> Arc<rustls::ClientConfig> {
    cellgate::tls_client::config(true)
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `id` of what a `201 Created` answer made; anything else fails the test, showing
    /// the body.
    pub fn created_id(&self) -> String {
        assert_eq!(
            self.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()["id"].as_str().unwrap().to_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    }
}

#[derive(Clone)]
pub struct Client {
    pub address: String,
    pub token: Option<String>,
}

impl Client {
    pub fn new(address: &str, token: Option<&str>) -> Client {
        Client {
            address: address.to_owned(),
            token: token.map(str::to_owned),
        }
    }

    pub fn without_token(&self) -> Client {
        Client::new(&self.address, None)
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, &[]).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(body.to_string()), &[])
            .await
    }

    /// Sends a request with `Authorization: token` when the client has a token.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut all = Vec::new();
        if body.is_some() {
            all.push(("content-type", "application/json"));
        }
        all.extend_from_slice(headers);
        self.send_bytes(method, path, Bytes::from(body.unwrap_or_default()), &all)
            .await
    }

    /// Sends any body, e.g. a multipart upload, with exactly the headers given.
    pub async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Reply {
        let request = self.request(method, path, headers);
        self.exchange(request.body(Full::new(body)).unwrap()).await
    }

    /// A request that declares a body of `length` bytes and then sends none of it: what the
    /// server answers from the headers alone (a refusal it gives before reading the body).
    pub async fn send_declaring_length(
        &self,
        method: Method,
        path: &str,
        length: u64,
        headers: &[(&str, &str)],
    ) -> Reply {
        use http_body_util::StreamBody;
        let body = StreamBody::new(futures_util::stream::pending::<
            Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
        >());
        let request = self
            .request(method, path, headers)
            .header("content-length", length.to_string());
        self.exchange(request.body(body).unwrap()).await
    }

    /// A request to the server, with `Authorization: token` when the client has a token.
    fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> http::request::Builder {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.address);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("token {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request
    }

    /// Sends `request` on a new TLS connection and reads the whole answer.
    async fn exchange<B>(&self, request: Request<B>) -> Reply
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let tcp = TcpStream::connect(&self.address)
            .await
            .expect("server accepts connections");
        tcp.set_nodelay(true).unwrap();
        let tls = TlsConnector::from(tls_config())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake succeeds");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP handshake succeeds");
        tokio::spawn(connection);
        let response = sender.send_request(request).await.expect("server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Starts a kernel and returns its id.
    /// The listed kernels' execution states, by id.
    pub async fn kernel_states(&self) -> std::collections::HashMap<String, String> {
        let list = self.get("/api/kernels").await.json();
        list.as_array()
            .expect("a list of kernels")
            .iter()
            .map(|model| {
                let field = |name: &str| model[name].as_str().unwrap_or_default().to_owned();
                (field("id"), field("execution_state"))
            })
            .collect()
    }

    pub async fn start_kernel(&self, name: &str) -> String {
        self.post("/api/kernels", serde_json::json!({ "name": name }))
            .await
            .created_id()
    }
}
