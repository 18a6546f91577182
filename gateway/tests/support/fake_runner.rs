//! A tiny kernel runner that speaks the runner contract (secret header, the Jupyter kernel
//! REST API, `/api/runner`, and a websocket that echoes), so the gateway can be tested end
//! to end without real kernels.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cellgate_protocol::content::ExecutionState;
use cellgate_protocol::model::{
    ApiError, CreateKernel, KernelModel, KernelSpec, KernelSpecFile, KernelSpecs, RunnerStatus,
    RUNNER_SECRET_HEADER,
};
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use url::Url;

const V1: &str = "v1.kernel.websocket.jupyter.org";

/// What a test can observe about one fake runner.
pub struct FakeRunner {
    pub url: Url,
    pub state: Arc<State>,
    /// Close codes of the closes the runner received on its websockets without having closed
    /// first (`None` for a close without a code).
    pub closes: mpsc::Receiver<Option<u16>>,
    server: JoinHandle<()>,
}

/// Dropping a runner makes it refuse connections and cuts its HTTP connections, while its
/// open websockets stay connected, as when a runner's host vanishes without a word.
impl Drop for FakeRunner {
    fn drop(&mut self) {
        self.server.abort();
        for connection in self.state.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

pub struct State {
    name: String,
    secret: String,
    port: u16,
    pub kernels: Mutex<BTreeMap<String, KernelModel>>,
    pub sessions: AtomicUsize,
    /// Every request's path and query, as the runner saw it.
    pub requests: Mutex<Vec<String>>,
    /// Requests that carried a client credential (Authorization, Cookie or `token=`).
    pub leaked_credentials: AtomicUsize,
    closes: mpsc::Sender<Option<u16>>,
    /// The HTTP connection tasks, cut when the runner is dropped.
    connections: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl State {
    pub fn kernel_count(&self) -> usize {
        self.kernels.lock().unwrap().len()
    }
}

/// Starts a runner named `name` on an ephemeral loopback port.
pub async fn start(name: &str, secret: &str) -> FakeRunner {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (closes_tx, closes) = mpsc::channel(64);
    let state = Arc::new(State {
        name: name.to_owned(),
        secret: secret.to_owned(),
        port,
        kernels: Mutex::new(BTreeMap::new()),
        sessions: AtomicUsize::new(0),
        requests: Mutex::new(Vec::new()),
        leaked_credentials: AtomicUsize::new(0),
        closes: closes_tx,
        connections: Mutex::new(Vec::new()),
    });
    let serving = state.clone();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let state = serving.clone();
            let connections = serving.clone();
            let task = tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(state, request).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
            connections
                .connections
                .lock()
                .unwrap()
                .push(task.abort_handle());
        }
    });
    FakeRunner {
        url: Url::parse(&format!("http://127.0.0.1:{port}")).unwrap(),
        state,
        closes,
        server,
    }
}

type Answer = Response<Full<Bytes>>;

fn json<T: Serialize>(status: StatusCode, value: &T) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(serde_json::to_vec(value).unwrap())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Answer {
    json(
        status,
        &ApiError {
            reason: status.canonical_reason().unwrap().to_owned(),
            message: message.to_owned(),
        },
    )
}

fn empty(status: StatusCode) -> Answer {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn spec(name: &str, display_name: &str) -> KernelSpec {
    KernelSpec {
        name: name.to_owned(),
        spec: KernelSpecFile {
            argv: vec![name.to_owned()],
            display_name: display_name.to_owned(),
            language: name.to_owned(),
            interrupt_mode: "signal".to_owned(),
            env: BTreeMap::new(),
            metadata: Default::default(),
        },
        resources: BTreeMap::new(),
    }
}

fn model(id: &str, name: &str, connections: usize) -> KernelModel {
    KernelModel {
        id: id.to_owned(),
        name: name.to_owned(),
        last_activity: "2024-01-01T00:00:00.000000Z".to_owned(),
        execution_state: ExecutionState::Idle,
        connections,
        reason: None,
    }
}

async fn handle(state: Arc<State>, mut request: Request<Incoming>) -> Answer {
    let path = request.uri().path().to_owned();
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    state.requests.lock().unwrap().push(target.clone());
    if request.headers().contains_key(header::AUTHORIZATION)
        || request.headers().contains_key(header::COOKIE)
        || target.contains("token=")
    {
        state.leaked_credentials.fetch_add(1, Ordering::Relaxed);
    }
    if path == "/healthz" {
        return empty(StatusCode::OK);
    }
    let secret_ok = request
        .headers()
        .get(RUNNER_SECRET_HEADER)
        .is_some_and(|value| value.as_bytes() == state.secret.as_bytes());
    if !secret_ok {
        return error(StatusCode::FORBIDDEN, "missing or wrong runner secret");
    }
    let segments: Vec<String> = path.split('/').skip(1).map(str::to_owned).collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = request.method().clone();
    match (method, segments.as_slice()) {
        (Method::GET, ["api", "runner"]) => json(
            StatusCode::OK,
            &RunnerStatus {
                runner_id: state.name.clone(),
                version: "test".into(),
                sessions: state.sessions.load(Ordering::Relaxed),
                kernels: state.kernel_count(),
                draining: false,
            },
        ),
        (Method::GET, ["api", "kernelspecs"]) => {
            let mut kernelspecs = BTreeMap::new();
            kernelspecs.insert("python3".to_owned(), spec("python3", "Python 3"));
            kernelspecs.insert(state.name.clone(), spec(&state.name, "Runner only"));
            json(
                StatusCode::OK,
                &KernelSpecs {
                    default: "python3".to_owned(),
                    kernelspecs,
                },
            )
        }
        (Method::GET, ["api", "kernelspecs", name]) => {
            if *name == "python3" || *name == state.name {
                json(StatusCode::OK, &spec(name, "Python 3"))
            } else {
                error(StatusCode::NOT_FOUND, "No such kernel spec")
            }
        }
        (Method::GET, ["api", "kernels"]) => {
            let kernels: Vec<KernelModel> =
                state.kernels.lock().unwrap().values().cloned().collect();
            json(StatusCode::OK, &kernels)
        }
        (Method::POST, ["api", "kernels"]) => {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let Ok(create) = serde_json::from_slice::<CreateKernel>(&body) else {
                return error(StatusCode::BAD_REQUEST, "bad body");
            };
            let id = create
                .kernel_id
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let name = create.name.unwrap_or_else(|| "python3".to_owned());
            let mut kernels = state.kernels.lock().unwrap();
            if kernels.contains_key(&id) {
                return error(StatusCode::CONFLICT, "Kernel id in use");
            }
            let created = model(&id, &name, 0);
            kernels.insert(id.clone(), created.clone());
            let mut response = json(StatusCode::CREATED, &created);
            // An absolute Location into the runner, which the gateway must rewrite.
            let location = format!("http://127.0.0.1:{}/api/kernels/{id}", state.port);
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_str(&location).unwrap());
            response
        }
        (method, ["api", "kernels", id, rest @ ..]) => {
            let known = state.kernels.lock().unwrap().get(*id).cloned();
            let Some(kernel) = known else {
                return error(
                    StatusCode::NOT_FOUND,
                    &format!("Kernel does not exist: {id}"),
                );
            };
            match (method, rest) {
                (Method::GET, []) => json(StatusCode::OK, &kernel),
                (Method::DELETE, []) => {
                    state.kernels.lock().unwrap().remove(*id);
                    empty(StatusCode::NO_CONTENT)
                }
                (Method::POST, ["interrupt"]) => empty(StatusCode::NO_CONTENT),
                (Method::POST, ["restart"]) => json(StatusCode::OK, &kernel),
                (Method::GET, ["channels"]) => upgrade(state.clone(), &mut request),
                _ => error(StatusCode::METHOD_NOT_ALLOWED, "no"),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "no route"),
    }
}

/// Accepts a websocket and echoes it: text and binary come back unchanged, the text
/// `close-me` makes the runner close with 4000 "bye".
fn upgrade(state: Arc<State>, request: &mut Request<Incoming>) -> Answer {
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return error(StatusCode::BAD_REQUEST, "not a websocket");
    };
    let offers_v1 = request
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|list| list.split(',').any(|name| name.trim() == V1));
    let on_upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        state.sessions.fetch_add(1, Ordering::Relaxed);
        let mut closed_by_us = false;
        while let Some(Ok(message)) = socket.next().await {
            let reply = match message {
                Message::Text(text) if text == "close-me" => {
                    closed_by_us = true;
                    Message::Close(Some(CloseFrame {
                        code: CloseCode::Library(4000),
                        reason: "bye".into(),
                    }))
                }
                Message::Text(_) | Message::Binary(_) => message,
                // The answer to the runner's own close is not a client's close.
                Message::Close(frame) if !closed_by_us => {
                    let _ = state.closes.try_send(frame.map(|f| u16::from(f.code)));
                    continue;
                }
                _ => continue,
            };
            if socket.send(reply).await.is_err() {
                break;
            }
        }
        state.sessions.fetch_sub(1, Ordering::Relaxed);
    });
    let mut response = empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&derive_accept_key(key.as_bytes())).unwrap(),
    );
    if offers_v1 {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(V1));
    }
    response
}
