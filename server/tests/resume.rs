//! Sessions that survive a dropped connection: `session`, `resume`, the
//! replay after it, the window passing, and every way a resume must fail.
//! Dropping a raw client drops its TCP connection without a close frame,
//! as a network cut would.

mod common;

use std::time::Duration;

use common::{Raw, TestServer, metric};
use serde_json::{Value, json};
use webrtc_p2p_simple::HubStats;

const RESUME_FAILED: i64 = -32012;
const ALREADY_INITIALIZED: i64 = -32002;

/// A user that called `session`: the client, its id and its first ticket.
async fn resumable(server: &TestServer) -> (Raw, String, String) {
    let (mut client, id) = server.user().await;
    let facts = client.ok("session", json!([])).await;
    assert_eq!(facts["user_id"], json!(id));
    assert_eq!(facts["ice_servers"], json!([]));
    let ticket = facts["resume_ticket"].as_str().expect("ticket").to_owned();
    (client, id, ticket)
}

/// Resumes on a new connection and returns it with the result.
async fn resume(server: &TestServer, ticket: &str, received: u64) -> (Raw, Value) {
    let mut client = server.connect().await;
    let response = client.call("resume", json!([ticket, received])).await;
    (client, response)
}

#[tokio::test]
async fn a_dropped_session_resumes_with_its_id_groups_and_every_message_in_order() {
    let server = TestServer::with_flags(&["--resume-window", "10s"]).await;
    // A: init (1), session (2), create (3) answered.
    let (mut a, ua, ticket) = resumable(&server).await;
    let group = a.ok("create", json!([])).await;
    let (mut b, ub) = server.user().await;
    b.ok("join", json!([group])).await;
    assert_eq!(a.incoming("member_joined").await["params"], json!([group, ub])); // 4
    b.notify("relay", json!([group, ua, "before"])).await;
    assert_eq!(a.incoming("relay").await["params"], json!([group, ub, "before"])); // 5
    drop(a);
    server.metric_settles_at("webrtc_p2p_sessions_suspended_total", 1.0).await;

    // While A is away: a join, a notification and a relay request for it.
    let (mut c, uc) = server.user().await;
    c.ok("join", json!([group])).await;
    b.notify("relay", json!([group, ua, "during"])).await;
    let pending = b.request("relay", json!([group, ua, "offer"])).await;
    assert_eq!(b.incoming("member_joined").await["params"], json!([group, uc]));

    let (mut a, result) = resume(&server, &ticket, 5).await;
    assert_eq!(
        result["result"],
        json!({"user_id": ua, "groups": [group], "received": 3, "replayed": true}),
        "{result}"
    );
    assert_eq!(a.next().await["params"], json!([group, uc]), "member_joined, 6");
    assert_eq!(a.next().await["params"], json!([group, ub, "during"]), "7");
    let offer = a.next().await;
    assert_eq!(offer["params"], json!([group, ub, "offer"]), "8");
    a.answer(&offer, json!("answer")).await;
    assert_eq!(b.response(pending).await["result"], "answer", "answered after the resume, the caller gets it");

    // Carries on as before, and nobody saw A leave.
    a.notify("relay", json!([group, ub, "after"])).await;
    assert_eq!(b.incoming("relay").await["params"], json!([group, ua, "after"]));
    assert_eq!(a.ok("get_members", json!([group])).await, json!([ua, ub, uc]));
    b.nothing_pending().await;
    c.nothing_pending().await;
    a.nothing_pending().await;
    assert_eq!(server.hub.stats(), HubStats { users: 3, groups: 1 });
    server.metric_settles_at("webrtc_p2p_sessions_resumed_total{replayed=\"true\"}", 1.0).await;
}

#[tokio::test]
async fn the_server_counts_what_it_received_so_the_client_knows_what_to_send_again() {
    let server = TestServer::with_flags(&["--resume-window", "10s"]).await;
    let (mut a, ua, ticket) = resumable(&server).await; // init, session: 2
    let group = a.ok("create", json!([])).await; // 3
    a.send_text("garbage").await; // 4: every data frame counts
    assert_eq!(a.next().await["error"]["code"], -32700);
    let (mut b, ub) = server.user().await;
    b.ok("join", json!([group])).await;
    a.incoming("member_joined").await;
    a.notify("relay", json!([group, ub, 1])).await; // 5
    b.incoming("relay").await;
    drop(a);
    server.metric_settles_at("webrtc_p2p_sessions_suspended_total", 1.0).await;
    let (mut a, result) = resume(&server, &ticket, 3).await;
    assert_eq!(result["result"]["received"], 5, "{result}");
    assert_eq!(result["result"]["user_id"], json!(ua));
    a.nothing_pending().await;
}

#[tokio::test]
async fn the_window_passing_ends_the_session_as_in_v1() {
    let server = TestServer::with_flags(&["--resume-window", "300ms", "--relay-timeout", "60s"]).await;
    let (mut a, ua, ticket) = resumable(&server).await;
    let group = a.ok("create", json!([])).await;
    let (mut b, _) = server.user().await;
    b.ok("join", json!([group])).await;
    drop(a);
    let pending = b.request("relay", json!([group, ua, "offer"])).await;
    assert_eq!(b.incoming("member_left").await["params"], json!([group, ua]));
    assert_eq!(b.response(pending).await["error"]["code"], -32008, "PeerGone");
    let (_, result) = resume(&server, &ticket, 3).await;
    assert_eq!(result["error"]["code"], RESUME_FAILED);
    server.settles_at(HubStats { users: 1, groups: 1 }).await;
    server.metric_settles_at("webrtc_p2p_sessions_expired_total", 1.0).await;
    server.metric_settles_at("webrtc_p2p_resume_failures_total{reason=\"gone\"}", 1.0).await;
}

#[tokio::test]
async fn a_clean_close_ends_the_session_at_once() {
    let server = TestServer::with_flags(&["--resume-window", "60s"]).await;
    let (mut a, ua, ticket) = resumable(&server).await;
    let group = a.ok("create", json!([])).await;
    let (mut b, _) = server.user().await;
    b.ok("join", json!([group])).await;
    a.close().await;
    assert_eq!(b.incoming("member_left").await["params"], json!([group, ua]));
    let (_, result) = resume(&server, &ticket, 3).await;
    assert_eq!(result["error"]["code"], RESUME_FAILED);
    assert_eq!(metric(&server.scrape().await, "webrtc_p2p_sessions_suspended_total"), Some(0.0));
}

#[tokio::test]
async fn without_session_or_with_a_zero_window_a_drop_ends_the_session() {
    // A v1 client never calls `session`.
    let server = TestServer::with_flags(&["--resume-window", "60s"]).await;
    let (mut a, ua) = server.user().await;
    let group = a.ok("create", json!([])).await;
    let (mut b, _) = server.user().await;
    b.ok("join", json!([group])).await;
    drop(a);
    assert_eq!(b.incoming("member_left").await["params"], json!([group, ua]));

    let server = TestServer::with_flags(&["--resume-window", "0"]).await;
    let (mut a, ua) = server.user().await;
    let facts = a.ok("session", json!([])).await;
    assert_eq!((facts["resume_window_ms"].clone(), facts["resume_ticket"].clone()), (json!(0), json!("")));
    let group = a.ok("create", json!([])).await;
    let (mut b, _) = server.user().await;
    b.ok("join", json!([group])).await;
    drop(a);
    assert_eq!(b.incoming("member_left").await["params"], json!([group, ua]));
    let (_, result) = resume(&server, "", 0).await;
    assert_eq!(result["error"]["code"], RESUME_FAILED);
}

#[tokio::test]
async fn forged_expired_and_foreign_tickets_fail() {
    let server = TestServer::with_flags(&["--resume-window", "100ms"]).await;
    let (mut a, _, ticket) = resumable(&server).await;
    // One changed character in the signature.
    let mut forged = ticket.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_eq!(resume(&server, &forged, 2).await.1["error"]["code"], RESUME_FAILED);
    assert_eq!(resume(&server, "not a ticket", 2).await.1["error"]["code"], RESUME_FAILED);
    // Another server (another random key) cannot read this one's tickets.
    let other = TestServer::with_flags(&["--resume-window", "100ms"]).await;
    let (_other_client, _, foreign) = resumable(&other).await;
    assert_eq!(resume(&server, &foreign, 2).await.1["error"]["code"], RESUME_FAILED);
    // Tickets live ten windows (1 s here), even while the session lives on.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(resume(&server, &ticket, 2).await.1["error"]["code"], RESUME_FAILED);
    a.nothing_pending().await;
    let scraped = server.scrape().await;
    // The foreign ticket counts as forged: another key signed it.
    for (reason, n) in [("forged", 2.0), ("malformed", 1.0), ("expired", 1.0)] {
        assert_eq!(metric(&scraped, &format!("webrtc_p2p_resume_failures_total{{reason=\"{reason}\"}}")), Some(n));
    }
    // A shared secret makes tickets good on every server that has it.
    let one = TestServer::with_flags(&["--resume-secret", "s3cret"]).await;
    let two = TestServer::with_flags(&["--resume-secret", "s3cret"]).await;
    let (_a, _, ticket) = resumable(&one).await;
    let failed = resume(&two, &ticket, 2).await.1;
    assert_eq!(failed["error"]["code"], RESUME_FAILED, "verified, but the session is not there");
    assert_eq!(metric(&two.scrape().await, "webrtc_p2p_resume_failures_total{reason=\"gone\"}"), Some(1.0));
}

#[tokio::test]
async fn resuming_while_the_old_connection_is_open_closes_it_with_4001() {
    let server = TestServer::with_flags(&["--resume-window", "10s"]).await;
    let (mut old, ua, ticket) = resumable(&server).await;
    let group = old.ok("create", json!([])).await;
    let (mut new, result) = resume(&server, &ticket, 3).await;
    assert_eq!(result["result"]["replayed"], true, "{result}");
    assert_eq!(result["result"]["user_id"], json!(ua));
    assert_eq!(old.closed().await, (Some(4001), "resumed elsewhere".to_owned()));
    assert_eq!(new.ok("get_members", json!([group])).await, json!([ua]));
    assert_eq!(server.hub.stats(), HubStats { users: 1, groups: 1 });
}

#[tokio::test]
async fn resume_only_as_a_connections_first_call_alone() {
    let server = TestServer::with_flags(&["--resume-window", "10s"]).await;
    let (mut a, _, ticket) = resumable(&server).await;
    assert_eq!(a.err("resume", json!([ticket, 2])).await, ALREADY_INITIALIZED);
    let mut fresh = server.connect().await;
    fresh.send(json!([{"jsonrpc": "2.0", "id": 1, "method": "resume", "params": [ticket, 2]}])).await;
    assert_eq!(fresh.next().await[0]["error"]["code"], -32600);
    assert_eq!(fresh.err("resume", json!({"ticket": ticket})).await, -32602, "received is required");
    a.nothing_pending().await;
}

#[tokio::test]
async fn a_full_resume_buffer_keeps_the_session_but_not_the_messages() {
    let server = TestServer::with_flags(&["--resume-window", "10s", "--resume-buffer", "2000"]).await;
    let (mut a, ua, ticket) = resumable(&server).await;
    let group = a.ok("create", json!([])).await;
    let (mut b, ub) = server.user().await;
    b.ok("join", json!([group])).await;
    a.incoming("member_joined").await;
    drop(a);
    server.metric_settles_at("webrtc_p2p_sessions_suspended_total", 1.0).await;
    for n in 0..20 {
        b.notify("relay", json!([group, ua, format!("{n:0>200}")])).await;
    }
    b.nothing_pending().await;
    let (mut a, result) = resume(&server, &ticket, 4).await;
    assert_eq!(result["result"]["replayed"], false, "{result}");
    assert_eq!(result["result"]["groups"], json!([group]));
    // Nothing of the lost stretch arrives; the session carries on.
    assert_eq!(a.ok("get_members", json!([group])).await, json!([ua, ub]));
    b.notify("relay", json!([group, ua, "after"])).await;
    assert_eq!(a.incoming("relay").await["params"], json!([group, ub, "after"]));
    a.nothing_pending().await;
    server.metric_settles_at("webrtc_p2p_sessions_resumed_total{replayed=\"false\"}", 1.0).await;
}

#[tokio::test]
async fn an_idle_timeout_suspends_a_resumable_session() {
    let server =
        TestServer::with_flags(&["--resume-window", "10s", "--idle-timeout", "300ms", "--ping-interval", "1h"]).await;
    let (mut a, ua, ticket) = resumable(&server).await;
    let group = a.ok("create", json!([])).await;
    a.stall();
    server.metric_settles_at("webrtc_p2p_sessions_suspended_total", 1.0).await;
    let (mut a, result) = resume(&server, &ticket, 3).await;
    assert_eq!(result["result"], json!({"user_id": ua, "groups": [group], "received": 3, "replayed": true}));
    a.nothing_pending().await;
}
