//! `cellgate runner`: one kernel runner, exactly as `cellgate-runner` runs it, so the
//! end-to-end tests and benches can start runners from the one binary they build.

use cellgate_kernel_runner::{listen_and_run, Config, RunnerArgs};

use crate::signals::shutdown_signal;

pub async fn runner(args: RunnerArgs) -> anyhow::Result<()> {
    let secret = std::env::var("CELLGATE_RUNNER_SECRET").ok();
    let config = match Config::from_args(&args, secret) {
        Ok(config) => config,
        Err(problems) => {
            for problem in &problems {
                eprintln!("cellgate runner: {problem}");
            }
            anyhow::bail!("invalid configuration ({} problems)", problems.len());
        }
    };
    listen_and_run(args.bind, config, shutdown_signal()).await
}
