//! Batch jobs end to end through the TLS gateway: MD5 results equal `md5sum`, the `cellgate
//! md5` and `cellgate submit` clients, cancel and delete, bad input, several runners on one
//! volume, and a runner killed in the middle of its jobs.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use http::{Method, StatusCode};
use rand::{Rng, RngCore};
use serde_json::json;
use support::jobs::{
    a_killed_runners_jobs_finish_elsewhere, each_job_runs_exactly_once, final_status,
    md5_jobs_equal_md5sum, upload, JobCluster,
};
use support::Server;

fn scratch(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cellgate-{label}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_jobs_through_the_gateway_equal_md5sum() {
    let server = Server::start().await;
    let dir = scratch("md5");
    md5_jobs_equal_md5sum(&server.client(), &dir, 200, 100 << 20).await;
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
    let id = reply.created_id();
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
    let server = Server::start_with(&["--jobs-max-upload-mb", "1"]).await;
    let client = server.client();
    let keep_id = upload(
        &client,
        &json!({"kind": "md5", "name": "keep"}),
        &[("a.txt", b"abc")],
    )
    .await
    .created_id();

    let json_cases = [
        (
            json!({"kind": "sha1"}),
            "unknown variant `sha1`, expected one of `md5`, `run`, `command`",
        ),
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
        (
            json!({"kind": "run", "files": {"a.py": "1", "b.py": "2"}, "main": "c.py"}),
            "\"c.py\" is not among",
        ),
        (
            json!({"kind": "run", "files": {"Makefile": "all:"}}),
            "needs a language",
        ),
        (
            json!({"kind": "command", "image": "cobol", "command": "true"}),
            "cobol",
        ),
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
    // Over the upload limit (1 MiB here): refused, and nothing of it stays on the volume.
    let reply = client
        .send_declaring_length(
            Method::POST,
            "/api/jobs",
            2 << 20,
            &[("content-type", "multipart/form-data; boundary=b")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{reply:?}");
    let message = reply.json()["message"].as_str().unwrap().to_owned();
    assert!(message.contains("1048576"), "{message}");
    // A finished job cannot be cancelled.
    final_status(&client, &keep_id).await;
    let cancel = client
        .send(
            Method::POST,
            &format!("/api/jobs/{keep_id}/cancel"),
            None,
            &[],
        )
        .await;
    assert_eq!(cancel.status, StatusCode::CONFLICT, "{cancel:?}");
    assert!(cancel.json()["message"]
        .as_str()
        .unwrap()
        .contains("already succeeded"));
    let missing = client
        .get("/api/jobs/6f1c1c0e-0000-4000-8000-000000000000")
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let nothing = client.get("/api/jobs/not-an-id/files/stdout").await;
    assert!(nothing.status.is_client_error());
    // The list's state filter is checked by the runner, and its refusal reaches the client.
    let unknown_state = client.get("/api/jobs?state=finished").await;
    assert_eq!(
        unknown_state.status,
        StatusCode::BAD_REQUEST,
        "{unknown_state:?}"
    );
    let message = unknown_state.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("\"finished\"") && message.contains("timed_out, cancelled"),
        "{message}"
    );
    let no_token = client.without_token().get("/api/jobs").await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN);

    // None of it touched the job that was there.
    let status = final_status(&client, &keep_id).await;
    assert_eq!(status["result"], "900150983cd24fb0d6963f7d28e17f72");
    let list = client.get("/api/jobs").await.json();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1, "{list}");
}

/// Each runner a separate process on its own path to one local volume directory.
async fn local_cluster(runners: usize, slots: usize) -> (JobCluster, PathBuf) {
    let volume = scratch("volume");
    let paths = vec![volume.clone(); runners];
    (JobCluster::start(&paths, slots, 1).await, volume)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_runners_run_each_job_exactly_once() {
    let (cluster, volume) = local_cluster(3, 2).await;
    each_job_runs_exactly_once(&cluster, 300).await;
    drop(cluster);
    let _ = std::fs::remove_dir_all(volume);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runners_jobs_finish_on_another_runner() {
    let (mut cluster, volume) = local_cluster(2, 2).await;
    a_killed_runners_jobs_finish_elsewhere(&mut cluster, 12).await;
    drop(cluster);
    let _ = std::fs::remove_dir_all(volume);
}
