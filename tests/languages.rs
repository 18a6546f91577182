//! The JavaScript and Bash kernels: state between cells, streams, results, errors and
//! interrupts, each through the gateway.

mod support;

use cellgate_protocol::content::{Content, ReplyStatus};
use cellgate_protocol::Channel;
use serde_json::json;
use support::Server;

#[tokio::test]
async fn javascript_keeps_state_and_shows_values() {
    let server = Server::start().await;
    let (_, mut socket) = server.kernel("javascript").await;
    socket
        .execute("let counter = 40; function bump() { return ++counter; }")
        .await;
    let run = socket.execute("bump(); bump()").await;
    assert_eq!(run.result().as_deref(), Some("42"));
    let run = socket
        .execute("console.log('out'); console.error('err'); require('child_process').execSync('echo child', {stdio: 'inherit'}); undefined")
        .await;
    assert_eq!(run.stdout(), "out\nchild\n");
    assert_eq!(run.stderr(), "err\n");
    assert_eq!(run.result(), None, "undefined is not shown");
    let run = socket
        .execute("await new Promise(r => setTimeout(() => r('later'), 10))")
        .await;
    assert_eq!(run.result().as_deref(), Some("'later'"));
}

#[tokio::test]
async fn javascript_errors_and_interrupts() {
    let server = Server::start().await;
    let (id, mut socket) = server.kernel("javascript").await;
    let run = socket.execute("null.property").await;
    let error = run.error().expect("an error");
    assert_eq!(error.ename, "TypeError");
    assert!(!error.evalue.is_empty());
    assert!(!error.traceback.is_empty());
    socket.execute("var kept = 'yes'").await;
    server
        .interrupt_cell(&id, &mut socket, "console.log('spin'); while (true) {}")
        .await;
    assert_eq!(
        socket.execute("kept").await.result().as_deref(),
        Some("'yes'")
    );
}

#[tokio::test]
async fn javascript_streams_before_the_cell_ends() {
    let server = Server::start().await;
    let (id, mut socket) = server.kernel("javascript").await;
    // The cell waits far longer than the test: its output can only come from streaming.
    server
        .interrupt_cell(
            &id,
            &mut socket,
            "console.log('early'); await new Promise(r => setTimeout(r, 1e6))",
        )
        .await;
    assert_eq!(socket.execute("1 + 1").await.result().as_deref(), Some("2"));
}

#[tokio::test]
async fn bash_keeps_state_and_captures_every_command() {
    let server = Server::start().await;
    let (_, mut socket) = server.kernel("bash").await;
    socket
        .execute("greeting=hello; shout() { echo \"${1^^}\"; }; mkdir -p sub && cd sub")
        .await;
    let run = socket
        .execute("shout $greeting; basename \"$PWD\"; echo oops >&2")
        .await;
    assert_eq!(run.stdout(), "HELLO\nsub\n");
    assert_eq!(run.stderr(), "oops\n");
    assert_eq!(run.reply().status, ReplyStatus::Ok);
}

#[tokio::test]
async fn bash_failures_and_interrupts() {
    let server = Server::start().await;
    let (id, mut socket) = server.kernel("bash").await;
    let run = socket.execute("ls /definitely/not/here").await;
    assert_eq!(run.reply().status, ReplyStatus::Error);
    let error = run.error().expect("an error for a failing command");
    assert!(!error.ename.is_empty() && !error.evalue.is_empty());
    assert!(run.stderr().contains("not/here"), "{:?}", run.stderr());
    socket.execute("kept=yes").await;
    server
        .interrupt_cell(&id, &mut socket, "echo sleeping; sleep 1000")
        .await;
    server
        .interrupt_cell(&id, &mut socket, "echo spinning; while true; do :; done")
        .await;
    assert_eq!(socket.execute("echo $kept").await.stdout(), "yes\n");
}

#[tokio::test]
async fn bash_completion_suggests_commands_and_variables() {
    let server = Server::start().await;
    let (_, mut socket) = server.kernel("bash").await;
    socket.execute("my_setting=1").await;
    let id = socket
        .send(
            Channel::Shell,
            "complete_request",
            json!({"code": "echo $my_se", "cursor_pos": 11}),
        )
        .await;
    let reply = socket.reply_to(&id).await;
    let Content::CompleteReply(reply) = reply.content else {
        panic!("not a complete_reply")
    };
    assert!(
        reply.matches.iter().any(|m| m.contains("my_setting")),
        "{:?}",
        reply.matches
    );
}
