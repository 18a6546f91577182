//! `cellgate-gateway`: the gateway as its own process, configured from flags and environment.

mod cli;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Settings, RUNNER_SECRET_ENV};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runner_secret = std::env::var(RUNNER_SECRET_ENV).ok();
    let settings = match Cli::parse().into_settings(runner_secret) {
        Ok(settings) => settings,
        Err(problems) => {
            eprintln!("cellgate-gateway: invalid configuration:");
            for problem in problems {
                eprintln!("  - {problem}");
            }
            return ExitCode::from(2);
        }
    };
    match serve(settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cellgate-gateway: {error:#}");
            ExitCode::FAILURE
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
    let tls = cellgate_gateway::load_tls(&config.tls, &hostnames)
        .context("loading the TLS certificate")?;
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding {bind}"))?;
    let address = cli::display_address(listener.local_addr()?);

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

    cellgate_gateway::run(listener, config, tls, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGTERM (what Docker and Swarm send) or Ctrl-C.
async fn shutdown_signal() {
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
