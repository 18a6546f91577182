//! The local-process backend: each driver is a child process in its own process group, run
//! with the runner's user and no sandbox. It is meant for one person's machine and for tests;
//! the all-in-one server binds to loopback and says so when it uses it.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::{Backend, Driver, DriverIo, ExitReport, LaunchSpec};
use crate::languages::{on_path, Language};

pub struct ProcessBackend {
    drivers_root: PathBuf,
}

impl ProcessBackend {
    /// A backend whose drivers were installed under `drivers_root`.
    pub fn new(drivers_root: PathBuf) -> ProcessBackend {
        ProcessBackend { drivers_root }
    }
}

#[async_trait]
impl Backend for ProcessBackend {
    fn name(&self) -> &'static str {
        "process"
    }

    fn supports(&self, language: &Language) -> bool {
        on_path(language.runtime)
    }

    fn driver_dir(&self, language: &Language) -> PathBuf {
        language.driver_dir(&self.drivers_root)
    }

    async fn start(&self, spec: &LaunchSpec) -> std::io::Result<(DriverIo, Arc<dyn Driver>)> {
        let argv = spec.language.command(&self.driver_dir(spec.language));
        let mut command = local_program(&argv);
        command
            .current_dir(&spec.workdir)
            .env_clear()
            .envs(&spec.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("driver exited before it could be watched"))?;
        let io = DriverIo {
            commands: Box::new(child.stdin.take().expect("stdin is piped")),
            events: Box::new(child.stdout.take().expect("stdout is piped")),
            diagnostics: child.stderr.take().map(|stderr| Box::new(stderr) as Box<_>),
        };
        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(reap(child, exit_tx));
        let driver = ProcessDriver {
            group: Pid::from_raw(pid as i32),
            exit: exit_rx,
        };
        Ok((io, Arc::new(driver)))
    }
}

/// A local program that goes with the runner: its own process group, so that an interrupt
/// reaches the program's children and never the runner; killed when its handle is dropped;
/// and, where util-linux's `setpriv` is installed, killed by the kernel when the runner dies,
/// even by `kill -9`, which no drop sees. (The death signal follows the thread that started
/// the program: a runtime worker thread, which lives as long as the runner.)
pub fn local_program<S: AsRef<std::ffi::OsStr>>(argv: &[S]) -> Command {
    static SETPRIV: OnceLock<bool> = OnceLock::new();
    let mut command = if *SETPRIV.get_or_init(setpriv_sets_death_signals) {
        let mut command = Command::new("setpriv");
        command.args(["--pdeathsig", "KILL", "--"]).args(argv);
        command
    } else {
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        command
    };
    command.process_group(0).kill_on_drop(true);
    command
}

/// Whether `setpriv` is installed and knows `--pdeathsig` (util-linux 2.33 and later).
fn setpriv_sets_death_signals() -> bool {
    std::process::Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Waits for the child and publishes how it ended; also kills whatever the driver left
/// behind in its process group.
async fn reap(mut child: Child, exit: watch::Sender<Option<ExitReport>>) {
    use std::os::unix::process::ExitStatusExt;
    let group = child.id().map(|pid| Pid::from_raw(pid as i32));
    let report = match child.wait().await {
        Ok(status) => ExitReport {
            code: status.code(),
            signal: status.signal(),
            oom_killed: false,
        },
        Err(error) => {
            tracing::warn!(%error, "could not wait for a driver");
            ExitReport {
                code: None,
                signal: None,
                oom_killed: false,
            }
        }
    };
    if let Some(group) = group {
        let _ = killpg(group, Signal::SIGKILL);
        // The exit is published once what the driver left behind has exited too, so a runner
        // that stops after its kernels leaves none of their processes running. A killed
        // process takes a moment to exit; zombies, which wait for a reaper, do not count.
        for _ in 0..100 {
            let gid = group.as_raw();
            let running = tokio::task::spawn_blocking(move || group_has_running(gid))
                .await
                .unwrap_or(false);
            if !running {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let _ = exit.send(Some(report));
}

/// Whether a process of process group `group` is still running (not yet a zombie), from
/// `/proc/PID/stat`: "PID (COMM) STATE PPID PGRP ...", where COMM may hold any character.
fn group_has_running(group: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(Result::ok).any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        let Some((_, after_comm)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = after_comm.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|field| field.parse::<i32>().ok());
        pgrp == Some(group) && !matches!(state, Some("Z" | "X"))
    })
}

struct ProcessDriver {
    group: Pid,
    exit: watch::Receiver<Option<ExitReport>>,
}

impl ProcessDriver {
    fn signal(&self, signal: Signal) -> std::io::Result<()> {
        if self.exit.borrow().is_some() {
            return Ok(());
        }
        match killpg(self.group, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(errno) => Err(std::io::Error::from(errno)),
        }
    }
}

#[async_trait]
impl Driver for ProcessDriver {
    async fn interrupt(&self) -> std::io::Result<()> {
        self.signal(Signal::SIGINT)
    }

    async fn kill(&self) -> std::io::Result<()> {
        self.signal(Signal::SIGKILL)
    }

    async fn wait(&self) -> ExitReport {
        ExitReport::when_published(&self.exit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::languages::BASH;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn reports_exit_and_kills_the_group() {
        let root = std::env::temp_dir().join(format!("cellgate-proc-{}", uuid::Uuid::new_v4()));
        crate::languages::install_drivers(&root).unwrap();
        let backend = ProcessBackend::new(root.clone());
        let spec = LaunchSpec {
            kernel_id: "k".into(),
            language: &BASH,
            workdir: std::env::temp_dir(),
            env: [("PATH".to_string(), std::env::var("PATH").unwrap())].into(),
            limits: None,
        };
        let (mut io, driver) = backend.start(&spec).await.unwrap();
        let mut first = [0u8; 6];
        io.events.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"ready ");
        driver.kill().await.unwrap();
        let report = driver.wait().await;
        assert_eq!(report.signal, Some(9));
        assert_eq!(report.to_string(), "killed by SIGKILL");
        std::fs::remove_dir_all(root).unwrap();
    }
}
