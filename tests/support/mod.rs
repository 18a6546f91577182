//! What the end-to-end tests share: a `cellgate serve` process on ephemeral ports, an HTTPS
//! client for the REST API, and a Jupyter websocket client.
#![allow(dead_code, unused_imports)]

pub mod browser;
pub mod client;
pub mod cluster;
pub mod docker;
pub mod jobs;
pub mod kernel;
pub mod prerequisite;
pub mod server;

pub use client::{Client, Reply};
pub use kernel::KernelSocket;
pub use server::Server;

/// Stops a child the way Docker would: SIGTERM, up to `patience` to exit (so it cleans up its
/// kernels and containers), then SIGKILL.
pub fn stop_gracefully(child: &mut tokio::process::Child, patience: std::time::Duration) {
    if let Ok(None) = child.try_wait() {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = std::time::Instant::now() + patience;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.start_kill();
    }
}

/// How long a cluster may take to notice something on its own (a health round, a drain, a
/// culling sweep).
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Polls `check` until it gives a value, failing the test after [`PATIENCE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Whether `program` is an executable on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
