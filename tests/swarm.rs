//! The swarm deployment end to end, on this machine's Docker engine: `make deploy` from scratch
//! (a local directory as the shared volume, the nginx edge included), a Python cell in a
//! container through the TLS gateway, `make scale RUNNERS=3` spreading kernels, Swarm
//! replacing a killed runner, `make status`, the nginx edge, and `make down`.
//!
//! It turns a host into a swarm manager and takes minutes, so it runs only with
//! `CELLGATE_SWARM_TESTS=1` (CI sets it); otherwise it says loudly that it is skipped.

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use http::StatusCode;
use support::{Client, KernelSocket};

const PORT: &str = "443";
const NGINX_PORT: &str = "8443";

fn enabled() -> bool {
    if std::env::var("CELLGATE_SWARM_TESTS").as_deref() == Ok("1") {
        return true;
    }
    eprintln!(
        "\n*** SKIPPED: the swarm end-to-end test needs CELLGATE_SWARM_TESTS=1 \
         (it runs `make deploy` on this Docker engine) ***\n"
    );
    false
}

/// Runs `make TARGET VARS...` in the workspace and returns its output, failing on error.
fn make(args: &[&str], env: &[(&str, &str)]) -> String {
    let started = Instant::now();
    let output = Command::new("make")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(env.iter().copied())
        .output()
        .expect("make runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("make {args:?}: {:.1?}\n{text}", started.elapsed());
    assert!(output.status.success(), "make {args:?} failed:\n{text}");
    text
}

fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The runner that owns each of these kernels' containers.
fn runners_of(kernels: &[String]) -> HashSet<String> {
    kernels
        .iter()
        .map(|id| {
            docker(&[
                "ps",
                "--filter",
                &format!("label=org.cellgate.kernel-id={id}"),
                "--format",
                "{{.Label \"org.cellgate.runner\"}}",
            ])
            .trim()
            .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn make_deploys_a_working_swarm_stack() {
    if !enabled() {
        return;
    }
    let started = Instant::now();
    // A local directory stands in for the GlusterFS mount.
    let volume = std::env::temp_dir().join(format!("cellgate-swarm-{}", std::process::id()));
    std::fs::create_dir_all(&volume).expect("a volume directory");
    let volume = volume.to_str().expect("a UTF-8 path").to_owned();
    let env = [
        ("VOLUME", volume.as_str()),
        ("PORT", PORT),
        ("NGINX_PORT", NGINX_PORT),
        ("EDGE", "nginx"),
        ("SKIP_CARGO", "1"),
    ];
    make(&["down"], &env);
    make(&["deploy"], &env);
    let deployed = started.elapsed();

    let token = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/target/swarm/token"))
        .expect("make deploy keeps the token it made");
    let token = token.trim();
    let address = format!("127.0.0.1:{PORT}");
    let client = Client::new(&address, Some(token));
    assert_eq!(
        client.without_token().get("/api/kernels").await.status,
        StatusCode::FORBIDDEN,
        "the gateway must refuse a client without the token"
    );

    // A Python cell, in a container, through the TLS gateway.
    let id = client.start_kernel("python3").await;
    let mut socket = KernelSocket::connect(&address, token, &id).await;
    let execution = socket.execute("import os; print(os.getuid()); 6 * 7").await;
    assert_eq!(execution.result().as_deref(), Some("42"));
    assert_eq!(
        execution.stdout().trim(),
        "1000",
        "kernels run as user 1000"
    );
    socket.close().await;
    assert_eq!(runners_of(std::slice::from_ref(&id)).len(), 1);

    // Three runners: new kernels spread over them (least connections, ties on kernels).
    make(&["scale", "RUNNERS=3"], &env);
    // With one kernel on the first runner, three more fill the two new runners first (ties
    // go to the runner with the fewest kernels), so the four cover all three runners.
    let mut kernels = vec![id.clone()];
    for _ in 0..3 {
        kernels.push(client.start_kernel("python3").await);
    }
    let spread = runners_of(&kernels);
    assert_eq!(
        spread.len(),
        3,
        "four kernels on three runners, got {spread:?}"
    );

    // Swarm replaces a killed runner.
    let before = docker(&["ps", "-q", "--filter", "name=cellgate_kernel-runner"]);
    let victim = before
        .lines()
        .next()
        .expect("a runner container")
        .to_owned();
    docker(&["kill", &victim]);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now = docker(&["ps", "-q", "--filter", "name=cellgate_kernel-runner"]);
        if now.lines().count() == 3 && !now.contains(&victim) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Swarm did not replace the killed runner"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let status = make(&["status"], &env);
    assert!(
        status.contains("cellgate_kernel-runner"),
        "make status lists the runners"
    );
    assert!(
        status.contains("\"status\":\"ok\""),
        "make status shows the gateway healthy"
    );

    // The nginx edge serves the same API.
    let edge = Client::new(&format!("127.0.0.1:{NGINX_PORT}"), Some(token));
    let listed = edge.get("/api/kernels").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(listed.json().to_string().contains(&kernels[1]));

    make(&["down"], &env);
    assert!(docker(&[
        "ps",
        "-q",
        "--filter",
        "label=com.docker.stack.namespace=cellgate"
    ])
    .trim()
    .is_empty());
    eprintln!(
        "swarm test: deploy {deployed:.1?}, everything {:.1?}",
        started.elapsed()
    );
}
