//! A runner killed with `kill -9` (no drop, no shutdown) takes its local programs with it:
//! the process backend's kernel drivers and job programs do not outlive it. Without this a
//! dead runner's job would go on writing beside the attempt that replaces it.

mod support;

use std::path::Path;
use std::time::Duration;

use support::jobs::{submit_command, JobCluster};
use support::KernelSocket;

/// Whether a process is still there (a zombie waiting for its reaper counts as gone).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn wait_for_pid_file(path: &Path) -> u32 {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the job never wrote {}", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runners_kernels_and_job_programs_die_with_it() {
    if !support::on_path("setpriv") {
        eprintln!(
            "\n*** SKIPPED: without util-linux's setpriv a killed runner's programs outlive it ***\n"
        );
        return;
    }
    let volume = std::env::temp_dir().join(format!("cellgate-death-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&volume).unwrap();
    let mut cluster = JobCluster::start(std::slice::from_ref(&volume), 1, 5).await;
    let client = cluster.client();

    let kernel = client.start_kernel("python3").await;
    let mut socket =
        KernelSocket::connect(&cluster.gateway.address, &cluster.gateway.token, &kernel).await;
    let kernel_pid: u32 = socket
        .execute("import os; os.getpid()")
        .await
        .result()
        .expect("the kernel answers with its pid")
        .parse()
        .unwrap();

    let pid_file = cluster.scratch.join("job.pid");
    let command = format!("echo $$ > '{}'; exec sleep 3000", pid_file.display());
    submit_command(&client, &command, 0).await;
    let job_pid = wait_for_pid_file(&pid_file).await;
    assert!(alive(kernel_pid) && alive(job_pid));

    cluster.runners[0].kill().await;
    for _ in 0..200 {
        if !alive(kernel_pid) && !alive(job_pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(kernel_pid), "the kernel driver outlived its runner");
    assert!(!alive(job_pid), "the job program outlived its runner");
    let _ = std::fs::remove_dir_all(&volume);
}
