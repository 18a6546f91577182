//! Batch `run` and `command` jobs in sandboxed containers through the gateway: C, Go, Rust
//! and Python programs, a command line with quotes, a timeout, an OOM kill and no network.

mod support;

use std::time::Duration;

use http::StatusCode;
use serde_json::{json, Value};
use support::{Client, Server};

const IMAGES: &[&str] = &["c", "go", "rust", "python"];

/// The job containers (running or not) of this server's runners; kernels' are not counted.
fn job_containers(instance: &str) -> Vec<String> {
    support::docker::containers_matching(instance, &["label=org.cellgate.job"])
}

/// Submits a JSON job and returns its final status and its stdout.
async fn run(client: &Client, job: Value) -> (Value, String) {
    let reply = client.post("/api/jobs", job.clone()).await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{job}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    let events = tokio::time::timeout(
        Duration::from_secs(300),
        client.get(&format!("/api/jobs/{id}/events")),
    )
    .await
    .expect("the job ends within five minutes");
    let text = String::from_utf8_lossy(&events.body).into_owned();
    let last = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .next_back()
        .expect("an event");
    let status: Value = serde_json::from_str(last).unwrap();
    let stdout = client.get(&format!("/api/jobs/{id}/files/stdout")).await;
    (status, String::from_utf8_lossy(&stdout.body).into_owned())
}

fn program(language: &str, file: &str, source: &str) -> Value {
    json!({"kind": "run", "language": language, "files": {file: source},
           "stdin": "from stdin\n", "args": ["x y", "z"]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn programs_run_in_their_language_containers() {
    if !support::docker::available(IMAGES) {
        return;
    }
    let server = Server::start_with(&["--backend", "docker"]).await;
    let client = server.client();
    let cases = [
        program(
            "c",
            "main.c",
            "#include <stdio.h>\nint main(int c, char **v){char l[64];fgets(l,64,stdin);printf(\"c %s|%s %s\", v[1], v[2], l);return 0;}\n",
        ),
        program(
            "go",
            "main.go",
            "package main\nimport (\"bufio\";\"fmt\";\"os\")\nfunc main(){l,_:=bufio.NewReader(os.Stdin).ReadString('\\n');fmt.Printf(\"go %s|%s %s\", os.Args[1], os.Args[2], l)}\n",
        ),
        program(
            "rust",
            "main.rs",
            "use std::io::Read;\nfn main(){let a:Vec<String>=std::env::args().collect();let mut l=String::new();std::io::stdin().read_to_string(&mut l).unwrap();print!(\"rust {}|{} {}\", a[1], a[2], l);}\n",
        ),
        program(
            "python",
            "main.py",
            "import sys\nprint('python ' + sys.argv[1] + '|' + sys.argv[2], input())\n",
        ),
    ];
    for job in cases {
        let language = job["language"].as_str().unwrap().to_owned();
        let (status, stdout) = run(&client, job).await;
        assert_eq!(status["state"], "succeeded", "{language}: {status}");
        assert_eq!(status["exit_code"], 0, "{status}");
        assert_eq!(stdout, format!("{language} x y|z from stdin\n"), "{status}");
        assert!(
            status["peak_memory_bytes"].as_u64().unwrap_or(0) > 0,
            "{status}"
        );
    }
    // Every job container was removed afterwards.
    assert_eq!(job_containers(&server.instance_id()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_sandboxed_and_limited() {
    if !support::docker::available(IMAGES) {
        return;
    }
    let server = Server::start_with(&["--backend", "docker"]).await;
    let client = server.client();

    let (status, stdout) = run(
        &client,
        json!({"kind": "command", "image": "python",
               "command": "printf '%s|' 'a  b' \"c 'd'\"; id -u"}),
    )
    .await;
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(stdout, "a  b|c 'd'|1000\n");

    let (status, _) = run(
        &client,
        json!({"kind": "command", "image": "python", "command": "sleep 60",
               "limits": {"timeout_seconds": 2.0}}),
    )
    .await;
    assert_eq!(status["state"], "timed_out", "{status}");

    let (status, _) = run(
        &client,
        json!({"kind": "run", "language": "python", "files": {"eat.py": "x = bytearray(400 * 1024 * 1024)\nx[::4096] = b'a' * len(x[::4096])\nprint('survived')\n"},
               "limits": {"memory_bytes": 64 * 1024 * 1024}}),
    )
    .await;
    assert_eq!(status["state"], "failed", "{status}");
    assert_eq!(status["oom"], true, "{status}");

    let (status, stdout) = run(
        &client,
        json!({"kind": "command", "image": "python",
               "command": "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)\" && echo connected || echo isolated"}),
    )
    .await;
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(stdout, "isolated\n");

    let unknown = client
        .post(
            "/api/jobs",
            json!({"kind": "command", "image": "no-such-image", "command": "true"}),
        )
        .await;
    assert!(unknown.status.is_client_error(), "{unknown:?}");
    assert_eq!(job_containers(&server.instance_id()), Vec::<String>::new());
}
