//! What a test does when something it needs (Docker, an image, a browser, GlusterFS, a Python
//! package) is missing. Under `CI=true` it fails, whatever else is set: CI provides everything
//! (`make test` installs it on a fresh machine). Elsewhere it fails too, with the reason,
//! unless the test's skip variable is `1`; then it says loudly that it is skipped and passes.

/// For a test whose prerequisite is missing (`problem`): returns, after saying loudly that the
/// test is skipped, only when `skip_var` is `1` outside CI; panics with the reason otherwise.
pub fn skip_or_fail(what: &str, problem: &str, skip_var: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} cannot run: {problem}. Under CI=true nothing is skipped: `make test` installs what the tests need.");
    }
    if std::env::var(skip_var).as_deref() == Ok("1") {
        eprintln!("\n!!!!!!!! SKIPPED: {what} not run: {problem} ({skip_var}=1) !!!!!!!!\n");
        return;
    }
    panic!("{what} cannot run: {problem}. Set {skip_var}=1 to skip them knowingly, or run `make test`, which provides it.");
}

/// Whether `python3` imports every module named.
pub fn python_imports(modules: &[&str]) -> Result<(), String> {
    let script = modules
        .iter()
        .map(|module| format!("import {module}"))
        .collect::<Vec<_>>()
        .join("; ");
    let output = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .map_err(|error| format!("python3 does not run: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "python3 cannot import {} ({}); `pip install -r tests/compat/requirements.txt`",
        modules.join(", "),
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .last()
            .unwrap_or_default()
    ))
}
