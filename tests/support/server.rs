//! Starts `cellgate serve` as a separate process and waits for its ready line.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A running `cellgate serve`, killed when dropped.
pub struct Server {
    pub address: String,
    pub token: String,
    pub data_dir: PathBuf,
    child: Child,
}

impl Server {
    /// Starts a server with a known token and a fresh data directory.
    pub async fn start() -> Server {
        Server::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> Server {
        let token = format!("test-token-{}", uuid::Uuid::new_v4().simple());
        let data_dir = std::env::temp_dir().join(format!("cellgate-test-{}", uuid::Uuid::new_v4()));
        let mut args = vec![
            "serve".to_owned(),
            "--bind".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--data-dir".to_owned(),
            data_dir.display().to_string(),
        ];
        if !extra.contains(&"--token") {
            args.push("--token".to_owned());
            args.push(token.clone());
        }
        args.extend(extra.iter().map(|arg| arg.to_string()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_cellgate"))
            .args(&args)
            .env_remove("CELLGATE_TOKEN")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cellgate starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("stdout is readable") {
                if let Some(url) = line.strip_prefix("cellgate ready: https://") {
                    return url.to_owned();
                }
            }
            panic!("cellgate exited before it was ready");
        })
        .await
        .expect("cellgate is ready within a minute");
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (address, rest) = ready.split_once('/').expect("URL has a path");
        let token = rest
            .strip_prefix("?token=")
            .map(str::to_owned)
            .unwrap_or_default();
        Server {
            address: address.to_owned(),
            token,
            data_dir,
            child,
        }
    }

    /// Starts a `name` kernel and connects a websocket client to it.
    pub async fn kernel(&self, name: &str) -> (String, crate::support::KernelSocket) {
        let id = self.client().start_kernel(name).await;
        let socket = crate::support::KernelSocket::connect(&self.address, &self.token, &id).await;
        (id, socket)
    }

    /// Starts `code`, waits for its first output, interrupts it through the REST API, and
    /// checks that the cell ends with an error while the kernel lives on.
    pub async fn interrupt_cell(
        &self,
        kernel: &str,
        socket: &mut crate::support::KernelSocket,
        code: &str,
    ) {
        use cellgate_protocol::content::{Content, ReplyStatus};
        let id = socket.send_execute(code).await;
        socket
            .wait_for(&id, |m| matches!(&m.content, Content::Stream(_)))
            .await;
        let reply = self
            .client()
            .post(
                &format!("/api/kernels/{kernel}/interrupt"),
                serde_json::json!({}),
            )
            .await;
        assert_eq!(reply.status, http::StatusCode::NO_CONTENT);
        let run = socket.collect(&id).await;
        assert_eq!(run.reply().status, ReplyStatus::Error, "{code}");
    }

    pub fn client(&self) -> crate::support::Client {
        crate::support::Client::new(&self.address, Some(&self.token))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The id runners of this server name themselves after (their containers carry it).
    pub fn instance_id(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("instance-id"))
            .expect("the server wrote its instance id")
            .trim()
            .to_owned()
    }

    /// Asks the server to shut down as an operator would (SIGTERM) and waits for it.
    pub async fn stop(&mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the server stops within a minute of SIGTERM")
            .expect("the server's exit status is readable")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A graceful stop, so kernels (and their containers) are cleaned up; then a kill for
        // a server that does not listen.
        super::stop_gracefully(&mut self.child, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}
