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

use super::pump::{self, Ending, Side};
use super::websocket::{socket_config, Socket};
use crate::config::WebsocketSettings;
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
        let ending = pump::pump(client, runner, &settings, stopping).await;
        log_ending(kernel, &runner_url, &ending);
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
        Ending::ShuttingDown => tracing::debug!(%kernel, "websocket session closed for shutdown"),
    }
}
