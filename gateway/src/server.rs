//! The accept loop: connections are taken under the connection limit, each served in its own
//! tracked task on one of the worker threads, until shutdown; then the gateway drains within
//! the grace period.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::balancer::{health, membership};
use crate::config::GatewayConfig;
use crate::connection;
use crate::error::GatewayError;
use crate::state::Gateway;
use crate::tasks::Tasks;
use crate::tls::LoadedTls;
use crate::workers::Workers;

/// How long to pause accepting after an accept error such as running out of file
/// descriptors, so the loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves the gateway on `listener` until `shutdown` resolves, then stops accepting, closes
/// websockets with "going away", and waits for open work at most the configured grace period.
pub async fn run(
    listener: TcpListener,
    config: GatewayConfig,
    tls: LoadedTls,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), GatewayError> {
    let tasks = Tasks::new();
    let gateway = Arc::new(Gateway::new(
        &config,
        tasks.clone(),
        tls.certificates.clone(),
    )?);

    // The runners are looked up, then checked once, before the first accept, so the first
    // kernel start does not find every runner unknown. Clients that connect meanwhile wait in
    // the backlog.
    let (discovery, refresh_every) = config.runners.discovery();
    tracing::info!(source = %discovery.describe(), "finding kernel runners");
    membership::refresh(discovery.as_ref(), &gateway.balancer).await;
    health::check_all(&gateway.balancer, &gateway.upstream, &config.health).await;
    tasks.spawn(membership::run(
        discovery,
        gateway.balancer.clone(),
        refresh_every,
        gateway.health_nudge.clone(),
        tasks.stopping().clone(),
    ));
    tasks.spawn(health::run(
        gateway.balancer.clone(),
        gateway.upstream.clone(),
        config.health.clone(),
        gateway.health_nudge.clone(),
        tasks.stopping().clone(),
    ));
    if let Some(interval) = config.tls_reload_interval {
        tasks.spawn(
            tls.certificates
                .clone()
                .watch(interval, tasks.stopping().clone()),
        );
    }

    let acceptor = TlsAcceptor::from(tls.server_config);
    let workers = Workers::start(match config.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        count => count,
    })?;
    // At least one slot: a limit of zero would accept nothing and hang every client.
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        // A slot is taken before accepting, so at the limit new clients wait in the listen
        // backlog instead of being accepted and dropped.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Jupyter messages are small and latency-bound; Nagle's algorithm would hold them.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "setting TCP_NODELAY failed");
        }
        // The socket moves to a worker thread's event loop, where it is served from now on.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(error) => {
                tracing::warn!(%peer, %error, "handing a connection to a worker failed");
                continue;
            }
        };
        let (acceptor, gateway) = (acceptor.clone(), gateway.clone());
        tasks.spawn_on(
            async move {
                match TcpStream::from_std(tcp) {
                    Ok(tcp) => connection::serve(tcp, peer, acceptor, gateway, permit).await,
                    Err(error) => {
                        tracing::warn!(%peer, %error, "a worker could not take a connection");
                    }
                }
            },
            workers.next(),
        );
    }

    drop(listener);
    tracing::info!("gateway stopping: no new connections; draining open ones");
    // Pooled runner connections end once the last handle to the gateway state is gone; the
    // connection tasks still hold theirs until they finish.
    drop(gateway);
    let left = tasks.drain(config.timeouts.shutdown_grace).await;
    workers.stop().await;
    if left > 0 {
        tracing::warn!(tasks = left, "gateway stopped with tasks still running");
    } else {
        tracing::info!("gateway stopped");
    }
    Ok(())
}
