//! The runner's own API, as a gateway reaches it: plain HTTP on loopback, the shared secret
//! required everywhere but `/healthz`.

use std::time::Duration;

use bytes::Bytes;
use cellgate_kernel_runner::Config;
use cellgate_protocol::model::RUNNER_SECRET_HEADER;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "a-runner-secret-for-tests";

struct Runner {
    address: String,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

async fn start_runner() -> Runner {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let data = std::env::temp_dir().join(format!("cellgate-runner-{}", uuid::Uuid::new_v4()));
    let mut config = Config::new(data, "test".into(), SECRET.into());
    config.grace = Duration::from_secs(1);
    let stop = CancellationToken::new();
    let shutdown = stop.clone().cancelled_owned();
    let done = tokio::spawn(async move {
        cellgate_kernel_runner::run(listener, config, shutdown)
            .await
            .unwrap();
    });
    Runner {
        address,
        stop,
        done,
    }
}

async fn request(
    address: &str,
    method: &str,
    path: &str,
    secret: Option<&str>,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let tcp = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", address);
    if let Some(secret) = secret {
        builder = builder.header(RUNNER_SECRET_HEADER, secret);
    }
    let response = sender
        .send_request(
            builder
                .body(Full::new(Bytes::from(body.to_owned())))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// Starts a bash kernel on the runner and returns its id.
async fn start_bash_kernel(address: &str) -> String {
    let (status, body) = request(
        address,
        "POST",
        "/api/kernels",
        Some(SECRET),
        "{\"name\": \"bash\"}",
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn only_the_gateway_secret_opens_the_api() {
    let runner = start_runner().await;
    let (status, _) = request(&runner.address, "GET", "/healthz", None, "").await;
    assert_eq!(status, StatusCode::OK);
    for secret in [None, Some("wrong"), Some("")] {
        let (status, body) = request(&runner.address, "GET", "/api/kernels", secret, "").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body["reason"], "Forbidden");
    }
    let (status, body) = request(&runner.address, "GET", "/api/kernels", Some(SECRET), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!([]));
    runner.stop.cancel();
    runner.done.await.unwrap();
}

#[tokio::test]
async fn status_reports_what_a_balancer_needs() {
    let runner = start_runner().await;
    let (status, body) = request(&runner.address, "GET", "/api/runner", Some(SECRET), "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["runner_id"], "test");
    assert_eq!(body["sessions"], 0);
    assert_eq!(body["kernels"], 0);
    assert_eq!(body["draining"], false);

    start_bash_kernel(&runner.address).await;
    let (_, body) = request(&runner.address, "GET", "/api/runner", Some(SECRET), "").await;
    assert_eq!(body["kernels"], 1);
    runner.stop.cancel();
    runner.done.await.unwrap();
}

/// Every string of a JSON value, keys included.
fn strings(value: &serde_json::Value) -> Vec<&str> {
    match value {
        serde_json::Value::String(text) => vec![text.as_str()],
        serde_json::Value::Array(items) => items.iter().flat_map(strings).collect(),
        serde_json::Value::Object(fields) => fields
            .iter()
            .flat_map(|(key, field)| std::iter::once(key.as_str()).chain(strings(field)))
            .collect(),
        _ => Vec::new(),
    }
}

#[tokio::test]
async fn kernelspecs_show_the_installed_drivers_without_placeholders() {
    let runner = start_runner().await;
    let (status, specs) =
        request(&runner.address, "GET", "/api/kernelspecs", Some(SECRET), "").await;
    assert_eq!(status, StatusCode::OK, "{specs}");
    let placeholders: Vec<&str> = strings(&specs)
        .into_iter()
        .filter(|text| text.contains('{'))
        .collect();
    assert!(placeholders.is_empty(), "{placeholders:?} in {specs}");
    // The process backend runs bash wherever the tests run; its kernelspec names the driver
    // the runner installed, and a single kernelspec is the same as in the list.
    let argv = specs["kernelspecs"]["bash"]["spec"]["argv"]
        .as_array()
        .unwrap_or_else(|| panic!("no bash kernelspec in {specs}"));
    let script = argv.last().and_then(|arg| arg.as_str()).unwrap();
    assert!(std::path::Path::new(script).is_file(), "{argv:?}");
    let (status, bash) = request(
        &runner.address,
        "GET",
        "/api/kernelspecs/bash",
        Some(SECRET),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bash, specs["kernelspecs"]["bash"]);
    runner.stop.cancel();
    runner.done.await.unwrap();
}

#[tokio::test]
async fn shutdown_stops_every_kernel_process() {
    let runner = start_runner().await;
    let id = start_bash_kernel(&runner.address).await;
    runner.stop.cancel();
    runner.done.await.unwrap();
    // No process of that kernel is left: its environment carries the kernel id.
    let leftover = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read(entry.path().join("environ")).ok())
        .any(|environ| {
            environ
                .split(|&b| b == 0)
                .any(|var| var == format!("KERNEL_ID={id}").as_bytes())
        });
    assert!(!leftover, "a driver process outlived its runner");
}
