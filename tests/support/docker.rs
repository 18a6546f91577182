//! Whether the Docker tests can run here. A test names the images it needs; those missing are
//! built (`images/build.sh`, one build at a time across test processes), so no test depends on
//! a deploy or another test having built them. Without a Docker engine the tests fail with a
//! clear message (see `prerequisite`), unless CELLGATE_SKIP_DOCKER=1 says to skip them.

use std::process::Command;

use super::prerequisite;

/// True when Docker and cellgate's images are usable, after building the missing ones; false
/// when the tests are to be skipped.
pub fn available(images: &[&str]) -> bool {
    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    let problem = if !engine {
        Some("no Docker engine answers (install docker.io and start dockerd)".to_owned())
    } else {
        build_missing(images).err()
    };
    match problem {
        None => true,
        Some(problem) => {
            prerequisite::skip_or_fail("Docker tests", &problem, "CELLGATE_SKIP_DOCKER");
            false
        }
    }
}

fn image_exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", &format!("cellgate/{image}:latest")])
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false)
}

/// Builds the images not there yet. Test binaries run in parallel threads and processes, so
/// the build holds a lock file (`flock`) and looks again once it has it.
fn build_missing(images: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = images
        .iter()
        .copied()
        .filter(|image| !image_exists(image))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/images/build.sh");
    let lock = std::env::temp_dir().join("cellgate-image-build.lock");
    eprintln!("building the missing images {missing:?} with images/build.sh");
    let output = Command::new("flock")
        .arg(&lock)
        .arg(script)
        .args(&missing)
        .output()
        .map_err(|error| format!("images/build.sh does not run: {error}"))?;
    let still_missing: Vec<&str> = missing
        .into_iter()
        .filter(|image| !image_exists(image))
        .collect();
    if output.status.success() && still_missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "images missing: {} and images/build.sh could not build them: {}",
        still_missing.join(", "),
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join(" / ")
    ))
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
