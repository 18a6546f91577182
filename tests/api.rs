//! The Jupyter REST API through the TLS gateway: kernelspecs, the kernel lifecycle, errors
//! and authentication, as a Jupyter client sees them.

mod support;

use http::{Method, StatusCode};
use serde_json::json;
use support::Server;

fn assert_json_error(reply: &support::Reply, status: StatusCode) {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert!(body["reason"].is_string(), "no reason in {body}");
    assert!(
        body["message"]
            .as_str()
            .map(|m| !m.is_empty())
            .unwrap_or(false),
        "no message in {body}"
    );
}

#[tokio::test]
async fn kernelspecs_name_python3_javascript_and_bash() {
    let server = Server::start().await;
    let reply = server.client().get("/api/kernelspecs").await;
    assert_eq!(reply.status, StatusCode::OK);
    let specs = reply.json();
    assert_eq!(specs["default"], "python3");
    for (name, language) in [
        ("python3", "python"),
        ("javascript", "javascript"),
        ("bash", "bash"),
    ] {
        let spec = &specs["kernelspecs"][name];
        assert_eq!(spec["name"], name, "{specs}");
        assert_eq!(spec["spec"]["language"], language);
        assert!(spec["spec"]["display_name"].is_string());
        assert!(spec["spec"]["argv"].is_array());
        assert!(spec["resources"].is_object());
    }
    // Kernelspecs are shown as they run: no `{dir}`-like placeholder is left for a client.
    let mut pending = vec![&specs];
    while let Some(value) = pending.pop() {
        match value {
            serde_json::Value::String(text) => {
                assert!(!text.contains('{'), "{text:?} in {specs}")
            }
            serde_json::Value::Array(items) => pending.extend(items),
            serde_json::Value::Object(fields) => {
                for (key, field) in fields {
                    assert!(!key.contains('{'), "{key:?} in {specs}");
                    pending.push(field);
                }
            }
            _ => {}
        }
    }
    let one = server.client().get("/api/kernelspecs/bash").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["spec"]["language"], "bash");
    assert_json_error(
        &server.client().get("/api/kernelspecs/cobol").await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test]
async fn kernel_lifecycle_follows_jupyter_server() {
    let server = Server::start().await;
    let client = server.client();

    let created = client
        .post("/api/kernels", json!({"name": "python3"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let model = created.json();
    let id = model["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "id {id} is a UUID");
    assert_eq!(
        created.header("location").as_deref(),
        Some(format!("/api/kernels/{id}").as_str())
    );
    assert_eq!(model["name"], "python3");
    assert_eq!(model["connections"], 0);
    let activity = model["last_activity"].as_str().unwrap();
    assert_eq!(
        activity.len(),
        "2024-01-01T00:00:00.000000Z".len(),
        "{activity}"
    );
    assert!(activity.ends_with('Z'));
    assert!(["idle", "starting"].contains(&model["execution_state"].as_str().unwrap()));

    let listed = client.get("/api/kernels").await.json();
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["id"] == id.as_str()));

    let got = client.get(&format!("/api/kernels/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["id"], id.as_str());

    let interrupted = client
        .post(&format!("/api/kernels/{id}/interrupt"), json!({}))
        .await;
    assert_eq!(interrupted.status, StatusCode::NO_CONTENT);

    let restarted = client
        .post(&format!("/api/kernels/{id}/restart"), json!({}))
        .await;
    assert_eq!(restarted.status, StatusCode::OK);
    assert_eq!(restarted.json()["id"], id.as_str());

    let deleted = client.delete(&format!("/api/kernels/{id}")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_json_error(
        &client.get(&format!("/api/kernels/{id}")).await,
        StatusCode::NOT_FOUND,
    );
    assert_json_error(
        &client.delete(&format!("/api/kernels/{id}")).await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test]
async fn a_client_may_choose_the_kernel_id() {
    let server = Server::start().await;
    let client = server.client();
    let id = uuid::Uuid::new_v4().to_string();
    let created = client
        .post("/api/kernels", json!({"name": "bash", "kernel_id": id}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.json()["id"], id.as_str());
    assert_json_error(
        &client
            .post("/api/kernels", json!({"name": "bash", "kernel_id": id}))
            .await,
        StatusCode::CONFLICT,
    );
    assert_json_error(
        &client
            .post(
                "/api/kernels",
                json!({"name": "bash", "kernel_id": "../../etc"}),
            )
            .await,
        StatusCode::BAD_REQUEST,
    );
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let server = Server::start().await;
    let client = server.client();
    assert_json_error(
        &client.post("/api/kernels", json!({"name": "cobol"})).await,
        StatusCode::NOT_FOUND,
    );
    let malformed = client
        .send(Method::POST, "/api/kernels", Some("{not json".into()), &[])
        .await;
    assert_json_error(&malformed, StatusCode::BAD_REQUEST);
    let unknown = uuid::Uuid::new_v4();
    assert_json_error(
        &client.get(&format!("/api/kernels/{unknown}")).await,
        StatusCode::NOT_FOUND,
    );
    assert_json_error(
        &client
            .post(&format!("/api/kernels/{unknown}/interrupt"), json!({}))
            .await,
        StatusCode::NOT_FOUND,
    );
    assert_json_error(
        &client.get("/api/nothing-here").await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test]
async fn the_kernel_environment_passes_only_kernel_variables() {
    let server = Server::start().await;
    let client = server.client();
    let created = client
        .post(
            "/api/kernels",
            json!({"name": "bash", "env": {"KERNEL_GREETING": "hello", "LD_PRELOAD": "/evil.so",
                                           "CELLGATE_TOKEN": "leak"}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let mut socket = support::KernelSocket::connect(&server.address, &server.token, &id).await;
    let run = socket
        .execute("echo \"g=$KERNEL_GREETING p=${LD_PRELOAD:-none} t=${CELLGATE_TOKEN:-none}\"; env | grep -c -i -e token -e secret || true")
        .await;
    let out = run.stdout();
    assert!(out.contains("g=hello p=none t=none"), "{out}");
    assert!(
        out.trim_end().ends_with('0'),
        "secrets in the kernel environment: {out}"
    );
}

#[tokio::test]
async fn every_api_route_needs_the_token() {
    let server = Server::start().await;
    let anonymous = server.client().without_token();
    assert_json_error(&anonymous.get("/api/kernels").await, StatusCode::FORBIDDEN);
    assert_json_error(
        &anonymous.get("/api/kernelspecs").await,
        StatusCode::FORBIDDEN,
    );
    assert_json_error(
        &anonymous
            .post("/api/kernels", json!({"name": "bash"}))
            .await,
        StatusCode::FORBIDDEN,
    );
    let wrong = support::Client::new(&server.address, Some("not-the-token"));
    assert_json_error(&wrong.get("/api/kernels").await, StatusCode::FORBIDDEN);

    let query = anonymous
        .get(&format!("/api/kernels?token={}", server.token))
        .await;
    assert_eq!(query.status, StatusCode::OK);

    let health = anonymous.get("/healthz").await;
    assert_eq!(health.status, StatusCode::OK);
    let login = anonymous.get("/login").await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&login.body).contains("<form"));

    let id = server.client().start_kernel("bash").await;
    let refused = support::KernelSocket::connect_with(&server.address, None, &id, None).await;
    assert!(refused.is_err(), "a websocket without a token was accepted");
    let refused =
        support::KernelSocket::connect_with(&server.address, Some("wrong"), &id, None).await;
    assert!(
        refused.is_err(),
        "a websocket with a wrong token was accepted"
    );
}

#[tokio::test]
async fn the_login_page_sets_a_cookie_that_authenticates() {
    let server = Server::start().await;
    let anonymous = server.client().without_token();
    let body = format!("token={}", server.token);
    let login = anonymous
        .send(
            Method::POST,
            "/login",
            Some(body),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert!(
        login.status.is_redirection(),
        "login answered {}",
        login.status
    );
    let cookie = login.header("set-cookie").expect("login sets a cookie");
    assert!(cookie.to_ascii_lowercase().contains("httponly"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    let with_cookie = anonymous
        .send(Method::GET, "/api/kernels", None, &[("cookie", &pair)])
        .await;
    assert_eq!(with_cookie.status, StatusCode::OK);

    let bad = anonymous
        .send(
            Method::POST,
            "/login",
            Some("token=wrong".into()),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert!(
        bad.header("set-cookie").is_none(),
        "a wrong token got a cookie"
    );
}

#[tokio::test]
async fn an_empty_token_turns_auth_off_on_loopback_only() {
    let server = Server::start_with(&["--token", ""]).await;
    assert!(server.token.is_empty());
    let anonymous = server.client().without_token();
    assert_eq!(anonymous.get("/api/kernels").await.status, StatusCode::OK);

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_cellgate"))
        .args(["serve", "--bind", "0.0.0.0:0", "--token", ""])
        .output()
        .expect("cellgate runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("loopback"), "{stderr}");
}
