//! Real, unmodified Jupyter client code against cellgate's Docker kernels: the
//! `jupyter_kernel_test` suite for every notebook language that has samples in
//! `tests/compat/samples/` (`tests/compat/conformance.py`), and multi-cell notebooks run by
//! nbclient and papermill (`tests/compat/notebook_run.py`).
//!
//! Needs Docker with `make images`, and `pip install -r tests/compat/requirements.txt`. Under
//! `CI=true` anything missing fails the test; elsewhere a missing Python package skips it
//! loudly, and missing Docker follows `support::docker::available` (`CELLGATE_SKIP_DOCKER=1`).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cellgate_kernel_runner::languages;
use support::Server;

/// The Python modules the scripts import.
const PYTHON_MODULES: &[&str] = &[
    "jupyter_kernel_test",
    "jupyter_server",
    "jupyter_client",
    "nbclient",
    "nbformat",
    "papermill",
];

/// How long one script may take: the slowest kernels (Java, Octave) need a while to start.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(900);

/// The two tests each start a server with containers; on a small machine they take turns.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat")
}

/// The kernelspecs that have a samples module, sorted.
fn languages_with_samples() -> Vec<String> {
    let dir = compat_dir().join("samples");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{} cannot be read: {error}", dir.display()))
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".py")?;
            (!stem.starts_with('_')).then(|| stem.to_owned())
        })
        .collect();
    names.sort();
    names
}

/// The image each kernelspec runs in, from the runner's own language table.
fn image_of(kernelspec: &str) -> &'static str {
    languages::ALL
        .iter()
        .find(|language| language.kernel_name == kernelspec)
        .map(|language| language.image)
        .unwrap_or_else(|| {
            panic!("tests/compat/samples/{kernelspec}.py names no kernelspec cellgate knows")
        })
}

/// Whether the Python side can run; false (said loudly) when the test is to be skipped.
fn python_side_available() -> bool {
    let import = format!("import {}", PYTHON_MODULES.join(", "));
    let problem = match std::process::Command::new("python3")
        .args(["-c", &import])
        .output()
    {
        Ok(output) if output.status.success() => return true,
        Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        Err(error) => format!("python3 cannot be run: {error}"),
    };
    let advice = "pip install -r tests/compat/requirements.txt";
    if in_ci() {
        panic!("the Jupyter client packages are missing under CI=true ({advice}): {problem}");
    }
    eprintln!(
        "\n!!!! SKIPPED jupyter_conformance: the Jupyter client packages are missing ({advice}): {problem} !!!!\n"
    );
    false
}

/// Docker and the images of `kernelspecs`, or a loud skip (never under CI).
fn docker_available(kernelspecs: &[String]) -> bool {
    let images: Vec<&str> = kernelspecs.iter().map(|name| image_of(name)).collect();
    if support::docker::available(&images) {
        return true;
    }
    assert!(
        !in_ci(),
        "Docker or the images {images:?} are missing under CI=true; CELLGATE_SKIP_DOCKER cannot skip this here"
    );
    false
}

/// Runs one of the compat scripts and returns whether it succeeded and what it printed.
async fn run_script(script: &str, args: &[&str]) -> (bool, String) {
    let path = compat_dir().join(script);
    let run = tokio::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("{script} {args:?} did not end within {SCRIPT_TIMEOUT:?}"))
        .expect("python3 runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

async fn docker_server() -> Server {
    Server::start_with(&["--backend", "docker"]).await
}

#[tokio::test]
async fn jupyter_kernel_test_passes_for_every_notebook_language() {
    let kernelspecs = languages_with_samples();
    assert!(
        !kernelspecs.is_empty(),
        "tests/compat/samples has no samples"
    );
    if !python_side_available() || !docker_available(&kernelspecs) {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let server = docker_server().await;
    let offered = server.client().get("/api/kernelspecs").await.json();
    let missing: Vec<&String> = kernelspecs
        .iter()
        .filter(|name| offered["kernelspecs"].get(name.as_str()).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "languages with samples but no kernelspec on the server: {missing:?} (offered: {})",
        offered["kernelspecs"]
    );

    let url = format!("https://{}", server.address);
    let mut failed = Vec::new();
    for kernelspec in &kernelspecs {
        let (passed, printed) =
            run_script("conformance.py", &[&url, &server.token, kernelspec]).await;
        eprintln!("{printed}");
        if !passed {
            failed.push(kernelspec.as_str());
        }
    }
    assert!(
        failed.is_empty(),
        "jupyter_kernel_test failed for {failed:?} (each language's report is above)"
    );
}

#[tokio::test]
async fn notebooks_run_with_nbclient_and_papermill() {
    let kernelspecs = ["python3".to_owned(), "bash".to_owned()];
    if !python_side_available() || !docker_available(&kernelspecs) {
        return;
    }
    let _turn = ONE_AT_A_TIME.lock().await;
    let server = docker_server().await;
    let url = format!("https://{}", server.address);
    let (passed, printed) = run_script("notebook_run.py", &[&url, &server.token]).await;
    eprintln!("{printed}");
    assert!(passed, "notebook runs failed:\n{printed}");
    assert!(printed.contains(" 0 failed"), "{printed}");
}
