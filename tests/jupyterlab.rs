//! JupyterLab itself, in headless Chromium, with cellgate as its gateway (`jupyter lab
//! --gateway-url=...`, kernels in Docker): a user opens a Python notebook, runs cells that keep
//! state, sees a traceback, a plot and an `input()` prompt, interrupts a long cell, restarts the
//! kernel from the Kernel menu without being told it died, shuts it down, and then does the
//! basics in Bash and JavaScript notebooks. Needs Docker with the python, bash and javascript
//! images, Chromium and chromedriver, and JupyterLab (`pip install -r
//! tests/compat/requirements-lab.txt`).

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::browser::{self, Browser};
use support::Server;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long anything a user waits for may take: a kernel container starting, a cell running.
const PATIENCE: Duration = Duration::from_secs(90);
/// The page-side half of the test, injected into JupyterLab's page.
const LAB_JS: &str = include_str!("compat/jupyterlab/lab.js");
const REQUIREMENTS: &str = include_str!("compat/requirements-lab.txt");
/// The WebDriver key for Enter.
const ENTER: &str = "\u{E007}";

/// The basics in a notebook of another language: a first cell that defines something and
/// prints, a second that uses it.
struct LanguageCase {
    kernel: &'static str,
    display_name: &'static str,
    define: &'static str,
    defined: &'static str,
    use_it: &'static str,
    used: &'static str,
}

const OTHER_LANGUAGES: &[LanguageCase] = &[
    LanguageCase {
        kernel: "bash",
        display_name: "Bash",
        define: "n=41\necho \"n is $n\"",
        defined: "n is 41",
        use_it: "echo $((n + 1))",
        used: "42",
    },
    LanguageCase {
        kernel: "javascript",
        display_name: "JavaScript (Node.js)",
        define: "let n = 41;\nconsole.log(`n is ${n}`);",
        defined: "n is 41",
        use_it: "n + 1",
        used: "42",
    },
];

/// Whether everything the test needs is here: each missing piece fails the test, unless its
/// skip variable says to skip knowingly outside CI (`support::prerequisite`).
fn prerequisites() -> bool {
    support::docker::available(&["python", "bash", "javascript"])
        && browser::available()
        && jupyterlab_available()
}

fn jupyterlab_available() -> bool {
    match support::prerequisite::python_imports(&["jupyterlab", "jupyter_server"]) {
        Ok(()) => true,
        Err(problem) => {
            support::prerequisite::skip_or_fail(
                "the JupyterLab test",
                &format!("{problem} (JupyterLab: tests/compat/requirements-lab.txt)"),
                "CELLGATE_SKIP_JUPYTER",
            );
            false
        }
    }
}

/// The versions of JupyterLab and jupyter_server in use, said in the test's output (a version
/// other than the pinned one is announced, since the page it drives may differ).
fn report_versions() {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import jupyterlab, jupyter_server; print(f'jupyterlab=={jupyterlab.__version__}'); \
             print(f'jupyter_server=={jupyter_server.__version__}')",
        ])
        .output()
        .expect("python3 runs");
    let installed = String::from_utf8_lossy(&output.stdout);
    for line in installed.lines() {
        let pinned = REQUIREMENTS.lines().any(|pin| pin.trim() == line.trim());
        if pinned {
            eprintln!("using {line}");
        } else {
            eprintln!("!!!! using {line}, not the version pinned in tests/compat/requirements-lab.txt !!!!");
        }
    }
}

/// A `jupyter lab` whose kernels are cellgate's, on an ephemeral port, with the application
/// exposed to the page; killed when dropped.
struct JupyterLab {
    url: String,
    child: Child,
    dir: std::path::PathBuf,
}

impl JupyterLab {
    async fn start(server: &Server) -> JupyterLab {
        let dir = std::env::temp_dir().join(format!("cellgate-lab-{}", uuid::Uuid::new_v4()));
        for sub in [
            "root",
            "config",
            "data",
            "runtime",
            "settings",
            "workspaces",
        ] {
            std::fs::create_dir_all(dir.join(sub)).expect("a temporary directory");
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        let path = |sub: &str| dir.join(sub).display().to_string();
        let mut child = Command::new("python3")
            .args(["-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1"])
            // CI runs as root, which jupyter_server refuses without this.
            .arg("--allow-root")
            .args(["--ServerApp.port=0", "--ServerApp.port_retries=0"])
            .arg(format!("--ServerApp.root_dir={}", path("root")))
            .arg(format!("--IdentityProvider.token={token}"))
            .arg(format!("--gateway-url=https://{}", server.address))
            .arg(format!("--GatewayClient.auth_token={}", server.token))
            .arg("--GatewayClient.validate_cert=False")
            .arg("--LabApp.expose_app_in_browser=True")
            .arg(format!("--LabApp.user_settings_dir={}", path("settings")))
            .arg(format!("--LabApp.workspaces_dir={}", path("workspaces")))
            // Nothing from outside: no news feed, no update check.
            .arg("--LabApp.news_url=None")
            .arg("--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate")
            .env("JUPYTER_CONFIG_DIR", path("config"))
            .env("JUPYTER_DATA_DIR", path("data"))
            .env("JUPYTER_RUNTIME_DIR", path("runtime"))
            .current_dir(dir.join("root"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("jupyter lab starts");
        // jupyter_server logs to stderr, and names its address there once it listens.
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = lines.next_line().await.expect("stderr is readable") {
                eprintln!("jupyter lab | {line}");
                if let Some(at) = line.find("http://127.0.0.1:") {
                    let address = line[at..].split_whitespace().next().unwrap_or_default();
                    if let Some((base, _)) = address.split_once("/lab") {
                        return base.to_owned();
                    }
                }
            }
            panic!("jupyter lab exited before it listened");
        })
        .await
        .expect("jupyter lab listens within the patience");
        // Keep showing its log (gateway errors appear there) and never let the pipe fill.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("jupyter lab | {line}");
            }
        });
        JupyterLab {
            url: format!("{url}/lab?token={token}"),
            child,
            dir,
        }
    }
}

impl Drop for JupyterLab {
    fn drop(&mut self) {
        support::stop_gracefully(&mut self.child, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The browser on JupyterLab's page, with the test's helper loaded into it.
struct Lab {
    browser: Browser,
}

impl Lab {
    async fn open(lab: &JupyterLab) -> Lab {
        let browser = Browser::start().await;
        browser.goto(&lab.url).await;
        browser
            .wait_for_script(
                "JupyterLab's application in the page",
                PATIENCE,
                "return !!(window.jupyterapp && window.jupyterapp.commands\n\
                     && window.jupyterapp.commands.hasCommand('notebook:create-new'));",
                json!([]),
                |ready| ready == &Value::Bool(true),
            )
            .await;
        browser.execute(LAB_JS, json!([])).await;
        Lab { browser }
    }

    /// Calls `cellgateLab.NAME(arguments...)` in the page.
    async fn call(&self, name: &str, arguments: Value) -> Value {
        self.browser
            .execute(
                &format!("return window.cellgateLab.{name}(...arguments);"),
                arguments,
            )
            .await
    }

    /// Polls `cellgateLab.NAME(arguments...)` until `done` accepts its answer.
    async fn until(
        &self,
        what: &str,
        name: &str,
        arguments: Value,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        self.browser
            .wait_for_script(
                what,
                PATIENCE,
                &format!("return window.cellgateLab.{name}(...arguments);"),
                arguments,
                done,
            )
            .await
    }

    /// Opens a new notebook on `kernel` and waits until its kernel is idle.
    async fn new_notebook(&self, kernel: &str) -> Value {
        self.call("newNotebook", json!([kernel])).await;
        let state = self
            .until(
                &format!("a new {kernel} notebook with an idle kernel"),
                "kernel",
                json!([]),
                |state| state.get("failure").is_some() || state["status"] == "idle",
            )
            .await;
        assert!(
            state.get("failure").is_none(),
            "JupyterLab could not open a {kernel} notebook: {}",
            state["failure"]
        );
        state
    }

    /// Runs `code` in the active cell (it moves on to a new one) and returns the cell's index.
    async fn run(&self, code: &str) -> u64 {
        self.call("run", json!([code]))
            .await
            .as_u64()
            .expect("the index of the cell run")
    }

    /// What cell `index` shows once `done` accepts it.
    async fn cell_until(&self, index: u64, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.until(what, "cell", json!([index]), done).await
    }

    /// Runs `code` and waits until its cell has finished (a number in its prompt) and shows
    /// `expected` in its output; returns what the cell shows.
    async fn run_and_see(&self, code: &str, expected: &str) -> Value {
        let index = self.run(code).await;
        self.cell_until(index, &format!("{expected:?} from {code:?}"), |cell| {
            finished(cell) && output(cell).contains(expected)
        })
        .await
    }

    async fn kernel(&self) -> Value {
        self.call("kernel", json!([])).await
    }

    async fn kernel_until(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        self.until(what, "kernel", json!([]), done).await
    }

    /// Says which step the test is at, in its output and in the page's console record.
    async fn step(&self, step: &str) {
        eprintln!("---- {step}");
        self.call("mark", json!([step])).await;
    }

    /// Says in the test's output what the page logged as errors or warnings so far.
    async fn report_console(&self) {
        let logged = self
            .browser
            .execute("return window.cellgateLab.console;", json!([]))
            .await;
        for line in logged.as_array().into_iter().flatten() {
            eprintln!("page console | {}", line.as_str().unwrap_or_default());
        }
    }

    async fn dialogs(&self) -> Vec<String> {
        let dialogs = self.call("dialogs", json!([])).await;
        serde_json::from_value(dialogs).expect("a list of dialog texts")
    }

    /// Waits for a dialog that says `title` and clicks its accept button, as the user would.
    async fn accept_dialog(&self, title: &str) {
        self.until(
            &format!("the {title:?} dialog"),
            "dialogs",
            json!([]),
            |dialogs| {
                dialogs.as_array().is_some_and(|all| {
                    all.iter()
                        .any(|one| one.as_str().unwrap_or("").contains(title))
                })
            },
        )
        .await;
        self.browser.click(".jp-Dialog .jp-mod-accept").await;
        self.until(
            &format!("the {title:?} dialog to close"),
            "dialogs",
            json!([]),
            |dialogs| dialogs.as_array().is_some_and(Vec::is_empty),
        )
        .await;
    }
}

fn output(cell: &Value) -> &str {
    cell["output"].as_str().unwrap_or_default()
}

/// A cell has run when its prompt holds its execution count, `[3]:`.
fn finished(cell: &Value) -> bool {
    cell["prompt"]
        .as_str()
        .and_then(|prompt| prompt.strip_prefix('['))
        .and_then(|prompt| prompt.strip_suffix("]:"))
        .is_some_and(|count| count.parse::<u32>().is_ok())
}

/// The kernels cellgate has, as its REST API lists them.
async fn kernels(server: &Server) -> Vec<Value> {
    let listed = server.client().get("/api/kernels").await.json();
    listed.as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_runs_notebooks_through_cellgate() {
    if !prerequisites() {
        return;
    }
    report_versions();
    let began = Instant::now();
    let server = Server::start_with(&["--backend", "docker"]).await;
    let jupyter = JupyterLab::start(&server).await;
    let lab = Lab::open(&jupyter).await;
    eprintln!("JupyterLab is up after {:?}", began.elapsed());

    // A new Python notebook gets a cellgate kernel.
    lab.step("a new Python notebook").await;
    let kernel = lab.new_notebook("python3").await;
    assert_eq!(kernel["name"], "Python 3", "{kernel}");
    let listed = kernels(&server).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], kernel["id"], "{listed:?}");

    // State across cells, the execution count in the prompt.
    lab.step("state across cells").await;
    let first = lab.run_and_see("x = 6 * 7\nx", "42").await;
    assert_eq!(first["prompt"], "[1]:", "{first}");
    lab.run_and_see("print(x + 1)", "43").await;

    // An error, shown with its traceback.
    lab.step("an error").await;
    let error = lab.run_and_see("1 / 0", "ZeroDivisionError").await;
    assert!(output(&error).contains("Traceback"), "{error}");
    assert_eq!(error["types"], json!(["error"]), "{error}");
    assert_eq!(error["errors"], 1, "the error is shown as one: {error}");

    // A plot, drawn as an image.
    lab.step("a plot").await;
    let index = lab
        .run("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()")
        .await;
    let plot = lab
        .cell_until(index, "the plot drawn", |cell| {
            cell["images"]
                .as_array()
                .is_some_and(|widths| widths.iter().any(|width| width.as_u64() > Some(100)))
        })
        .await;
    assert_eq!(plot["types"], json!(["display_data"]), "{plot}");

    // input() asks in the cell; the answer reaches the code.
    lab.step("input()").await;
    let index = lab.run("name = input('who? ')\nprint('hello', name)").await;
    let asking = lab
        .cell_until(index, "the input prompt", |cell| cell["stdin"] == true)
        .await;
    assert!(output(&asking).contains("who?"), "{asking}");
    lab.browser
        .type_into(".jp-Stdin-input", &format!("cellgate{ENTER}"))
        .await;
    lab.cell_until(index, "the answer used", |cell| {
        finished(cell) && output(cell).contains("hello cellgate")
    })
    .await;

    // A long cell, interrupted from the Kernel menu: KeyboardInterrupt, and the kernel goes on
    // with its state.
    lab.step("an interrupt").await;
    let index = lab.run("import time\ntime.sleep(600)").await;
    lab.kernel_until("the kernel busy with the long cell", |kernel| {
        kernel["status"] == "busy"
    })
    .await;
    lab.call("command", json!(["kernelmenu:interrupt"])).await;
    let interrupted = lab
        .cell_until(index, "KeyboardInterrupt", |cell| {
            finished(cell) && output(cell).contains("KeyboardInterrupt")
        })
        .await;
    assert_eq!(interrupted["types"], json!(["error"]), "{interrupted}");
    lab.kernel_until("the kernel idle after the interrupt", |kernel| {
        kernel["status"] == "idle"
    })
    .await;
    lab.run_and_see("print('still', x)", "still 42").await;

    // A restart from the Kernel menu, confirmed in its dialog: the kernel comes back empty,
    // and JupyterLab never takes it for a kernel that died.
    lab.step("a restart").await;
    let before = lab.kernel().await;
    let seen_before = before["statuses"].as_array().map_or(0, Vec::len);
    lab.call("command", json!(["kernelmenu:restart"])).await;
    lab.accept_dialog("Restart Kernel?").await;
    let restarted = lab
        .kernel_until("the kernel restarted and idle", |kernel| {
            let statuses = kernel["statuses"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let since = statuses.get(seen_before..).unwrap_or(&[]);
            since.iter().any(|status| status == "restarting") && kernel["status"] == "idle"
        })
        .await;
    assert_eq!(restarted["id"], before["id"], "a restart keeps the kernel");
    let gone = lab.run_and_see("x", "NameError").await;
    assert_eq!(gone["types"], json!(["error"]), "{gone}");
    let statuses = lab.kernel().await["statuses"].clone();
    eprintln!("the Python notebook's kernel went through {statuses}");
    let dialogs = lab.dialogs().await;
    assert!(
        dialogs.is_empty(),
        "JupyterLab showed a dialog after a requested restart: {dialogs:?} (statuses {statuses})"
    );
    assert!(
        !statuses
            .as_array()
            .is_some_and(|all| all.iter().any(|status| status == "autorestarting")),
        "JupyterLab took the requested restart for a kernel that died: statuses {statuses}"
    );
    lab.run_and_see("y = 'fresh'\nprint(y)", "fresh").await;

    if let Ok(path) = std::env::var("CELLGATE_SCREENSHOT") {
        let path = path.replace(".png", "-jupyterlab.png");
        std::fs::write(path, lab.browser.screenshot().await).expect("the screenshot is written");
    }

    // A shutdown from the Kernel menu: the notebook has no kernel, nor has cellgate.
    lab.step("a shutdown").await;
    lab.call("command", json!(["kernelmenu:shutdown"])).await;
    lab.kernel_until("no kernel in the notebook", |kernel| kernel["id"].is_null())
        .await;
    support::eventually("cellgate to have no kernel", || async {
        kernels(&server).await.is_empty().then_some(())
    })
    .await;

    // Other languages: a new notebook, state across cells, output.
    for case in OTHER_LANGUAGES {
        lab.step(&format!("a {} notebook", case.display_name)).await;
        let kernel = lab.new_notebook(case.kernel).await;
        assert_eq!(kernel["name"], case.display_name, "{kernel}");
        let first = lab.run_and_see(case.define, case.defined).await;
        assert_eq!(first["prompt"], "[1]:", "{first}");
        lab.run_and_see(case.use_it, case.used).await;
        let dialogs = lab.dialogs().await;
        assert!(dialogs.is_empty(), "{}: {dialogs:?}", case.kernel);
    }
    lab.report_console().await;
    eprintln!("the JupyterLab session took {:?}", began.elapsed());
}
