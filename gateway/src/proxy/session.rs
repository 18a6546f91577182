//! One proxied websocket session, from the client's upgrade to the last close frame. It runs
//! as its own tracked task and holds a connection slot for as long as it lives.

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use url::Url;
use uuid::Uuid;

use super::pump::{self, Ending, Side, Watch};
use super::timing::ExecuteTiming;
use super::upstream::Upstream;
use super::websocket::{socket_config, Socket};
use crate::balancer::backend::SessionGuard;
use crate::config::WebsocketSettings;
use crate::metrics::{Metrics, ProxyError};
use crate::tasks::Tasks;

/// Everything a session task owns.
pub struct Session {
    pub kernel: Uuid,
    pub runner_url: Url,
    pub runner: Socket,
    /// Resolves to the client's connection once hyper has sent the `101`.
    pub client: OnUpgrade,
    pub settings: WebsocketSettings,
    /// The client connection's slot; released when the session ends.
    pub permit: Arc<OwnedSemaphorePermit>,
    /// Counts the session against its runner while it lives.
    pub counted: SessionGuard,
    /// Cancelled when the runner is declared gone.
    pub runner_gone: CancellationToken,
    pub metrics: Arc<Metrics>,
    /// Told when the runner's side fails, so the gateway checks the runner at once.
    pub upstream: Upstream,
}

/// How long hyper may take to hand over the client's connection after the `101`.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

impl Session {
    pub fn spawn(self, tasks: &Tasks) {
        let stopping = tasks.stopping().clone();
        let aborting = tasks.aborting().clone();
        tasks.spawn(async move {
            // Past the grace period the session is dropped, which closes both sockets.
            aborting.run_until_cancelled(self.run(&stopping)).await;
        });
    }

    async fn run(self, stopping: &CancellationToken) {
        let Session {
            kernel,
            runner_url,
            runner,
            client,
            settings,
            permit: _permit,
            counted: _counted,
            runner_gone,
            metrics,
            upstream,
        } = self;
        let upgraded = match tokio::time::timeout(UPGRADE_TIMEOUT, client).await {
            Ok(Ok(upgraded)) => upgraded,
            Ok(Err(error)) => {
                tracing::debug!(%kernel, %error, "client left before the websocket upgrade");
                return;
            }
            Err(_) => {
                tracing::debug!(%kernel, "client websocket upgrade timed out");
                return;
            }
        };
        let client: Socket = WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            Some(socket_config(&settings)),
        )
        .await;
        tracing::debug!(%kernel, runner = %runner_url, "websocket session open");
        let timing = ExecuteTiming::new(&metrics.execute_latency);
        let watch = Watch {
            settings: &settings,
            stopping,
            runner_gone: &runner_gone,
            runner: &runner_url,
            timing: &timing,
        };
        let ending = pump::pump(client, runner, watch).await;
        log_ending(kernel, &runner_url, &ending);
        match ending {
            Ending::Failed {
                side: Side::Runner, ..
            }
            | Ending::Idle { side: Side::Runner } => {
                metrics.proxy_error(ProxyError::WebsocketLost);
                // A runner that was killed breaks all its sessions at once; checking it now
                // reports its kernels dead within moments instead of at the next interval.
                upstream.nudge_health_checks();
            }
            Ending::RunnerGone => metrics.proxy_error(ProxyError::WebsocketLost),
            _ => {}
        }
    }
}

fn log_ending(kernel: Uuid, runner: &Url, ending: &Ending) {
    match ending {
        Ending::Closed { by, frame } => {
            let code = frame.as_ref().map(|frame| u16::from(frame.code));
            tracing::debug!(%kernel, %runner, ?by, ?code, "websocket session closed");
        }
        Ending::Failed {
            side: Side::Runner,
            error,
        } => tracing::warn!(%kernel, %runner, %error, "runner websocket failed"),
        Ending::Failed {
            side: Side::Client,
            error,
        } => tracing::debug!(%kernel, %error, "client websocket failed"),
        Ending::Idle { side } => {
            tracing::info!(%kernel, %runner, ?side, "websocket session idle; closed")
        }
        Ending::RunnerGone => {
            tracing::info!(%kernel, %runner, "websocket session closed: its runner is gone")
        }
        Ending::ShuttingDown => tracing::debug!(%kernel, "websocket session closed for shutdown"),
    }
}
