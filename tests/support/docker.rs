//! Whether the Docker tests can run here. Without a Docker engine they fail with a clear
//! message, unless CELLGATE_SKIP_DOCKER=1 says to skip them, which is then announced loudly.

use std::process::Command;

/// True when Docker and cellgate's images are usable; false when the tests are to be skipped.
pub fn available(images: &[&str]) -> bool {
    let skip = std::env::var("CELLGATE_SKIP_DOCKER").as_deref() == Ok("1");
    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    let missing: Vec<&str> = images
        .iter()
        .copied()
        .filter(|image| {
            !Command::new("docker")
                .args(["image", "inspect", &format!("cellgate/{image}:latest")])
                .output()
                .map(|output| output.status.success())
                .unwrap_or(false)
        })
        .collect();
    let problem = if !engine {
        Some("no Docker engine answers (install docker.io and start dockerd)".to_owned())
    } else if !missing.is_empty() {
        Some(format!(
            "images missing: {} (run `make images`)",
            missing.join(", ")
        ))
    } else {
        None
    };
    match (problem, skip) {
        (None, _) => true,
        (Some(problem), true) => {
            eprintln!("\n!!!!!!!! SKIPPED: Docker tests not run: {problem} (CELLGATE_SKIP_DOCKER=1) !!!!!!!!\n");
            false
        }
        (Some(problem), false) => panic!(
            "Docker tests cannot run: {problem}. Set CELLGATE_SKIP_DOCKER=1 to skip them knowingly."
        ),
    }
}

/// The containers (running or not) that carry this runner-instance label prefix.
pub fn containers_of(instance: &str) -> Vec<String> {
    containers_matching(instance, &[])
}

/// The ids of containers of this runner instance that also match every `docker ps --filter`.
pub fn containers_matching(instance: &str, filters: &[&str]) -> Vec<String> {
    let mut command = Command::new("docker");
    command.args(["ps", "--all"]);
    for filter in filters {
        command.args(["--filter", filter]);
    }
    let output = command
        .args(["--format", "{{.ID}} {{.Label \"org.cellgate.runner\"}}"])
        .output()
        .expect("docker ps runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| {
            line.split_once(' ')
                .is_some_and(|(_, runner)| runner.starts_with(instance))
        })
        .map(|line| line.split(' ').next().unwrap_or_default().to_owned())
        .collect()
}
