//! Answers pass through unchanged, whatever the target's error object looks
//! like; a malformed answer settles its caller at once with InvalidAnswer
//! and nothing goes back under the other side's ids; a relay or an answer
//! never exceeds the message size its receiver was promised.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, group_of_three};
use serde_json::{Value, json};

const INVALID_ANSWER: i64 = -32014;
const LIMIT_EXCEEDED: i64 = -32010;

/// Finding 8: any error object the target sent reaches the caller as it
/// was (PeerGone before for all three).
#[tokio::test]
async fn any_error_object_of_the_target_reaches_the_caller_unchanged() {
    let server = TestServer::start().await;
    let (group, [(mut a, _), (mut b, ub), _c]) = group_of_three(&server).await;
    for error in [
        json!({"code": -1, "message": "no", "extra": [1, 2]}),
        json!({"code": 7}),
        json!({"code": 1.5, "message": "fractional"}),
    ] {
        let id = a.request("relay", json!([group, ub, "offer"])).await;
        let request = b.incoming("relay").await;
        b.send(json!({"jsonrpc": "2.0", "id": request["id"], "error": error})).await;
        let response = a.response(id).await;
        assert_eq!(response["error"], error, "{response}");
    }
}

/// Findings 8 and 9: an answer that is not a JSON-RPC response settles the
/// caller at once with InvalidAnswer (before: PeerGone, or nothing until the
/// relay timeout), and the target is sent nothing back under the server's id.
#[tokio::test]
async fn a_malformed_answer_settles_the_caller_at_once_and_nothing_goes_back() {
    let server = TestServer::with_flags(&["--relay-timeout", "60s"]).await;
    let (group, [(mut a, _), (mut b, ub), _c]) = group_of_three(&server).await;
    for answer in [
        json!({"jsonrpc": "2.0", "result": null, "error": {"code": 1, "message": "both"}}),
        json!({"result": "no jsonrpc member"}),
        json!({"jsonrpc": "2.0"}),
        json!({"jsonrpc": "2.0", "error": "not an object"}),
    ] {
        let started = Instant::now();
        let id = a.request("relay", json!([group, ub, "offer"])).await;
        let request = b.incoming("relay").await;
        let mut answer = answer.clone();
        answer["id"] = request["id"].clone();
        b.send(answer.clone()).await;
        let response = a.response(id).await;
        assert_eq!(response["error"]["code"], INVALID_ANSWER, "{answer} -> {response}");
        assert!(started.elapsed() < Duration::from_secs(5), "{answer} took {:?}", started.elapsed());
        b.nothing_pending().await;
    }
}

/// Finding 9: a response-shaped frame with both result and error is not
/// answered with its own id (the client would take it for the answer to
/// its own call).
#[tokio::test]
async fn a_response_with_both_result_and_error_is_not_answered_with_its_id() {
    let server = TestServer::start().await;
    let (mut a, _) = server.user().await;
    a.send(json!({"jsonrpc": "2.0", "id": 7, "result": 1, "error": {"code": 1, "message": "x"}})).await;
    a.nothing_pending().await;
}

/// Finding 10: a request whose method is not a string gets its -32600 with
/// its own id (it got `id: null`).
#[tokio::test]
async fn a_request_whose_method_is_not_a_string_gets_its_id_back() {
    let server = TestServer::start().await;
    let (mut a, _) = server.user().await;
    a.send(json!({"jsonrpc": "2.0", "id": "m", "method": 42})).await;
    let response = a.next().await;
    assert_eq!((response["id"].clone(), response["error"]["code"].clone()), (json!("m"), json!(-32600)), "{response}");
}

/// Finding 4: a relay accepted at exactly the size limit would reach its
/// target larger (the server's `"s<n>"` id is longer than the caller's), so
/// it is refused at the caller with LimitExceeded; the target, which would
/// have closed with 1009 (and the caller got PeerGone), hears nothing.
#[tokio::test]
async fn a_relay_that_would_outgrow_the_targets_limit_is_refused_at_the_caller() {
    const MAX: usize = 4096;
    let server = TestServer::with_flags(&["--max-message-size", "4096", "--relay-timeout", "2s"]).await;
    let (group, [(mut a, _), (mut b, ub), _c]) = group_of_three(&server).await;
    let frame =
        |data: &str| format!(r#"{{"jsonrpc":"2.0","id":1,"method":"relay","params":["{group}","{ub}","{data}"]}}"#);
    let data = "d".repeat(MAX - frame("").len());
    assert_eq!(frame(&data).len(), MAX);
    a.send_text(&frame(&data)).await;
    let response = a.response(1).await;
    assert_eq!(response["error"]["code"], LIMIT_EXCEEDED, "{response}");
    b.nothing_pending().await;
}

/// Batch answers stay within the client's message size: a batch of relays
/// whose answers add up past it gets one array of at most the limit, the
/// answers that did not fit replaced by LimitExceeded with their ids (it
/// got one array as large as the answers together).
#[tokio::test]
async fn a_batch_answer_never_exceeds_the_message_size_limit() {
    const MAX: usize = 8192;
    let server = TestServer::with_flags(&["--max-message-size", "8192"]).await;
    let (group, [(mut a, _), (mut b, ub), _c]) = group_of_three(&server).await;
    let batch: Vec<Value> =
        (0..6).map(|n| json!({"jsonrpc": "2.0", "id": n, "method": "relay", "params": [group, ub, "offer"]})).collect();
    a.send(Value::Array(batch)).await;
    for _ in 0..6 {
        let request = b.incoming("relay").await;
        b.answer(&request, json!("a".repeat(2000))).await;
    }
    let answer = a.next_matching(Value::is_array).await;
    let size = answer.to_string().len();
    assert!(size <= MAX, "a {size}-byte batch answer over the {MAX}-byte limit");
    let items = answer.as_array().expect("array");
    assert_eq!(items.len(), 6, "every request answered");
    let refused = items.iter().filter(|item| item["error"]["code"] == LIMIT_EXCEEDED).count();
    assert!((1..6).contains(&refused), "some fit, some do not: {refused} refused");
    for (n, item) in items.iter().enumerate() {
        assert!(item["id"].is_number(), "answer {n} has its id: {item}");
    }
}
