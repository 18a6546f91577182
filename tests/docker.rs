//! Kernels in sandboxed containers (`--backend docker`): every notebook language works, and
//! the sandbox holds against the usual abuse. These tests need Docker and `make images`.

mod support;

use cellgate_protocol::content::{Content, ReplyStatus};
use serde_json::json;
use support::{KernelSocket, Server};

async fn docker_server(images: &[&str]) -> Option<Server> {
    if !support::docker::available(images) {
        return None;
    }
    Some(Server::start_with(&["--backend", "docker"]).await)
}

/// What one language must do in a notebook: keep state, stream stdout and stderr, report
/// errors with a traceback, and survive an interrupt with its state.
struct LanguageCase {
    kernel: &'static str,
    image: &'static str,
    define: &'static str,
    print_both: &'static str,
    stdout: &'static str,
    stderr: &'static str,
    fail: &'static str,
    spin: &'static str,
    read_back: &'static str,
    read_back_output: &'static str,
}

async fn check_language(case: &LanguageCase) {
    let Some(mut server) = docker_server(&[case.image]).await else {
        return;
    };
    let (id, mut socket) = server.kernel(case.kernel).await;
    let run = socket.execute(case.define).await;
    assert_eq!(
        run.reply().status,
        ReplyStatus::Ok,
        "{}: {:?}",
        case.kernel,
        run.messages
    );
    let run = socket.execute(case.print_both).await;
    assert!(
        run.stdout().contains(case.stdout),
        "{}: {:?}",
        case.kernel,
        run.stdout()
    );
    assert!(
        run.stderr().contains(case.stderr),
        "{}: {:?}",
        case.kernel,
        run.stderr()
    );
    let run = socket.execute(case.fail).await;
    let error = run
        .error()
        .unwrap_or_else(|| panic!("{}: no error", case.kernel));
    assert!(
        !error.ename.is_empty() && !error.evalue.is_empty(),
        "{error:?}"
    );
    assert_eq!(run.reply().status, ReplyStatus::Error);
    server.interrupt_cell(&id, &mut socket, case.spin).await;
    let run = socket.execute(case.read_back).await;
    let seen = format!("{}{}", run.stdout(), run.result().unwrap_or_default());
    assert!(
        seen.contains(case.read_back_output),
        "{}: {seen:?}",
        case.kernel
    );
    drop(socket);
    let instance = server.instance_id();
    server.stop().await;
    assert_eq!(
        support::docker::containers_of(&instance),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn python_in_a_container() {
    check_language(&LanguageCase {
        kernel: "python3",
        image: "python",
        define: "import sys\nkept = 41",
        print_both: "print('out'); print('err', file=sys.stderr)",
        stdout: "out",
        stderr: "err",
        fail: "1/0",
        spin: "print('spin', flush=True)\nwhile True: pass",
        read_back: "kept + 1",
        read_back_output: "42",
    })
    .await;
}

#[tokio::test]
async fn javascript_in_a_container() {
    check_language(&LanguageCase {
        kernel: "javascript",
        image: "javascript",
        define: "let kept = 41",
        print_both: "console.log('out'); console.error('err')",
        stdout: "out",
        stderr: "err",
        fail: "undefinedFunction()",
        spin: "console.log('spin'); while (true) {}",
        read_back: "kept + 1",
        read_back_output: "42",
    })
    .await;
}

#[tokio::test]
async fn bash_in_a_container() {
    check_language(&LanguageCase {
        kernel: "bash",
        image: "bash",
        define: "kept=41",
        print_both: "echo out; echo err >&2",
        stdout: "out",
        stderr: "err",
        fail: "false",
        spin: "echo spin; while true; do :; done",
        read_back: "echo $((kept + 1))",
        read_back_output: "42",
    })
    .await;
}

#[tokio::test]
async fn java_in_a_container() {
    check_language(&LanguageCase {
        kernel: "java",
        image: "java",
        define: "int kept = 41;",
        print_both: "System.out.println(\"out\"); System.err.println(\"err\");",
        stdout: "out",
        stderr: "err",
        fail: "Object o = null; o.toString();",
        spin: "System.out.println(\"spin\"); while (true) {}",
        read_back: "kept + 1",
        read_back_output: "42",
    })
    .await;
}

#[tokio::test]
async fn php_in_a_container() {
    check_language(&LanguageCase {
        kernel: "php",
        image: "php",
        define: "$kept = 41;",
        print_both: "echo \"out\\n\"; fwrite(STDERR, \"err\\n\");",
        stdout: "out",
        stderr: "err",
        fail: "throw new RuntimeException('broken');",
        spin: "echo \"spin\\n\"; while (true) {}",
        read_back: "echo $kept + 1;",
        read_back_output: "42",
    })
    .await;
}

#[tokio::test]
async fn ruby_in_a_container() {
    check_language(&LanguageCase {
        kernel: "ruby",
        image: "ruby",
        define: "kept = 41",
        print_both: "puts 'out'; $stderr.puts 'err'",
        stdout: "out",
        stderr: "err",
        fail: "raise ArgumentError, 'broken'",
        spin: "puts 'spin'; $stdout.flush; loop {}",
        read_back: "kept + 1",
        read_back_output: "42",
    })
    .await;
}

#[tokio::test]
async fn r_in_a_container() {
    check_language(&LanguageCase {
        kernel: "ir",
        image: "r",
        define: "kept <- 41",
        print_both: "cat('out\\n'); message('err')",
        stdout: "out",
        stderr: "err",
        fail: "stop('broken')",
        spin: "cat('spin\\n'); while (TRUE) {}",
        read_back: "kept + 1",
        read_back_output: "42",
    })
    .await;
}

#[tokio::test]
async fn octave_in_a_container() {
    check_language(&LanguageCase {
        kernel: "octave",
        image: "octave",
        define: "kept = 41;",
        print_both: "disp('out'); fdisp(stderr, 'err');",
        stdout: "out",
        stderr: "err",
        fail: "error('broken')",
        spin: "disp('spin'); while true, end",
        read_back: "kept + 1",
        read_back_output: "42",
    })
    .await;
}

/// Runs `code` in a new `kernel` container and checks that a PNG came back.
async fn check_plot(kernel_name: &str, image: &str, code: &str) {
    let Some(server) = docker_server(&[image]).await else {
        return;
    };
    let (_, mut socket) = server.kernel(kernel_name).await;
    let run = socket.execute(code).await;
    assert_eq!(run.reply().status, ReplyStatus::Ok, "{:?}", run.messages);
    let displays = run.displays();
    assert!(
        !displays.is_empty(),
        "{kernel_name}: no display_data in {:?}",
        run.types()
    );
    let png = displays[0]["image/png"]
        .as_str()
        .expect("an image/png entry");
    assert!(png.starts_with("iVBOR"), "{kernel_name}: not a base64 PNG");
}

#[tokio::test]
async fn r_plots_arrive_as_png_from_a_container() {
    check_plot("ir", "r", "plot(1:10, (1:10)^2)").await;
}

#[tokio::test]
async fn octave_plots_arrive_as_png_from_a_container() {
    check_plot("octave", "octave", "plot(1:10, (1:10).^2);").await;
}

/// An Octave cell that does not parse runs none of its lines, as in Python, although Octave's
/// own eval would run the lines before the error; cells that parse, function definitions
/// among them, still run and show the value of their last line.
#[tokio::test]
async fn octave_cells_with_a_syntax_error_run_nothing() {
    let Some(server) = docker_server(&["octave"]).await else {
        return;
    };
    let (_, mut socket) = server.kernel("octave").await;
    let run = socket.execute("x = 1\ny = = 2").await;
    assert_eq!(run.reply().status, ReplyStatus::Error, "{:?}", run.messages);
    let error = run.error().expect("a parse error");
    assert!(
        error.evalue.starts_with("parse error near line 2:"),
        "{error:?}"
    );
    assert!(error.traceback.iter().any(|line| line.contains("y = = 2")));
    assert_eq!(run.stdout(), "", "the first line ran: {:?}", run.messages);
    let run = socket.execute("exist('x')").await;
    assert_eq!(run.result().as_deref(), Some("ans = 0"));

    let run = socket
        .execute("a = 1;\nfunction r = twice(v)\n  r = 2 * v;\nend\nb = = 3")
        .await;
    assert_eq!(run.reply().status, ReplyStatus::Error, "{:?}", run.messages);
    let run = socket.execute("[exist('a'), exist('twice')]").await;
    assert_eq!(run.result().as_deref(), Some("ans =\n\n   0   0"));

    let run = socket
        .execute("% doubles\nfunction r = twice(v)\n  r = 2 * v;\nend\ntwice(21)")
        .await;
    assert_eq!(run.reply().status, ReplyStatus::Ok, "{:?}", run.messages);
    assert_eq!(run.result().as_deref(), Some("ans = 42"));
    let run = socket.execute("disp('shown')\n1+1").await;
    assert_eq!(run.stdout(), "shown\n");
    assert_eq!(run.result().as_deref(), Some("ans = 2"));
}

#[tokio::test]
async fn python_plots_arrive_as_png_from_a_container() {
    let Some(_server) = docker_server(&["python"]).await else {
        return;
    };
    let server = _server;
    let (_, mut socket) = server.kernel("python3").await;
    let run = socket
        .execute("import matplotlib.pyplot as plt\nimport numpy as np, pandas as pd\nplt.plot(np.arange(5))\nplt.show()\npd.DataFrame({'a': [1]}).shape")
        .await;
    assert_eq!(run.reply().status, ReplyStatus::Ok, "{:?}", run.messages);
    let displays = run.displays();
    assert!(displays[0]["image/png"]
        .as_str()
        .unwrap()
        .starts_with("iVBOR"));
    assert_eq!(run.result().as_deref(), Some("(1, 1)"));
}

#[tokio::test]
async fn the_sandbox_holds_against_abuse() {
    let Some(mut server) = docker_server(&["python", "bash"]).await else {
        return;
    };
    let (_, mut py) = server.kernel("python3").await;

    let run = py
        .execute("import socket\ntry:\n    socket.create_connection(('1.1.1.1', 80), timeout=3)\n    print('connected')\nexcept OSError as e:\n    print('refused', type(e).__name__)")
        .await;
    assert!(
        run.stdout().contains("refused"),
        "network reached: {:?}",
        run.stdout()
    );

    let run = py
        .execute("try:\n    open('/usr/cellgate-was-here', 'w')\n    print('wrote')\nexcept OSError as e:\n    print('read-only', e.errno)")
        .await;
    assert!(run.stdout().contains("read-only"), "{:?}", run.stdout());

    let run = py.execute("import os\nos.getuid(), os.geteuid()").await;
    assert_eq!(run.result().as_deref(), Some("(1000, 1000)"));

    let run = py
        .execute("import os\nsorted(k for k in os.environ if any(w in k.upper() for w in ('TOKEN', 'SECRET', 'CELLGATE')))")
        .await;
    assert_eq!(
        run.result().as_deref(),
        Some("[]"),
        "secrets leaked into the kernel"
    );

    let (bash_id, mut bash) = server.kernel("bash").await;
    let run = bash
        .execute("id -u; touch /usr/x 2>&1 || echo no-write")
        .await;
    assert!(run.stdout().starts_with("1000\n"), "{:?}", run.stdout());
    assert!(run.stdout().contains("no-write"), "{:?}", run.stdout());

    // An endless print is cut at the output cap; an interrupt then ends the cell.
    let id = py.send_execute("while True:\n    print('y' * 1000)").await;
    py.wait_for(&id, |m| {
        matches!(&m.content, Content::Stream(s) if s.text.contains("rest of its output was dropped"))
    })
    .await;
    let control = py
        .send(
            cellgate_protocol::Channel::Control,
            "interrupt_request",
            json!({}),
        )
        .await;
    py.reply_to(&control).await;
    py.collect(&id).await;

    // A fork bomb stops at the pids limit, and the kernel is still there afterwards.
    let run = py
        .execute("import os, time\nchildren = []\ntry:\n    for _ in range(5000):\n        pid = os.fork()\n        if pid == 0:\n            time.sleep(60)\n            os._exit(0)\n        children.append(pid)\nexcept OSError as e:\n    print('stopped', len(children), type(e).__name__)\nfor pid in children:\n    os.kill(pid, 9)\n    os.waitpid(pid, 0)\nlen(children)")
        .await;
    assert!(
        run.stdout().contains("stopped"),
        "no process limit was hit: {:?}",
        run.messages
    );
    let forked: usize = run.result().unwrap().parse().unwrap();
    assert!(forked < 256, "{forked} processes were started");
    assert_eq!(
        py.execute("'alive'").await.result().as_deref(),
        Some("'alive'")
    );
    let _ = bash_id;

    // A memory balloon is killed by the kernel's memory limit, and the API says why.
    let (balloon_id, mut balloon) = server.kernel("python3").await;
    let run = balloon
        .execute("chunks = []\nwhile True:\n    chunks.append(bytearray(64 * 1024 * 1024))")
        .await;
    assert_eq!(run.reply().status, ReplyStatus::Error);
    let died = run.error().expect("the cell says why the kernel died");
    assert_eq!(died.ename, "KernelDied");
    assert!(died.evalue.contains("out of memory"), "{died:?}");
    // The kernel is started again, with its state gone.
    assert_eq!(
        balloon
            .execute("'chunks' in dir()")
            .await
            .result()
            .as_deref(),
        Some("False")
    );
    let model = server
        .client()
        .get(&format!("/api/kernels/{balloon_id}"))
        .await
        .json();
    assert_eq!(model["execution_state"], "idle", "{model}");

    drop((py, bash, balloon));
    let instance = server.instance_id();
    server.stop().await;
    assert_eq!(
        support::docker::containers_of(&instance),
        Vec::<String>::new(),
        "containers left behind"
    );
}

#[tokio::test]
async fn requests_may_lower_limits_but_not_raise_them() {
    let Some(server) = docker_server(&["bash"]).await else {
        return;
    };
    let client = server.client();
    let refused = client
        .post(
            "/api/kernels",
            json!({"name": "bash", "limits": {"memory_bytes": 1u64 << 40}}),
        )
        .await;
    assert_eq!(refused.status, http::StatusCode::BAD_REQUEST);
    assert!(refused.json()["message"]
        .as_str()
        .unwrap()
        .contains("memory_bytes"));
    let lowered = client
        .post(
            "/api/kernels",
            json!({"name": "bash", "limits": {"memory_bytes": 64u64 << 20, "pids": 32}}),
        )
        .await;
    assert_eq!(lowered.status, http::StatusCode::CREATED);
    let id = lowered.json()["id"].as_str().unwrap().to_owned();
    let mut socket = KernelSocket::connect(&server.address, &server.token, &id).await;
    let run = socket
        .execute("cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
        .await;
    assert_eq!(run.stdout().trim(), (64u64 << 20).to_string());
}

/// Runs `source` as `file` through an image's `run` script, in the kernels' sandbox, and
/// returns what the program printed.
fn run_batch_file(image: &str, file: &str, source: &str) -> (bool, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("docker")
        .args([
            "run",
            "--rm",
            "-i",
            "--network",
            "none",
            "--read-only",
            "--tmpfs",
            "/tmp:rw,exec,nosuid,nodev,size=512m",
            "--tmpfs",
            "/home/cellgate:rw,exec,nosuid,nodev,size=64m,uid=1000,gid=1000",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--pids-limit",
            "256",
            "--memory",
            "1g",
            "--memory-swap",
            "1g",
            "--user",
            "1000:1000",
            &format!("cellgate/{image}:latest"),
            "sh",
            "-c",
            &format!("cat > {file} && /opt/cellgate/run {file} world"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(source.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn batch_languages_compile_and_run_in_the_sandbox() {
    if !support::docker::available(&["c", "go", "rust"]) {
        return;
    }
    let cases = [
        ("c", "hello.c", "#include <stdio.h>\nint main(int c, char **v) { printf(\"hello %s from C\\n\", v[1]); return 0; }\n", "hello world from C\n"),
        ("c", "hello.cpp", "#include <iostream>\nint main(int c, char **v) { std::cout << \"hello \" << v[1] << \" from C++\" << std::endl; }\n", "hello world from C++\n"),
        ("go", "hello.go", "package main\nimport (\"fmt\"; \"os\")\nfunc main() { fmt.Printf(\"hello %s from Go\\n\", os.Args[1]) }\n", "hello world from Go\n"),
        ("rust", "hello.rs", "fn main() { let who = std::env::args().nth(1).unwrap(); println!(\"hello {who} from Rust\"); }\n", "hello world from Rust\n"),
    ];
    for (image, file, source, expected) in cases {
        let (ok, stdout, stderr) = run_batch_file(image, file, source);
        assert!(ok, "{file} failed in cellgate/{image}: {stderr}");
        assert_eq!(stdout, expected, "{file}");
    }
    let (ok, _, stderr) = run_batch_file("c", "broken.c", "int main( {");
    assert!(!ok, "a compile error is a failure");
    assert!(stderr.contains("error"), "{stderr}");
}

/// `docker ARGS`, failing the test on error; returns stdout.
fn docker(args: &[&str]) -> String {
    let output = std::process::Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs");
    assert!(
        output.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A swarm worker starts with none of the language images: with `--pull-images` its runner
/// pulls them from the registry its image prefix names (here the project's registry image on
/// a loopback port, holding only the bash image) and serves exactly what it could pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_pulls_missing_images_from_the_registry() {
    if !support::docker::available(&["bash", "registry"]) {
        return;
    }
    let registry = docker(&[
        "run",
        "-d",
        "--rm",
        "-p",
        "127.0.0.1::5000",
        "cellgate/registry:latest",
    ]);
    let address = docker(&["port", &registry, "5000/tcp"]);
    let port = address.rsplit(':').next().unwrap().to_owned();
    let prefix = format!(
        "127.0.0.1:{port}/pull-test-{}/",
        uuid::Uuid::new_v4().simple()
    );
    let remote = format!("{prefix}bash:latest");
    docker(&["tag", "cellgate/bash:latest", &remote]);
    let mut pushed = false;
    for _ in 0..50 {
        let push = std::process::Command::new("docker")
            .args(["push", "--quiet", &remote])
            .output()
            .unwrap();
        if push.status.success() {
            pushed = true;
            break;
        }
        // The registry may still be starting.
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(pushed, "pushing to the test registry");
    // Only the tag goes: the engine no longer has the image under that name.
    docker(&["rmi", &remote]);

    let runner = support::cluster::RunnerProcess::start(&[
        "--backend",
        "docker",
        "--image-prefix",
        &prefix,
        "--pull-images",
    ])
    .await;
    let specs = runner.get("/api/kernelspecs").await;
    let names: Vec<&str> = specs["kernelspecs"]
        .as_object()
        .expect("kernelspecs")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, ["bash"], "only what the registry holds: {specs}");
    let gateway = support::cluster::GatewayProcess::start(&[&runner.url], &[]).await;
    let client = gateway.client();
    let id = client.start_kernel("bash").await;
    let mut socket = KernelSocket::connect(&gateway.address, &gateway.token, &id).await;
    let execution = socket.execute("echo pulled and running").await;
    assert_eq!(execution.stdout(), "pulled and running\n");
    socket.close().await;
    drop(gateway);
    drop(runner);
    docker(&["rm", "-f", &registry]);
    let _ = std::process::Command::new("docker")
        .args(["rmi", &remote])
        .output();
}

/// The driver conformance table: what every notebook language must do alike, whatever its
/// driver does inside. Each row is code in the language; the checks are the same for all.
struct Conformance {
    kernel: &'static str,
    image: &'static str,
    /// Prints `a` to stdout, `b` to stderr, `c` to stdout, in that order.
    interleave: &'static str,
    /// Prints `before`, shows a display, prints `after`; `None` where the language has no
    /// display function.
    display: Option<&'static str>,
    /// A child process prints `child`.
    child: &'static str,
    /// Prints 2 MiB to stdout, past the runner's 1 MiB cap.
    flood: &'static str,
    /// Ends the interpreter with SIGKILL in the middle of the cell.
    crash: &'static str,
}

fn row(ok: bool, detail: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(detail())
    }
}

async fn check_conformance(case: &Conformance) {
    let Some(server) = docker_server(&[case.image]).await else {
        return;
    };
    let (id, mut socket) = server.kernel(case.kernel).await;
    let mut table: Vec<(&str, Result<(), String>)> = Vec::new();

    // Each stream arrives whole and in order. The order between the two is not checked: a
    // driver that reads them from two pipes cannot know it (see docs/driver-protocol.md).
    let run = socket.execute(case.interleave).await;
    let (stdout, stderr) = (run.stdout(), run.stderr());
    table.push((
        "stdout and stderr each arrive whole and in order",
        row(stdout == "a\nc\n" && stderr == "b\n", || {
            format!("stdout {stdout:?}, stderr {stderr:?}")
        }),
    ));

    if let Some(display) = case.display {
        let run = socket.execute(display).await;
        let at = run
            .messages
            .iter()
            .position(|message| matches!(message.content, Content::DisplayData(_)));
        let ok = at.is_some_and(|at| {
            let before = support::kernel::Execution {
                messages: run.messages[..at].to_vec(),
            };
            let after = support::kernel::Execution {
                messages: run.messages[at..].to_vec(),
            };
            before.stdout().contains("before")
                && !before.stdout().contains("after")
                && after.stdout().contains("after")
        });
        table.push((
            "a display stays between the output around it",
            row(ok, || format!("{:?}, error {:?}", run.types(), run.error())),
        ));
    }

    let run = socket.execute(case.child).await;
    table.push((
        "a child process's output is captured",
        row(run.stdout().contains("child"), || {
            format!("{:?}", run.stdout())
        }),
    ));

    let run = socket.execute(case.flood).await;
    let shown = run.stdout().len();
    let ok = run.reply().status == ReplyStatus::Ok
        && shown <= 1 << 20
        && run.stderr().contains("printed more than");
    table.push((
        "an oversized output is cut with a notice",
        row(ok, || {
            format!(
                "{:?}, {shown} bytes shown, stderr {:?}",
                run.reply().status,
                run.stderr()
            )
        }),
    ));

    let interrupted = server
        .client()
        .post(&format!("/api/kernels/{id}/interrupt"), json!({}))
        .await;
    let run = socket.execute(case.child).await;
    table.push((
        "an interrupt while idle changes nothing",
        row(
            interrupted.status == http::StatusCode::NO_CONTENT
                && run.reply().status == ReplyStatus::Ok
                && run.stdout().contains("child"),
            || format!("{} then {:?}", interrupted.status, run.messages),
        ),
    ));

    let run = socket.execute(case.crash).await;
    let failed = run.reply().status == ReplyStatus::Error;
    let again = socket.execute(case.interleave).await;
    table.push((
        "a crash mid-cell fails the cell; the kernel starts again",
        row(failed && again.reply().status == ReplyStatus::Ok, || {
            format!("{:?} then {:?}", run.messages, again.messages)
        }),
    ));

    for (check, outcome) in &table {
        match outcome {
            Ok(()) => eprintln!("{:<12} ok    {check}", case.kernel),
            Err(detail) => eprintln!("{:<12} FAIL  {check}: {detail}", case.kernel),
        }
    }
    let failed: Vec<&str> = table
        .iter()
        .filter(|(_, outcome)| outcome.is_err())
        .map(|(check, _)| *check)
        .collect();
    assert!(failed.is_empty(), "{}: {failed:?}", case.kernel);
}

#[tokio::test]
async fn python_conforms() {
    check_conformance(&Conformance {
        kernel: "python3",
        image: "python",
        interleave: "import sys\nprint('a', flush=True)\nprint('b', file=sys.stderr, flush=True)\nprint('c', flush=True)",
        display: Some("print('before', flush=True)\ndisplay('shown')\nprint('after')"),
        child: "import os\nos.system('echo child')",
        flood: "print('x' * (2 << 20))",
        crash: "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
    })
    .await;
}

#[tokio::test]
async fn javascript_conforms() {
    check_conformance(&Conformance {
        kernel: "javascript",
        image: "javascript",
        interleave: "process.stdout.write('a\\n'); process.stderr.write('b\\n'); process.stdout.write('c\\n');",
        display: Some("console.log('before'); display('shown'); console.log('after');"),
        child: "require('child_process').execSync('echo child', {stdio: 'inherit'}); undefined",
        flood: "process.stdout.write('x'.repeat(2 << 20)); undefined",
        crash: "process.kill(process.pid, 'SIGKILL')",
    })
    .await;
}

#[tokio::test]
async fn bash_conforms() {
    check_conformance(&Conformance {
        kernel: "bash",
        image: "bash",
        interleave: "echo a; echo b >&2; echo c",
        display: None,
        child: "sh -c 'echo child'",
        flood: "head -c 2097152 /dev/zero | tr '\\0' x",
        crash: "kill -KILL $$",
    })
    .await;
}

#[tokio::test]
async fn java_conforms() {
    check_conformance(&Conformance {
        kernel: "java",
        image: "java",
        interleave: "System.out.println(\"a\"); System.out.flush(); System.err.println(\"b\"); System.err.flush(); System.out.println(\"c\");",
        display: Some("System.out.println(\"before\"); System.out.flush(); display(\"shown\"); System.out.println(\"after\");"),
        child: "new ProcessBuilder(\"echo\", \"child\").inheritIO().start().waitFor();",
        flood: "System.out.print(\"x\".repeat(2 << 20));",
        crash: "new ProcessBuilder(\"sh\", \"-c\", \"kill -KILL $PPID\").start().waitFor();",
    })
    .await;
}

#[tokio::test]
async fn php_conforms() {
    check_conformance(&Conformance {
        kernel: "php",
        image: "php",
        interleave: "echo \"a\\n\"; fwrite(STDERR, \"b\\n\"); echo \"c\\n\";",
        display: Some("echo \"before\\n\"; \\Cellgate\\display('shown'); echo \"after\\n\";"),
        child: "system('echo child');",
        flood: "echo str_repeat('x', 2 << 20);",
        crash: "system('kill -KILL $PPID');",
    })
    .await;
}

#[tokio::test]
async fn ruby_conforms() {
    check_conformance(&Conformance {
        kernel: "ruby",
        image: "ruby",
        interleave:
            "$stdout.puts 'a'; $stdout.flush; $stderr.puts 'b'; $stderr.flush; $stdout.puts 'c'",
        display: Some("puts 'before'; $stdout.flush; IRuby.display('shown'); puts 'after'"),
        child: "system('echo child')",
        flood: "print 'x' * (2 << 20); nil",
        crash: "Process.kill(:KILL, Process.pid)",
    })
    .await;
}

#[tokio::test]
async fn r_conforms() {
    check_conformance(&Conformance {
        kernel: "ir",
        image: "r",
        interleave: "cat('a\\n'); message('b'); cat('c\\n')",
        display: Some("cat('before\\n'); display('shown'); cat('after\\n')"),
        child: "invisible(system('echo child'))",
        flood: "cat(strrep('x', 2 * 1024 * 1024))",
        crash: "tools::pskill(Sys.getpid(), 9)",
    })
    .await;
}

#[tokio::test]
async fn octave_conforms() {
    check_conformance(&Conformance {
        kernel: "octave",
        image: "octave",
        interleave: "disp('a'); fdisp(stderr, 'b'); disp('c');",
        display: Some("disp('before'); display_html('<b>shown</b>'); disp('after');"),
        child: "system('echo child');",
        flood: "disp(repmat('x', 1, 2 * 1024 * 1024));",
        crash: "system('kill -KILL $PPID');",
    })
    .await;
}
