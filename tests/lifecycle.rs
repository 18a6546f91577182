//! How kernels and programs end without anyone deleting them. A runner killed with `kill -9`
//! (no drop, no shutdown) takes its local programs with it: the process backend's kernel
//! drivers and job programs do not outlive it, so a dead runner's job cannot go on writing
//! beside the attempt that replaces it. And with `--cull-idle-seconds`, kernels nobody uses
//! (idle with no client, or dead) are removed, while connected and busy ones stay.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::cluster::{GatewayProcess, RunnerProcess};
use support::jobs::{submit_command, JobCluster};
use support::{eventually, Client, KernelSocket};

/// Whether a process is still there (a zombie waiting for its reaper counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runners_kernels_and_job_programs_die_with_it() {
    if !support::on_path("setpriv") {
        support::prerequisite::skip_or_fail(
            "the runner-death test",
            "util-linux's setpriv is missing, so a killed runner's programs outlive it",
            "CELLGATE_SKIP_SETPRIV",
        );
        return;
    }
    let volume = std::env::temp_dir().join(format!("cellgate-death-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&volume).unwrap();
    let mut cluster = JobCluster::start(std::slice::from_ref(&volume), 1, 5).await;
    let client = cluster.client();

    let kernel = client.start_kernel("python3").await;
    let mut socket =
        KernelSocket::connect(&cluster.gateway.address, &cluster.gateway.token, &kernel).await;
    let kernel_pid: u32 = socket
        .execute("import os; os.getpid()")
        .await
        .result()
        .expect("the kernel answers with its pid")
        .parse()
        .unwrap();

    let pid_file = cluster.scratch.join("job.pid");
    let command = format!("echo $$ > '{}'; exec sleep 3000", pid_file.display());
    submit_command(&client, &command, 0).await;
    let job_pid: u32 = eventually("the job writes its pid", || async {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .await;
    assert!(alive(kernel_pid) && alive(job_pid));

    cluster.runners[0].kill().await;
    for _ in 0..200 {
        if !alive(kernel_pid) && !alive(job_pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(kernel_pid), "the kernel driver outlived its runner");
    assert!(!alive(job_pid), "the job program outlived its runner");
    let _ = std::fs::remove_dir_all(&volume);
}

/// Waits until the listed kernels satisfy `check`, and returns them.
async fn wait_until(
    client: &Client,
    what: &str,
    check: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    eventually(what, || async {
        let kernels = client.kernel_states().await;
        check(&kernels).then_some(kernels)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unused_kernels_are_culled_and_used_ones_stay() {
    let runner = RunnerProcess::start(&["--cull-idle-seconds", "2"]).await;
    let gateway = GatewayProcess::start(&[runner.url.as_str()], &[]).await;
    let client = gateway.client();
    let connect = |kernel: String| {
        let (address, token) = (gateway.address.clone(), gateway.token.clone());
        async move { KernelSocket::connect(&address, &token, &kernel).await }
    };

    // Connected and idle: stays.
    let connected = client.start_kernel("python3").await;
    let mut connected_socket = connect(connected.clone()).await;
    assert_eq!(
        connected_socket.execute("1+1").await.result().as_deref(),
        Some("2")
    );
    // Busy with nobody connected (the client left mid-cell): stays while it runs.
    let busy = client.start_kernel("python3").await;
    let mut busy_socket = connect(busy.clone()).await;
    busy_socket
        .send_execute("import time; time.sleep(600)")
        .await;
    wait_until(&client, "the long cell runs", |kernels| {
        kernels.get(&busy).map(String::as_str) == Some("busy")
    })
    .await;
    busy_socket.close().await;
    // Dead (a client shut its driver down): goes, like an idle kernel nobody is connected to.
    let dead = client.start_kernel("python3").await;
    let mut dead_socket = connect(dead.clone()).await;
    dead_socket
        .send(
            cellgate_protocol::Channel::Control,
            "shutdown_request",
            serde_json::json!({"restart": false}),
        )
        .await;
    let unconnected = client.start_kernel("python3").await;

    let kernels = wait_until(
        &client,
        "the unconnected and the dead kernel are culled",
        |kernels| !kernels.contains_key(&unconnected) && !kernels.contains_key(&dead),
    )
    .await;
    assert_eq!(kernels.get(&busy).map(String::as_str), Some("busy"));
    assert!(kernels.contains_key(&connected), "{kernels:?}");

    // Once the long cell is interrupted, the busy kernel is idle and unconnected: it goes.
    let interrupted = client
        .post(
            &format!("/api/kernels/{busy}/interrupt"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(interrupted.status, http::StatusCode::NO_CONTENT);
    wait_until(&client, "the interrupted kernel is culled", |kernels| {
        !kernels.contains_key(&busy)
    })
    .await;
    assert_eq!(
        connected_socket.execute("40+2").await.result().as_deref(),
        Some("42"),
        "the connected kernel still works"
    );

    // Its client gone, the last kernel goes too, after the idle time.
    connected_socket.close().await;
    wait_until(&client, "the disconnected kernel is culled", |kernels| {
        kernels.is_empty()
    })
    .await;
}
