//! A Python kernel through the gateway, as a notebook uses it: message order, state, streams,
//! results, errors, plots, input, completion, interrupt and restart.

mod support;

use cellgate_protocol::content::{Content, ExecutionState, IsCompleteStatus, ReplyStatus};
use cellgate_protocol::Channel;
use serde_json::json;
use support::{KernelSocket, Server};

async fn python(server: &Server) -> (String, KernelSocket) {
    let id = server.client().start_kernel("python3").await;
    let socket = KernelSocket::connect(&server.address, &server.token, &id).await;
    (id, socket)
}

#[tokio::test]
async fn a_cell_produces_messages_in_jupyter_order_with_parent_headers() {
    let server = Server::start().await;
    let (_, mut socket) = python(&server).await;
    let id = socket.send_execute("1+1").await;
    let run = socket.collect(&id).await;
    let iopub_and_shell: Vec<(Channel, String)> = run
        .messages
        .iter()
        .map(|m| (m.channel, m.header.msg_type.clone()))
        .collect();
    assert_eq!(
        iopub_and_shell,
        vec![
            (Channel::Iopub, "status".to_owned()),
            (Channel::Iopub, "execute_input".to_owned()),
            (Channel::Iopub, "execute_result".to_owned()),
            (Channel::Shell, "execute_reply".to_owned()),
            (Channel::Iopub, "status".to_owned()),
        ]
    );
    for message in &run.messages {
        assert_eq!(message.parent_header.as_ref().unwrap().msg_id, id);
        assert_eq!(
            message.parent_header.as_ref().unwrap().session,
            socket.session
        );
    }
    let Content::Status(busy) = &run.messages[0].content else {
        unreachable!()
    };
    assert_eq!(busy.execution_state, ExecutionState::Busy);
    assert_eq!(run.result().as_deref(), Some("2"));
    let reply = run.reply();
    assert_eq!(reply.status, ReplyStatus::Ok);
    assert_eq!(reply.execution_count, 1);
    let second = socket.execute("x = 3").await;
    assert_eq!(second.reply().execution_count, 2);
    assert_eq!(second.result(), None, "an assignment has no result");
}

#[tokio::test]
async fn state_persists_and_output_is_captured_at_the_fd_level() {
    let server = Server::start().await;
    let (_, mut socket) = python(&server).await;
    socket.execute("import os, sys\nvalue = 41").await;
    let run = socket
        .execute("value += 1\nprint('py', value)\nos.system('echo from-child; echo child-err >&2')\nprint('err', file=sys.stderr)")
        .await;
    assert!(run.stdout().contains("py 42\n"), "{:?}", run.stdout());
    assert!(run.stdout().contains("from-child\n"), "{:?}", run.stdout());
    assert!(run.stderr().contains("child-err\n"), "{:?}", run.stderr());
    assert!(run.stderr().contains("err\n"), "{:?}", run.stderr());
}

/// One `print` is one `stream` message, as from ipykernel: nbclient keeps every message as an
/// output of its own, so a print split in two would be two outputs in the saved notebook.
#[tokio::test]
async fn a_print_is_one_stream_message() {
    let server = Server::start().await;
    let (_, mut socket) = python(&server).await;
    let run = socket.execute("print(1)\nprint('two', 2)").await;
    let streams: Vec<String> = run
        .messages
        .iter()
        .filter_map(|message| match &message.content {
            Content::Stream(stream) => Some(stream.text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(streams, ["1\ntwo 2\n"], "{:?}", run.types());
}

#[tokio::test]
async fn output_streams_while_the_cell_is_still_running() {
    let server = Server::start().await;
    let (_, mut socket) = python(&server).await;
    // The cell cannot finish before the test answers its input request, so the first line
    // must have been streamed while it ran.
    let id = socket
        .send_execute("print('before', flush=True)\nanswer = input('go? ')\nprint('after', answer)")
        .await;
    let mut seen_before = false;
    loop {
        let message = socket.recv().await;
        match &message.content {
            Content::Stream(stream) if stream.text.contains("before") => seen_before = true,
            Content::InputRequest(request) => {
                assert!(seen_before, "output was held back until the cell paused");
                assert_eq!(request.prompt, "go? ");
                assert_eq!(message.channel, Channel::Stdin);
                assert_eq!(message.parent_header.as_ref().unwrap().msg_id, id);
                break;
            }
            _ => {}
        }
    }
    socket
        .send(Channel::Stdin, "input_reply", json!({"value": "yes"}))
        .await;
    let rest = socket.collect(&id).await;
    assert!(rest.stdout().contains("after yes"), "{:?}", rest.stdout());
    assert_eq!(rest.reply().status, ReplyStatus::Ok);
}

#[tokio::test]
async fn exceptions_become_errors_with_a_traceback() {
    let server = Server::start().await;
    let (_, mut socket) = python(&server).await;
    let run = socket.execute("def f():\n    return 1/0\nf()").await;
    let error = run.error().expect("an error message");
    assert_eq!(error.ename, "ZeroDivisionError");
    assert_eq!(error.evalue, "division by zero");
    assert!(
        error.traceback.join("\n").contains("1/0"),
        "{:?}",
        error.traceback
    );
    let reply = run.reply();
    assert_eq!(reply.status, ReplyStatus::Error);
    assert_eq!(reply.error.unwrap().ename, "ZeroDivisionError");
    let syntax = socket.execute("def (:").await;
    assert_eq!(syntax.error().unwrap().ename, "SyntaxError");
    let after = socket.execute("'still alive'").await;
    assert_eq!(after.result().as_deref(), Some("'still alive'"));
}

#[tokio::test]
async fn a_matplotlib_figure_arrives_as_png() {
    let server = Server::start().await;
    let (_, mut socket) = python(&server).await;
    let probe = socket
        .execute("import importlib.util\nbool(importlib.util.find_spec('matplotlib'))")
        .await;
    assert_eq!(
        probe.result().as_deref(),
        Some("True"),
        "matplotlib is not installed for this Python: `make test` expects it (pip install matplotlib)"
    );
    let run = socket
        .execute("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()")
        .await;
    let displays = run.displays();
    assert_eq!(displays.len(), 1, "{:?}", run.types());
    let png = displays[0]["image/png"]
        .as_str()
        .expect("an image/png entry");
    assert!(png.starts_with("iVBORw0KGgo"), "the image is a base64 PNG");
}

#[tokio::test]
async fn completion_and_completeness_are_useful() {
    let server = Server::start().await;
    let (_, mut socket) = python(&server).await;
    socket.execute("import os\nmy_variable = 1").await;
    let id = socket
        .send(
            Channel::Shell,
            "complete_request",
            json!({"code": "my_va", "cursor_pos": 5}),
        )
        .await;
    let run = socket.collect(&id).await;
    let Content::CompleteReply(reply) = &run
        .messages
        .iter()
        .find(|m| m.header.msg_type == "complete_reply")
        .unwrap()
        .content
    else {
        panic!("no complete_reply")
    };
    assert!(
        reply.matches.contains(&"my_variable".to_owned()),
        "{:?}",
        reply.matches
    );
    assert_eq!((reply.cursor_start, reply.cursor_end), (0, 5));
    let id = socket
        .send(
            Channel::Shell,
            "complete_request",
            json!({"code": "os.pa", "cursor_pos": 5}),
        )
        .await;
    let run = socket.collect(&id).await;
    let matches = run.messages.iter().find_map(|m| match &m.content {
        Content::CompleteReply(reply) => Some(reply.matches.clone()),
        _ => None,
    });
    assert!(matches.unwrap().iter().any(|m| m.ends_with("path")));

    for (code, expected) in [
        ("for i in range(3):", IsCompleteStatus::Incomplete),
        ("x = 1", IsCompleteStatus::Complete),
        ("x = = 1", IsCompleteStatus::Invalid),
    ] {
        let id = socket
            .send(Channel::Shell, "is_complete_request", json!({"code": code}))
            .await;
        let run = socket.collect(&id).await;
        let status = run.messages.iter().find_map(|m| match &m.content {
            Content::IsCompleteReply(reply) => Some(reply.status),
            _ => None,
        });
        assert_eq!(status, Some(expected), "{code}");
    }
}

#[tokio::test]
async fn interrupt_stops_busy_loops_and_sleeps_and_keeps_state() {
    let server = Server::start().await;
    let (kernel, mut socket) = python(&server).await;
    socket.execute("kept = 'yes'").await;
    for code in [
        "print('spinning', flush=True)\nwhile True: pass",
        "import time\nprint('sleeping', flush=True)\ntime.sleep(1000)",
    ] {
        let id = socket.send_execute(code).await;
        socket
            .wait_for(&id, |m| matches!(&m.content, Content::Stream(_)))
            .await;
        let interrupted = server
            .client()
            .post(&format!("/api/kernels/{kernel}/interrupt"), json!({}))
            .await;
        assert_eq!(interrupted.status, http::StatusCode::NO_CONTENT);
        let run = socket.collect(&id).await;
        assert_eq!(run.error().unwrap().ename, "KeyboardInterrupt");
        assert_eq!(run.reply().status, ReplyStatus::Error);
    }
    // The same through the control channel, as JupyterLab does it.
    let id = socket
        .send_execute("print('again', flush=True)\nwhile True: pass")
        .await;
    socket
        .wait_for(&id, |m| matches!(&m.content, Content::Stream(_)))
        .await;
    let control = socket
        .send(Channel::Control, "interrupt_request", json!({}))
        .await;
    let reply = socket
        .wait_for(&control, |m| m.header.msg_type == "interrupt_reply")
        .await;
    assert_eq!(reply.channel, Channel::Control);
    socket.collect(&id).await;
    let after = socket.execute("kept").await;
    assert_eq!(after.result().as_deref(), Some("'yes'"));
}

#[tokio::test]
async fn restart_keeps_the_id_and_clears_the_state() {
    let server = Server::start().await;
    let (kernel, mut socket) = python(&server).await;
    socket.execute("gone = 1").await;
    let restarted = server
        .client()
        .post(&format!("/api/kernels/{kernel}/restart"), json!({}))
        .await;
    assert_eq!(restarted.status, http::StatusCode::OK);
    assert_eq!(restarted.json()["id"], kernel.as_str());
    // Everything the restart published came before this cell's own messages.
    let id = socket.send_execute("gone").await;
    let mut statuses = Vec::new();
    loop {
        let message = socket.recv().await;
        let ours = message
            .parent_header
            .as_ref()
            .is_some_and(|parent| parent.msg_id == id);
        if ours {
            break;
        }
        if let Content::Status(status) = &message.content {
            statuses.push(status.execution_state);
        }
    }
    assert!(
        !statuses.contains(&ExecutionState::Restarting),
        "a requested restart is not announced as `restarting` (JupyterLab reads that as a crash): {statuses:?}"
    );
    let run = socket.collect(&id).await;
    assert_eq!(run.error().unwrap().ename, "NameError");
    assert_eq!(
        run.reply().execution_count,
        1,
        "counts start over after a restart"
    );
}

#[tokio::test]
async fn a_restart_asked_for_on_the_control_channel_publishes_no_restarting() {
    let server = Server::start().await;
    let (_, mut socket) = python(&server).await;
    socket.execute("gone = 1").await;
    let id = socket
        .send(
            Channel::Control,
            "shutdown_request",
            json!({"restart": true}),
        )
        .await;
    let mut seen = Vec::new();
    loop {
        let message = socket.recv().await;
        let ours = message
            .parent_header
            .as_ref()
            .is_some_and(|parent| parent.msg_id == id);
        if !ours {
            continue;
        }
        seen.push(message.header.msg_type.clone());
        if let Content::Status(status) = &message.content {
            assert_ne!(
                status.execution_state,
                ExecutionState::Restarting,
                "{seen:?}"
            );
            seen.push(status.execution_state.to_string());
            if status.execution_state == ExecutionState::Idle {
                break;
            }
        }
    }
    assert_eq!(
        seen.first().map(String::as_str),
        Some("shutdown_reply"),
        "{seen:?}"
    );
    let run = socket.execute("gone").await;
    assert_eq!(run.error().unwrap().ename, "NameError");
}

#[tokio::test]
async fn history_answers_from_the_cells_run() {
    let server = Server::start().await;
    let (_, mut socket) = python(&server).await;
    socket.execute("a = 6").await;
    socket.execute("a * 7").await;
    let silent = socket
        .send(
            Channel::Shell,
            "execute_request",
            json!({"code": "secret = 1", "silent": true}),
        )
        .await;
    socket.collect(&silent).await;
    let id = socket
        .send(
            Channel::Shell,
            "history_request",
            json!({"hist_access_type": "tail", "n": 10, "output": true, "raw": true}),
        )
        .await;
    let reply = socket.reply_to(&id).await.content.to_value();
    assert_eq!(
        reply["history"],
        json!([[1, 1, ["a = 6", null]], [1, 2, ["a * 7", "42"]]]),
        "silent cells are not history: {reply}"
    );
    let id = socket
        .send(
            Channel::Shell,
            "history_request",
            json!({"hist_access_type": "search", "pattern": "a ?*", "unique": true}),
        )
        .await;
    let reply = socket.reply_to(&id).await.content.to_value();
    assert_eq!(reply["history"], json!([[1, 1, "a = 6"], [1, 2, "a * 7"]]));
}

#[tokio::test]
async fn kernel_info_answers_on_shell_and_control() {
    let server = Server::start().await;
    let (_, mut socket) = python(&server).await;
    for channel in [Channel::Shell, Channel::Control] {
        let id = socket.send(channel, "kernel_info_request", json!({})).await;
        let reply = socket
            .wait_for(&id, |m| m.header.msg_type == "kernel_info_reply")
            .await;
        assert_eq!(reply.channel, channel);
        let Content::KernelInfoReply(info) = reply.content else {
            unreachable!()
        };
        assert_eq!(info.language_info.name, "python");
        assert_eq!(info.protocol_version, "5.3");
        assert!(info.language_info.version.starts_with('3'));
    }
}

/// Waits for the statuses published with no parent (a kernel's own doings, such as a restart
/// after a crash) up to and including `last`.
async fn statuses_until(socket: &mut KernelSocket, last: ExecutionState) -> Vec<ExecutionState> {
    let mut seen = Vec::new();
    loop {
        let message = socket.recv().await;
        if let Content::Status(status) = &message.content {
            seen.push(status.execution_state);
            if status.execution_state == last {
                return seen;
            }
        }
    }
}

#[tokio::test]
async fn a_crashing_driver_is_restarted_as_jupyter_restarts_a_dead_kernel() {
    let server = Server::start().await;
    let (kernel, mut socket) = python(&server).await;
    socket.execute("lost = 1").await;
    let run = socket.execute("import os\nos._exit(3)").await;
    assert_eq!(run.reply().status, ReplyStatus::Error);
    let error = run.error().expect("the cell says the kernel died");
    assert_eq!(error.ename, "KernelDied");
    assert!(error.evalue.contains("status 3"), "{error:?}");
    // Announced as Jupyter servers announce an automatic restart (JupyterLab then says the
    // kernel died and restarts by itself), never as `dead`, which makes clients give up.
    let statuses = statuses_until(&mut socket, ExecutionState::Idle).await;
    assert_eq!(
        statuses,
        [
            ExecutionState::Restarting,
            ExecutionState::Starting,
            ExecutionState::Idle
        ]
    );
    let model = server
        .client()
        .get(&format!("/api/kernels/{kernel}"))
        .await
        .json();
    assert_eq!(model["execution_state"], "idle", "{model}");
    let after = socket.execute("lost").await;
    assert_eq!(after.error().unwrap().ename, "NameError");
    assert_eq!(after.reply().execution_count, 1);
}

#[tokio::test]
async fn a_kernel_that_keeps_dying_stays_dead_with_a_reason_until_restarted() {
    let server = Server::start().await;
    let (kernel, mut socket) = python(&server).await;
    for _ in 0..5 {
        socket.execute("import os\nos._exit(3)").await;
        statuses_until(&mut socket, ExecutionState::Idle).await;
    }
    let run = socket.execute("import os\nos._exit(3)").await;
    assert_eq!(run.reply().status, ReplyStatus::Error);
    let model = server
        .client()
        .get(&format!("/api/kernels/{kernel}"))
        .await
        .json();
    assert_eq!(model["execution_state"], "dead");
    let reason = model["reason"].as_str().unwrap();
    assert!(
        reason.contains("status 3") && reason.contains("not restarted again"),
        "{model}"
    );
    let id = socket.send_execute("1").await;
    let refused = socket.reply_to(&id).await;
    assert_eq!(refused.content.to_value()["ename"], "KernelDead");
    // A restart asked for brings a dead kernel back.
    let restarted = server
        .client()
        .post(&format!("/api/kernels/{kernel}/restart"), json!({}))
        .await;
    assert_eq!(restarted.json()["execution_state"], "idle");
    assert_eq!(socket.execute("2*21").await.result().as_deref(), Some("42"));
}

#[tokio::test]
async fn a_shutdown_request_leaves_a_dead_kernel_that_answers_and_can_be_restarted() {
    let server = Server::start().await;
    let client = server.client();
    let (kernel, mut socket) = python(&server).await;
    let id = socket
        .send(
            Channel::Control,
            "shutdown_request",
            json!({"restart": false}),
        )
        .await;
    let reply = socket.reply_to(&id).await;
    assert_eq!(reply.content.to_value()["restart"], false);
    statuses_until(&mut socket, ExecutionState::Dead).await;
    let model = client.get(&format!("/api/kernels/{kernel}")).await.json();
    assert_eq!(model["execution_state"], "dead");
    assert!(model["reason"]
        .as_str()
        .unwrap()
        .contains("shutdown_request"));

    // A new websocket is told the kernel is dead, not that its queue is full.
    let mut late = KernelSocket::connect(&server.address, &server.token, &kernel).await;
    let id = late.send_execute("1").await;
    assert_eq!(
        late.reply_to(&id).await.content.to_value()["ename"],
        "KernelDead"
    );
    let interrupted = client
        .post(&format!("/api/kernels/{kernel}/interrupt"), json!({}))
        .await;
    assert_eq!(interrupted.status, http::StatusCode::NO_CONTENT);
    let restarted = client
        .post(&format!("/api/kernels/{kernel}/restart"), json!({}))
        .await;
    assert_eq!(restarted.json()["execution_state"], "idle");
    assert_eq!(late.execute("6*7").await.result().as_deref(), Some("42"));
}
