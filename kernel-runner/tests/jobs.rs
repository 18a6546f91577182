//! Batch jobs through the runner API: several runners in one process on one job volume,
//! MD5 jobs checked against `md5sum`, programs, cancel, timeout, retries and bad input.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use cellgate_kernel_runner::Config;
use cellgate_protocol::model::RUNNER_SECRET_HEADER;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "a-runner-secret-for-tests";

struct Runners {
    addresses: Vec<String>,
    volume: PathBuf,
    stop: CancellationToken,
    done: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_runners(count: usize, slots: usize) -> Runners {
    start_runners_with(count, slots, |_| {}).await
}

async fn start_runners_with(
    count: usize,
    slots: usize,
    configure: impl Fn(&mut Config),
) -> Runners {
    let volume = std::env::temp_dir().join(format!("cellgate-jobs-{}", uuid::Uuid::new_v4()));
    let stop = CancellationToken::new();
    let mut addresses = Vec::new();
    let mut done = Vec::new();
    for index in 0..count {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        addresses.push(listener.local_addr().unwrap().to_string());
        let mut config = Config::new(
            volume.join("runners").join(index.to_string()),
            format!("runner-{index}"),
            SECRET.into(),
        );
        config.grace = Duration::from_secs(1);
        config.jobs_volume = Some(volume.clone());
        config.jobs.slots = slots;
        config.jobs.scan_interval = Duration::from_millis(200);
        config.jobs.heartbeat_interval = Duration::from_millis(300);
        config.jobs.stale_after = Duration::from_secs(3);
        configure(&mut config);
        let shutdown = stop.clone().cancelled_owned();
        done.push(tokio::spawn(async move {
            cellgate_kernel_runner::run(listener, config, shutdown)
                .await
                .unwrap();
        }));
    }
    Runners {
        addresses,
        volume,
        stop,
        done,
    }
}

impl Runners {
    async fn stop(self) {
        self.stop.cancel();
        for done in self.done {
            let _ = tokio::time::timeout(Duration::from_secs(30), done).await;
        }
        let _ = std::fs::remove_dir_all(&self.volume);
    }
}

/// An HTTP/1 connection to a runner.
async fn connect<B>(address: &str) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(address).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

async fn send(
    address: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut sender = connect(address).await;
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", address)
        .header(RUNNER_SECRET_HEADER, SECRET)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes)
}

async fn json_request(address: &str, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let body = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).unwrap()
    };
    let (status, _, bytes) = send(address, method, path, "application/json", body).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A multipart upload of `files` with a JSON spec.
fn multipart(spec: &Value, files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = format!("cellgate-{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    body.extend_from_slice(
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\nContent-Type: application/json\r\n\r\n{spec}\r\n").as_bytes(),
    );
    for (name, content) in files {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn submit_md5(address: &str, name: &str, content: &[u8]) -> String {
    let (content_type, body) = multipart(
        &json!({"kind": "md5", "name": name}),
        &[("data.bin", content)],
    );
    let (status, _, bytes) = send(address, "POST", "/api/jobs", &content_type, body).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    let job: Value = serde_json::from_slice(&bytes).unwrap();
    job["id"].as_str().unwrap().to_owned()
}

/// Waits for a job's final state through its event stream.
async fn wait_final(address: &str, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (status, _, bytes) = send(
            address,
            "GET",
            &format!("/api/jobs/{id}/events"),
            "",
            Vec::new(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let text = String::from_utf8_lossy(&bytes);
        let last = text
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .next_back()
            .map(|data| serde_json::from_str::<Value>(data).unwrap());
        if let Some(last) = last {
            if !matches!(last["state"].as_str(), Some("queued" | "running")) {
                return last;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} did not finish"
        );
    }
}

fn md5sum(path: &Path) -> String {
    let output = std::process::Command::new("md5sum")
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8(output.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn md5_jobs_equal_md5sum_including_empty_and_large_files() {
    let runners = start_runners(1, 2).await;
    let address = runners.addresses[0].clone();
    let scratch = runners.volume.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut sizes: Vec<usize> = vec![
        0,
        1,
        55,
        56,
        64,
        65,
        4096,
        256 * 1024 + 3,
        100 * 1024 * 1024,
    ];
    let mut seed = 7u64;
    while sizes.len() < 200 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        sizes.push((seed >> 40) as usize % 200_000);
    }
    let mut jobs = Vec::new();
    for (index, size) in sizes.iter().enumerate() {
        let content: Vec<u8> = (0..*size)
            .map(|i| (i as u64 * 31 + index as u64 * 7 + (i as u64 >> 9)) as u8)
            .collect();
        let path = scratch.join(format!("f{index}"));
        std::fs::write(&path, &content).unwrap();
        let id = submit_md5(&address, &format!("file №{index} with spaces"), &content).await;
        jobs.push((id, path));
    }
    for (id, path) in &jobs {
        let status = wait_final(&address, id).await;
        assert_eq!(status["state"], "succeeded", "{status}");
        let expected = md5sum(path);
        assert_eq!(status["result"], expected.as_str());
        let (code, _, bytes) = send(
            &address,
            "GET",
            &format!("/api/jobs/{id}/files/result"),
            "",
            Vec::new(),
        )
        .await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(
            String::from_utf8(bytes.to_vec()).unwrap(),
            format!("{expected}\n")
        );
    }
    runners.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_runners_run_each_job_exactly_once() {
    let runners = start_runners(3, 2).await;
    let mut ids = Vec::new();
    for index in 0..300 {
        let address = &runners.addresses[index % 3];
        ids.push(submit_md5(address, "tiny", format!("job {index}").as_bytes()).await);
    }
    let mut nodes = std::collections::HashSet::new();
    for id in &ids {
        let status = wait_final(&runners.addresses[0], id).await;
        assert_eq!(status["state"], "succeeded", "{status}");
        assert_eq!(status["attempt"], 1, "no job ran twice: {status}");
        nodes.insert(status["ran_on"].as_str().unwrap().to_owned());
        let dir = runners.volume.join("jobs").join(id);
        let claims = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .starts_with("claim-")
            })
            .count();
        assert_eq!(claims, 1, "job {id} was claimed once");
    }
    assert!(
        std::fs::read_dir(runners.volume.join("queue"))
            .unwrap()
            .next()
            .is_none(),
        "the queue is empty"
    );
    assert!(nodes.len() >= 2, "the work was shared: {nodes:?}");
    let (status, reports) =
        json_request(&runners.addresses[1], "GET", "/api/nodes", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reports.as_array().unwrap().len(), 3, "{reports}");
    runners.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_run_with_stdin_args_timeouts_retries_and_cancel() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let runners = start_runners(1, 2).await;
    let address = runners.addresses[0].clone();
    let (status, job) = json_request(&address, "POST", "/api/jobs", json!({
        "kind": "run", "language": "python", "name": "echo",
        "files": {"main.py": "import sys\nprint(input().upper(), sys.argv[1:])\nsys.stderr.write('warn')"},
        "stdin": "hello\n", "args": ["a b", "c"]
    })).await;
    assert_eq!(status, StatusCode::CREATED, "{job}");
    let id = job["id"].as_str().unwrap();
    let done = wait_final(&address, id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["exit_code"], 0);
    let (_, _, stdout) = send(
        &address,
        "GET",
        &format!("/api/jobs/{id}/files/stdout"),
        "",
        Vec::new(),
    )
    .await;
    assert_eq!(&stdout[..], b"HELLO ['a b', 'c']\n");
    let (_, _, stderr) = send(
        &address,
        "GET",
        &format!("/api/jobs/{id}/files/stderr"),
        "",
        Vec::new(),
    )
    .await;
    assert_eq!(&stderr[..], b"warn");

    // A command line with quotes, and a byte range of its output.
    let (_, job) = json_request(
        &address,
        "POST",
        "/api/jobs",
        json!({
            "kind": "command", "image": "python", "command": "printf '%s|' 'one two' three; exit 3"
        }),
    )
    .await;
    let id = job["id"].as_str().unwrap();
    let done = wait_final(&address, id).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["exit_code"], 3);
    let mut sender = connect(&address).await;
    let request = Request::builder()
        .uri(format!("/api/jobs/{id}/files/stdout"))
        .header("host", &address)
        .header(RUNNER_SECRET_HEADER, SECRET)
        .header("range", "bytes=4-6")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.headers()["content-range"], "bytes 4-6/14");
    assert_eq!(
        &response.into_body().collect().await.unwrap().to_bytes()[..],
        b"two"
    );

    // The wall timeout kills the whole job, children included, and retries are recorded.
    let (_, job) = json_request(
        &address,
        "POST",
        "/api/jobs",
        json!({
            "kind": "command", "image": "python", "command": "sleep 30 & sleep 30",
            "limits": {"timeout_seconds": 0.5, "retries": 1}
        }),
    )
    .await;
    let id = job["id"].as_str().unwrap();
    let done = wait_final(&address, id).await;
    assert_eq!(done["state"], "timed_out", "{done}");
    assert_eq!(done["attempt"], 2, "one retry: {done}");

    // Cancel: a running job is killed, a finished one cannot be cancelled.
    let (_, job) = json_request(
        &address,
        "POST",
        "/api/jobs",
        json!({
            "kind": "command", "image": "python", "command": "sleep 60"
        }),
    )
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    loop {
        let (_, status) =
            json_request(&address, "GET", &format!("/api/jobs/{id}"), Value::Null).await;
        if status["state"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = json_request(
        &address,
        "POST",
        &format!("/api/jobs/{id}/cancel"),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let done = wait_final(&address, &id).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    let (status, error) = json_request(
        &address,
        "POST",
        &format!("/api/jobs/{id}/cancel"),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    let (status, _) =
        json_request(&address, "DELETE", &format!("/api/jobs/{id}"), Value::Null).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = json_request(&address, "GET", &format!("/api/jobs/{id}"), Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    runners.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_touches_nothing() {
    let runners = start_runners(1, 1).await;
    let address = runners.addresses[0].clone();
    let keep = submit_md5(&address, "keep me", b"precious").await;
    let kept = wait_final(&address, &keep).await;
    let cases = [
        json!({"kind": "sha1", "files": {"a": "x"}}),
        json!({"kind": "run", "language": "cobol", "files": {"a.cob": "x"}}),
        json!({"kind": "command", "image": "../etc", "command": "true"}),
        json!({"kind": "md5", "files": {"../evil": "x"}}),
        json!({"kind": "md5", "files": {"a/b": "x"}}),
        json!({"kind": "md5", "files": {"a\u{0}b": "x"}}),
        json!({"kind": "md5", "files": {"/etc/passwd": "x"}}),
        json!({"kind": "md5"}),
        json!({"kind": "md5", "files": {"a": "x"}, "limits": {"memory_bytes": 1u64 << 50}}),
        json!({"kind": "md5", "files": {"a": "x"}, "limits": {"timeout_seconds": 1e9}}),
    ];
    for case in cases {
        let (status, error) = json_request(&address, "POST", "/api/jobs", case.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {error}");
        assert!(!error["message"].as_str().unwrap().is_empty());
    }
    let (status, _, _) = send(
        &address,
        "POST",
        "/api/jobs",
        "application/json",
        b"{not json".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (content_type, body) = multipart(&json!({"kind": "md5"}), &[("../../x", b"data")]);
    let (status, _, _) = send(&address, "POST", "/api/jobs", &content_type, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    for path in [
        "/api/jobs/nope",
        "/api/jobs/00000000-0000-4000-8000-000000000000",
        "/api/jobs/../../etc/passwd",
    ] {
        let (status, _) = json_request(&address, "GET", path, Value::Null).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _) = json_request(
        &address,
        "GET",
        &format!("/api/jobs/{keep}/files/spec.json"),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nothing was created or changed by the refusals.
    let (_, list) = json_request(&address, "GET", "/api/jobs", Value::Null).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["jobs"][0], kept);
    let leftovers: Vec<_> = std::fs::read_dir(runners.volume.join("jobs"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| name.to_str().unwrap().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    runners.stop().await;
}

/// `?state=` filters the list by state; a state that does not exist is refused, naming the
/// states that do, instead of answering an empty list that looks like "no such jobs".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_list_filters_by_state_and_refuses_unknown_states() {
    let runners = start_runners(1, 1).await;
    let address = runners.addresses[0].clone();
    let id = submit_md5(&address, "filtered", b"abc").await;
    wait_final(&address, &id).await;
    let ids = |list: &Value| -> Vec<String> {
        list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|job| job["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, list) =
        json_request(&address, "GET", "/api/jobs?state=succeeded", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(ids(&list), [id]);
    let (status, list) =
        json_request(&address, "GET", "/api/jobs?state=timed_out", Value::Null).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(ids(&list).is_empty(), "{list}");
    for bad in ["finished", "Succeeded", "timed%20out", ""] {
        let (status, error) = json_request(
            &address,
            "GET",
            &format!("/api/jobs?state={bad}"),
            Value::Null,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {error}");
        assert_eq!(error["reason"], "Bad Request");
        let message = error["message"].as_str().unwrap();
        let given = bad.replace("%20", " ");
        assert!(message.contains(&format!("{given:?}")), "{message}");
        for valid in cellgate_protocol::job::JobStateKind::NAMES {
            assert!(message.contains(valid), "{valid} missing from {message}");
        }
    }
    runners.stop().await;
}

/// An upload that grows past the limit while it streams (no length declared up front) is
/// refused, and nothing of it stays on the volume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_limit_leaves_nothing_behind() {
    use http_body_util::StreamBody;
    let runners = start_runners_with(1, 1, |config| config.max_job_upload_bytes = 1 << 20).await;
    let address = runners.addresses[0].clone();
    let boundary = "limit-test";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"spec\"\r\n\r\n{{\"kind\":\"md5\"}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.bin\"\r\n\r\n"
    );
    let chunks = std::iter::once(Bytes::from(head))
        .chain(std::iter::repeat_n(Bytes::from(vec![b'x'; 64 << 10]), 40))
        .map(|chunk| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk)));
    let body = StreamBody::new(futures_util::stream::iter(chunks));
    let mut sender = connect(&address).await;
    let request = Request::builder()
        .method("POST")
        .uri("/api/jobs")
        .header("host", &address)
        .header(RUNNER_SECRET_HEADER, SECRET)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .unwrap();
    // The runner may answer before it has read everything, or close while the client still
    // writes; either way the upload must not become a job.
    if let Ok(response) = sender.send_request(request).await {
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    let (_, list) = json_request(&address, "GET", "/api/jobs", Value::Null).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 0, "{list}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let leftovers: Vec<_> = std::fs::read_dir(runners.volume.join("jobs"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        if leftovers.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the refused upload left {leftovers:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    runners.stop().await;
}
