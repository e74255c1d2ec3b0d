//! Connection-level behaviour: limits that close a connection, bad input that
//! must not disturb anyone else, and graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{Raw, TestServer, group_of_three};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use webrtc_p2p_simple::HubStats;

/// B and C relay to each other in a loop while `abuse` runs on another
/// connection; every relay must succeed.
async fn keeps_relaying_while<F: std::future::Future<Output = ()>>(server: &TestServer, abuse: F) {
    let (group, [_a, (mut b, _), (mut c, uc)]) = group_of_three(server).await;
    let relays = async {
        for n in 0..200 {
            let id = b.request("relay", json!([group, uc, n])).await;
            let request = c.incoming("relay").await;
            c.answer(&request, json!(n)).await;
            assert_eq!(b.response(id).await["result"], n, "relay {n}");
        }
    };
    tokio::join!(relays, abuse);
}

#[tokio::test]
async fn bad_input_on_one_connection_does_not_disturb_another() {
    let server = TestServer::with_flags(&["--max-message-size", "65536"]).await;
    let mut bad = server.connect().await;
    let abuse = async {
        for text in [
            "not json",
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"unknown id\"}",
            "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"join\",\"params\":[{}]}",
            "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"no_such_method\"}",
            &"[".repeat(50_000),
            &format!("{{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"relay\",\"params\":{}}}", "{\"a\":".repeat(5_000)),
        ] {
            bad.send_text(text).await;
        }
        // Parse error, (dropped response), invalid params, not found, parse error x2.
        for want in [-32700, -32602, -32601, -32700, -32700] {
            assert_eq!(bad.next().await["error"]["code"], want);
        }
        bad.send_text(&"x".repeat(70_000)).await;
        assert_eq!(bad.closed().await.0, Some(1009));
    };
    keeps_relaying_while(&server, abuse).await;
}

#[tokio::test]
async fn an_oversized_message_closes_the_connection_with_1009() {
    let server = TestServer::with_flags(&["--max-message-size", "1024"]).await;
    let (mut client, _) = server.user().await;
    client
        .send_text(&format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"init\",\"x\":\"{}\"}}", "y".repeat(1024)))
        .await;
    assert_eq!(client.closed().await, (Some(1009), "message too big".into()));
    server.settles_at(HubStats { users: 0, groups: 0 }).await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let frame = Frame::message(vec![b'"', 0xff, 0xfe, b'"'], OpCode::Data(Data::Text), true);
    client.send_message(Message::Frame(frame)).await;
    assert_eq!(client.closed().await.0, Some(1007));
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    // No pings within the window, so the client has nothing to answer.
    let server = TestServer::with_flags(&["--idle-timeout", "300ms", "--ping-interval", "1h"]).await;
    let (mut client, _) = server.user().await;
    let started = Instant::now();
    assert_eq!(client.closed().await, (Some(1008), "idle timeout".into()));
    assert!(started.elapsed() >= Duration::from_millis(250), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_client_that_answers_pings_outlives_the_idle_timeout() {
    // Twenty pings per idle timeout: a reading client stays alive even when a
    // loaded machine stalls this test's thread for most of a second.
    let server = TestServer::with_flags(&["--idle-timeout", "2s", "--ping-interval", "100ms"]).await;
    let (mut reading, _) = server.user().await;
    let (mut hung, _) = server.user().await;
    let started = Instant::now();
    // The hung client answers no pings, so its closing proves the idle clock
    // ran out for it, while the reading client answered them all along.
    hung.stall();
    server.settles_at(HubStats { users: 1, groups: 0 }).await;
    assert!(started.elapsed() >= Duration::from_millis(1900), "{:?}", started.elapsed());
    reading.nothing_pending().await;
}

#[tokio::test]
async fn a_connection_that_does_not_init_in_time_is_closed() {
    // Long enough that the prompt client's init makes it on a loaded machine.
    let server = TestServer::with_flags(&["--init-timeout", "1s"]).await;
    let mut lazy = server.connect().await;
    let (mut prompt, _) = server.user().await;
    assert_eq!(lazy.closed().await, (Some(1008), "init timeout".into()));
    prompt.nothing_pending().await;
}

#[tokio::test]
async fn graceful_shutdown_closes_every_connection_with_1001() {
    let server = TestServer::start().await;
    let (group, [(mut a, ua), (mut b, _), (mut c, _)]) = group_of_three(&server).await;
    let relay = b.request("relay", json!([group, ua, "pending"])).await;
    a.incoming("relay").await;
    let mut fresh = Raw::connect(&server.url()).await;
    server.shutdown().await;
    for client in [&mut a, &mut c, &mut fresh] {
        assert_eq!(client.closed().await, (Some(1001), "server shutting down".into()));
    }
    // The relay waiting on A fails rather than hangs.
    let response = b.next_matching(|m| m["id"] == relay).await;
    assert_eq!(response["error"]["code"], -32008);
    assert_eq!(b.closed().await.0, Some(1001));
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_and_others_keep_going() {
    let server = TestServer::with_flags(&["--max-queued-frames", "16"]).await;
    let (group, [(mut a, ua), (mut b, _), (mut c, uc)]) = group_of_three(&server).await;
    // A never reads its socket: its kernel buffers fill, then its queue.
    a.stall();
    let payload = "x".repeat(16 * 1024);
    for _ in 0..2_000 {
        b.notify("relay", json!([group, ua, payload])).await;
        if server.hub.stats().users == 2 {
            break;
        }
    }
    server.settles_at(HubStats { users: 2, groups: 1 }).await;
    let id = b.request("relay", json!([group, uc, "still here"])).await;
    let request = c.incoming("relay").await;
    c.answer(&request, json!("yes")).await;
    assert_eq!(b.response(id).await["result"], "yes");
    drop(a);
}
