//! The kernel websocket under real use and abuse: several clients, both framings, live
//! connection counts, malformed and oversized frames, unknown requests, and clients that
//! vanish mid-cell.

mod support;

use cellgate_protocol::content::{Content, ReplyStatus};
use cellgate_protocol::wire::V1_SUBPROTOCOL;
use cellgate_protocol::Channel;
use serde_json::json;
use support::{KernelSocket, Server};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMessage;

#[tokio::test]
async fn several_clients_share_a_kernel_and_are_counted_live() {
    let server = Server::start().await;
    let client = server.client();
    let kernel = client.start_kernel("python3").await;
    let mut first = KernelSocket::connect(&server.address, &server.token, &kernel).await;
    let mut second = KernelSocket::connect(&server.address, &server.token, &kernel).await;
    // Both are attached once each has seen a reply.
    first.execute("shared = 'x'").await;
    second.execute("shared").await;
    let model = client.get(&format!("/api/kernels/{kernel}")).await.json();
    assert_eq!(model["connections"], 2);

    // iopub reaches every client; the reply only the one that asked.
    let id = first.send_execute("print('to all')").await;
    let own = first.collect(&id).await;
    assert_eq!(own.reply().status, ReplyStatus::Ok);
    let seen = second
        .wait_for(
            &id,
            |m| matches!(&m.content, Content::Stream(s) if s.text.contains("to all")),
        )
        .await;
    assert_eq!(seen.channel, Channel::Iopub);

    second.close().await;
    let mut connections = 2;
    for _ in 0..200 {
        connections = client.get(&format!("/api/kernels/{kernel}")).await.json()["connections"]
            .as_u64()
            .unwrap();
        if connections == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(connections, 1, "a closed websocket is no longer counted");
}

#[tokio::test]
async fn the_v1_subprotocol_is_spoken_when_offered() {
    let server = Server::start().await;
    let kernel = server.client().start_kernel("python3").await;
    let mut socket = KernelSocket::connect_with(
        &server.address,
        Some(&server.token),
        &kernel,
        Some(V1_SUBPROTOCOL),
    )
    .await
    .expect("v1 websocket connects");
    assert_eq!(socket.accepted_protocol.as_deref(), Some(V1_SUBPROTOCOL));
    let id = socket.send_execute("6*7").await;
    let frame = socket.recv_raw().await.unwrap();
    assert!(
        matches!(frame, WsMessage::Binary(_)),
        "v1 frames are binary"
    );
    let run = socket.collect(&id).await;
    assert_eq!(run.result().as_deref(), Some("42"));

    let legacy = KernelSocket::connect(&server.address, &server.token, &kernel).await;
    assert_eq!(legacy.accepted_protocol, None);
}

#[tokio::test]
async fn malformed_and_unknown_messages_get_clear_errors_and_break_nothing() {
    let server = Server::start().await;
    let kernel = server.client().start_kernel("python3").await;
    let mut bystander = KernelSocket::connect(&server.address, &server.token, &kernel).await;
    bystander.execute("alive = True").await;

    // An unknown msg_type is answered with an error reply.
    let mut socket = KernelSocket::connect(&server.address, &server.token, &kernel).await;
    let id = socket
        .send(Channel::Shell, "frobnicate_request", json!({}))
        .await;
    let reply = socket.reply_to(&id).await;
    assert_eq!(reply.header.msg_type, "frobnicate_reply");
    let content = reply.content.to_value();
    assert_eq!(content["status"], "error");
    assert_eq!(content["ename"], "UnknownMessageType");

    // A known request with malformed content: an error reply naming the problem.
    let bad = json!({"header": {"msg_id": "bad-1", "msg_type": "execute_request", "session": "s",
                                "username": "u", "date": "", "version": "5.3"},
                     "parent_header": {}, "metadata": {}, "content": {"code": 42},
                     "channel": "shell"});
    socket.send_raw(WsMessage::Text(bad.to_string())).await;
    let reply = socket.reply_to("bad-1").await;
    assert_eq!(reply.content.to_value()["ename"], "BadMessage");

    // Frames that are not messages at all close that one connection with a reason.
    socket
        .send_raw(WsMessage::Text("{this is not json".into()))
        .await;
    match socket.recv_raw().await {
        Some(WsMessage::Close(Some(frame))) => {
            assert_eq!(frame.code, CloseCode::Invalid);
            assert!(frame.reason.contains("malformed"), "{}", frame.reason);
        }
        other => panic!("expected a close frame, got {other:?}"),
    }

    // Everyone else carries on.
    let run = bystander.execute("alive").await;
    assert_eq!(run.result().as_deref(), Some("True"));
}

#[tokio::test]
async fn an_oversized_frame_closes_only_its_connection() {
    let server = Server::start().await;
    let kernel = server.client().start_kernel("bash").await;
    let mut bystander = KernelSocket::connect(&server.address, &server.token, &kernel).await;
    let mut socket = KernelSocket::connect(&server.address, &server.token, &kernel).await;
    let huge = "x".repeat(80 * 1024 * 1024);
    // The gateway may close the connection before the whole frame is out; either way the
    // connection must end, with 1009 (message too big) when the close frame gets through.
    if socket.try_send_raw(WsMessage::Text(huge)).await.is_ok() {
        match socket.recv_raw().await {
            Some(WsMessage::Close(Some(frame))) => assert_eq!(frame.code, CloseCode::Size),
            None => {}
            other => panic!("expected the connection to close, got {other:?}"),
        }
    }
    let run = bystander.execute("echo fine").await;
    assert_eq!(run.stdout(), "fine\n");
}

#[tokio::test]
async fn a_client_that_disconnects_mid_cell_leaves_the_kernel_usable() {
    let server = Server::start().await;
    let kernel = server.client().start_kernel("python3").await;
    let mut socket = KernelSocket::connect(&server.address, &server.token, &kernel).await;
    let id = socket
        .send_execute("import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.2)\nfinished = True")
        .await;
    socket
        .wait_for(&id, |m| matches!(&m.content, Content::Stream(_)))
        .await;
    drop(socket);
    let mut again = KernelSocket::connect(&server.address, &server.token, &kernel).await;
    let run = again.execute("finished").await;
    assert_eq!(run.result().as_deref(), Some("True"));
}

#[tokio::test]
async fn unknown_kernels_are_refused_before_the_upgrade() {
    let server = Server::start().await;
    let missing = uuid::Uuid::new_v4().to_string();
    let result =
        KernelSocket::connect_with(&server.address, Some(&server.token), &missing, None).await;
    match result {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), http::StatusCode::NOT_FOUND);
        }
        Err(other) => panic!("expected a 404, got {other}"),
        Ok(_) => panic!("a websocket to an unknown kernel was accepted"),
    }
}

#[tokio::test]
async fn an_endless_print_is_cut_at_the_cap_and_the_kernel_goes_on() {
    let server = Server::start().await;
    let kernel = server.client().start_kernel("python3").await;
    let mut socket = KernelSocket::connect(&server.address, &server.token, &kernel).await;
    let id = socket
        .send_execute("import sys\nwhile True:\n    sys.stdout.write('y' * 1000 + '\\n')")
        .await;
    let notice = socket
        .wait_for(&id, |m| matches!(&m.content, Content::Stream(s) if s.text.contains("rest of its output was dropped")))
        .await;
    assert_eq!(notice.channel, Channel::Iopub);
    let control = socket
        .send(Channel::Control, "interrupt_request", json!({}))
        .await;
    socket.reply_to(&control).await;
    let rest = socket.collect(&id).await;
    let late: usize = rest.stdout().len();
    assert!(late <= 1024 * 1024, "{late} bytes arrived after the cap");
    let run = socket.execute("'ok'").await;
    assert_eq!(run.result().as_deref(), Some("'ok'"));
}

/// What jupyter_server's gateway client (behind nbclient and papermill with `--gateway-url`)
/// sends: a numeric `date`, and no top-level `channel`, `parent_header`, `metadata` or
/// `buffers`. jupyter_server takes a missing channel for shell.
#[tokio::test]
async fn messages_as_jupyter_servers_gateway_client_sends_them_are_run() {
    let server = Server::start().await;
    let kernel = server.client().start_kernel("python3").await;
    let mut socket = KernelSocket::connect(&server.address, &server.token, &kernel).await;
    let frame = json!({
        "header": {"msg_id": "gw-1", "msg_type": "execute_request", "session": "gw",
                   "username": "gw", "date": 1796643177.02, "version": "5.3"},
        "content": {"code": "print('through the gateway client')\n6*7", "silent": false}
    });
    socket.send_raw(WsMessage::Text(frame.to_string())).await;
    let run = socket.collect("gw-1").await;
    assert_eq!(run.reply().status, ReplyStatus::Ok);
    assert_eq!(run.stdout(), "through the gateway client\n");
    assert_eq!(run.result().as_deref(), Some("42"));
    let reply = run
        .messages
        .iter()
        .find(|message| message.header.msg_type == "execute_reply")
        .unwrap();
    assert_eq!(reply.channel, Channel::Shell);
    assert_eq!(
        reply.parent_header_value()["date"],
        json!(1796643177.02),
        "the parent header is the request's, unchanged"
    );
}
