//! RFC 6455 conformance, the MUST cases of the Autobahn suite's fuzzing
//! client written out by hand (its runner is Python 2 only): raw bytes over
//! TCP, so that frames no client library sends can be sent. Each violation
//! must fail the connection with the RFC's close code, and only that one.
//! Oversized frames and messages close with 1009 before they are buffered;
//! permessage-deflate is never negotiated.

mod common;

use common::opcode::{BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT};
use common::{TestServer, WireClient, WireFrame};
use serde_json::json;

const INIT: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"init"}"#;

async fn fresh(server: &TestServer) -> WireClient {
    WireClient::connect(server.addr, "").await
}

/// Every case closes its own connection; this one proves the server still
/// answers everyone else.
async fn still_serving(server: &TestServer) {
    let (mut client, _) = server.user().await;
    client.nothing_pending().await;
}

#[tokio::test]
async fn an_unmasked_client_frame_closes_with_1002() {
    let server = TestServer::start().await;
    let mut client = fresh(&server).await;
    client.send_raw(&WireClient::encode(true, 0, TEXT, None, INIT)).await;
    assert_eq!(client.close_code().await, Some(1002));
    still_serving(&server).await;
}

#[tokio::test]
async fn reserved_opcodes_close_with_1002() {
    let server = TestServer::start().await;
    for op in [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        let mut client = fresh(&server).await;
        client.send(true, op, b"x").await;
        assert_eq!(client.close_code().await, Some(1002), "opcode {op:#x}");
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn reserved_bits_close_with_1002_as_no_extension_is_negotiated() {
    let server = TestServer::start().await;
    for rsv in 1..=7 {
        let mut client = fresh(&server).await;
        // RSV1 is what a deflated frame would carry: refused too.
        client.send_raw(&WireClient::encode(true, rsv, TEXT, Some([1, 2, 3, 4]), INIT)).await;
        assert_eq!(client.close_code().await, Some(1002), "rsv {rsv:03b}");
    }
    still_serving(&server).await;
}

#[tokio::test]
async fn a_fragmented_control_frame_closes_with_1002() {
    let server = TestServer::start().await;
    for op in [PING, PONG, CLOSE] {
        let mut client = fresh(&server).await;
        client.send(false, op, b"part").await;
        assert_eq!(client.close_code().await, Some(1002), "opcode {op:#x}");
    }
}

#[tokio::test]
async fn a_control_frame_over_125_bytes_closes_with_1002() {
    let server = TestServer::start().await;
    for op in [PING, PONG] {
        let mut client = fresh(&server).await;
        client.send(true, op, &[b'p'; 126]).await;
        assert_eq!(client.close_code().await, Some(1002), "opcode {op:#x}");
    }
    // 125 is still fine: the pong echoes it.
    let mut client = fresh(&server).await;
    client.send(true, PING, &[b'p'; 125]).await;
    assert_eq!(client.frame().await, Some(WireFrame { fin: true, opcode: PONG, payload: vec![b'p'; 125] }));
}

#[tokio::test]
async fn a_continuation_without_a_first_fragment_closes_with_1002() {
    let server = TestServer::start().await;
    let mut client = fresh(&server).await;
    client.send(true, CONTINUATION, INIT).await;
    assert_eq!(client.close_code().await, Some(1002));
}

#[tokio::test]
async fn a_new_message_inside_a_fragmented_one_closes_with_1002() {
    let server = TestServer::start().await;
    for op in [TEXT, BINARY] {
        let mut client = fresh(&server).await;
        client.send(false, TEXT, b"{\"jsonrpc\":").await;
        client.send(true, op, INIT).await;
        assert_eq!(client.close_code().await, Some(1002), "opcode {op:#x}");
    }
}

#[tokio::test]
async fn fragments_with_pings_between_them_make_one_message_and_each_ping_gets_its_pong() {
    let server = TestServer::start().await;
    let mut client = fresh(&server).await;
    let (head, tail) = INIT.split_at(10);
    client.send(false, TEXT, head).await;
    client.send(true, PING, b"one").await;
    client.send(false, CONTINUATION, &tail[..5]).await;
    client.send(true, PING, b"").await;
    client.send(true, CONTINUATION, &tail[5..]).await;
    assert_eq!(client.frame().await, Some(WireFrame { fin: true, opcode: PONG, payload: b"one".to_vec() }));
    assert_eq!(client.frame().await, Some(WireFrame { fin: true, opcode: PONG, payload: vec![] }));
    let answer = client.json().await;
    assert_eq!(answer["id"], 1);
    assert_eq!(answer["result"].as_str().map(str::len), Some(32), "{answer}");
}

#[tokio::test]
async fn invalid_utf8_in_a_text_message_closes_with_1007_whole_or_fragmented() {
    let server = TestServer::start().await;
    // Whole, then split inside a valid code point (fine) before a bad byte.
    let mut client = fresh(&server).await;
    client.send(true, TEXT, b"\"\xce\xba\xff\"").await;
    assert_eq!(client.close_code().await, Some(1007));

    let mut client = fresh(&server).await;
    client.send(false, TEXT, b"\"\xce").await;
    client.send(false, CONTINUATION, b"\xba").await;
    client.send(true, CONTINUATION, b"\xed\xa0\x80\"").await; // a UTF-16 surrogate: not UTF-8
    assert_eq!(client.close_code().await, Some(1007));

    // A code point split across fragments is fine.
    let mut client = fresh(&server).await;
    client.send(false, TEXT, b"{\"jsonrpc\":\"2.0\",\"id\":\"\xce").await;
    client.send(true, CONTINUATION, b"\xba\",\"method\":\"nope\"}").await;
    assert_eq!(client.json().await["id"], "\u{3ba}");
    still_serving(&server).await;
}

#[tokio::test]
async fn a_close_with_a_valid_code_is_echoed_and_the_connection_ends() {
    let server = TestServer::start().await;
    for code in [1000, 1001, 1003, 1007, 1011, 3000, 3999, 4000, 4999] {
        let mut client = fresh(&server).await;
        client.send_close(code, b"bye").await;
        assert_eq!(client.close_code().await, Some(code));
    }
    // An empty close is answered with an empty close or 1000.
    let mut client = fresh(&server).await;
    client.send(true, CLOSE, &[]).await;
    assert!(matches!(client.close_code().await, None | Some(1000)));
}

#[tokio::test]
async fn a_close_with_a_code_not_allowed_on_the_wire_is_answered_with_1002() {
    let server = TestServer::start().await;
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        let mut client = fresh(&server).await;
        client.send_close(code, b"").await;
        assert_eq!(client.close_code().await, Some(1002), "code {code}");
    }
    let mut client = fresh(&server).await;
    client.send(true, CLOSE, &[0x03]).await; // a one-byte payload cannot hold a code
    assert_eq!(client.close_code().await, Some(1002));
}

#[tokio::test]
async fn a_close_reason_that_is_not_utf8_closes_with_1007() {
    let server = TestServer::start().await;
    let mut client = fresh(&server).await;
    client.send_close(1000, b"\xff\xfe").await;
    assert_eq!(client.close_code().await, Some(1007));
}

#[tokio::test]
async fn a_frame_announcing_more_than_the_limit_closes_with_1009_before_its_payload_arrives() {
    let server = TestServer::with_flags(&["--max-message-size", "65536"]).await;
    let mut client = fresh(&server).await;
    // A header for 1 GiB and 4 bytes of it: the answer comes at once, so the
    // server did not wait to buffer the rest.
    let mut header = WireClient::encode(true, 0, TEXT, Some([9, 9, 9, 9]), &[]);
    header[1] = 0x80 | 127;
    header.splice(2..2, (1u64 << 30).to_be_bytes());
    client.send_raw(&header).await;
    client.send_raw(b"[[[[").await;
    assert_eq!(client.close_code().await, Some(1009));
    still_serving(&server).await;
}

#[tokio::test]
async fn fragments_adding_up_past_the_limit_close_with_1009() {
    let server = TestServer::with_flags(&["--max-message-size", "65536"]).await;
    let mut client = fresh(&server).await;
    let piece = vec![b' '; 16 * 1024];
    client.send(false, TEXT, &piece).await;
    for _ in 0..4 {
        client.send(false, CONTINUATION, &piece).await;
    }
    assert_eq!(client.close_code().await, Some(1009));
    // Exactly at the limit is fine.
    let mut client = fresh(&server).await;
    let mut message = b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"nope\"}".to_vec();
    message.resize(65536, b' ');
    client.send(false, TEXT, &message[..32 * 1024]).await;
    client.send(true, CONTINUATION, &message[32 * 1024..]).await;
    assert_eq!(client.json().await["id"], 2);
}

#[tokio::test]
async fn permessage_deflate_is_never_negotiated() {
    let server = TestServer::start().await;
    let client =
        WireClient::connect(server.addr, "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
            .await;
    assert!(!client.head.to_ascii_lowercase().contains("sec-websocket-extensions"), "{}", client.head);
    // And the session works uncompressed.
    let mut client = client;
    client.send(true, TEXT, INIT).await;
    assert_eq!(client.json().await["id"], json!(1));
}

#[tokio::test]
async fn a_binary_message_that_is_not_utf8_gets_a_parse_error_not_a_close() {
    let server = TestServer::start().await;
    let mut client = fresh(&server).await;
    client.send(true, BINARY, b"\xff\x00").await;
    assert_eq!(client.json().await["error"]["code"], -32700);
    client.send(true, TEXT, INIT).await;
    assert_eq!(client.json().await["id"], 1);
}
