//! Gateways and runners as separate processes (`cellgate gateway`, `cellgate runner`), the
//! way a swarm runs them, on ephemeral loopback ports.

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::Client;

/// The secret every runner and gateway of a test cluster shares.
pub const SECRET: &str = "cluster-test-runner-secret";

/// How long a process may take to say it is ready, or to stop.
const STARTUP: Duration = Duration::from_secs(60);

fn cellgate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cellgate"));
    command
        .env_remove("CELLGATE_TOKEN")
        .env_remove("CELLGATE_RUNNERS")
        .env_remove("CELLGATE_BIND")
        .env("CELLGATE_RUNNER_SECRET", SECRET)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .kill_on_drop(true);
    command
}

/// Reads `stream` until a line starts with `prefix` and returns the rest of it; the stream is
/// drained afterwards so the process never blocks on a full pipe.
async fn ready_line<R>(stream: R, prefix: &str, echo: bool) -> String
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let mut lines = BufReader::new(stream).lines();
    let found = tokio::time::timeout(STARTUP, async {
        while let Some(line) = lines.next_line().await.expect("output is readable") {
            if echo {
                eprintln!("{line}");
            }
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
        panic!("the process exited before saying {prefix:?}");
    })
    .await
    .expect("the process is ready in time");
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if echo {
                eprintln!("{line}");
            }
        }
    });
    found
}

/// A `cellgate runner` process with the process backend.
pub struct RunnerProcess {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub data_dir: PathBuf,
    child: Child,
}

impl RunnerProcess {
    pub async fn start(extra: &[&str]) -> RunnerProcess {
        let data_dir =
            std::env::temp_dir().join(format!("cellgate-runner-test-{}", uuid::Uuid::new_v4()));
        let mut child = cellgate()
            .arg("runner")
            .args(["--bind", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cellgate runner starts");
        let stderr = child.stderr.take().expect("stderr is piped");
        let rest = ready_line(stderr, "cellgate-runner listening on ", true).await;
        let url = rest
            .split_whitespace()
            .next()
            .expect("the line names the address")
            .to_owned();
        RunnerProcess {
            url,
            data_dir,
            child,
        }
    }

    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("the URL ends with a port")
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("the runner is running") as i32
    }

    /// `kill -9`: the runner vanishes without closing anything itself.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("the runner can be killed");
        let _ = self.child.wait().await;
    }

    /// SIGTERM, as Docker sends it.
    pub fn terminate(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("the runner can be signalled");
    }

    /// Waits for the process to end.
    pub async fn wait(&mut self, patience: Duration) -> ExitStatus {
        tokio::time::timeout(patience, self.child.wait())
            .await
            .expect("the runner exits in time")
            .expect("the exit status is readable")
    }

    /// `GET` on the runner itself, with the shared secret, as a gateway asks.
    pub async fn get(&self, path: &str) -> serde_json::Value {
        runner_get(&self.url, path).await
    }

    /// The runner's own status report.
    pub async fn status(&self) -> serde_json::Value {
        self.get("/api/runner").await
    }

    /// The ids of the kernels the runner holds.
    pub async fn kernel_ids(&self) -> Vec<String> {
        self.get("/api/kernels")
            .await
            .as_array()
            .expect("a kernel list")
            .iter()
            .map(|model| model["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        // Kernels are the runner's process group children; a kill of the runner alone would
        // leave them, so the runner is asked to stop first.
        super::stop_gracefully(&mut self.child, Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A plain-HTTP `GET` to a runner with the shared secret.
pub async fn runner_get(base: &str, path: &str) -> serde_json::Value {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    let address = base.trim_start_matches("http://");
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("the runner accepts connections");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP handshake with the runner");
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header("host", address)
        .header("x-cellgate-runner-secret", SECRET)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .expect("the runner answers");
    assert_eq!(response.status(), http::StatusCode::OK, "GET {path}");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).expect("the runner answers JSON")
}

/// A `cellgate gateway` process.
pub struct GatewayProcess {
    /// `127.0.0.1:PORT`
    pub address: String,
    pub token: String,
    child: Child,
}

impl GatewayProcess {
    /// A gateway over `runners` (runner URLs) with a fresh token and any `extra` flags.
    pub async fn start(runners: &[&str], extra: &[&str]) -> GatewayProcess {
        let mut args = Vec::new();
        if !runners.is_empty() {
            args.push("--runners".to_owned());
            args.push(runners.join(","));
        }
        args.extend(extra.iter().map(|arg| arg.to_string()));
        GatewayProcess::start_with(&args).await
    }

    pub async fn start_with(args: &[String]) -> GatewayProcess {
        let token = format!("cluster-token-{}", uuid::Uuid::new_v4().simple());
        let mut child = cellgate()
            .arg("gateway")
            .args(["--bind", "127.0.0.1:0", "--token", &token])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cellgate gateway starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let url = ready_line(stdout, "cellgate ready: https://", false).await;
        let address = url.split('/').next().expect("a URL").to_owned();
        GatewayProcess {
            address,
            token,
            child,
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.address, Some(&self.token))
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("the gateway is running") as i32
    }

    /// SIGTERM, and the exit status once it has drained.
    pub async fn stop(&mut self) -> ExitStatus {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::SIGTERM,
        );
        tokio::time::timeout(STARTUP, self.child.wait())
            .await
            .expect("the gateway stops in time")
            .expect("the exit status is readable")
    }
}
