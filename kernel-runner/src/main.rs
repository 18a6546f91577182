//! `cellgate-runner`: one kernel runner, serving its gateways.

use cellgate_kernel_runner::{listen_and_run, Config, RunnerArgs};
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = RunnerArgs::parse();
    let secret = std::env::var("CELLGATE_RUNNER_SECRET").ok();
    let config = match Config::from_args(&args, secret) {
        Ok(config) => config,
        Err(problems) => {
            for problem in problems {
                eprintln!("cellgate-runner: {problem}");
            }
            std::process::exit(2);
        }
    };
    listen_and_run(args.bind, config, shutdown_signal()).await
}

/// Resolves on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("can listen for SIGTERM");
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
