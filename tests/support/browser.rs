//! A real browser for the page tests: headless Chromium driven through chromedriver's W3C
//! WebDriver HTTP API. Without Chromium the tests fail with a clear message, unless
//! CELLGATE_SKIP_BROWSER=1 says to skip them outside CI (`prerequisite`).

use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// True when Chromium and chromedriver are installed; false when the tests are to be skipped.
pub fn available() -> bool {
    let present =
        std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if present {
        return true;
    }
    let problem = "Chromium is missing (apt-get install chromium chromium-driver)";
    super::prerequisite::skip_or_fail("browser tests", problem, "CELLGATE_SKIP_BROWSER");
    false
}

/// One headless Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    profile: std::path::PathBuf,
}

impl Browser {
    pub async fn start() -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let base = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while request(&base, "GET", "/status", None).await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile =
            std::env::temp_dir().join(format!("cellgate-chromium-{}", uuid::Uuid::new_v4()));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1280,1400",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let created = request(&base, "POST", "/session", Some(capabilities))
            .await
            .expect("a browser session");
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        Browser {
            driver,
            base,
            session,
            profile,
        }
    }

    async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let answer = request(&self.base, method, &path, body)
            .await
            .unwrap_or_else(|error| panic!("{method} {path}: {error}"));
        answer["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .await;
    }

    pub async fn current_url(&self) -> String {
        self.command("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching `css`, waiting up to ten seconds for it.
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // "no such element" is an error answer: keep looking until the deadline.
            let found = request(
                &self.base,
                "POST",
                &format!("/session/{}/element", self.session),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
            if let Some(id) = found
                .as_ref()
                .ok()
                .and_then(|found| found["value"][ELEMENT].as_str())
            {
                return id.to_owned();
            }
            if Instant::now() >= deadline {
                let page = self.command("GET", "/source", None).await;
                panic!("no element matches {css} ({found:?}) in:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element like a user; the page may replace it meanwhile (the job list is
    /// redrawn every few seconds), so a stale element is looked up again.
    pub async fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let element = self.find(css).await;
            let path = format!("/session/{}/element/{element}/click", self.session);
            match request(&self.base, "POST", &path, Some(json!({}))).await {
                Ok(_) => return,
                Err(error) if Instant::now() < deadline => {
                    eprintln!("clicking {css} again: {error:.120}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("cannot click {css}: {error}"),
            }
        }
    }

    /// Types `text` into the element; for a file input, `text` is the file's path.
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Runs `script` in the page (with `arguments`) and returns its result.
    pub async fn execute(&self, script: &str, arguments: Value) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": arguments})),
        )
        .await
    }

    /// The rendered text of the first element matching `css`, read in one step in the page
    /// (so a redraw between finding and reading cannot make it stale).
    pub async fn text(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self
                .execute(
                    "const found = document.querySelector(arguments[0]);\n\
                     return found ? found.innerText : null;",
                    json!([css]),
                )
                .await;
            if let Some(text) = text.as_str() {
                return text.to_owned();
            }
            assert!(Instant::now() < deadline, "no element matches {css}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The handles of the browser's tabs, the first one opened first.
    pub async fn tabs(&self) -> Vec<String> {
        let handles = self.command("GET", "/window/handles", None).await;
        handles
            .as_array()
            .expect("a list of handles")
            .iter()
            .map(|handle| handle.as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Makes the tab `handle` the one further commands act on.
    pub async fn switch_to(&self, handle: &str) {
        self.command("POST", "/window", Some(json!({ "handle": handle })))
            .await;
    }

    /// A PNG of the page as it is now.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let encoded = self.command("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 PNG")
    }

    /// Runs `script` (with `arguments`) in the page until its answer satisfies `done`, for
    /// up to `patience`, and returns that answer; `what` names the wait in the failure, which
    /// shows the last answer.
    pub async fn wait_for_script(
        &self,
        what: &str,
        patience: Duration,
        script: &str,
        arguments: Value,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + patience;
        loop {
            let answer = self.execute(script, arguments.clone()).await;
            if done(&answer) {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting for {what} after {patience:?}; the page last answered:\n{answer:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits up to `patience` until the text of `css` satisfies `done`, and returns it.
    pub async fn wait_for_text(
        &self,
        css: &str,
        patience: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + patience;
        loop {
            let text = self.text(css).await;
            if done(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed what was awaited; it shows:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session makes chromedriver quit Chromium and wait for it, so that the
        // profile is no longer written to when it is removed. Drop cannot await: plain
        // blocking HTTP on the loopback.
        let _ = quit_session(&self.base, &self.session);
        let _ = self.driver.start_kill();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `DELETE /session/{id}`, blocking until chromedriver answers (it has closed Chromium then).
fn quit_session(base: &str, session: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(base)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        stream,
        "DELETE /session/{session} HTTP/1.1\r\nHost: {base}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    // chromedriver answers once Chromium is closed but keeps the connection open despite
    // `Connection: close`: read the head and its Content-Length body, not up to the end of the
    // stream, which would wait out the read timeout on every drop.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer_complete(&answer) {
        let read = stream.read(&mut chunk)?;
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..read]);
    }
    Ok(())
}

/// Whether `answer` holds a whole HTTP/1.1 answer: its head and as much body as its
/// Content-Length says.
fn answer_complete(answer: &[u8]) -> bool {
    let Some(end) = answer.windows(4).position(|window| window == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&answer[..end]);
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    answer.len() >= end + 4 + length
}

/// One plain-HTTP WebDriver request.
async fn request(
    base: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, String> {
    let tcp = tokio::net::TcpStream::connect(base)
        .await
        .map_err(|error| error.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|error| error.to_string())?;
    tokio::spawn(connection);
    let bytes = body.map(|body| body.to_string()).unwrap_or_default();
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", base)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|error| error.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|error| error.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| error.to_string())?
        .to_bytes();
    let value: Value = serde_json::from_slice(&body).map_err(|error| error.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {value}"));
    }
    Ok(value)
}
