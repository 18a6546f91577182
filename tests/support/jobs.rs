//! Batch jobs over a cluster of separate runner processes, each on its own path to the shared
//! volume (one directory on local disk, or one GlusterFS mount per runner), behind a gateway;
//! and the scenarios that must hold on any such volume.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use rand::{Rng, RngCore};
use serde_json::{json, Value};

use super::cluster::{GatewayProcess, RunnerProcess};
use super::{Client, Reply};

/// A multipart upload of `spec` and files (`name`, content).
pub fn multipart(spec: &Value, files: &[(&str, &[u8])]) -> (Bytes, String) {
    let boundary = format!("b{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n{spec}")
            .as_bytes(),
    );
    for (name, content) in files {
        body.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        body.into(),
        format!("multipart/form-data; boundary={boundary}"),
    )
}

pub async fn upload(client: &Client, spec: &Value, files: &[(&str, &[u8])]) -> Reply {
    let (body, content_type) = multipart(spec, files);
    client
        .send_bytes(
            Method::POST,
            "/api/jobs",
            body,
            &[("content-type", &content_type)],
        )
        .await
}

pub fn md5sum(paths: &[PathBuf]) -> Vec<String> {
    let output = Command::new("md5sum").args(paths).output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| line[..32].to_owned())
        .collect()
}

/// `files` MD5 jobs, uploaded 25 at a time with Unicode names, over random files in `dir`
/// (one empty, one of `big_bytes` bytes, the rest up to 64 KiB): every result equals `md5sum`'s.
pub async fn md5_jobs_equal_md5sum(client: &Client, dir: &Path, files: usize, big_bytes: usize) {
    let mut rng = rand::thread_rng();
    let mut paths = vec![dir.join("empty")];
    std::fs::write(&paths[0], b"").unwrap();
    let big = dir.join("big");
    let mut content = vec![0u8; big_bytes];
    rng.fill_bytes(&mut content);
    std::fs::write(&big, &content).unwrap();
    drop(content);
    paths.push(big);
    for index in 2..files {
        let mut content = vec![0u8; rng.gen_range(1..64 << 10)];
        rng.fill_bytes(&mut content);
        let path = dir.join(format!("f{index}"));
        std::fs::write(&path, &content).unwrap();
        paths.push(path);
    }
    let expected = md5sum(&paths);

    let mut handles = Vec::new();
    for chunk in paths.chunks(25) {
        let (client, chunk) = (client.clone(), chunk.to_vec());
        handles.push(tokio::spawn(async move {
            let mut results = Vec::new();
            for path in chunk {
                let content = std::fs::read(&path).unwrap();
                let name = format!("{} ✓ with spaces", path.display());
                let reply = upload(
                    &client,
                    &json!({"kind": "md5", "name": name}),
                    &[("input.bin", &content)],
                )
                .await;
                let id = reply.created_id();
                let status = final_status(&client, &id).await;
                assert_eq!(status["state"], "succeeded", "{status}");
                assert_eq!(status["name"], name.as_str());
                let result = client.get(&format!("/api/jobs/{id}/files/result")).await;
                assert_eq!(result.status, StatusCode::OK);
                // Outputs read as text, and nothing in them can run in a browser.
                assert_eq!(
                    result.header("content-type").as_deref(),
                    Some("text/plain; charset=utf-8")
                );
                let policy = result.header("content-security-policy").unwrap();
                assert!(policy.contains("sandbox"), "{policy}");
                assert_eq!(
                    String::from_utf8_lossy(&result.body).trim(),
                    status["result"].as_str().unwrap()
                );
                results.push(status["result"].as_str().unwrap().to_owned());
            }
            results
        }));
    }
    let mut got = Vec::new();
    for handle in handles {
        got.extend(handle.await.unwrap());
    }
    assert_eq!(got, expected);
}

/// The job's final status, read from its event stream (which ends at the final state).
pub async fn final_status(client: &Client, id: &str) -> Value {
    let reply = tokio::time::timeout(
        Duration::from_secs(300),
        client.get(&format!("/api/jobs/{id}/events")),
    )
    .await
    .expect("the job ends within five minutes");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    let last = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .next_back()
        .expect("at least one event");
    let status: Value = serde_json::from_str(last).unwrap();
    assert!(
        ["succeeded", "failed", "timed_out", "cancelled"]
            .contains(&status["state"].as_str().unwrap()),
        "{status}"
    );
    status
}

/// Runners `node0`, `node1`, ... each on its own path to one volume, and a gateway over them.
pub struct JobCluster {
    pub runners: Vec<RunnerProcess>,
    pub gateway: GatewayProcess,
    /// A local directory for what the jobs themselves write, apart from the volume.
    pub scratch: PathBuf,
}

impl JobCluster {
    /// `volumes[i]` is runner `node<i>`'s path to the shared volume.
    pub async fn start(volumes: &[PathBuf], slots: usize, stale_seconds: u32) -> JobCluster {
        let mut runners = Vec::new();
        for (index, volume) in volumes.iter().enumerate() {
            let volume = volume.to_str().expect("a UTF-8 path");
            let node = format!("node{index}");
            let (slots, stale) = (slots.to_string(), stale_seconds.to_string());
            runners.push(
                RunnerProcess::start(&[
                    "--jobs-volume",
                    volume,
                    "--runner-id",
                    &node,
                    "--job-slots",
                    &slots,
                    "--node-stale-seconds",
                    &stale,
                ])
                .await,
            );
        }
        let urls: Vec<&str> = runners.iter().map(|runner| runner.url.as_str()).collect();
        let gateway = GatewayProcess::start(&urls, &[]).await;
        let scratch = std::env::temp_dir().join(format!("cellgate-jobs-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&scratch).unwrap();
        JobCluster {
            runners,
            gateway,
            scratch,
        }
    }

    pub fn client(&self) -> Client {
        self.gateway.client()
    }
}

impl Drop for JobCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Submits a `command` job in the bash image and returns its id.
pub async fn submit_command(client: &Client, command: &str, retries: u32) -> String {
    client
        .post(
            "/api/jobs",
            json!({"kind": "command", "image": "bash", "command": command,
                   "limits": {"retries": retries}}),
        )
        .await
        .created_id()
}

/// The numbers the jobs appended to `log`, one line each, sorted.
fn logged(log: &Path) -> Vec<u32> {
    let mut lines: Vec<u32> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    lines.sort_unstable();
    lines
}

/// `count` jobs, each appending its number to a log: every job succeeds on its first attempt,
/// every number is logged exactly once, and the jobs spread over more than one runner.
pub async fn each_job_runs_exactly_once(cluster: &JobCluster, count: u32) {
    let client = cluster.client();
    let log = cluster.scratch.join("once.log");
    let mut ids = Vec::new();
    for index in 0..count {
        let command = format!("echo {index} >> '{}'", log.display());
        ids.push(submit_command(&client, &command, 0).await);
    }
    let mut nodes = HashMap::new();
    for id in &ids {
        let status = final_status(&client, id).await;
        assert_eq!(status["state"], "succeeded", "{status}");
        assert_eq!(status["attempt"], 1, "{status}");
        *nodes
            .entry(status["ran_on"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(
        logged(&log),
        (0..count).collect::<Vec<_>>(),
        "each job ran exactly once"
    );
    assert!(
        nodes.len() >= 2,
        "the jobs spread over the runners: {nodes:?}"
    );
    let listed = client.get("/api/nodes").await.json();
    assert_eq!(
        listed.as_array().unwrap().len(),
        cluster.runners.len(),
        "{listed}"
    );
}

/// How long each job of the kill scenario runs: long enough that the runner is still running
/// some when the kill lands, however slow the machine.
const JOB_SECONDS: u32 = 4;

/// `kill -9` of `node0` while it runs jobs: every job still succeeds, the killed runner's jobs
/// on another runner at a later attempt, each output written once, and `node0` reported dead.
pub async fn a_killed_runners_jobs_finish_elsewhere(cluster: &mut JobCluster, count: u32) {
    let client = cluster.client();
    let log = cluster.scratch.join("finished.log");
    let mut ids = Vec::new();
    for index in 0..count {
        let command = format!(
            "sleep {JOB_SECONDS}; echo done {index}; echo {index} >> '{}'",
            log.display()
        );
        ids.push(submit_command(&client, &command, 0).await);
    }
    let mut killed_running = Vec::new();
    for _ in 0..400 {
        let list = client.get("/api/jobs").await.json();
        killed_running = list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|job| job["state"] == "running" && job["node"] == "node0")
            .map(|job| job["id"].as_str().unwrap().to_owned())
            .collect();
        if !killed_running.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(!killed_running.is_empty(), "node0 never ran a job");
    cluster.runners[0].kill().await;
    let killed_at = chrono::Utc::now();

    let mut requeued = Vec::new();
    for (index, id) in ids.iter().enumerate() {
        let status = final_status(&client, id).await;
        assert_eq!(status["state"], "succeeded", "{status}");
        let stdout = client.get(&format!("/api/jobs/{id}/files/stdout")).await;
        assert_eq!(
            String::from_utf8_lossy(&stdout.body),
            format!("done {index}\n"),
            "{status}"
        );
        // node0 may have finished a job between being seen running it and dying; it cannot
        // have finished one afterwards.
        if status["ran_on"] == "node0" {
            let finished: chrono::DateTime<chrono::Utc> =
                status["finished_at"].as_str().unwrap().parse().unwrap();
            assert!(finished <= killed_at, "finished by a dead runner: {status}");
        }
        if status["attempt"].as_u64().unwrap() >= 2 {
            requeued.push(index as u32);
        }
    }
    assert!(
        !requeued.is_empty(),
        "no job of the killed runner was taken over (it was seen running {killed_running:?})"
    );
    // A job that node0 was running when it died may have got as far as its log line: it ran
    // twice, once per attempt. Every other job logged exactly once.
    let lines = logged(&log);
    for index in 0..count {
        let times = lines.iter().filter(|line| **line == index).count();
        let allowed = if requeued.contains(&index) {
            1..=2
        } else {
            1..=1
        };
        assert!(allowed.contains(&times), "job {index} logged {times} times");
    }
    let nodes = client.get("/api/nodes").await.json();
    let node0 = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["node"] == "node0")
        .expect("node0 is still reported");
    assert_eq!(node0["alive"], false, "{nodes}");
}
