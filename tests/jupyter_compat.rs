//! A real jupyter_server, started with `--gateway-url` pointing at cellgate, runs a cell: what
//! JupyterLab users do. Needs `pip install jupyter_server`; without it the test fails with a
//! clear message, unless CELLGATE_SKIP_JUPYTER=1 says to skip it outside CI.

mod support;

use support::Server;

fn jupyter_server_available() -> bool {
    match support::prerequisite::python_imports(&["jupyter_server", "tornado"]) {
        Ok(()) => true,
        Err(problem) => {
            support::prerequisite::skip_or_fail(
                "the jupyter_server test",
                &problem,
                "CELLGATE_SKIP_JUPYTER",
            );
            false
        }
    }
}

#[tokio::test]
async fn jupyter_server_runs_cells_through_cellgate_as_its_gateway() {
    if !jupyter_server_available() {
        return;
    }
    let server = Server::start().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/compat/jupyter_server_gateway.py"
    );
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg(format!("https://{}", server.address))
        .arg(&server.token)
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("4 passed, 0 failed"), "{stdout}");
}
