//! Batch jobs end to end through the TLS gateway: MD5 results equal `md5sum`, the `cellgate
//! md5` and `cellgate submit` clients, cancel and delete, bad input, several runners on one
//! volume, and a runner killed in the middle of its jobs.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use rand::{Rng, RngCore};
use serde_json::{json, Value};
use support::{Client, Server};
use tokio::io::{AsyncBufReadExt, BufReader};

fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cellgate-{label}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A multipart upload of `spec` and files (`name`, content).
fn multipart(spec: &Value, files: &[(&str, &[u8])]) -> (Bytes, String) {
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

async fn upload(client: &Client, spec: &Value, files: &[(&str, &[u8])]) -> support::Reply {
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

/// The job's final status, read from its event stream (which ends at the final state).
async fn final_status(client: &Client, id: &str) -> Value {
    let reply = tokio::time::timeout(
        Duration::from_secs(120),
        client.get(&format!("/api/jobs/{id}/events")),
    )
    .await
    .expect("the job ends within two minutes");
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

fn md5sum(paths: &[PathBuf]) -> Vec<String> {
    let output = Command::new("md5sum").args(paths).output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| line[..32].to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_jobs_through_the_gateway_equal_md5sum() {
    let server = Server::start().await;
    let client = server.client();
    let dir = scratch("md5");
    let mut rng = rand::thread_rng();
    let mut paths = vec![dir.join("empty")];
    std::fs::write(&paths[0], b"").unwrap();
    let big = dir.join("big");
    let mut content = vec![0u8; 100 << 20];
    rng.fill_bytes(&mut content);
    std::fs::write(&big, &content).unwrap();
    drop(content);
    paths.push(big);
    for index in 0..198 {
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
                assert_eq!(
                    reply.status,
                    StatusCode::CREATED,
                    "{}",
                    String::from_utf8_lossy(&reply.body)
                );
                let id = reply.json()["id"].as_str().unwrap().to_owned();
                let status = final_status(&client, &id).await;
                assert_eq!(status["state"], "succeeded", "{status}");
                assert_eq!(status["name"], name.as_str());
                let result = client.get(&format!("/api/jobs/{id}/files/result")).await;
                assert_eq!(result.status, StatusCode::OK);
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
    let _ = std::fs::remove_dir_all(&dir);
}

fn cellgate(server: &Server) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cellgate"));
    command
        .env("CELLGATE_URL", format!("https://{}", server.address))
        .env("CELLGATE_TOKEN", &server.token)
        .stdin(Stdio::null());
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cellgate_md5_prints_what_md5sum_prints() {
    let server = Server::start().await;
    let dir = scratch("md5cli");
    let names = [
        "plain.txt",
        "with space",
        "back\\slash",
        "new\nline",
        "car\rriage",
        "données ✓",
        "empty",
    ];
    let mut rng = rand::thread_rng();
    for name in names {
        let mut content = vec![
            0u8;
            if name == "empty" {
                0
            } else {
                rng.gen_range(1..200_000)
            }
        ];
        rng.fill_bytes(&mut content);
        std::fs::write(dir.join(name), content).unwrap();
    }
    let mut args: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    args.push("missing-file".into());
    let theirs = Command::new("md5sum")
        .args(&args)
        .current_dir(&dir)
        .output()
        .unwrap();
    let ours = cellgate(&server)
        .arg("md5")
        .arg("--insecure")
        .args(&args)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&ours.stdout),
        String::from_utf8_lossy(&theirs.stdout)
    );
    assert_eq!(ours.stdout, theirs.stdout);
    assert_eq!(ours.status.code(), theirs.status.code());
    assert_eq!(ours.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&ours.stderr).contains("missing-file: No such file or directory")
    );
    // The jobs were cleaned up once their answers were printed.
    let list = server.client().get("/api/jobs").await.json();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0, "{list}");

    // Without --insecure the self-signed certificate is refused.
    let refused = cellgate(&server)
        .args(["md5", "plain.txt"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(refused.stdout.is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cellgate_submit_prints_the_output_and_exits_with_the_job_code() {
    let server = Server::start().await;
    let dir = scratch("submit");
    std::fs::write(
        dir.join("prog.sh"),
        "echo \"out $1|$2\"\necho err >&2\nread line\necho \"in $line\"\nexit 7\n",
    )
    .unwrap();
    std::fs::write(dir.join("input.txt"), "hello\n").unwrap();
    let output = cellgate(&server)
        .args([
            "submit",
            "--insecure",
            "prog.sh",
            "--stdin",
            "input.txt",
            "--",
            "a b",
            "c",
        ])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "out a b|c\nin hello\n"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("job "), "{stderr}");
    assert!(stderr.contains("err\n"), "{stderr}");
    assert_eq!(output.status.code(), Some(7));

    let output = cellgate(&server)
        .args([
            "submit",
            "--insecure",
            "--image",
            "bash",
            "--command",
            "printf '%s|' 'a  b' \"c d\"",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "a  b|c d|");
    assert_eq!(output.status.code(), Some(0));

    let output = cellgate(&server)
        .args([
            "submit",
            "--insecure",
            "--timeout",
            "1",
            "--image",
            "bash",
            "--command",
            "sleep 30",
        ])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_killed_and_deleted_through_the_gateway() {
    let server = Server::start().await;
    let client = server.client();
    let reply = client
        .post(
            "/api/jobs",
            json!({"kind": "command", "name": "long", "image": "bash", "command": "sleep 60"}),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    // Wait until it runs, so the cancel has a process to kill.
    for _ in 0..100 {
        if client.get(&format!("/api/jobs/{id}")).await.json()["state"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancel = client
        .send(Method::POST, &format!("/api/jobs/{id}/cancel"), None, &[])
        .await;
    assert!(
        cancel.status == StatusCode::OK || cancel.status == StatusCode::ACCEPTED,
        "{cancel:?}"
    );
    let status = final_status(&client, &id).await;
    assert_eq!(status["state"], "cancelled", "{status}");
    // A finished job cannot be cancelled again, and the answer says so.
    let again = client
        .send(Method::POST, &format!("/api/jobs/{id}/cancel"), None, &[])
        .await;
    assert!(again.status.is_client_error(), "{again:?}");
    assert!(!again.json()["message"].as_str().unwrap().is_empty());
    let deleted = client.delete(&format!("/api/jobs/{id}")).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        client.get(&format!("/api/jobs/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_job_input_gets_a_clear_4xx_through_the_gateway() {
    let server = Server::start().await;
    let client = server.client();
    let keep = upload(
        &client,
        &json!({"kind": "md5", "name": "keep"}),
        &[("a.txt", b"abc")],
    )
    .await;
    assert_eq!(keep.status, StatusCode::CREATED);
    let keep_id = keep.json()["id"].as_str().unwrap().to_owned();

    let json_cases = [
        (json!({"kind": "sha1"}), "unknown job kind"),
        (
            json!({"kind": "run", "language": "cobol", "files": {"a.cob": "x"}}),
            "cobol",
        ),
        (json!({"kind": "md5", "files": {"../x": "abc"}}), ".."),
        (
            json!({"kind": "md5", "files": {"a": "x"}, "limits": {"timeout_seconds": 1e9}}),
            "timeout_seconds",
        ),
        (json!({"kind": "md5", "nonsense": 1}), ""),
    ];
    for (body, expected) in json_cases {
        let reply = client.post("/api/jobs", body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {reply:?}");
        let message = reply.json()["message"].as_str().unwrap().to_owned();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let malformed = client
        .send(Method::POST, "/api/jobs", Some("{not json".into()), &[])
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    for name in ["../etc", "a/b", ".hidden"] {
        let reply = upload(&client, &json!({"kind": "md5"}), &[(name, b"x")]).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{name}: {reply:?}");
    }
    let missing = client
        .get("/api/jobs/6f1c1c0e-0000-4000-8000-000000000000")
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let nothing = client.get("/api/jobs/not-an-id/files/stdout").await;
    assert!(nothing.status.is_client_error());
    let no_token = client.without_token().get("/api/jobs").await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);

    // None of it touched the job that was there.
    let status = final_status(&client, &keep_id).await;
    assert_eq!(status["result"], "900150983cd24fb0d6963f7d28e17f72");
    let list = client.get("/api/jobs").await.json();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runners_run_each_job_exactly_once() {
    let server = Server::start_with(&["--runners", "3"]).await;
    let client = server.client();
    let dir = scratch("once");
    let log = dir.join("log");
    let mut ids = Vec::new();
    for index in 0..300 {
        let command = format!("echo {index} >> '{}'", log.display());
        let reply = client
            .post(
                "/api/jobs",
                json!({"kind": "command", "image": "bash", "command": command}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        ids.push(reply.json()["id"].as_str().unwrap().to_owned());
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
    let mut lines: Vec<u32> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        (0..300).collect::<Vec<_>>(),
        "each job ran exactly once"
    );
    assert!(
        nodes.len() >= 2,
        "the jobs spread over the runners: {nodes:?}"
    );
    let nodes_list = client.get("/api/nodes").await.json();
    assert_eq!(nodes_list.as_array().unwrap().len(), 3, "{nodes_list}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A child process killed when dropped.
struct Child(tokio::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// Starts `cellgate ARGS` and returns it with the first line on `stream` that has `prefix`,
/// minus the prefix.
async fn start(
    args: &[&str],
    envs: &[(&str, &str)],
    prefix: &str,
    on_stdout: bool,
) -> (Child, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_cellgate"));
    command
        .args(args)
        .envs(envs.iter().copied())
        .env_remove("CELLGATE_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let stream: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if on_stdout {
        Box::new(child.stdout.take().unwrap())
    } else {
        Box::new(child.stderr.take().unwrap())
    };
    let mut lines = BufReader::new(stream).lines();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
        panic!("cellgate {args:?} exited before it was ready");
    })
    .await
    .expect("ready within a minute");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (Child(child), found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runners_jobs_finish_on_another_runner() {
    let dir = scratch("kill");
    let volume = dir.join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    let secret = "kill-test-secret";
    let env = [("CELLGATE_RUNNER_SECRET", secret)];
    let mut runners = Vec::new();
    let mut urls = Vec::new();
    for index in 0..2 {
        let data = dir.join(format!("runner{index}"));
        let id = format!("node{index}");
        let (child, address) = start(
            &[
                "runner",
                "--bind",
                "127.0.0.1:0",
                "--data-dir",
                data.to_str().unwrap(),
                "--jobs-volume",
                volume.to_str().unwrap(),
                "--runner-id",
                &id,
                "--job-slots",
                "2",
                "--node-stale-seconds",
                "1",
            ],
            &env,
            "cellgate-runner listening on http://",
            false,
        )
        .await;
        urls.push(format!(
            "http://{}",
            address.split_whitespace().next().unwrap()
        ));
        runners.push(child);
    }
    let token = "kill-test-token";
    let gateway_data = dir.join("gateway");
    let runner_list = urls.join(",");
    let (_gateway, ready) = start(
        &[
            "gateway",
            "--bind",
            "127.0.0.1:0",
            "--token",
            token,
            "--runners",
            &runner_list,
            "--data-dir",
            gateway_data.to_str().unwrap(),
        ],
        &env,
        "cellgate ready: https://",
        true,
    )
    .await;
    let address = ready.split('/').next().unwrap().to_owned();
    let client = Client::new(&address, Some(token));

    let mut ids = Vec::new();
    for index in 0..12 {
        let reply = client
            .post(
                "/api/jobs",
                json!({"kind": "command", "image": "bash", "command": format!("sleep 1; echo done {index}"),
                       "limits": {"retries": 0}}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        ids.push(reply.json()["id"].as_str().unwrap().to_owned());
    }
    // Kill node0 as soon as it runs something.
    let victim = runners.remove(0);
    let mut killed_running = Vec::new();
    for _ in 0..200 {
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
    let pid = victim.0.id().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(victim);

    for id in &ids {
        let status = final_status(&client, id).await;
        assert_eq!(status["state"], "succeeded", "{status}");
        let index = ids.iter().position(|other| other == id).unwrap();
        let stdout = client.get(&format!("/api/jobs/{id}/files/stdout")).await;
        assert_eq!(
            String::from_utf8_lossy(&stdout.body),
            format!("done {index}\n")
        );
        if killed_running.contains(id) {
            assert_eq!(status["ran_on"], "node1", "{status}");
            assert!(status["attempt"].as_u64().unwrap() >= 2, "{status}");
        }
    }
    let nodes = client.get("/api/nodes").await.json();
    let node0 = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["node"] == "node0")
        .expect("node0 is still reported");
    assert_eq!(node0["alive"], false, "{nodes}");
    let _ = std::fs::remove_dir_all(&dir);
}
