//! The pages in a real browser, headless Chromium. The notebook editor: cells that keep state,
//! errors, `input()`, a plot, an interrupt, a reload that finds the same kernel and cells, the
//! notebook as .ipynb, a Markdown cell, HTML output stripped of what could act, a kernel that
//! dies replaced by a new one, and a shutdown in the middle of a cell. The job manager: logging in with the token link, uploading a file
//! for its MD5, a program run in its language, a command line killed while it runs, a refused submission shown as such,
//! deleting a job, and the nodes' load. Needs Chromium and chromedriver (`apt-get install
//! chromium chromium-driver`).

mod support;

use std::time::Duration;

use http::StatusCode;
use support::browser::{self, Browser};
use support::jobs::md5sum;
use support::Server;

const PATIENCE: Duration = Duration::from_secs(60);
/// WebDriver keys: Shift+Enter runs a cell and moves to the next; Enter alone.
const SHIFT_ENTER: &str = "\u{E008}\u{E007}";
const ENTER: &str = "\u{E007}";

/// The output text of cell `index` (from 1) once it shows `expected`.
async fn output_of(browser: &Browser, index: usize, expected: &str) -> String {
    browser
        .wait_for_text(
            &format!("#cells .cell:nth-child({index}) .outputs"),
            PATIENCE,
            |text| text.contains(expected),
        )
        .await
}

/// Types `code` into cell `index` and runs it with Shift+Enter.
async fn run(browser: &Browser, index: usize, code: &str) {
    let editor = format!("#cells .cell:nth-child({index}) textarea");
    browser
        .type_into(&editor, &format!("{code}{SHIFT_ENTER}"))
        .await;
}

/// A server and a browser logged in through the token link to `page`, which the link leaves
/// with a clean address; `None` when browser tests are skipped.
async fn open(page: &str) -> Option<(Server, Browser, String)> {
    if !browser::available() {
        return None;
    }
    let server = Server::start().await;
    let browser = Browser::start().await;
    let base = format!("https://{}", server.address);
    let separator = if page.contains('?') { '&' } else { '?' };
    browser
        .goto(&format!("{base}{page}{separator}token={}", server.token))
        .await;
    assert_eq!(browser.current_url().await, format!("{base}{page}"));
    Some((server, browser, base))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notebook_runs_cells_in_a_browser() {
    let Some((server, browser, base)) = open("/notebook?kernel=python3").await else {
        return;
    };
    // No kernel until the first run.
    assert_eq!(browser.text("#kernel-state").await, "no kernel");

    // State between cells; Shift+Enter moves on to a new cell.
    run(&browser, 1, "x = 6 * 7\nx").await;
    output_of(&browser, 1, "42").await;
    run(&browser, 2, "print(x + 1)").await;
    output_of(&browser, 2, "43").await;
    assert_eq!(
        browser.text("#cells .cell:nth-child(1) .prompt").await,
        "[1]:"
    );

    // An error shows its traceback; input() asks in the page.
    run(&browser, 3, "1 / 0").await;
    output_of(&browser, 3, "ZeroDivisionError").await;
    run(&browser, 4, "name = input('who? ')\nprint('hello', name)").await;
    browser
        .type_into(
            "#cells .cell:nth-child(4) .input-request input",
            &format!("cellgate{ENTER}"),
        )
        .await;
    output_of(&browser, 4, "hello cellgate").await;

    // A plot arrives as an image the browser can draw.
    run(
        &browser,
        5,
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()",
    )
    .await;
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let width = browser
            .execute(
                "const image = document.querySelector('#cells .cell:nth-child(5) .outputs img');\n\
                 return image && image.complete ? image.naturalWidth : 0;",
                serde_json::json!([]),
            )
            .await;
        if width.as_u64().unwrap_or(0) > 100 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no plot was drawn");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // HTML output keeps its table and loses whatever could act: forms, refreshes, styles,
    // scripts, handlers.
    let cell = browser.text("#cells .cell:last-child .prompt").await;
    assert_eq!(cell, "[ ]:");
    run(
        &browser,
        6,
        "class Rich:\n    def _repr_html_(self):\n        return ('<table><tr><th>a</th></tr><tr><td onclick=\"alert(1)\">1</td></tr></table>'\n            '<meta http-equiv=\"refresh\" content=\"0;url=/logout\">'\n            '<style>body { display: none }</style>'\n            '<form action=\"/api/jobs\" method=\"post\"><button>go</button></form>'\n            '<script>document.title = \"owned\"</script>')\nRich()",
    )
    .await;
    output_of(&browser, 6, "1").await;
    let left = browser
        .execute(
            "const box = document.querySelector('#cells .cell:nth-child(6) .outputs');\n\
             return [box.querySelectorAll('table td').length,\n\
                 box.querySelectorAll('meta, style, form, button, script, [onclick]').length];",
            serde_json::json!([]),
        )
        .await;
    assert_eq!(left, serde_json::json!([1, 0]));
    browser
        .click("#cells .cell:nth-child(6) button[title='Delete this cell']")
        .await;

    // A cell that never ends, interrupted from the toolbar.
    run(&browser, 6, "import time\nwhile True:\n    time.sleep(0.1)").await;
    browser
        .wait_for_text("#kernel-state", PATIENCE, |text| text == "busy")
        .await;
    browser.click("#interrupt").await;
    output_of(&browser, 6, "KeyboardInterrupt").await;

    // A Markdown cell, shown rendered.
    browser.click("#add-markdown").await;
    browser
        .type_into(
            "#cells .cell:nth-child(8) textarea",
            &format!(
                "# Results\nThe answer is **42**, see [the docs](https://example.org/x).\n\n- one\n- two{SHIFT_ENTER}"
            ),
        )
        .await;
    let rendered = browser
        .execute(
            "const box = document.querySelector('#cells .cell:nth-child(8) .rendered');\n\
             return box && [box.querySelector('h1').textContent, box.querySelector('strong').textContent,\n\
                 box.querySelectorAll('li').length, box.querySelector('a').href];",
            serde_json::json!([]),
        )
        .await;
    assert_eq!(
        rendered,
        serde_json::json!(["Results", "42", 2, "https://example.org/x"])
    );

    if let Ok(path) = std::env::var("CELLGATE_SCREENSHOT") {
        let path = path.replace(".png", "-notebook.png");
        std::fs::write(path, browser.screenshot().await).unwrap();
    }

    // A reload finds the same cells and the same kernel, with its state.
    browser.goto(&format!("{base}/notebook")).await;
    browser
        .wait_for_text("#kernel-state", PATIENCE, |text| text == "idle")
        .await;
    let first = browser
        .execute(
            "return document.querySelector('#cells .cell:nth-child(1) textarea').value;",
            serde_json::json!([]),
        )
        .await;
    assert_eq!(first, "x = 6 * 7\nx");
    output_of(&browser, 1, "42").await;
    run(&browser, 7, "print(x * 2)").await;
    output_of(&browser, 7, "84").await;
    let kernels = server.client().get("/api/kernels").await.json();
    assert_eq!(kernels.as_array().unwrap().len(), 1, "{kernels}");

    // The notebook as .ipynb: nbformat 4, its sources and outputs.
    let notebook = browser
        .execute("return notebookJson();", serde_json::json!([]))
        .await;
    assert_eq!(notebook["nbformat"], 4);
    assert_eq!(notebook["metadata"]["kernelspec"]["name"], "python3");
    let cells = notebook["cells"].as_array().unwrap();
    assert!(cells.len() >= 7, "{notebook}");
    assert_eq!(cells[1]["source"], "print(x + 1)");
    assert_eq!(cells[1]["outputs"][0]["output_type"], "stream");
    assert_eq!(cells[1]["outputs"][0]["text"], "43\n");
    assert_eq!(cells[7]["cell_type"], "markdown");
    assert_eq!(cells[4]["outputs"][0]["output_type"], "display_data");
    assert!(cells[4]["outputs"][0]["data"]["image/png"].is_string());

    // A reload while a cell runs: what the cell printed meanwhile still reaches it, and it
    // ends with its execution count.
    let count = cells.len();
    run(
        &browser,
        count,
        "import time\nprint('before', flush=True)\ntime.sleep(3)\nprint('after')",
    )
    .await;
    output_of(&browser, count, "before").await;
    browser.goto(&format!("{base}/notebook")).await;
    let output = output_of(&browser, count, "after").await;
    assert_eq!(output.matches("before").count(), 1, "{output}");
    let prompt = format!("#cells .cell:nth-child({count}) .prompt");
    browser
        .wait_for_text(&prompt, PATIENCE, |text| {
            text.trim_start_matches('[')
                .trim_end_matches("]:")
                .parse::<u32>()
                .is_ok()
        })
        .await;

    // A kernel that dies is restarted, and the page says its variables are gone; the next
    // cell runs in the fresh one.
    let count = count + 1;
    run(&browser, count, "import os\nos._exit(3)").await;
    browser
        .wait_for_text("#notebook-message", PATIENCE, |text| {
            text.contains("died and is being restarted")
        })
        .await;
    run(&browser, count + 1, "print('a new kernel')").await;
    output_of(&browser, count + 1, "a new kernel").await;

    // Shut down while a cell runs: the cell ends, the kernel goes, and the next run works.
    run(&browser, count + 2, "while True:\n    pass").await;
    browser
        .wait_for_text("#kernel-state", PATIENCE, |text| text == "busy")
        .await;
    browser.click("#shutdown").await;
    browser
        .wait_for_text("#kernel-state", PATIENCE, |text| text == "no kernel")
        .await;
    run(&browser, count + 3, "print('after the shutdown')").await;
    output_of(&browser, count + 3, "after the shutdown").await;
    let deadline = std::time::Instant::now() + PATIENCE;
    while server
        .client()
        .get("/api/kernels")
        .await
        .json()
        .as_array()
        .unwrap()
        .len()
        != 1
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the old kernel was not shut down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notebook_open_in_two_tabs_says_so() {
    let Some((_server, browser, base)) = open("/notebook").await else {
        return;
    };
    browser
        .execute(
            "window.open(arguments[0]);",
            serde_json::json!([format!("{base}/notebook")]),
        )
        .await;
    let tabs = browser.tabs().await;
    assert_eq!(tabs.len(), 2, "{tabs:?}");
    browser.switch_to(&tabs[1]).await;
    browser
        .type_into(
            "#cells .cell:nth-child(1) textarea",
            "edited in the second tab",
        )
        .await;
    browser.switch_to(&tabs[0]).await;
    browser
        .wait_for_text("#notebook-message", PATIENCE, |text| {
            text.contains("open in another tab")
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_manager_page_works_in_a_browser() {
    let Some((server, browser, _)) = open("/jobs").await else {
        return;
    };
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

    // A program, its language told by its extension.
    let program = dir.join("answer.py");
    std::fs::write(&program, "print(6 * 7)\n").unwrap();
    browser.click("input[name=kind][value=run]").await;
    browser
        .type_into("input[name=files]", program.to_str().unwrap())
        .await;
    browser.click("#submit button[type=submit]").await;
    let row = browser
        .wait_for_text("#jobs tbody tr:first-child", PATIENCE, |text| {
            text.contains("answer.py") && text.contains("succeeded")
        })
        .await;
    assert!(row.contains("exit 0"), "{row}");
    let listed = server.client().get("/api/jobs?order=newest").await.json();
    let id = listed["jobs"][0]["id"].as_str().unwrap().to_owned();
    let stdout = server
        .client()
        .get(&format!("/api/jobs/{id}/files/stdout"))
        .await;
    assert_eq!(String::from_utf8_lossy(&stdout.body), "42\n");

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
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 3, "{jobs}");

    if let Ok(path) = std::env::var("CELLGATE_SCREENSHOT") {
        browser
            .execute("window.scrollTo(0, 0);", serde_json::json!([]))
            .await;
        std::fs::write(path, browser.screenshot().await).unwrap();
    }

    // Deleting the MD5 job (now the third row) removes it from the list and the server.
    browser.click("#jobs tbody tr:nth-child(3) button").await;
    browser
        .wait_for_text("#jobs tbody", PATIENCE, |text| !text.contains(&digest))
        .await;
    let jobs = server.client().get("/api/jobs").await.json();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 2, "{jobs}");
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
