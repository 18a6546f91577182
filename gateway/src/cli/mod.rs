//! The gateway as a process: its command line ([`args`]) and what the `cellgate-gateway`
//! binary and `cellgate gateway` both run — check the settings, load the certificate, bind,
//! print the ready line, and serve until SIGTERM or Ctrl-C, reloading the certificate on
//! SIGHUP.

pub mod args;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use args::{display_address, Cli, Settings, RUNNER_SECRET_ENV};

use crate::tls::reload::CertificateReloader;

/// Runs the gateway described by `cli` (and the runner secret from the environment) until a
/// shutdown signal. Returns the process exit status: 0 after a clean stop, 2 for an invalid
/// configuration, 1 when serving failed.
pub async fn main(cli: Cli) -> u8 {
    let runner_secret = std::env::var(RUNNER_SECRET_ENV).ok();
    let settings = match cli.into_settings(runner_secret) {
        Ok(settings) => settings,
        Err(problems) => {
            eprintln!("cellgate-gateway: invalid configuration:");
            for problem in problems {
                eprintln!("  - {problem}");
            }
            return 2;
        }
    };
    match serve(settings).await {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("cellgate-gateway: {error:#}");
            1
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let Settings {
        bind,
        config,
        hostnames,
        token_generated,
    } = settings;
    let tls = crate::load_tls(&config.tls, &hostnames).context("loading the TLS certificate")?;
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding {bind}"))?;
    let address = display_address(listener.local_addr()?);
    // Watched before the ready line, so a SIGHUP sent as soon as the gateway says it is ready
    // reloads the certificate instead of ending the process.
    let hangups = Hangups::watch();
    let stop_reloading = CancellationToken::new();
    let reloads =
        tokio::spawn(hangups.reload_on_each(tls.certificates.clone(), stop_reloading.clone()));

    match &config.token {
        Some(token) => {
            let token: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
            println!("cellgate ready: https://{address}/?token={token}");
            if token_generated {
                println!("(the token was generated; set --token or CELLGATE_TOKEN to choose one)");
            }
        }
        None => {
            tracing::warn!("authentication is OFF: anyone who can reach {address} can run code");
            println!("cellgate ready: https://{address}/");
        }
    }
    println!("certificate sha256 fingerprint: {}", tls.sha256_fingerprint);
    if tls.self_signed {
        println!("(self-signed: browsers will warn; check the fingerprint above)");
    }

    let served = crate::run(listener, config, tls, shutdown_signal()).await;
    stop_reloading.cancel();
    let _ = reloads.await;
    served?;
    Ok(())
}

/// SIGHUP, the conventional "reload your configuration" signal.
pub struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    /// Starts watching SIGHUP; from now on it no longer ends the process.
    pub fn watch() -> Hangups {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = match signal(SignalKind::hangup()) {
                Ok(signal) => Some(signal),
                Err(error) => {
                    tracing::warn!(%error, "cannot watch SIGHUP; certificates reload only when their files change");
                    None
                }
            };
            Hangups { signal }
        }
        #[cfg(not(unix))]
        Hangups {}
    }

    /// Reloads the certificate at every SIGHUP until `stop`.
    pub async fn reload_on_each(
        self,
        certificates: Arc<CertificateReloader>,
        stop: CancellationToken,
    ) {
        #[cfg(unix)]
        if let Some(mut signal) = self.signal {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    received = signal.recv() => {
                        if received.is_none() {
                            return;
                        }
                        certificates.reload_async("SIGHUP").await;
                    }
                }
            }
        }
        stop.cancelled().await;
    }
}

/// Resolves on SIGTERM (what Docker and Swarm send) or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                tracing::info!("shutdown signal received");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the gateway")
            }
        }
    }
    if let Err(error) = tokio::signal::ctrl_c().await {
        tracing::error!(%error, "cannot watch Ctrl-C either; the gateway runs until killed");
        std::future::pending::<()>().await;
    }
    tracing::info!("shutdown signal received");
}
