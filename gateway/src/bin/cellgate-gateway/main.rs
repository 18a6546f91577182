//! `cellgate-gateway`: the gateway as its own process, configured from flags and environment.

use std::process::ExitCode;

use cellgate_gateway::cli::Cli;
use clap::Parser;
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
    ExitCode::from(cellgate_gateway::cli::main(Cli::parse()).await)
}
