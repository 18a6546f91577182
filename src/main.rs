//! `cellgate`: the all-in-one command. `cellgate serve` starts a TLS gateway and N kernel
//! runners in one process; they talk over loopback HTTP exactly as they do on a swarm.
//! `cellgate md5` and `cellgate submit` are clients of a gateway's batch jobs API.

mod cli;
mod runner;
mod serve;
mod signals;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cellgate",
    version,
    about = "A Jupyter-compatible, multi-language code execution gateway."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a gateway and its kernel runners in this process.
    Serve(serve::ServeArgs),
    /// Run one kernel runner, as `cellgate-runner` does.
    Runner(cellgate_kernel_runner::RunnerArgs),
    /// Run the gateway in front of runners elsewhere, as `cellgate-gateway` does.
    Gateway(cellgate_gateway::cli::Cli),
    /// Hash files with the gateway's MD5 service; prints what md5sum prints.
    Md5(cli::md5::Md5Args),
    /// Run a source file or a command line as a batch job and wait for its output.
    Submit(cli::submit::SubmitArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,cellgate=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve::serve(args)),
        Command::Runner(args) => runtime.block_on(runner::runner(args)),
        Command::Gateway(cli) => {
            let status = runtime.block_on(cellgate_gateway::cli::main(cli));
            if status != 0 {
                // The gateway has said what went wrong; only the exit status is left.
                drop(runtime);
                std::process::exit(i32::from(status));
            }
            Ok(())
        }
        Command::Md5(args) => exit_with(runtime.block_on(cli::md5::run(args))),
        Command::Submit(args) => exit_with(runtime.block_on(cli::submit::run(args))),
    }
}

/// Leaves with a client command's exit code, or reports its error the way the other
/// commands do.
fn exit_with(code: anyhow::Result<i32>) -> anyhow::Result<()> {
    let code = code?;
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}
