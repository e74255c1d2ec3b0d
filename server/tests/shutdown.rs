//! SIGTERM to the real binary with relays in flight: relays whose target
//! answered complete, the rest fail with PeerGone, every connection closes
//! with 1001, and the process exits 0 in bounded time.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{PATIENCE, Raw, sigterm, spawn_binary};
use serde_json::{Value, json};

const PEER_GONE: i64 = -32008;

/// Two users in a group of their own: (caller, target, group, target's id).
async fn pair(url: &str) -> (Raw, Raw, String, String) {
    let mut caller = Raw::connect(url).await;
    caller.ok("init", json!([])).await;
    let mut target = Raw::connect(url).await;
    let ut = target.ok("init", json!([])).await.as_str().expect("id").to_owned();
    let group = caller.ok("create", json!([])).await.as_str().expect("group").to_owned();
    target.ok("join", json!([group])).await;
    caller.incoming("member_joined").await;
    (caller, target, group, ut)
}

/// How a relay ended, as its caller saw it.
#[derive(Debug, Default)]
struct Tally {
    answered: usize,
    peer_gone: usize,
    other_errors: Vec<Value>,
    /// Sent, but the connection closed before any answer: the server never
    /// read it (it answers everything it reads before its close frame).
    unread: usize,
}

/// A caller keeping 8 relays in flight to a target that answers each at
/// once, until `stop`; then it waits for the server to close it.
async fn busy_caller(mut caller: Raw, group: String, target: String, stop: Arc<AtomicBool>) -> (Tally, Option<u16>) {
    let mut tally = Tally::default();
    let mut open = 0usize;
    let mut next = 0u64;
    loop {
        while open < 8 && !stop.load(Ordering::Acquire) {
            next += 1;
            let request = json!({"jsonrpc": "2.0", "id": next, "method": "relay", "params": [group, target, next]});
            if !caller.try_send(request).await {
                break;
            }
            open += 1;
        }
        match caller.next_or_closed().await {
            Ok(response) if response.get("result").is_some() => {
                tally.answered += 1;
                open -= 1;
            }
            Ok(response) if response["error"]["code"] == PEER_GONE => {
                tally.peer_gone += 1;
                open -= 1;
            }
            Ok(response) if response.get("error").is_some() => {
                tally.other_errors.push(response);
                open -= 1;
            }
            Ok(_) => {}
            Err(code) => {
                tally.unread = open;
                return (tally, code);
            }
        }
    }
}

/// Answers every relay until the server closes it; its close code.
async fn answering_target(mut target: Raw) -> Option<u16> {
    loop {
        match target.next_or_closed().await {
            Ok(request) if request["method"] == "relay" && request.get("id").is_some() => {
                let answer = json!({"jsonrpc": "2.0", "id": request["id"], "result": request["params"][2]});
                // The close may be on its way already; then this answer is moot.
                let _ = target.try_send(answer).await;
            }
            Ok(_) => {}
            Err(code) => return code,
        }
    }
}

#[tokio::test]
async fn sigterm_under_load_completes_answered_relays_fails_the_rest_and_closes_with_1001() {
    let (mut child, addr) = spawn_binary(&[]).await;
    let url = format!("ws://{addr}/ws");

    // Held pairs: each target has 20 relays waiting and answers the even
    // ones just before SIGTERM, so their answers are still on the way.
    let mut held = Vec::new();
    for _ in 0..10 {
        let (mut caller, target, group, ut) = pair(&url).await;
        for n in 0..20 {
            caller.send(json!({"jsonrpc": "2.0", "id": n, "method": "relay", "params": [group, ut, n]})).await;
        }
        held.push((caller, target));
    }
    let mut requests = Vec::new();
    for (_, target) in &mut held {
        let mut mine = Vec::new();
        for _ in 0..20 {
            mine.push(target.incoming("relay").await);
        }
        requests.push(mine);
    }

    // Busy pairs: relays flowing in both tasks until the end.
    let stop = Arc::new(AtomicBool::new(false));
    let mut busy = Vec::new();
    for _ in 0..10 {
        let (caller, target, group, ut) = pair(&url).await;
        busy.push((tokio::spawn(busy_caller(caller, group, ut, stop.clone())), tokio::spawn(answering_target(target))));
    }
    // Let the busy pairs get going.
    tokio::time::sleep(Duration::from_millis(200)).await;

    for ((_, target), mine) in held.iter_mut().zip(&requests) {
        for request in mine.iter().filter(|r| r["params"][2].as_i64().is_some_and(|n| n % 2 == 0)) {
            target.answer(request, request["params"][2].clone()).await;
        }
    }
    stop.store(true, Ordering::Release);
    let signalled = Instant::now();
    sigterm(&child).await;

    for (mut caller, mut target) in held {
        for n in 0..20 {
            let response = caller.response(n).await;
            if n % 2 == 0 {
                assert_eq!(response["result"], n, "answered relay {n} completes");
            } else {
                assert_eq!(response["error"]["code"], PEER_GONE, "unanswered relay {n}: {response}");
            }
        }
        assert_eq!(caller.closed().await.0, Some(1001));
        assert_eq!(target.closed().await.0, Some(1001));
    }
    let mut total = Tally::default();
    for (caller, target) in busy {
        let (tally, code) = caller.await.expect("caller");
        assert_eq!(code, Some(1001));
        assert_eq!(target.await.expect("target"), Some(1001));
        total.answered += tally.answered;
        total.peer_gone += tally.peer_gone;
        total.unread += tally.unread;
        total.other_errors.extend(tally.other_errors);
    }
    assert!(total.answered > 0, "the busy pairs relayed nothing");
    assert!(total.other_errors.is_empty(), "{:?}", total.other_errors);
    // Each busy caller stopped sending before SIGTERM, and the server keeps
    // reading while any relay waits: nothing sent before it goes unread.
    assert_eq!(total.unread, 0, "{total:?}");

    let status = tokio::time::timeout(PATIENCE, child.wait()).await.expect("exit in time").expect("wait");
    assert!(status.success(), "{status}");
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(4), "shutdown took {took:?}");
}
