//! End to end through TLS: REST calls and websockets pass from a client through the gateway
//! to fake runners and back, with placement, auth, discovery after a restart and shutdown.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Method, StatusCode};
use support::fake_runner::{self, FakeRunner};
use support::{start_gateway, start_gateway_with, TOKEN};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const V1: &str = "v1.kernel.websocket.jupyter.org";

async fn two_runners() -> (FakeRunner, FakeRunner) {
    (
        fake_runner::start("runner-a", support::SECRET).await,
        fake_runner::start("runner-b", support::SECRET).await,
    )
}

async fn next_message<S>(socket: &mut S) -> Message
where
    S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("no message within 10 s")
        .expect("the websocket ended")
        .expect("the websocket failed")
}

#[tokio::test]
async fn kernel_rest_calls_reach_their_runner_through_tls() {
    let (a, b) = two_runners().await;
    let gateway = start_gateway(vec![a.url.clone(), b.url.clone()], Some(TOKEN)).await;

    let version = gateway.api(Method::GET, "/api", "").await;
    assert_eq!(version.status, StatusCode::OK);
    assert!(version.json()["version"].is_string());

    let specs = gateway.api(Method::GET, "/api/kernelspecs", "").await;
    assert_eq!(specs.status, StatusCode::OK);
    let specs = specs.json();
    assert_eq!(specs["default"], "python3");
    for name in ["python3", "runner-a", "runner-b"] {
        assert!(
            specs["kernelspecs"][name].is_object(),
            "{name} missing: {specs}"
        );
    }
    let one = gateway
        .api(Method::GET, "/api/kernelspecs/runner-b", "")
        .await;
    assert_eq!(one.status, StatusCode::OK);
    let missing = gateway.api(Method::GET, "/api/kernelspecs/cobol", "").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Two kernels land on different runners: after the first, runner a has one kernel more.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let created = gateway
            .api(Method::POST, "/api/kernels", r#"{"name": "python3"}"#)
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
        let id = created.json()["id"].as_str().unwrap().to_owned();
        assert_eq!(created.header("location"), format!("/api/kernels/{id}"));
        ids.push(id);
    }
    assert_eq!((a.state.kernel_count(), b.state.kernel_count()), (1, 1));

    let listed = gateway.api(Method::GET, "/api/kernels", "").await;
    assert_eq!(listed.status, StatusCode::OK);
    let mut listed: Vec<String> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected);

    let id = &ids[1];
    let got = gateway
        .api(Method::GET, &format!("/api/kernels/{id}"), "")
        .await;
    assert_eq!(
        (got.status, got.json()["id"].as_str()),
        (StatusCode::OK, Some(id.as_str()))
    );
    let interrupt = gateway
        .api(Method::POST, &format!("/api/kernels/{id}/interrupt"), "")
        .await;
    assert_eq!(interrupt.status, StatusCode::NO_CONTENT);
    let restart = gateway
        .api(Method::POST, &format!("/api/kernels/{id}/restart"), "")
        .await;
    assert_eq!(restart.status, StatusCode::OK);
    let deleted = gateway
        .api(Method::DELETE, &format!("/api/kernels/{id}"), "")
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = gateway
        .api(Method::GET, &format!("/api/kernels/{id}"), "")
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.json()["reason"], "Not Found");

    // The runners saw the gateway's secret, never the client's token.
    assert_eq!(a.state.leaked_credentials.load(Ordering::Relaxed), 0);
    assert_eq!(b.state.leaked_credentials.load(Ordering::Relaxed), 0);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn errors_are_json_with_jupyter_statuses() {
    let (a, _b) = two_runners().await;
    let gateway = start_gateway(vec![a.url.clone()], Some(TOKEN)).await;

    let anonymous = gateway.request(Method::GET, "/api/kernels", &[], "").await;
    assert_eq!(anonymous.status, StatusCode::FORBIDDEN);
    assert_eq!(anonymous.json()["reason"], "Forbidden");
    let wrong = gateway
        .request(
            Method::GET,
            "/api/kernels",
            &[("authorization", "token not-it")],
            "",
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let by_query = gateway
        .request(Method::GET, &format!("/api/kernels?token={TOKEN}"), &[], "")
        .await;
    assert_eq!(by_query.status, StatusCode::OK);

    let cases = [
        (Method::GET, "/nope", StatusCode::NOT_FOUND),
        (
            Method::GET,
            "/api/kernels/not-a-uuid",
            StatusCode::NOT_FOUND,
        ),
        (
            Method::GET,
            "/api/kernels/0f8fad5b-d9cb-469f-a165-70867728950e",
            StatusCode::NOT_FOUND,
        ),
        (Method::PUT, "/api/kernels", StatusCode::METHOD_NOT_ALLOWED),
    ];
    for (method, path, status) in cases {
        let reply = gateway.api(method.clone(), path, "").await;
        assert_eq!(reply.status, status, "{method} {path}: {}", reply.text());
        assert!(reply.json()["message"].is_string());
    }
    let bad_json = gateway.api(Method::POST, "/api/kernels", "{nope").await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);

    let health = gateway.request(Method::GET, "/healthz", &[], "").await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["healthy_runners"], 1);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn websocket_frames_round_trip_with_the_runners_subprotocol() {
    let (a, _b) = two_runners().await;
    let mut a = a;
    let gateway = start_gateway(vec![a.url.clone()], Some(TOKEN)).await;
    let created = gateway.api(Method::POST, "/api/kernels", "{}").await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/api/kernels/{id}/channels?session_id=s1&token={TOKEN}");

    let (mut v1, chosen) = gateway.websocket(&path, Some(V1)).await.unwrap();
    assert_eq!(chosen.unwrap(), V1);
    v1.send(Message::Binary(vec![0, 1, 2, 255])).await.unwrap();
    assert_eq!(
        next_message(&mut v1).await,
        Message::Binary(vec![0, 1, 2, 255])
    );
    v1.send(Message::Text("close-me".into())).await.unwrap();
    match next_message(&mut v1).await {
        Message::Close(Some(frame)) => {
            assert_eq!(
                (u16::from(frame.code), frame.reason.as_ref()),
                (4000, "bye")
            )
        }
        other => panic!("expected the runner's close, got {other:?}"),
    }
    // Reading on answers the close; the gateway then ends the connection.
    while let Some(Ok(_)) = v1.next().await {}

    let (mut legacy, chosen) = gateway.websocket(&path, None).await.unwrap();
    assert_eq!(chosen, None);
    legacy
        .send(Message::Text(r#"{"msg_id": "1"}"#.into()))
        .await
        .unwrap();
    assert_eq!(
        next_message(&mut legacy).await,
        Message::Text(r#"{"msg_id": "1"}"#.into())
    );
    legacy
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "done".into(),
        })))
        .await
        .unwrap();
    let code = tokio::time::timeout(Duration::from_secs(10), a.closes.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code, Some(1000), "the runner sees the client's close code");
    match next_message(&mut legacy).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the close to be answered, got {other:?}"),
    }

    // The runner got the session id but not the token.
    let requests = a.state.requests.lock().unwrap().clone();
    assert!(requests
        .iter()
        .any(|r| r == &format!("/api/kernels/{id}/channels?session_id=s1")));
    assert_eq!(a.state.leaked_credentials.load(Ordering::Relaxed), 0);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn unknown_kernels_and_missing_tokens_are_refused_before_the_upgrade() {
    let (a, _b) = two_runners().await;
    let gateway = start_gateway(vec![a.url.clone()], Some(TOKEN)).await;
    let unknown = format!(
        "/api/kernels/{}/channels?token={TOKEN}",
        uuid::Uuid::new_v4()
    );
    match gateway.websocket(&unknown, None).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), StatusCode::NOT_FOUND),
        other => panic!("expected 404, got {:?}", other.map(|_| ())),
    }
    let created = gateway.api(Method::POST, "/api/kernels", "{}").await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    match gateway
        .websocket(&format!("/api/kernels/{id}/channels"), None)
        .await
    {
        Err(WsError::Http(response)) => assert_eq!(response.status(), StatusCode::FORBIDDEN),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn a_restarted_gateway_finds_kernels_it_did_not_start() {
    let (a, b) = two_runners().await;
    let runners = vec![a.url.clone(), b.url.clone()];
    let first = start_gateway(runners.clone(), Some(TOKEN)).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let created = first.api(Method::POST, "/api/kernels", "{}").await;
        ids.push(created.json()["id"].as_str().unwrap().to_owned());
    }
    first.stop().await.unwrap();

    let second = start_gateway(runners, Some(TOKEN)).await;
    for id in &ids {
        let got = second
            .api(Method::GET, &format!("/api/kernels/{id}"), "")
            .await;
        assert_eq!(got.status, StatusCode::OK, "kernel {id} lost after restart");
        let path = format!("/api/kernels/{id}/channels?token={TOKEN}");
        let (mut socket, _) = second.websocket(&path, None).await.unwrap();
        socket.send(Message::Text("ping".into())).await.unwrap();
        assert_eq!(
            next_message(&mut socket).await,
            Message::Text("ping".into())
        );
    }
    second.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_websockets_as_going_away_and_returns() {
    let (a, _b) = two_runners().await;
    let gateway = start_gateway(vec![a.url.clone()], Some(TOKEN)).await;
    let created = gateway.api(Method::POST, "/api/kernels", "{}").await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/api/kernels/{id}/channels?token={TOKEN}");
    let (mut socket, _) = gateway.websocket(&path, None).await.unwrap();
    socket.send(Message::Text("hi".into())).await.unwrap();
    assert_eq!(next_message(&mut socket).await, Message::Text("hi".into()));

    let stopped = tokio::spawn(gateway.stop());
    match next_message(&mut socket).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Away),
        other => panic!("expected going away, got {other:?}"),
    }
    while let Some(Ok(_)) = socket.next().await {}
    stopped.await.unwrap().unwrap();
}

#[tokio::test]
async fn without_a_healthy_runner_kernel_calls_are_503() {
    // A port that was just free and is closed again: nothing answers there.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}", closed.local_addr().unwrap())).unwrap();
    drop(closed);
    let gateway = start_gateway(vec![url], Some(TOKEN)).await;
    let create = gateway.api(Method::POST, "/api/kernels", "{}").await;
    assert_eq!(create.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(create.json()["reason"], "Service Unavailable");
    let specs = gateway.api(Method::GET, "/api/kernelspecs", "").await;
    assert_eq!(specs.status, StatusCode::SERVICE_UNAVAILABLE);
    gateway.stop().await.unwrap();

    // A runner that refuses the gateway's secret is not healthy either.
    let (a, _b) = two_runners().await;
    let gateway = start_gateway_with(vec![a.url.clone()], Some(TOKEN), "wrong-secret").await;
    let create = gateway.api(Method::POST, "/api/kernels", "{}").await;
    assert_eq!(create.status, StatusCode::SERVICE_UNAVAILABLE);
    gateway.stop().await.unwrap();
}

#[tokio::test]
async fn browsers_log_in_with_the_token_link_or_the_form() {
    let (a, _b) = two_runners().await;
    let gateway = start_gateway(vec![a.url.clone()], Some(TOKEN)).await;

    let anonymous = gateway.request(Method::GET, "/", &[], "").await;
    assert_eq!(anonymous.status, StatusCode::FOUND);
    assert_eq!(anonymous.header("location"), "/login?next=%2F");
    let form = gateway
        .request(Method::GET, "/login?next=%2F", &[], "")
        .await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.text().contains("<form"));

    let linked = gateway
        .request(Method::GET, &format!("/?token={TOKEN}"), &[], "")
        .await;
    assert_eq!(linked.status, StatusCode::FOUND);
    assert_eq!(linked.header("location"), "/");
    let cookie = linked
        .header("set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    let home = gateway
        .request(Method::GET, "/", &[("cookie", &cookie)], "")
        .await;
    assert_eq!(home.status, StatusCode::OK);
    let page = home.text();
    assert!(
        page.contains("python3") && page.contains("runner-a"),
        "{page}"
    );

    let form_type = ("content-type", "application/x-www-form-urlencoded");
    let refused = gateway
        .request(Method::POST, "/login", &[form_type], "token=wrong&next=%2F")
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let accepted = gateway
        .request(
            Method::POST,
            "/login",
            &[form_type],
            &format!("token={TOKEN}&next=%2Fapi%2Fkernels"),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::SEE_OTHER);
    assert_eq!(accepted.header("location"), "/api/kernels");
    assert!(accepted.header("set-cookie").contains("HttpOnly"));
    let api = gateway
        .request(Method::GET, "/api/kernels", &[("cookie", &cookie)], "")
        .await;
    assert_eq!(api.status, StatusCode::OK);
    gateway.stop().await.unwrap();
}
