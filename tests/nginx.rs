//! The nginx edge's configuration (nginx/cellgate.conf) passes `nginx -t`. Needs nginx on the
//! machine (`make test` installs it: `apt-get install nginx-light`); without it the test
//! fails, unless CELLGATE_SKIP_NGINX=1 skips it outside CI.

mod support;

use std::process::Command;

#[test]
fn the_nginx_edge_configuration_is_valid() {
    let output = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/nginx/check.sh"))
        .output()
        .expect("nginx/check.sh runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.code() == Some(3) {
        support::prerequisite::skip_or_fail(
            "the nginx configuration test",
            "nginx is not installed",
            "CELLGATE_SKIP_NGINX",
        );
        return;
    }
    assert!(output.status.success(), "nginx -t failed:\n{text}");
    assert!(text.contains("test is successful"), "{text}");
}
