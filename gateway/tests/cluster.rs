//! The gateway over a changing set of runners: runners that go away (their kernels reported
//! dead, their websockets closed with a reason), runners that join and leave through
//! discovery, `/metrics`, and a TLS certificate renewed while the gateway runs.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use cellgate_gateway::{Discovery, GatewayError, RunnerSource, TlsSettings};
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use support::fake_runner::{self, FakeRunner};
use support::{config, start_configured, Reply, TestGateway, SECRET, TOKEN};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use url::Url;

/// How long a test waits for something the gateway does on its own (a health round, a
/// discovery refresh, a certificate check) before it fails.
const PATIENCE: Duration = Duration::from_secs(15);

async fn next_message<S>(socket: &mut S) -> Message
where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    tokio::time::timeout(PATIENCE, socket.next())
        .await
        .expect("no message in time")
        .expect("the websocket ended")
        .expect("the websocket failed")
}

/// Polls `check` until it returns `Some`, failing the test after [`PATIENCE`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A gateway that checks its runners often, so tests do not wait on the default interval.
fn quick(runners: Vec<Url>) -> cellgate_gateway::GatewayConfig {
    let mut config = config(runners, Some(TOKEN), SECRET);
    config.health.interval = Duration::from_millis(200);
    config.health.timeout = Duration::from_millis(200);
    config
}

async fn create(gateway: &TestGateway) -> String {
    let created = gateway.api(Method::POST, "/api/kernels", "{}").await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    created.json()["id"].as_str().unwrap().to_owned()
}

async fn metrics(gateway: &TestGateway) -> String {
    let reply = gateway.api(Method::GET, "/metrics", "").await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.text()
}

fn owned_by(runner: &FakeRunner, kernel: &str) -> bool {
    runner.state.kernels.lock().unwrap().contains_key(kernel)
}

#[tokio::test]
async fn a_gone_runners_kernels_are_dead_and_their_websockets_close_with_its_name() {
    let a = fake_runner::start("runner-a", SECRET).await;
    let b = fake_runner::start("runner-b", SECRET).await;
    let gateway = start_configured(quick(vec![a.url.clone(), b.url.clone()])).await;
    let (first, second) = (create(&gateway).await, create(&gateway).await);
    let (on_a, on_b) = if owned_by(&a, &first) {
        (first, second)
    } else {
        (second, first)
    };
    assert!(
        owned_by(&a, &on_a) && owned_by(&b, &on_b),
        "one kernel each"
    );

    let path = |kernel: &str| format!("/api/kernels/{kernel}/channels?token={TOKEN}");
    let (mut socket_a, _) = gateway.websocket(&path(&on_a), None).await.unwrap();
    let (mut socket_b, _) = gateway.websocket(&path(&on_b), None).await.unwrap();
    socket_a.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(
        next_message(&mut socket_a).await,
        Message::Text("hello".into())
    );

    // Runner a stops listening; its open websocket stays connected, as with a runner whose
    // host vanished, so only the gateway's verdict can close it.
    let a_url = a.url.clone();
    drop(a);
    match next_message(&mut socket_a).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Error);
            assert_eq!(frame.reason, format!("kernel runner {a_url} is gone"));
        }
        other => panic!("expected a close naming the runner, got {other:?}"),
    }

    let model = gateway
        .api(Method::GET, &format!("/api/kernels/{on_a}"), "")
        .await;
    assert_eq!(model.status, StatusCode::OK);
    let model = model.json();
    assert_eq!(model["execution_state"], "dead");
    let reason = model["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!("kernel runner {a_url} is gone")),
        "{reason}"
    );

    let listed = gateway.api(Method::GET, "/api/kernels", "").await.json();
    let state_of = |kernel: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|model| model["id"] == kernel)
            .map(|model| model["execution_state"].clone())
    };
    assert_eq!(state_of(&on_a), Some(json!("dead")));
    assert_eq!(state_of(&on_b), Some(json!("idle")));

    // The other runner's kernel goes on, and new kernels go there.
    socket_b
        .send(Message::Text("still here".into()))
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut socket_b).await,
        Message::Text("still here".into())
    );
    let third = create(&gateway).await;
    assert!(owned_by(&b, &third));

    let interrupt = gateway
        .api(Method::POST, &format!("/api/kernels/{on_a}/interrupt"), "")
        .await;
    assert_eq!(interrupt.status, StatusCode::BAD_GATEWAY);
    assert!(interrupt.json()["message"]
        .as_str()
        .unwrap()
        .contains("is dead"));
    match gateway.websocket(&path(&on_a), None).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), StatusCode::BAD_GATEWAY),
        other => panic!("expected 502, got {:?}", other.map(|_| ())),
    }
    let text = metrics(&gateway).await;
    assert!(text.contains(&format!("cellgate_runner_gone{{runner=\"{a_url}\"}} 1")));
    assert!(text.contains("cellgate_kernels_dead 1\n"), "{text}");

    let deleted = gateway
        .api(Method::DELETE, &format!("/api/kernels/{on_a}"), "")
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let after = gateway
        .api(Method::GET, &format!("/api/kernels/{on_a}"), "")
        .await;
    assert_eq!(after.status, StatusCode::NOT_FOUND);
    gateway.stop().await.unwrap();
}

/// A runner list the test edits while the gateway runs.
struct Edited(Mutex<Vec<Url>>);

#[async_trait]
impl Discovery for Edited {
    async fn discover(&self) -> Result<Vec<Url>, GatewayError> {
        Ok(self.0.lock().unwrap().clone())
    }

    fn describe(&self) -> String {
        "the test's list".to_owned()
    }
}

async fn healthy_runners(gateway: &TestGateway) -> u64 {
    let health = gateway.request(Method::GET, "/healthz", &[], "").await;
    health.json()["healthy_runners"].as_u64().unwrap()
}

#[tokio::test]
async fn runners_join_and_leave_through_discovery_without_a_restart() {
    let a = fake_runner::start("runner-a", SECRET).await;
    let b = fake_runner::start("runner-b", SECRET).await;
    let list = Arc::new(Edited(Mutex::new(vec![a.url.clone()])));
    let mut config = quick(Vec::new());
    config.runners = RunnerSource::Custom {
        discovery: list.clone(),
        refresh: Duration::from_millis(100),
    };
    let gateway = start_configured(config).await;
    let on_a = create(&gateway).await;
    assert!(owned_by(&a, &on_a));

    list.0.lock().unwrap().push(b.url.clone());
    eventually("runner b joins and is healthy", || async {
        (healthy_runners(&gateway).await == 2).then_some(())
    })
    .await;
    // Runner a holds a kernel and b none, so b gets the next one.
    let on_b = create(&gateway).await;
    assert!(
        owned_by(&b, &on_b),
        "the runner that joined receives kernels"
    );

    list.0.lock().unwrap().retain(|url| *url != a.url);
    let dead = eventually("runner a leaves", || async {
        let model = gateway
            .api(Method::GET, &format!("/api/kernels/{on_a}"), "")
            .await
            .json();
        (model["execution_state"] == "dead").then_some(model)
    })
    .await;
    assert_eq!(
        dead["reason"],
        format!("kernel runner {} left the runner list", a.url)
    );
    assert_eq!(healthy_runners(&gateway).await, 1);
    let on_b_again = create(&gateway).await;
    assert!(owned_by(&b, &on_b_again));
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_are_prometheus_text_behind_the_token() {
    let a = fake_runner::start("runner-a", SECRET).await;
    let gateway = start_configured(quick(vec![a.url.clone()])).await;
    let anonymous = gateway.request(Method::GET, "/metrics", &[], "").await;
    assert_eq!(anonymous.status, StatusCode::FORBIDDEN);
    let bearer = format!("Bearer {TOKEN}");
    let scraped = gateway
        .request(Method::GET, "/metrics", &[("authorization", &bearer)], "")
        .await;
    assert_eq!(scraped.status, StatusCode::OK);
    assert_eq!(
        scraped.header("content-type"),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = scraped.text();
    assert!(text.contains(&format!("cellgate_runner_up{{runner=\"{}\"}} 1", a.url)));
    assert!(text.contains("cellgate_execute_latency_seconds_count 0\n"));

    let kernel = create(&gateway).await;
    let path = format!("/api/kernels/{kernel}/channels?token={TOKEN}");
    let (mut socket, _) = gateway.websocket(&path, None).await.unwrap();
    let text = metrics(&gateway).await;
    assert!(text.contains(&format!(
        "cellgate_placements_total{{runner=\"{}\"}} 1",
        a.url
    )));
    assert!(
        text.contains(&format!(
            "cellgate_websocket_sessions{{runner=\"{}\"}} 1",
            a.url
        )),
        "{text}"
    );

    // The fake runner echoes: a request goes out, and a reply naming it comes back, which is
    // all the gateway looks at to time a cell.
    let request = json!({"header": {"msg_id": "m1", "msg_type": "execute_request"},
                         "parent_header": {}, "metadata": {}, "content": {}, "channel": "shell"});
    let reply = json!({"header": {"msg_id": "r1", "msg_type": "execute_reply"},
                       "parent_header": {"msg_id": "m1"}, "metadata": {}, "content": {},
                       "channel": "shell"});
    for frame in [request, reply] {
        socket.send(Message::Text(frame.to_string())).await.unwrap();
        next_message(&mut socket).await;
    }
    let text = metrics(&gateway).await;
    assert!(
        text.contains("cellgate_execute_latency_seconds_count 1\n"),
        "{text}"
    );
    socket.close(None).await.unwrap();
    gateway.stop().await.unwrap();
}

fn write_certificate(dir: &std::path::Path) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    support::fingerprint(cert.der())
}

#[tokio::test]
async fn a_renewed_certificate_reaches_new_connections_and_open_ones_go_on() {
    let dir = std::env::temp_dir().join(format!("cellgate-cert-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let first = write_certificate(&dir);
    let a = fake_runner::start("runner-a", SECRET).await;
    let mut config = quick(vec![a.url.clone()]);
    config.tls = TlsSettings::Files {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    config.tls_reload_interval = Some(Duration::from_millis(50));
    let mut gateway = start_configured(config).await;
    assert_eq!(gateway.fingerprint, first);
    assert_eq!(gateway.served_fingerprint().await, first);
    let mut open = gateway.connection().await;

    let second = write_certificate(&dir);
    assert_ne!(first, second);
    eventually("the renewed certificate is served", || async {
        (gateway.served_fingerprint().await == second).then_some(())
    })
    .await;

    // The connection made before the renewal still carries requests.
    let request = Request::get("/api")
        .header("host", "localhost")
        .header("authorization", format!("token {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = open.send_request(request).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let _ = answer.into_body().collect().await.unwrap();

    gateway.fingerprint = second;
    let text: Reply = gateway.api(Method::GET, "/metrics", "").await;
    assert!(text
        .text()
        .contains("cellgate_tls_reloads_total{outcome=\"replaced\"} 1\n"));
    gateway.stop().await.unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}
