//! Relay in both directions: the original webrtc_p2p signaling sequence,
//! timeouts, disconnects, the in-flight limit, notifications and ordering.

mod common;

use std::time::{Duration, Instant};

use common::{Raw, TestServer, group_of_three};
use serde_json::{Value, json};

const RELAY_TIMEOUT: i64 = -32007;
const PEER_GONE: i64 = -32008;
const BUSY: i64 = -32009;
const REQUEST_CANCELLED: i64 = -32800;

/// `from` offers to `to` and gets an answer, then both trickle two ICE
/// candidates as notifications; each side checks exactly what it received.
async fn signal(group: &str, (from, uf): (&mut Raw, &str), (to, ut): (&mut Raw, &str)) {
    let offer = json!({"type": "offer", "sdp": format!("v=0 offer {uf}->{ut}")});
    let id = from.request("relay", json!([group, ut, offer])).await;
    let request = to.incoming("relay").await;
    assert_eq!(request["params"], json!([group, uf, offer]));
    let answer = json!({"type": "answer", "sdp": format!("v=0 answer {ut}->{uf}")});
    to.answer(&request, answer.clone()).await;
    assert_eq!(from.response(id).await["result"], answer);

    for n in 0..2 {
        from.notify("relay", json!([group, ut, {"candidate": format!("cand {uf} {n}")}])).await;
        to.notify("relay", json!([group, uf, {"candidate": format!("cand {ut} {n}")}])).await;
    }
    for n in 0..2 {
        let got = to.incoming("relay").await;
        assert!(got.get("id").is_none(), "forwarded as a notification: {got}");
        assert_eq!(got["params"], json!([group, uf, {"candidate": format!("cand {uf} {n}")}]));
        let got = from.incoming("relay").await;
        assert!(got.get("id").is_none(), "forwarded as a notification: {got}");
        assert_eq!(got["params"], json!([group, ut, {"candidate": format!("cand {ut} {n}")}]));
    }
}

#[tokio::test]
async fn the_webrtc_p2p_sequence_connects_three_user_agents_pairwise() {
    let server = TestServer::start().await;
    // UA0 creates; UA1 joins, lists, signals UA0.
    let (mut ua0, u0) = server.user().await;
    let group = ua0.ok("create", json!([])).await.as_str().unwrap().to_owned();
    let (mut ua1, u1) = server.user().await;
    assert_eq!(ua1.ok("join", json!([group])).await, json!({"owner": u0, "capability": 10}));
    assert_eq!(ua0.incoming("member_joined").await["params"], json!([group, u1]));
    assert_eq!(ua1.ok("get_members", json!([group])).await, json!([u0, u1]));
    signal(&group, (&mut ua1, &u1), (&mut ua0, &u0)).await;

    // UA2 joins and signals both existing members.
    let (mut ua2, u2) = server.user().await;
    ua2.ok("join", json!([group])).await;
    assert_eq!(ua0.incoming("member_joined").await["params"], json!([group, u2]));
    assert_eq!(ua1.incoming("member_joined").await["params"], json!([group, u2]));
    assert_eq!(ua2.ok("get_members", json!([group])).await, json!([u0, u1, u2]));
    signal(&group, (&mut ua2, &u2), (&mut ua0, &u0)).await;
    signal(&group, (&mut ua2, &u2), (&mut ua1, &u1)).await;

    for ua in [&mut ua0, &mut ua1, &mut ua2] {
        ua.nothing_pending().await;
    }
}

/// A relay from `from` to `to` (user `ut`), answered.
async fn answered_relay(group: &str, (from, to, ut): (&mut Raw, &mut Raw, &str)) {
    let id = from.request("relay", json!([group, ut, "hello"])).await;
    let request = to.incoming("relay").await;
    to.answer(&request, json!("hi")).await;
    assert_eq!(from.response(id).await["result"], "hi");
}

#[tokio::test]
async fn relay_to_a_target_that_never_answers_times_out() {
    let server = TestServer::with_flags(&["--relay-timeout", "200ms"]).await;
    let (group, [(mut a, ua), (mut b, _), _c]) = group_of_three(&server).await;
    // Answered, so that the next relay's route is known (on a cluster, its
    // call to the other node then waits without a task, timer included).
    answered_relay(&group, (&mut b, &mut a, &ua)).await;
    let started = Instant::now();
    assert_eq!(b.err("relay", json!([group, ua, "offer"])).await, RELAY_TIMEOUT);
    assert!(started.elapsed() >= Duration::from_millis(200));
    // A late answer is dropped, and the target's connection is unharmed.
    let late = a.incoming("relay").await;
    a.answer(&late, json!("too late")).await;
    a.nothing_pending().await;
    b.nothing_pending().await;
}

#[tokio::test]
async fn relay_to_a_target_that_disconnects_fails_with_peer_gone_promptly() {
    let server = TestServer::start().await; // relay timeout 10 s
    let (group, [(mut a, ua), (mut b, _), _c]) = group_of_three(&server).await;
    let id = b.request("relay", json!([group, ua, "offer"])).await;
    a.incoming("relay").await;
    let started = Instant::now();
    drop(a);
    assert_eq!(b.response(id).await["error"]["code"], PEER_GONE);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn relays_past_the_in_flight_limit_are_busy() {
    let server = TestServer::start().await; // 256 in flight
    let (group, [(mut a, ua), (mut b, _), _c]) = group_of_three(&server).await;
    for n in 0..300 {
        b.send(json!({"jsonrpc": "2.0", "id": n, "method": "relay", "params": [group, ua, n]})).await;
    }
    let mut busy = Vec::new();
    let mut requests = Vec::new();
    while busy.len() + requests.len() < 300 {
        tokio::select! {
            r = a.incoming("relay") => requests.push(r),
            e = b.next_matching(|m| m["error"]["code"] == BUSY) => busy.push(e["id"].as_i64().unwrap()),
        }
    }
    assert_eq!(requests.len(), 256);
    assert_eq!(busy, (256..300).collect::<Vec<_>>(), "the ones past the limit, in order");
    // Answering frees the slots.
    for request in &requests {
        let n = request["params"][2].clone();
        a.answer(request, n).await;
    }
    for n in 0..256 {
        assert_eq!(b.response(n).await["result"], n);
    }
    let id = b.request("relay", json!([group, ua, "again"])).await;
    let request = a.incoming("relay").await;
    a.answer(&request, json!("ok")).await;
    assert_eq!(b.response(id).await["result"], "ok");
}

#[tokio::test]
async fn relay_sent_as_a_notification_is_forwarded_as_one_and_gets_no_answer() {
    let server = TestServer::start().await;
    let (group, [(mut a, ua), (mut b, ub), _c]) = group_of_three(&server).await;
    b.notify("relay", json!([group, ua, {"candidate": "c1"}])).await;
    let got = a.incoming("relay").await;
    assert_eq!(got, json!({"jsonrpc": "2.0", "method": "relay", "params": [group, ub, {"candidate": "c1"}]}));
    b.nothing_pending().await;
    // A notification to someone it may not reach is dropped without a word.
    b.notify("relay", json!([group, "0123456789abcdef0123456789abcdef", 1])).await;
    b.nothing_pending().await;
}

#[tokio::test]
async fn a_thousand_relays_from_one_caller_reach_the_target_in_order() {
    // All sent before any is answered, so the in-flight limit must allow 500.
    let server = TestServer::with_flags(&["--max-relays-in-flight", "1000"]).await;
    let (group, [(mut a, ua), (mut b, _), _c]) = group_of_three(&server).await;
    // Requests and notifications interleaved: a candidate never overtakes its offer.
    for n in 0..1000 {
        if n % 2 == 0 {
            b.send(json!({"jsonrpc": "2.0", "id": n, "method": "relay", "params": [group, ua, n]})).await;
        } else {
            b.notify("relay", json!([group, ua, n])).await;
        }
    }
    for n in 0..1000 {
        let got = a.incoming("relay").await;
        assert_eq!(got["params"][2], n);
        if got.get("id").is_some() {
            a.answer(&got, json!(n)).await;
        }
    }
    for n in (0..1000).step_by(2) {
        assert_eq!(b.response(n).await["result"], n);
    }
}

#[tokio::test]
async fn a_client_cannot_relay_in_someone_elses_name() {
    let server = TestServer::start().await;
    let (group, [(mut a, ua), (mut b, ub), (_c, uc)]) = group_of_three(&server).await;
    // Extra params, named or positional, do not change the stamped sender.
    b.notify("relay", json!({"group_id": group, "user_id": ua, "data": 1, "from_user_id": uc})).await;
    b.notify("relay", json!([group, ua, 2, uc])).await;
    assert_eq!(a.incoming("relay").await["params"][1], json!(ub));
    assert_eq!(a.incoming("relay").await["params"][1], json!(ub));
}

#[tokio::test]
async fn relays_in_both_directions_at_once_do_not_deadlock() {
    let server = TestServer::start().await;
    let (group, [(mut a, ua), (mut b, ub), _c]) = group_of_three(&server).await;
    let ida = a.request("relay", json!([group, ub, "a->b"])).await;
    let idb = b.request("relay", json!([group, ua, "b->a"])).await;
    let to_a = a.incoming("relay").await;
    let to_b = b.incoming("relay").await;
    a.answer(&to_a, json!("a answers")).await;
    b.answer(&to_b, json!("b answers")).await;
    assert_eq!(a.response(ida).await["result"], "b answers");
    assert_eq!(b.response(idb).await["result"], "a answers");
    let _ = Value::Null;
}

#[tokio::test]
async fn a_cancelled_relay_is_answered_at_once_frees_its_slot_and_the_target_is_told() {
    let server = TestServer::with_flags(&["--max-relays-in-flight", "1"]).await; // relay timeout 10 s
    let (group, [(mut a, ua), (mut b, _), _c]) = group_of_three(&server).await;
    // As in the timeout test: the cancelled relay's route is known.
    answered_relay(&group, (&mut b, &mut a, &ua)).await;
    b.send(json!({"jsonrpc": "2.0", "id": "offer-1", "method": "relay", "params": [group, ua, "offer"]})).await;
    let forwarded = a.incoming("relay").await;
    assert_eq!(b.err("relay", json!([group, ua, "second"])).await, BUSY, "the one slot is taken");

    // An id with nothing pending changes nothing; the right one ends the relay.
    b.notify("$/cancelRequest", json!({"id": "offer-2"})).await;
    let started = Instant::now();
    b.notify("$/cancelRequest", json!({"id": "offer-1"})).await;
    let cancelled = b.next_matching(|m| m["id"] == "offer-1").await;
    assert_eq!(cancelled["error"]["code"], REQUEST_CANCELLED, "{cancelled}");
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    // On a cluster a and b are on different nodes: a's is told through its channel.
    let told = a.incoming("$/cancelRequest").await;
    assert_eq!(told["params"], json!({"id": forwarded["id"]}), "the id the target was sent");
    assert!(told.get("id").is_none(), "a notification: {told}");

    // The slot is free again, and the target's late answer reaches nobody.
    a.answer(&forwarded, json!("too late")).await;
    let id = b.request("relay", json!([group, ua, "third"])).await;
    let request = a.incoming("relay").await;
    a.answer(&request, json!("ok")).await;
    assert_eq!(b.response(id).await["result"], "ok");
    a.nothing_pending().await;
    b.nothing_pending().await;
    server.metric_settles_at("webrtc_p2p_relays_total{outcome=\"cancelled\"}", 1.0).await;
}
