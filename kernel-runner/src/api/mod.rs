//! The runner's HTTP server: the Jupyter kernel API for gateways, guarded by the shared
//! runner secret, plus `/healthz` and `/api/runner` for balancing and `/metrics` for
//! Prometheus.

mod channels;
mod identity;
pub mod jobs;
mod metrics;
mod prometheus;
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
use metrics::RunnerMetrics;

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

/// How often a draining runner looks whether its last websocket session has ended.
const DRAIN_POLL: Duration = Duration::from_millis(100);

/// Serves the API on `listener` until `shutdown` resolves, then drains: the runner reports
/// itself draining and takes no new kernels, but keeps serving its kernels (health checks,
/// REST calls, websockets) so gateways place elsewhere while open sessions finish, for up to
/// `grace`. Then it stops accepting, closes idle connections and whatever sessions are left.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    max_connections: usize,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send,
) {
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(max_connections));
    let node = match &state.jobs {
        Some(jobs) => jobs.worker.node().to_owned(),
        None => state.runner_id.clone(),
    };
    let metrics = Arc::new(RunnerMetrics::new(&node));
    tracker.spawn(metrics.clone().run(state.clone(), state.closing.clone()));
    {
        let accepting = accept(&listener, &state, &metrics, &permits, &tracker);
        tokio::pin!(accepting);
        tokio::select! {
            () = &mut accepting => {}
            () = shutdown => {}
        }
        state.manager.drain();
        let sessions = state.manager.status(&state.runner_id).sessions;
        tracing::info!(
            sessions,
            ?grace,
            "draining: no new kernels; open sessions may finish"
        );
        let finished = async {
            while state.manager.status(&state.runner_id).sessions > 0 {
                tokio::time::sleep(DRAIN_POLL).await;
            }
        };
        tokio::select! {
            () = &mut accepting => {}
            finished = tokio::time::timeout(grace, finished) => {
                if finished.is_err() {
                    tracing::warn!("sessions still open after the grace period; closing them");
                }
            }
        }
    }
    drop(listener);
    state.closing.cancel();
    state.sessions_closing.cancel();
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tracker.wait()).await;
}

/// Accepts connections and serves each in its own task on `tracker`; it only returns if the
/// runtime stops it.
async fn accept(
    listener: &TcpListener,
    state: &Arc<AppState>,
    metrics: &Arc<RunnerMetrics>,
    permits: &Arc<Semaphore>,
    tracker: &TaskTracker,
) {
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Running out of file descriptors is transient: back off and go on.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let metrics = metrics.clone();
        let closing = state.closing.clone();
        let tasks = tracker.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let state = state.clone();
                let metrics = metrics.clone();
                let tasks = tasks.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        routes::route(request, state, metrics, tasks).await,
                    )
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
}
