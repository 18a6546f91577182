//! The runner's HTTP server: the Jupyter kernel API for gateways, guarded by the shared
//! runner secret, plus `/healthz` and `/api/runner` for balancing.

mod channels;
pub mod jobs;
mod response;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::kernel::KernelManager;

/// What every request handler shares.
pub struct AppState {
    pub manager: Arc<KernelManager>,
    /// The batch jobs API, when this runner works on a job volume.
    pub jobs: Option<Arc<jobs::JobsApi>>,
    pub secret: String,
    pub runner_id: String,
    pub max_message_size: usize,
    pub ping_interval: Duration,
    /// Cancelled when the runner stops accepting: idle HTTP connections close.
    pub closing: CancellationToken,
    /// Cancelled when the grace period is over: websocket sessions still open are closed.
    pub sessions_closing: CancellationToken,
}

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting and waits up
/// to `grace` for open connections to finish.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    max_connections: usize,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => permit.expect("semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Running out of file descriptors is transient: back off and go on.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let closing = state.closing.clone();
        let tasks = tracker.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let state = state.clone();
                let tasks = tasks.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(routes::route(request, state, tasks).await)
                }
            });
            let connection = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                }
                _ = closing.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    state.manager.drain();
    state.closing.cancel();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("sessions still open after the grace period; closing them");
        state.sessions_closing.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
    }
}
