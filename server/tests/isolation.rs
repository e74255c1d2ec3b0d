//! What one client can do to others through the protocol: nothing it is not
//! allowed. Ids cannot be guessed or taken over, relays stay inside shared
//! groups without revealing who exists, every state limit holds, and
//! batches are bounded and answered in order.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::opcode::TEXT;
use common::{TestServer, WireClient, group_of_three, metric, upgrade_request};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use webrtc_p2p_simple::HubStats;

const NOT_A_MEMBER: i64 = -32004;
const USER_NOT_FOUND: i64 = -32005;
const BUSY: i64 = -32009;
const LIMIT_EXCEEDED: i64 = -32010;

/// One connection, one `init`, then a reset (no TIME_WAIT left behind, so
/// thousands of them do not run out of ports): the id it was given.
async fn init_once(addr: SocketAddr) -> u128 {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // Deprecated because a lingering close blocks the thread; a zero linger
    // never does: it resets at once.
    #[allow(deprecated)]
    stream.set_linger(Some(Duration::ZERO)).expect("linger");
    // Upgrade and init in one write: the server reads the frame after the head.
    let mut bytes = upgrade_request("").into_bytes();
    bytes.extend(WireClient::encode(true, 0, TEXT, Some([1, 2, 3, 4]), br#"{"jsonrpc":"2.0","id":0,"method":"init"}"#));
    stream.write_all(&bytes).await.expect("write");
    let mut seen = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before init answered: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&seen);
        if let Some((_, rest)) = text.split_once("\"result\":\"")
            && let Some(hex) = rest.get(..33).filter(|h| h.ends_with('"'))
        {
            let hex = &hex[..32];
            assert!(hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')), "{hex}");
            return u128::from_str_radix(hex, 16).expect("hex");
        }
    }
}

/// Each `init` takes a fresh draw from the id generator: no id handed out
/// twice, and none of the 128 bits fixed (a bit that is the same in 2,000
/// independent draws by chance: probability 2^-1999). The generator's own
/// birthday test (a hundred thousand draws) is in `interfaces/src/ids.rs`,
/// where it needs no connections.
#[tokio::test]
async fn two_thousand_inits_give_distinct_128_bit_ids() {
    const INITS: usize = 2_000;
    const WORKERS: usize = 16;
    let server = TestServer::start().await;
    let addr = server.addr;
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(INITS / WORKERS);
                for _ in 0..INITS / WORKERS {
                    ids.push(init_once(addr).await);
                }
                ids
            })
        })
        .collect();
    let mut ids = HashSet::with_capacity(INITS);
    let (mut ones, mut zeros) = (0u128, 0u128);
    for worker in workers {
        for id in worker.await.expect("worker") {
            assert!(ids.insert(id), "id {id:032x} handed out twice");
            ones |= id;
            zeros |= !id;
        }
    }
    assert_eq!(ids.len(), INITS);
    // Every one of the 128 bits varies: nothing fixed (not even a UUID's
    // version nibble) for a guesser to lean on.
    assert_eq!((ones, zeros), (u128::MAX, u128::MAX), "fixed bits: {:032x}", !(ones & zeros));
    server.settles_at(HubStats { users: 0, groups: 0 }).await;
}

#[tokio::test]
async fn a_client_cannot_act_as_another_user_by_any_parameter() {
    let server = TestServer::start().await;
    let (group, [(mut a, ua), (mut b, ub), (mut c, uc)]) = group_of_three(&server).await;
    let (mut outsider, ux) = server.user().await;
    let members = json!([ua, ub, uc]);

    // A fresh connection cannot init as A, and nobody can init twice.
    let mut fresh = server.connect().await;
    let response = fresh.call("init", json!([ua])).await;
    assert_ne!(response["result"], json!(ua), "{response}");
    assert_eq!(fresh.call("init", json!({"user_id": ua})).await["error"]["code"], -32002);
    assert_eq!(outsider.err("init", json!([])).await, -32002);

    // Naming someone else, by position or by name, changes nothing about who acts.
    for (method, params) in [
        ("leave", json!({"group_id": group, "user_id": ua})),
        ("leave", json!([group, ua])),
        ("get_members", json!({"group_id": group, "user_id": ub})),
        ("relay", json!([group, ub, "x", ua])),
        ("relay", json!({"group_id": group, "user_id": ub, "data": "x", "from_user_id": ua, "from": ua})),
    ] {
        let code = outsider.err(method, params.clone()).await;
        assert_eq!(code, NOT_A_MEMBER, "{method} {params}");
    }
    assert_eq!(a.ok("get_members", json!([group])).await, members, "nobody left");
    // Joining "as A" joins the caller.
    outsider.ok("join", json!({"group_id": group, "user_id": ua})).await;
    assert_eq!(a.ok("get_members", json!([group])).await, json!([ua, ub, uc, ux]));
    for member in [&mut a, &mut b, &mut c] {
        assert_eq!(member.incoming("member_joined").await["params"], json!([group, ux]));
    }
    // A relay is stamped with its real sender whatever it claims.
    outsider.notify("relay", json!({"group_id": group, "user_id": ua, "data": 1, "from_user_id": ub})).await;
    assert_eq!(a.incoming("relay").await["params"], json!([group, ux, 1]));

    // Nobody can answer a call made to someone else: C relays to A, and B
    // sends a response with the id the server gave that call to A.
    let id = c.request("relay", json!([group, ua, "offer"])).await;
    let to_a = a.incoming("relay").await;
    b.send(json!({"jsonrpc": "2.0", "id": to_a["id"], "result": "forged by B"})).await;
    b.nothing_pending().await;
    a.answer(&to_a, json!("from A")).await;
    assert_eq!(c.response(id).await["result"], "from A");
}

#[tokio::test]
async fn relay_stays_inside_shared_groups_and_an_outsider_looks_like_an_unknown_id() {
    let server = TestServer::start().await;
    let (shared, [(mut a, _), (mut b, ub), _c]) = group_of_three(&server).await;
    let (mut elsewhere, ue) = server.user().await;
    let (_elsewhere_mate, _) = server.user().await;
    let other_group = elsewhere.ok("create", json!([])).await;
    let unknown = "0123456789abcdef0123456789abcdef";

    // A live user in no group of A's, and an id nobody has: the same answer,
    // to the byte, so ids cannot be probed.
    let outsider = a.call("relay", json!([shared, ue, "probe"])).await;
    let nobody = a.call("relay", json!([shared, unknown, "probe"])).await;
    assert_eq!(outsider["error"]["code"], USER_NOT_FOUND);
    assert_eq!(outsider["error"], nobody["error"]);
    // Through a group A is not in, whoever the target is: NotAMember.
    let via_theirs = a.call("relay", json!([other_group, ue, "probe"])).await;
    let via_theirs_nobody = a.call("relay", json!([other_group, unknown, "probe"])).await;
    assert_eq!(via_theirs["error"]["code"], NOT_A_MEMBER);
    assert_eq!(via_theirs["error"], via_theirs_nobody["error"]);
    assert_eq!(a.err("get_members", json!([other_group])).await, NOT_A_MEMBER, "no member list either");
    // A notification to an outsider vanishes: neither delivered nor answered.
    a.notify("relay", json!([shared, ue, "psst"])).await;
    a.nothing_pending().await;
    elsewhere.nothing_pending().await;
    // A member who left is an outsider too.
    let id = a.request("relay", json!([shared, ub, "still there?"])).await;
    let request = b.incoming("relay").await;
    b.answer(&request, json!("yes")).await;
    assert_eq!(a.response(id).await["result"], "yes");
    b.ok("leave", json!([shared])).await;
    a.incoming("member_left").await;
    let gone = a.call("relay", json!([shared, ub, "and now?"])).await;
    assert_eq!(gone["error"], nobody["error"]);
}

#[tokio::test]
async fn every_state_limit_is_hit_and_counted() {
    let server = TestServer::with_flags(&[
        "--max-groups-per-user",
        "2",
        "--max-members-per-group",
        "3",
        "--max-relays-in-flight",
        "2",
        "--max-message-size",
        "4096",
        "--max-batch-len",
        "3",
    ])
    .await;
    let (group, [(mut a, ua), (mut b, _), (mut c, _)]) = group_of_three(&server).await;
    // Members per group: the fourth may not join.
    let (mut d, _) = server.user().await;
    assert_eq!(d.err("join", json!([group])).await, LIMIT_EXCEEDED);
    // Groups per user: A is in one, creates a second, not a third.
    a.ok("create", json!([])).await;
    assert_eq!(a.err("create", json!([])).await, LIMIT_EXCEEDED);
    // Relays in flight: two wait on A, the third is Busy at once.
    let waiting = [b.request("relay", json!([group, ua, 1])).await, b.request("relay", json!([group, ua, 2])).await];
    assert_eq!(b.err("relay", json!([group, ua, 3])).await, BUSY);
    for _ in 0..2 {
        let request = a.incoming("relay").await;
        let n = request["params"][2].clone();
        a.answer(&request, n).await;
    }
    for (n, id) in waiting.into_iter().enumerate() {
        assert_eq!(b.response(id).await["result"], n + 1);
    }
    // Batch length: four requests get one -32600.
    let call = |id: i64| json!({"jsonrpc": "2.0", "id": id, "method": "get_members", "params": [group]});
    c.send(json!([call(1), call(2), call(3), call(4)])).await;
    assert_eq!(
        c.next().await,
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": "batch longer than 3"}})
    );
    // Message size: 1009, and the connection is gone.
    d.send_text(&format!("\"{}\"", "x".repeat(4096))).await;
    assert_eq!(d.closed().await.0, Some(1009));
    server.settles_at(HubStats { users: 3, groups: 2 }).await;

    let scraped = server.scrape().await;
    for (limit, want) in [("group_limits", 2.0), ("relays_in_flight", 1.0), ("batch_len", 1.0), ("message_size", 1.0)] {
        let sample = format!("webrtc_p2p_refused_total{{limit=\"{limit}\"}}");
        assert_eq!(metric(&scraped, &sample), Some(want), "{sample}");
    }
    assert_eq!(metric(&scraped, "webrtc_p2p_closes_total{code=\"1009\"}"), Some(1.0));
    assert_eq!(metric(&scraped, "webrtc_p2p_errors_total{error=\"LimitExceeded\"}"), Some(2.0));
}

#[tokio::test]
async fn a_batch_is_bounded_and_answered_in_order_however_its_calls_finish() {
    let server = TestServer::with_flags(&["--max-batch-len", "5"]).await;
    let (group, [(mut a, ua), (mut b, _), (mut c, uc)]) = group_of_three(&server).await;
    let request =
        |id: &str, method: &str, params: Value| json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    // Six is one too many: one error, nothing run.
    let six: Vec<Value> = (0..6).map(|n| request(&n.to_string(), "create", json!([]))).collect();
    b.send(Value::Array(six)).await;
    let refused = b.next().await;
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    assert_eq!(refused["id"], Value::Null);
    assert_eq!(server.hub.stats(), HubStats { users: 3, groups: 1 }, "nothing in it ran");

    // Five: two relays answered in reverse order, a quick call, a
    // notification and an error, all in the order sent.
    b.send(json!([
        request("to-a", "relay", json!([group, ua, "first"])),
        request("members", "get_members", json!([group])),
        request("to-c", "relay", json!([group, uc, "second"])),
        {"jsonrpc": "2.0", "method": "relay", "params": [group, uc, "a notification"]},
        request("again", "init", json!([])),
    ]))
    .await;
    let to_a = a.incoming("relay").await;
    let to_c = c.next_matching(|m| m["params"][2] == "second").await;
    c.answer(&to_c, json!("c answers first")).await;
    a.answer(&to_a, json!("a answers last")).await;
    assert_eq!(c.incoming("relay").await["params"][2], "a notification");
    let answers = b.next().await;
    let ids: Vec<_> = answers.as_array().expect("an array").iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, [json!("to-a"), json!("members"), json!("to-c"), json!("again")]);
    assert_eq!(answers[0]["result"], "a answers last");
    assert_eq!(answers[2]["result"], "c answers first");
    assert_eq!(answers[3]["error"]["code"], -32002);
}
