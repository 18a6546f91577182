//! A real jupyter_server, started with `--gateway-url` pointing at cellgate, runs a cell: what
//! JupyterLab users do. Needs `pip install jupyter_server`; without it the test fails with a
//! clear message, unless CELLGATE_SKIP_JUPYTER=1 says to skip it, which is announced loudly.

mod support;

use support::Server;

fn jupyter_server_available() -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", "import jupyter_server, tornado"])
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    if found {
        return true;
    }
    if std::env::var("CELLGATE_SKIP_JUPYTER").as_deref() == Ok("1") {
        eprintln!("\n!!!!!!!! SKIPPED: jupyter_server is not installed (CELLGATE_SKIP_JUPYTER=1) !!!!!!!!\n");
        return false;
    }
    panic!("jupyter_server is not installed for python3: pip install jupyter_server (or set CELLGATE_SKIP_JUPYTER=1 to skip knowingly)");
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
