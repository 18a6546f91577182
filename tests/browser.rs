//! The job manager page (`/jobs`) in a real browser, headless Chromium: logging in with the
//! token link, uploading a file for its MD5, a command line killed while it runs, a refused
//! submission shown as such, deleting a job, and the nodes' load. Needs Chromium and
//! chromedriver (`apt-get install chromium chromium-driver`).

mod support;

use std::time::Duration;

use http::StatusCode;
use support::browser::{self, Browser};
use support::jobs::md5sum;
use support::Server;

const PATIENCE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_manager_page_works_in_a_browser() {
    if !browser::available() {
        return;
    }
    let server = Server::start().await;
    let browser = Browser::start().await;
    let base = format!("https://{}", server.address);

    // The token link logs the browser in and leaves a clean address.
    browser
        .goto(&format!("{base}/jobs?token={}", server.token))
        .await;
    assert_eq!(browser.current_url().await, format!("{base}/jobs"));
    browser
        .wait_for_text("#nodes tbody", PATIENCE, |text| text.contains("alive"))
        .await;

    // A file's MD5, uploaded through the form (the default kind).
    let dir = std::env::temp_dir().join(format!("cellgate-browser-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("notes ✓.txt");
    std::fs::write(&file, "hashed in a browser\n".repeat(1000)).unwrap();
    let digest = md5sum(std::slice::from_ref(&file)).remove(0);
    browser
        .type_into("input[name=files]", file.to_str().unwrap())
        .await;
    browser.click("#submit button[type=submit]").await;
    browser
        .wait_for_text("#jobs tbody", PATIENCE, |text| {
            text.contains(&digest) && text.contains("succeeded")
        })
        .await;
    let row = browser.text("#jobs tbody tr:first-child").await;
    assert!(
        row.contains("notes ✓.txt"),
        "the job is named after the file: {row}"
    );

    // A command line, killed from the page while it runs.
    browser.click("input[name=kind][value=command]").await;
    browser
        .execute(
            "document.querySelector('select[name=image]').value = arguments[0];",
            serde_json::json!(["bash"]),
        )
        .await;
    browser
        .type_into("input[name=command]", "echo started; sleep 120")
        .await;
    browser.click("#submit button[type=submit]").await;
    browser
        .wait_for_text("#jobs tbody tr:first-child", PATIENCE, |text| {
            text.contains("running")
        })
        .await;
    browser.click("#jobs tbody tr:first-child button").await;
    browser
        .wait_for_text("#jobs tbody tr:first-child", PATIENCE, |text| {
            text.contains("cancelled")
        })
        .await;

    // The server's refusal is shown, and nothing is submitted.
    browser
        .type_into("input[name=timeout_seconds]", "99999999")
        .await;
    browser.click("#submit button[type=submit]").await;
    let refused = browser
        .wait_for_text("#submit-message", PATIENCE, |text| {
            text.starts_with("Not submitted")
        })
        .await;
    assert!(refused.contains("timeout"), "{refused}");
    let jobs = server.client().get("/api/jobs").await.json();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 2, "{jobs}");

    if let Ok(path) = std::env::var("CELLGATE_SCREENSHOT") {
        browser
            .execute("window.scrollTo(0, 0);", serde_json::json!([]))
            .await;
        std::fs::write(path, browser.screenshot().await).unwrap();
    }

    // Deleting the MD5 job (now the second row) removes it from the list and the server.
    browser.click("#jobs tbody tr:nth-child(2) button").await;
    browser
        .wait_for_text("#jobs tbody", PATIENCE, |text| !text.contains(&digest))
        .await;
    let jobs = server.client().get("/api/jobs").await.json();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1, "{jobs}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_job_manager_page_needs_the_token_and_its_script_does_not() {
    let server = Server::start().await;
    let client = server.client();
    let page = client.get("/jobs").await;
    assert_eq!(page.status, StatusCode::OK);
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("<form id=\"submit\""), "{html}");
    assert!(html.contains("<option value=\"rust\">rust</option>"));
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");

    let anonymous = client.without_token().get("/jobs").await;
    assert_eq!(anonymous.status, StatusCode::FOUND);
    assert!(anonymous
        .header("location")
        .unwrap()
        .starts_with("/login?next="));

    let script = client.without_token().get("/static/jobs.js").await;
    assert_eq!(script.status, StatusCode::OK);
    assert_eq!(
        script.header("content-type").as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    assert!(String::from_utf8_lossy(&script.body).contains("/api/jobs"));
}
