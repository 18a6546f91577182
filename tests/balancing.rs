//! A gateway in front of several runners, each its own process on loopback: kernels spread
//! by least connections, any gateway routes any kernel (also after a restart), a killed
//! runner's kernels are reported dead while the others keep working, a draining runner lets
//! its sessions finish, DNS finds runners, a client that comes back gets what it missed, and
//! the gateway reports all of it on `/metrics`.

mod support;

use std::collections::HashMap;

use serde_json::{json, Value};
use support::cluster::{GatewayProcess, RunnerProcess};
use support::{eventually, Client, KernelSocket, PATIENCE};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;

async fn runners(count: usize, extra: &[&str]) -> Vec<RunnerProcess> {
    futures_util::future::join_all((0..count).map(|_| RunnerProcess::start(extra))).await
}

fn urls(runners: &[RunnerProcess]) -> Vec<&str> {
    runners.iter().map(|runner| runner.url.as_str()).collect()
}

/// Which runner (by position) holds each kernel.
async fn owners(runners: &[RunnerProcess]) -> HashMap<String, usize> {
    let mut owners = HashMap::new();
    for (index, runner) in runners.iter().enumerate() {
        for kernel in runner.kernel_ids().await {
            owners.insert(kernel, index);
        }
    }
    owners
}

async fn kernel(client: &Client, kernel: &str) -> Value {
    let reply = client.get(&format!("/api/kernels/{kernel}")).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

/// The ids of the kernels the gateway lists.
async fn executes(gateway: &GatewayProcess, kernel: &str) {
    let mut socket = KernelSocket::connect(&gateway.address, &gateway.token, kernel).await;
    let run = socket.execute("1+1").await;
    assert_eq!(run.result().as_deref(), Some("2"));
    socket.close().await;
}

#[tokio::test]
async fn thirty_kernels_spread_within_one_of_each_other() {
    let runners = runners(3, &[]).await;
    let gateway = GatewayProcess::start(&urls(&runners), &[]).await;
    let client = gateway.client();
    let started =
        futures_util::future::join_all((0..30).map(|_| client.start_kernel("bash"))).await;
    assert_eq!(started.len(), 30);
    let mut counts = Vec::new();
    for runner in &runners {
        counts.push(runner.kernel_ids().await.len());
    }
    assert_eq!(counts.iter().sum::<usize>(), 30);
    let (most, least) = (counts.iter().max().unwrap(), counts.iter().min().unwrap());
    assert!(most - least <= 1, "kernels per runner: {counts:?}");
}

#[tokio::test]
async fn new_kernels_go_to_runners_without_open_sessions() {
    let runners = runners(3, &[]).await;
    let gateway = GatewayProcess::start(&urls(&runners), &[]).await;
    let client = gateway.client();
    let first = client.start_kernel("bash").await;
    let busy_runner = owners(&runners).await[&first];
    // Three clients work with the first kernel; each has been answered, so the runner holds
    // their sessions.
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let mut socket = KernelSocket::connect(&gateway.address, &gateway.token, &first).await;
        socket.execute("true").await;
        sessions.push(socket);
    }
    for _ in 0..4 {
        client.start_kernel("bash").await;
    }
    let placed = owners(&runners).await;
    let on_busy = placed
        .values()
        .filter(|&&index| index == busy_runner)
        .count();
    assert_eq!(
        on_busy, 1,
        "only the first kernel is on the runner with sessions"
    );
    assert_eq!(placed.len(), 5);
}

#[tokio::test]
async fn a_killed_runners_kernels_are_dead_while_the_others_keep_executing() {
    let mut runners = runners(3, &[]).await;
    let gateway = GatewayProcess::start(&urls(&runners), &[]).await;
    let client = gateway.client();
    let mut kernels = Vec::new();
    for _ in 0..3 {
        kernels.push(client.start_kernel("python3").await);
    }
    let placed = owners(&runners).await;
    let mut by_runner = vec![String::new(); 3];
    for kernel in &kernels {
        by_runner[placed[kernel]] = kernel.clone();
    }
    assert!(
        by_runner.iter().all(|kernel| !kernel.is_empty()),
        "one per runner"
    );
    let mut sockets = Vec::new();
    for kernel in &by_runner {
        let mut socket = KernelSocket::connect(&gateway.address, &gateway.token, kernel).await;
        assert_eq!(socket.execute("1+1").await.result().as_deref(), Some("2"));
        sockets.push(socket);
    }

    let victim_url = runners[0].url.clone();
    runners[0].kill().await;
    match sockets[0].recv_raw().await {
        Some(WsMessage::Close(Some(frame))) => {
            assert_eq!(frame.code, CloseCode::Error);
            assert!(frame.reason.contains("kernel runner"), "{}", frame.reason);
        }
        other => panic!("expected a close with a reason, got {other:?}"),
    }
    let dead = &by_runner[0];
    let model = eventually("the killed runner's kernel is reported dead", || async {
        let model = kernel(&client, dead).await;
        (model["execution_state"] == "dead").then_some(model)
    })
    .await;
    let reason = model["reason"].as_str().unwrap();
    assert!(
        reason.contains(&victim_url) && reason.contains("gone"),
        "{reason}"
    );
    let states = client.kernel_states().await;
    assert_eq!(states[dead], "dead");
    for (socket, kernel) in sockets.iter_mut().zip(&by_runner).skip(1) {
        assert_ne!(states[kernel], "dead");
        assert_eq!(socket.execute("40+2").await.result().as_deref(), Some("42"));
    }
    let replacement = client.start_kernel("python3").await;
    executes(&gateway, &replacement).await;
    let metrics = String::from_utf8_lossy(&client.get("/metrics").await.body).into_owned();
    assert!(
        metrics.contains(&format!(
            "cellgate_runner_gone{{runner=\"{victim_url}/\"}} 1"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn two_gateways_route_each_others_kernels() {
    let runners = runners(2, &[]).await;
    let first = GatewayProcess::start(&urls(&runners), &[]).await;
    let second = GatewayProcess::start(&urls(&runners), &[]).await;
    let from_first = first.client().start_kernel("python3").await;
    let from_second = second.client().start_kernel("python3").await;
    executes(&second, &from_first).await;
    executes(&first, &from_second).await;
    assert_eq!(
        kernel(&first.client(), &from_second).await["id"],
        json!(from_second)
    );
    let interrupted = second
        .client()
        .post(&format!("/api/kernels/{from_first}/interrupt"), json!({}))
        .await;
    assert_eq!(interrupted.status, 204);
    for gateway in [&first, &second] {
        let ids = gateway.client().kernel_states().await;
        assert!(ids.contains_key(&from_first) && ids.contains_key(&from_second));
    }
}

#[tokio::test]
async fn a_restarted_gateway_finds_every_existing_kernel() {
    let runners = runners(2, &[]).await;
    let mut before = GatewayProcess::start(&urls(&runners), &[]).await;
    let mut kernels = Vec::new();
    for _ in 0..4 {
        kernels.push(before.client().start_kernel("python3").await);
    }
    assert!(before.stop().await.success());

    let after = GatewayProcess::start(&urls(&runners), &[]).await;
    let ids = after.client().kernel_states().await;
    for kernel in &kernels {
        assert!(ids.contains_key(kernel), "{kernel} missing from {ids:?}");
        executes(&after, kernel).await;
    }
}

#[tokio::test]
async fn a_runner_found_by_dns_receives_kernels_and_metrics_show_it() {
    let runners = runners(1, &[]).await;
    let dns = format!("localhost:{}", runners[0].port());
    let gateway = GatewayProcess::start(&[], &["--runner-dns", &dns]).await;
    let client = gateway.client();
    let kernel = client.start_kernel("python3").await;
    assert_eq!(runners[0].kernel_ids().await, vec![kernel.clone()]);
    executes(&gateway, &kernel).await;

    let scraped = client.get("/metrics").await;
    assert_eq!(scraped.status, 200);
    let metrics = String::from_utf8_lossy(&scraped.body).into_owned();
    assert!(
        metrics.contains(&format!(
            "cellgate_runner_up{{runner=\"{}/\"}} 1",
            runners[0].url
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!(
        "cellgate_placements_total{{runner=\"{}/\"}} 1",
        runners[0].url
    )));
    let executed = metrics
        .lines()
        .find_map(|line| line.strip_prefix("cellgate_execute_latency_seconds_count "))
        .expect("the latency histogram is exposed");
    assert_eq!(executed, "1", "one cell was timed");
    assert_eq!(client.without_token().get("/metrics").await.status, 403);
}

#[tokio::test]
async fn a_client_that_comes_back_gets_the_output_it_missed() {
    let runners = runners(1, &[]).await;
    let gateway = GatewayProcess::start(&urls(&runners), &[]).await;
    let client = gateway.client();
    let kernel = client.start_kernel("python3").await;
    let flag = std::env::temp_dir().join(format!("cellgate-flag-{}", uuid::Uuid::new_v4()));
    let code = format!(
        "import os, time\nwhile not os.path.exists({:?}):\n    time.sleep(0.01)\nprint('while away')",
        flag.display().to_string()
    );

    let session = uuid::Uuid::new_v4().to_string();
    let mut away = connect_as_session(&gateway, &kernel, &session).await;
    let request = away.send_execute(&code).await;
    away.wait_for(&request, |message| {
        message.header.msg_type == "execute_input"
    })
    .await;
    away.close().await;
    eventually("the runner lets go of the closed connection", || async {
        (kernel_state(&client, &kernel).await.1 == 0).then_some(())
    })
    .await;

    // The cell finishes while nobody is connected.
    std::fs::write(&flag, b"").unwrap();
    eventually("the cell finishes", || async {
        (kernel_state(&client, &kernel).await.0 == "idle").then_some(())
    })
    .await;

    let mut back = connect_as_session(&gateway, &kernel, &session).await;
    let missed = back.collect(&request).await;
    assert_eq!(missed.stdout(), "while away\n");
    assert!(missed.types().contains(&"execute_reply".to_owned()));
    let _ = std::fs::remove_file(flag);
}

/// Connects to `kernel` as client session `session`, so a client that went away can come
/// back as itself.
async fn connect_as_session(gateway: &GatewayProcess, kernel: &str, session: &str) -> KernelSocket {
    KernelSocket::connect_as(
        &gateway.address,
        Some(&gateway.token),
        kernel,
        None,
        session,
    )
    .await
    .unwrap()
}

/// A kernel's execution state and connection count, as the gateway reports them.
async fn kernel_state(client: &Client, id: &str) -> (String, u64) {
    let model = kernel(client, id).await;
    (
        model["execution_state"].as_str().unwrap().to_owned(),
        model["connections"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn a_draining_runner_takes_no_kernels_and_lets_its_sessions_finish() {
    let mut runners = runners(2, &["--grace-seconds", "300"]).await;
    let gateway = GatewayProcess::start(&urls(&runners), &[]).await;
    let client = gateway.client();
    let (a, b) = (
        client.start_kernel("python3").await,
        client.start_kernel("python3").await,
    );
    let placed = owners(&runners).await;
    let on_first = if placed[&a] == 0 { a } else { b };
    let mut socket = KernelSocket::connect(&gateway.address, &gateway.token, &on_first).await;
    socket.execute("x = 1").await;

    runners[0].terminate();
    eventually("the runner reports itself draining", || async {
        (runners[0].status().await["draining"] == json!(true)).then_some(())
    })
    .await;
    for _ in 0..3 {
        let kernel = client.start_kernel("python3").await;
        assert_eq!(
            owners(&runners).await[&kernel],
            1,
            "new kernels go elsewhere"
        );
    }
    // The open session goes on with its state.
    let run = socket.execute("x + 1").await;
    assert_eq!(run.result().as_deref(), Some("2"));
    socket.close().await;
    // With its last session gone the runner stops, long before its grace period is over.
    let status = runners[0].wait(PATIENCE).await;
    assert!(status.success(), "{status:?}");
}
