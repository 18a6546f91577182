//! `make bench`: how long a cell and a kernel start take through the TLS gateway and a
//! runner, reported as p50/p99 beside the anchors of the design.
//!
//! It starts `cellgate serve` (release build) on an ephemeral port and drives it with the same
//! websocket client the end-to-end tests use.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use cellgate_protocol::Channel;
use serde_json::json;
use support::{KernelSocket, Server};

const ROUND_TRIPS: usize = 2000;
const WARMUP: usize = 100;
const STARTS: usize = 15;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1000.0)
}

fn report(what: &str, mut samples: Vec<Duration>, anchor: &str, target: &str) {
    samples.sort();
    let (backend, what) = what.split_once(": ").unwrap_or(("", what));
    println!(
        "| {backend} | {what} | {} | {} | {} | {anchor} | {target} |",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
    );
}

async fn round_trips(server: &Server, kernel_name: &str, code: &str) -> Vec<Duration> {
    let kernel = server.client().start_kernel(kernel_name).await;
    let mut socket = KernelSocket::connect(&server.address, &server.token, &kernel).await;
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for round in 0..WARMUP + ROUND_TRIPS {
        let started = Instant::now();
        let id = socket.send_execute(code).await;
        socket.collect(&id).await;
        if round >= WARMUP {
            samples.push(started.elapsed());
        }
    }
    server
        .client()
        .delete(&format!("/api/kernels/{kernel}"))
        .await;
    samples
}

/// Kernel start to its first kernel_info_reply. `cold` asks for a kernel environment variable,
/// which a pooled driver cannot have, so the kernel starts from nothing; otherwise the bench
/// waits for the warm pool to refill between starts.
async fn kernel_starts(server: &Server, kernel_name: &str, cold: bool) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(STARTS);
    for _ in 0..STARTS {
        if !cold {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let body = if cold {
            json!({"name": kernel_name, "env": {"KERNEL_BENCH": "cold"}})
        } else {
            json!({"name": kernel_name})
        };
        let started = Instant::now();
        let created = server.client().post("/api/kernels", body).await;
        let kernel = created.json()["id"]
            .as_str()
            .expect("kernel started")
            .to_owned();
        let mut socket = KernelSocket::connect(&server.address, &server.token, &kernel).await;
        let id = socket
            .send(Channel::Shell, "kernel_info_request", json!({}))
            .await;
        socket.reply_to(&id).await;
        samples.push(started.elapsed());
        socket.close().await;
        server
            .client()
            .delete(&format!("/api/kernels/{kernel}"))
            .await;
    }
    samples
}

#[tokio::main]
async fn main() {
    println!("cellgate kernel latency through the TLS gateway and a runner, on this machine");
    println!();
    println!("| backend | measurement | n | p50 | p99 | anchor | target |");
    println!("|---|---|---|---|---|---|---|");
    let server = Server::start().await;
    report(
        "process: Python `1+1` execute round trip",
        round_trips(&server, "python3", "1+1").await,
        "Jupyter Kernel Gateway 3 + ipykernel: p50 48 ms (5.9 ms with TCP_NODELAY); raw ZMQ to ipykernel 4.4 ms",
        "p50 < 1 ms",
    );
    report(
        "process: JavaScript `1+1` execute round trip",
        round_trips(&server, "javascript", "1+1").await,
        "-",
        "-",
    );
    report(
        "process: Bash `true` execute round trip",
        round_trips(&server, "bash", "true").await,
        "-",
        "-",
    );
    report(
        "process: Python kernel start to first kernel_info_reply",
        kernel_starts(&server, "python3", true).await,
        "Kernel Gateway: 0.3-0.9 s",
        "-",
    );
    drop(server);

    let docker = std::process::Command::new("docker")
        .args(["image", "inspect", "cellgate/python:latest"])
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    if !docker {
        println!("| docker | not measured: no Docker engine or no cellgate/python image (`make images`) | | | | | |");
        return;
    }
    let server = Server::start_with(&["--backend", "docker"]).await;
    report(
        "docker: Python `1+1` execute round trip",
        round_trips(&server, "python3", "1+1").await,
        "Jupyter Kernel Gateway 3 + ipykernel: p50 48 ms",
        "p50 <= 1.5 ms",
    );
    report(
        "docker: Python kernel start from the warm pool to first kernel_info_reply",
        kernel_starts(&server, "python3", false).await,
        "Kernel Gateway 0.3-0.9 s; `docker exec` 0.07 s",
        "p50 <= 20 ms",
    );
    report(
        "docker: Python kernel cold start (new container) to first kernel_info_reply",
        kernel_starts(&server, "python3", true).await,
        "`docker run --rm IMAGE true` 0.27-0.5 s",
        "p50 <= 500 ms",
    );
}
