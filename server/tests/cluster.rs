//! Many nodes, one service: three real servers sharing one real
//! redis-server (started here on a free loopback port), with the members of
//! each group spread over the nodes.

mod common;

use std::net::TcpListener;

use common::{PATIENCE, Raw, Redis, TestServer};
use serde_json::{Value, json};
use webrtc_p2p_server::cluster;
use webrtc_p2p_simple::HubStats;
use webrtc_p2p_simple::auth::{Claims, GroupGrant};

const NOT_A_MEMBER: i64 = -32004;
const PEER_GONE: i64 = -32008;
const BUSY: i64 = -32009;
const LIMIT_EXCEEDED: i64 = -32010;
const PERMISSION_DENIED: i64 = -32006;

async fn nodes(redis: &Redis, n: usize, flags: &[&str]) -> Vec<TestServer> {
    let mut all = Vec::new();
    for _ in 0..n {
        let mut args = vec!["--redis", redis.url.as_str()];
        args.extend_from_slice(flags);
        all.push(TestServer::single(&args).await);
    }
    all
}

fn id(value: Value) -> String {
    value.as_str().expect("an id").to_owned()
}

#[tokio::test]
async fn a_group_spans_nodes_with_notifications_relays_and_owner_hand_over() {
    let redis = Redis::start().await;
    let nodes = nodes(&redis, 3, &[]).await;
    let (mut a, ua) = nodes[0].user().await;
    let (mut b, ub) = nodes[1].user().await;
    let (mut c, uc) = nodes[2].user().await;

    let group = id(a.ok("create", json!([])).await);
    assert_eq!(b.ok("join", json!([group])).await, json!({"owner": ua, "capability": 10}));
    assert_eq!(a.incoming("member_joined").await["params"], json!([group, ub]));
    c.ok("join", json!([group])).await;
    assert_eq!(a.incoming("member_joined").await["params"], json!([group, uc]));
    assert_eq!(b.incoming("member_joined").await["params"], json!([group, uc]));
    for member in [&mut a, &mut b, &mut c] {
        assert_eq!(member.ok("get_members", json!([group])).await, json!([ua, ub, uc]), "every node agrees");
    }

    // A relay call from node 0 to node 1, answered.
    let offer = json!({"type": "offer", "sdp": "v=0 a->b"});
    let call = a.request("relay", json!([group, ub, offer])).await;
    let request = b.incoming("relay").await;
    assert_eq!(request["params"], json!([group, ua, offer]));
    b.answer(&request, json!({"type": "answer"})).await;
    let answered = a.response(call).await;
    assert_eq!(answered["result"], json!({"type": "answer"}), "{answered}");

    // From node 2 to node 0: the target's own error passes through unchanged.
    let call = c.request("relay", json!([group, ua, "x"])).await;
    let request = a.incoming("relay").await;
    let error = json!({"code": 4001, "message": "no thanks", "data": [1]});
    a.send(json!({"jsonrpc": "2.0", "id": request["id"], "error": error})).await;
    assert_eq!(c.response(call).await["error"], error);

    // Relay notifications across nodes keep their order.
    for n in 0..50 {
        b.notify("relay", json!([group, uc, n])).await;
    }
    for n in 0..50 {
        let got = c.incoming("relay").await;
        assert!(got.get("id").is_none(), "a notification: {got}");
        assert_eq!(got["params"], json!([group, ub, n]));
    }

    // The owner's node-0 session goes: ownership passes to b (node 1), and
    // the others see it leave.
    drop(a);
    assert_eq!(b.incoming("member_left").await["params"], json!([group, ua]));
    assert_eq!(c.incoming("member_left").await["params"], json!([group, ua]));
    let (mut d, ud) = nodes[0].user().await;
    assert_eq!(d.ok("join", json!([group])).await, json!({"owner": ub, "capability": 10}));
    assert_eq!(c.ok("get_members", json!([group])).await, json!([ub, uc, ud]));
    assert_eq!(c.err("relay", json!([group, ua, "x"])).await, -32005, "a is gone from the group");

    // A call to a member whose client drops before answering: PeerGone.
    let call = d.request("relay", json!([group, uc, "offer"])).await;
    c.incoming("relay").await;
    drop(c);
    assert_eq!(d.response(call).await["error"]["code"], PEER_GONE);

    b.ok("leave", json!([group])).await;
    assert_eq!(d.incoming("member_left").await["params"], json!([group, uc]));
    assert_eq!(d.incoming("member_left").await["params"], json!([group, ub]));
    assert_eq!(b.err("get_members", json!([group])).await, NOT_A_MEMBER);
    drop(d);
    nodes[0].settles_at(HubStats { users: 0, groups: 0 }).await;
    nodes[1].settles_at(HubStats { users: 1, groups: 0 }).await;
    nodes[2].settles_at(HubStats { users: 0, groups: 0 }).await;
    assert_eq!(b.err("join", json!([group])).await, -32003, "gone once empty");
}

/// A client of `node` initialised with a join token of `claims`, and its id.
async fn user_with(node: &TestServer, secret: &str, claims: Claims) -> (Raw, String) {
    let mut client = node.connect().await;
    let id = id(client.ok("init", json!([claims.sign(secret.as_bytes())])).await);
    (client, id)
}

#[tokio::test]
async fn join_tokens_hold_across_nodes_grants_and_info_included() {
    const SECRET: &str = "a cluster's auth secret";
    let redis = Redis::start().await;
    let nodes = nodes(&redis, 2, &["--auth-secret", SECRET]).await;
    let fresh = || Claims::expiring_in(std::time::Duration::from_secs(300));
    let ada = json!({"name": "Ada", "seat": [1, 2]});
    let (mut a, ua) = user_with(&nodes[0], SECRET, Claims { create: true, info: Some(ada.clone()), ..fresh() }).await;
    let group = id(a.ok("create", json!([])).await);
    let (mut b, ub) =
        user_with(&nodes[1], SECRET, Claims { groups: GroupGrant::Only(vec![group.parse().expect("id")]), ..fresh() })
            .await;
    let (mut c, _) = user_with(&nodes[1], SECRET, Claims { groups: GroupGrant::None, ..fresh() }).await;

    let nowhere = "0123456789abcdef0123456789abcdef";
    assert_eq!(c.err("join", json!([nowhere])).await, -32003, "GroupNotFound before PermissionDenied");
    assert_eq!(c.err("join", json!([group])).await, PERMISSION_DENIED);
    b.ok("join", json!([group])).await;
    assert_eq!(a.incoming("member_joined").await["params"], json!([group, ub, null]), "no info: null");
    let with_info = json!([{"user_id": ua, "info": ada}, {"user_id": ub, "info": null}]);
    for member in [&mut a, &mut b] {
        assert_eq!(member.ok("get_members", json!({"group_id": group, "info": true})).await, with_info);
        assert_eq!(member.ok("get_members", json!([group])).await, json!([ua, ub]));
    }
    // The owner leaves: its info goes with it.
    a.ok("leave", json!([group])).await;
    assert_eq!(b.incoming("member_left").await["params"], json!([group, ua]));
    let alone = json!([{"user_id": ub, "info": null}]);
    assert_eq!(b.ok("get_members", json!({"group_id": group, "info": true})).await, alone);
}

#[tokio::test]
async fn the_member_limit_holds_under_concurrent_joins_on_different_nodes() {
    let redis = Redis::start().await;
    let nodes = nodes(&redis, 3, &["--max-members-per-group", "4"]).await;
    let (mut owner, _) = nodes[0].user().await;
    let nowhere = "0123456789abcdef0123456789abcdef";
    assert_eq!(owner.err("join", json!([nowhere])).await, -32003);
    let group = id(owner.ok("create", json!([])).await);
    let mut joiners: Vec<Raw> = Vec::new();
    for n in 0..12 {
        joiners.push(nodes[n % 3].user().await.0);
    }
    let joins = joiners.iter_mut().map(|joiner| joiner.call("join", json!([group])));
    let answers = futures_util::future::join_all(joins).await;
    let joined = answers.iter().filter(|a| a.get("result").is_some()).count();
    let refused = answers.iter().filter(|a| a["error"]["code"] == LIMIT_EXCEEDED).count();
    assert_eq!((joined, refused), (3, 9), "{answers:?}");
    let members = owner.ok("get_members", json!([group])).await;
    assert_eq!(members.as_array().map(Vec::len), Some(4));
    // The owner saw exactly the three joins, in the order of the list.
    for member in &members.as_array().expect("list")[1..] {
        assert_eq!(owner.incoming("member_joined").await["params"][1], *member);
    }
    owner.nothing_pending().await;
}

#[tokio::test]
async fn without_redis_calls_answer_busy_and_the_node_recovers_when_it_returns() {
    let redis = Redis::start().await;
    let port = redis.port();
    // Past the test's patience: a relay left to time out would fail it.
    let nodes = nodes(&redis, 2, &["--relay-timeout", "60s"]).await;
    let (mut a, _) = nodes[0].user().await;
    let (mut b, ub) = nodes[1].user().await;
    let group = id(a.ok("create", json!([])).await);
    b.ok("join", json!([group])).await;
    a.incoming("member_joined").await;
    let waiting = a.request("relay", json!([group, ub, "offer"])).await;
    b.incoming("relay").await;
    redis.kill().await;
    let killed = std::time::Instant::now();

    // The relay's answer could no longer come back, and another relay
    // (its route kept) cannot go: both Busy at once.
    assert_eq!(a.response(waiting).await["error"]["code"], BUSY);
    let relay_ended = killed.elapsed();
    assert_eq!(a.err("relay", json!([group, ub, "again"])).await, BUSY);
    assert_eq!(a.err("create", json!([])).await, BUSY);
    assert_eq!(b.err("join", json!([group])).await, BUSY);
    let mut fresh = nodes[1].connect().await;
    assert_eq!(fresh.err("init", json!([])).await, BUSY);

    let busy = killed.elapsed();
    // Back (empty: no persistence), and the nodes with it.
    let _redis = Redis::on_port(port, None).await;
    let back = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let group = loop {
        let answer = a.call("create", json!([])).await;
        if let Some(group) = answer.get("result") {
            break id(group.clone());
        }
        assert_eq!(answer["error"]["code"], BUSY);
        assert!(tokio::time::Instant::now() < deadline, "redis back, the node still refuses");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let served = back.elapsed();
    b.ok("join", json!([group])).await;
    a.incoming("member_joined").await;
    eprintln!(
        "redis killed: the waiting relay ended after {relay_ended:?}, five calls were Busy within {busy:?}; \
         redis back: served again after {served:?}"
    );
}

#[tokio::test]
async fn a_node_killed_is_noticed_within_five_seconds_its_users_leave_and_relays_to_them_end() {
    let redis = Redis::start().await;
    let nodes = nodes(&redis, 1, &[]).await;
    let (mut doomed, addr) = common::spawn_binary(&["--redis", &redis.url]).await;
    let (mut a, ua) = nodes[0].user().await;
    let group = id(a.ok("create", json!([])).await);
    let mut b = Raw::connect(&format!("ws://{addr}/ws")).await;
    let ub = id(b.ok("init", json!([])).await);
    assert_eq!(b.ok("join", json!([group])).await["owner"], json!(ua));
    a.incoming("member_joined").await;
    let call = a.request("relay", json!([group, ub, "offer"])).await;
    b.incoming("relay").await;

    doomed.start_kill().expect("kill -9");
    let killed = std::time::Instant::now();
    assert_eq!(a.response(call).await["error"]["code"], PEER_GONE, "not left to time out");
    assert_eq!(a.incoming("member_left").await["params"], json!([group, ub]));
    let noticed = killed.elapsed();
    assert!(noticed < std::time::Duration::from_secs(5), "noticed after {noticed:?}");
    assert_eq!(a.ok("get_members", json!([group])).await, json!([ua]));
    eprintln!("node death noticed after {noticed:?}");
}

/// Commands the Redis has processed so far (the INFO asking counts too).
async fn commands(redis: &Redis) -> u64 {
    let client = redis::Client::open(redis.url.as_str()).expect("url");
    let mut connection = client.get_multiplexed_async_connection().await.expect("connect to redis");
    let info: String = redis::cmd("INFO").arg("stats").query_async(&mut connection).await.expect("INFO");
    let line = info.lines().find_map(|l| l.strip_prefix("total_commands_processed:")).expect("the count");
    line.trim().parse().expect("a number")
}

/// `rounds` relay calls from `from` to `to` (user id `to_id`), each
/// answered; the time they took.
async fn relay_rounds(group: &str, from: &mut Raw, to: &mut Raw, to_id: &str, rounds: usize) -> std::time::Duration {
    let started = std::time::Instant::now();
    for n in 0..rounds {
        let call = from.request("relay", json!([group, to_id, n])).await;
        let request = to.incoming("relay").await;
        to.answer(&request, json!(n)).await;
        assert_eq!(from.response(call).await["result"], json!(n));
    }
    started.elapsed()
}

#[tokio::test]
async fn relays_between_members_on_one_node_cost_no_redis_round_trip_and_changes_still_count() {
    const ROUNDS: usize = 200;
    let redis = Redis::start().await;
    let nodes = nodes(&redis, 2, &[]).await;
    let (mut a, ua) = nodes[0].user().await;
    let (mut b, ub) = nodes[0].user().await;
    let (mut c, uc) = nodes[1].user().await;
    let group = id(a.ok("create", json!([])).await);
    b.ok("join", json!([group])).await;
    a.incoming("member_joined").await;
    relay_rounds(&group, &mut a, &mut b, &ub, 1).await;

    let before = commands(&redis).await;
    let took = relay_rounds(&group, &mut a, &mut b, &ub, ROUNDS).await;
    let used = commands(&redis).await - before;
    // Without the kept route each relay is a transaction of five commands;
    // what remains is the nodes' heartbeats (4 commands a second each).
    assert!(used < 40, "{used} Redis commands for {ROUNDS} same-node relays in {took:?}");

    let single = TestServer::start().await;
    let (mut sa, _) = single.user().await;
    let (mut sb, usb) = single.user().await;
    let single_group = id(sa.ok("create", json!([])).await);
    sb.ok("join", json!([single_group])).await;
    let single_took = relay_rounds(&single_group, &mut sa, &mut sb, &usb, ROUNDS).await;
    eprintln!(
        "{ROUNDS} same-node relay round trips: cluster {took:?}, single node {single_took:?}; {used} Redis commands meanwhile"
    );

    // A member joining on the other node is heard of: the route is read
    // again, and relays reach it.
    c.ok("join", json!([group])).await;
    a.incoming("member_joined").await;
    b.incoming("member_joined").await;
    relay_rounds(&group, &mut a, &mut c, &uc, 3).await;
    relay_rounds(&group, &mut c, &mut b, &ub, 3).await;

    // The join changed the kept route in place, and relays from the other
    // node (candidates go as notifications) leave it alone: a relay
    // between a and b still makes no Redis round trip. Each notification
    // is one PUBLISH; reading the route again would be five commands more.
    const NOTIFIED: usize = 20;
    let before = commands(&redis).await;
    for n in 0..NOTIFIED {
        c.notify("relay", json!([group, ua, n])).await;
        assert_eq!(a.incoming("relay").await["params"], json!([group, uc, n]));
        relay_rounds(&group, &mut a, &mut b, &ub, 1).await;
    }
    let used = commands(&redis).await - before;
    assert!(used < NOTIFIED as u64 + 40, "{used} Redis commands for {NOTIFIED} notifications and same-node relays");
    // And leaving there too.
    c.ok("leave", json!([group])).await;
    a.incoming("member_left").await;
    b.incoming("member_left").await;
    assert_eq!(a.err("relay", json!([group, uc, "x"])).await, -32005);
    assert_eq!(c.err("relay", json!([group, ub, "x"])).await, NOT_A_MEMBER);
}

#[tokio::test]
async fn a_session_that_ends_while_redis_is_down_leaves_its_groups_once_redis_is_back_and_nobody_is_reaped() {
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let dir = std::env::temp_dir().join(format!("webrtc-p2p-cluster-test-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory for redis");
    let redis = Redis::on_port(port, Some(&dir)).await;
    let nodes = nodes(&redis, 2, &[]).await;
    let (mut a, ua) = nodes[0].user().await;
    let (mut b, ub) = nodes[1].user().await;
    let (mut d, ud) = nodes[1].user().await;
    let group = id(a.ok("create", json!([])).await);
    b.ok("join", json!([group])).await;
    d.ok("join", json!([group])).await;
    a.incoming("member_joined").await;
    a.incoming("member_joined").await;

    redis.kill().await;
    b.close().await;
    // Node 1 has let b go, though Redis did not hear of it.
    nodes[1].settles_at(HubStats { users: 1, groups: 1 }).await;
    // Out longer than a heartbeat lives: every node's key has expired when
    // Redis is back, and nobody may take a live node for stopped.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;

    // Back with everything it had: b is still a member there, until node 1
    // does its clean-up again.
    let redis = Redis::on_port(port, Some(&dir)).await;
    assert_eq!(a.incoming("member_left").await["params"], json!([group, ub]));
    assert_eq!(a.ok("get_members", json!([group])).await, json!([ua, ud]), "no ghost");
    // A few heartbeats later node 1 is still alive to the others: d is in.
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert_eq!(d.ok("get_members", json!([group])).await, json!([ua, ud]));
    let call = a.request("relay", json!([group, ud, "still there?"])).await;
    let request = d.incoming("relay").await;
    d.answer(&request, json!("yes")).await;
    assert_eq!(a.response(call).await["result"], json!("yes"));
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

const RESUME: [&str; 4] = ["--resume-secret", "one secret for the cluster", "--resume-window", "10s"];

/// A user of `node` that called `session`: the client, its id, its ticket.
async fn resumable(node: &TestServer) -> (Raw, String, String) {
    let (mut client, id) = node.user().await;
    let facts = client.ok("session", json!([])).await;
    let ticket = facts["resume_ticket"].as_str().expect("a ticket").to_owned();
    (client, id, ticket)
}

/// Resumes `ticket` on a new connection to `node`: the client and the
/// whole response.
async fn resume_on(node: &TestServer, ticket: &str, received: u64) -> (Raw, Value) {
    let mut client = node.connect().await;
    let response = client.call("resume", json!([ticket, received])).await;
    (client, response)
}

#[tokio::test]
async fn a_session_dropped_on_one_node_resumes_on_another_with_an_exact_replay() {
    let redis = Redis::start().await;
    let nodes = nodes(&redis, 2, &RESUME).await;
    // a: init (1), session (2), create (3) answered.
    let (mut a, ua, ticket) = resumable(&nodes[0]).await;
    let group = id(a.ok("create", json!([])).await);
    let (mut b, ub) = nodes[1].user().await;
    b.ok("join", json!([group])).await;
    assert_eq!(a.incoming("member_joined").await["params"], json!([group, ub])); // 4
    b.notify("relay", json!([group, ua, "before"])).await;
    assert_eq!(a.incoming("relay").await["params"], json!([group, ub, "before"])); // 5
    drop(a);
    nodes[0].metric_settles_at("webrtc_p2p_sessions_suspended_total", 1.0).await;

    // While a is away: a notification, and a relay call waiting for a's
    // answer on node 0.
    b.notify("relay", json!([group, ua, "during"])).await;
    let pending = b.request("relay", json!([group, ua, "offer"])).await;
    // Node 0 has queued both (b's next round trip to a's node proves it).
    assert_eq!(b.ok("get_members", json!([group])).await, json!([ua, ub]));

    let started = std::time::Instant::now();
    let (mut a, result) = resume_on(&nodes[1], &ticket, 5).await;
    let took = started.elapsed();
    assert_eq!(
        result["result"],
        json!({"user_id": ua, "groups": [group], "received": 3, "replayed": true}),
        "{result}"
    );
    assert_eq!(a.next().await["params"], json!([group, ub, "during"]), "6");
    let offer = a.next().await;
    assert_eq!(offer["params"], json!([group, ub, "offer"]), "7");
    a.answer(&offer, json!("answer")).await;
    assert_eq!(b.response(pending).await["result"], "answer", "the call made before the move is answered");

    // The session lives on node 1 now: same group, same order, nobody left.
    assert_eq!(a.ok("get_members", json!([group])).await, json!([ua, ub]));
    a.notify("relay", json!([group, ub, "after"])).await;
    assert_eq!(b.incoming("relay").await["params"], json!([group, ua, "after"]));
    relay_rounds(&group, &mut b, &mut a, &ua, 3).await;
    b.nothing_pending().await;
    nodes[0].settles_at(HubStats { users: 0, groups: 0 }).await;
    nodes[1].settles_at(HubStats { users: 2, groups: 1 }).await;
    nodes[1].metric_settles_at("webrtc_p2p_sessions_resumed_total{replayed=\"true\"}", 1.0).await;
    eprintln!("resume on another node took {took:?}");

    // Resumed again on node 0 while its node-1 connection is open: that
    // one closes with 4001, and the session moves back. The client has
    // received 7, then an answer and 3 relay calls: 11; the server 3, then
    // an answer, get_members, a relay and 3 answers: 9.
    let (mut back, result) = resume_on(&nodes[0], &ticket, 11).await;
    assert_eq!(
        result["result"],
        json!({"user_id": ua, "groups": [group], "received": 9, "replayed": true}),
        "{result}"
    );
    assert_eq!(a.closed().await, (Some(4001), "resumed elsewhere".to_owned()));
    assert_eq!(back.ok("get_members", json!([group])).await, json!([ua, ub]));
    relay_rounds(&group, &mut b, &mut back, &ua, 2).await;
    back.nothing_pending().await;
    nodes[0].settles_at(HubStats { users: 1, groups: 1 }).await;
    nodes[1].settles_at(HubStats { users: 1, groups: 1 }).await;

    // A clean close ends it for good, on whichever node it is: b sees it go.
    back.close().await;
    assert_eq!(b.incoming("member_left").await["params"], json!([group, ua]));
    let (_, result) = resume_on(&nodes[1], &ticket, 0).await;
    assert_eq!(result["error"]["code"], -32012, "{result}");
}

#[tokio::test]
async fn a_node_stopped_with_sigterm_hands_its_resumable_sessions_over_with_an_exact_replay() {
    let redis = Redis::start().await;
    let nodes = nodes(&redis, 1, &RESUME).await;
    let mut flags = vec!["--redis", redis.url.as_str()];
    flags.extend_from_slice(&RESUME);
    let (mut stopping, addr) = common::spawn_binary(&flags).await;
    let (mut b, ub) = nodes[0].user().await;
    let group = id(b.ok("create", json!([])).await);
    // a resumable (init 1, session 2, join 3) and e a v1 client, on the node that stops.
    let mut a = Raw::connect(&format!("ws://{addr}/ws")).await;
    let ua = id(a.ok("init", json!([])).await);
    let ticket = a.ok("session", json!([])).await["resume_ticket"].as_str().expect("ticket").to_owned();
    a.ok("join", json!([group])).await;
    assert_eq!(b.incoming("member_joined").await["params"], json!([group, ua]));
    let mut e = Raw::connect(&format!("ws://{addr}/ws")).await;
    e.ok("init", json!([])).await;
    // b's call to a waits for a's answer when the node stops.
    let call = b.request("relay", json!([group, ua, "offer"])).await;
    let offer = a.incoming("relay").await; // 4

    common::sigterm(&stopping).await;
    let stopped = std::time::Instant::now();
    assert_eq!(a.closed().await, (Some(1012), "node stopping: resume on another node".to_owned()));
    assert_eq!(e.closed().await, (Some(1001), "server shutting down".to_owned()), "a v1 client ends as before");
    b.notify("relay", json!([group, ua, "while moving"])).await;

    let (mut a, result) = resume_on(&nodes[0], &ticket, 4).await;
    let moved = stopped.elapsed();
    assert_eq!(
        result["result"],
        json!({"user_id": ua, "groups": [group], "received": 3, "replayed": true}),
        "{result}"
    );
    assert_eq!(a.next().await["params"], json!([group, ub, "while moving"]));
    a.answer(&offer, json!("answer")).await;
    assert_eq!(b.response(call).await["result"], "answer", "the call made before the node stopped is answered");
    relay_rounds(&group, &mut b, &mut a, &ua, 2).await;
    relay_rounds(&group, &mut a, &mut b, &ub, 2).await;
    assert_eq!(b.ok("get_members", json!([group])).await, json!([ub, ua]));
    b.nothing_pending().await;
    let status = tokio::time::timeout(PATIENCE, stopping.wait()).await.expect("the node exits").expect("wait");
    assert!(status.success(), "{status}");
    let exited = stopped.elapsed();
    nodes[0].metric_settles_at("webrtc_p2p_sessions_resumed_total{replayed=\"true\"}", 1.0).await;
    nodes[0].settles_at(HubStats { users: 2, groups: 1 }).await;
    eprintln!("SIGTERM: the session moved after {moved:?}, the node exited after {exited:?}");
}

/// Resumes `ticket` on `node` until the answer is not Busy (a node that
/// stopped a moment ago still has a heartbeat, and does not answer).
async fn resume_when_not_busy(node: &TestServer, ticket: &str, received: u64) -> (Raw, Value) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (client, response) = resume_on(node, ticket, received).await;
        if response["error"]["code"] != BUSY {
            return (client, response);
        }
        assert!(tokio::time::Instant::now() < deadline, "still busy: {response}");
    }
}

#[tokio::test]
async fn a_killed_nodes_sessions_stay_in_their_groups_for_the_window_and_resume_anywhere_without_replay() {
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(4);
    let redis = Redis::start().await;
    let flags = ["--resume-secret", "one secret for the cluster", "--resume-window", "4s"];
    let nodes = nodes(&redis, 1, &flags).await;
    let mut doomed_flags = vec!["--redis", redis.url.as_str()];
    doomed_flags.extend_from_slice(&flags);
    let (mut doomed, addr) = common::spawn_binary(&doomed_flags).await;
    let (mut a, ua) = nodes[0].user().await;
    let group = id(a.ok("create", json!([])).await);
    // c and d resumable on the node that will die, e a v1 client there.
    let mut on_doomed = Vec::new();
    for _ in 0..3 {
        let mut client = Raw::connect(&format!("ws://{addr}/ws")).await;
        let user = id(client.ok("init", json!([])).await);
        client.ok("join", json!([group])).await;
        assert_eq!(a.incoming("member_joined").await["params"], json!([group, user]));
        on_doomed.push((client, user));
    }
    let (_e, ue) = on_doomed.pop().expect("e");
    let (mut d, ud) = on_doomed.pop().expect("d");
    let (mut c, uc) = on_doomed.pop().expect("c");
    let ticket = c.ok("session", json!([])).await["resume_ticket"].as_str().expect("ticket").to_owned();
    d.ok("session", json!([])).await;
    let call = a.request("relay", json!([group, uc, "offer"])).await;
    c.incoming("relay").await;

    doomed.start_kill().expect("kill -9");
    let killed = std::time::Instant::now();
    assert_eq!(a.response(call).await["error"]["code"], PEER_GONE, "not left to time out");
    let noticed = killed.elapsed();
    assert!(noticed < std::time::Duration::from_secs(5), "noticed after {noticed:?}");
    // The v1 client ends at once; the resumable ones stay, suspended.
    assert_eq!(a.incoming("member_left").await["params"], json!([group, ue]));
    assert_eq!(a.ok("get_members", json!([group])).await, json!([ua, uc, ud]));

    let (mut c, result) = resume_when_not_busy(&nodes[0], &ticket, 3).await;
    let resumed = killed.elapsed();
    assert_eq!(
        result["result"],
        json!({"user_id": uc, "groups": [group], "received": 0, "replayed": false}),
        "{result}"
    );
    relay_rounds(&group, &mut a, &mut c, &uc, 2).await;
    relay_rounds(&group, &mut c, &mut a, &ua, 2).await;
    // A relay to the one still suspended ends, and does not hang.
    assert_eq!(a.err("relay", json!([group, ud, "offer"])).await, PEER_GONE);

    // The window passes: d leaves, c stays.
    assert_eq!(a.incoming("member_left").await["params"], json!([group, ud]));
    let left = killed.elapsed();
    assert!(left > WINDOW && left < WINDOW + std::time::Duration::from_secs(5), "d left after {left:?}");
    assert_eq!(c.incoming("member_left").await["params"], json!([group, ud]), "c is a member again");
    assert_eq!(c.ok("get_members", json!([group])).await, json!([ua, uc]));
    a.nothing_pending().await;
    c.nothing_pending().await;
    nodes[0].settles_at(HubStats { users: 2, groups: 1 }).await;
    eprintln!(
        "node death noticed after {noticed:?}, resumed elsewhere after {resumed:?}, suspended users left after {left:?}"
    );
}

/// Calls `method` until the answer is not Busy; its result.
async fn ok_when_not_busy(client: &mut Raw, method: &str, params: Value) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let response = client.call(method, params.clone()).await;
        if response["error"]["code"] != BUSY {
            assert!(response.get("error").is_none(), "{method}: {response}");
            return response["result"].clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "{method} still busy");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits until Redis holds `want` keys matching `pattern`.
async fn redis_settles_at(redis: &Redis, pattern: &str, want: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let keys = redis.keys(&format!("{}{pattern}", cluster::PREFIX)).await;
        if keys.len() == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{pattern}: {keys:?}, want {want}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A Redis that stalls longer than a node waits for it: the node answers
/// `init`, `create` and `join` Busy, and Redis runs their scripts when it
/// wakes. None may leave anything behind: the id and the group nobody
/// learnt of go, the join is recorded when tried again (the node counts it
/// and its session leaves it), and when everyone has gone Redis holds
/// nothing. (On a loaded machine the churn soak left such a join's group.)
#[tokio::test]
async fn scripts_redis_runs_after_the_node_answered_busy_leave_nothing_behind() {
    let redis = Redis::start().await;
    let nodes = nodes(&redis, 1, &[]).await;
    let node = &nodes[0];
    let (mut a, ua) = node.user().await;
    let (mut b, ub) = node.user().await;
    let mut c = node.connect().await;
    let group = id(a.ok("create", json!([])).await);
    // Redis knows every script by now (a node sends a script's text only
    // after Redis answered that it does not know it).
    b.ok("join", json!([group])).await;
    b.ok("leave", json!([group])).await;
    a.incoming("member_joined").await;
    a.incoming("member_left").await;

    redis.stall();
    let create = a.request("create", json!([])).await;
    let join = b.request("join", json!([group])).await;
    let init = c.request("init", json!([])).await;
    assert_eq!(a.response(create).await["error"]["code"], BUSY);
    assert_eq!(b.response(join).await["error"]["code"], BUSY);
    assert_eq!(c.response(init).await["error"]["code"], BUSY);
    redis.wake();

    // The join went through after all; tried again, b is in, once.
    assert_eq!(a.incoming("member_joined").await["params"], json!([group, ub]));
    ok_when_not_busy(&mut b, "join", json!([group])).await;
    assert_eq!(b.ok("get_members", json!([group])).await, json!([ua, ub]));
    let other = id(ok_when_not_busy(&mut a, "create", json!([])).await);
    ok_when_not_busy(&mut c, "init", json!([])).await;
    // The late group and the late id go, though their clients are still here.
    redis_settles_at(&redis, "{g:*}:c", 2).await;
    redis_settles_at(&redis, "user:*", 3).await;
    // The node counts b in the group: with a gone from it, b keeps it here.
    a.ok("leave", json!([group])).await;
    node.settles_at(HubStats { users: 3, groups: 2 }).await;
    b.ok("leave", json!([group])).await;
    node.settles_at(HubStats { users: 3, groups: 1 }).await;
    b.ok("join", json!([other])).await;

    for client in [a, b, c] {
        client.close().await;
    }
    node.settles_at(HubStats { users: 0, groups: 0 }).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let left = redis.state().await;
        if left.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "left in Redis: {left:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Sends `signal` (`-STOP`, `-CONT`) to a node's process.
fn signal(node: &tokio::process::Child, signal: &str) {
    let pid = node.id().expect("running").to_string();
    let status = std::process::Command::new("kill").args([signal, &pid]).status().expect("kill");
    assert!(status.success(), "kill {signal} {pid}");
}

/// Waits until the node at `addr` (a process of its own) counts `want` users.
async fn users_settle_at(addr: std::net::SocketAddr, want: f64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let response = common::http(addr, "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").await;
        let got = common::metric(response.split_once("\r\n\r\n").map_or("", |(_, body)| body), "webrtc_p2p_users");
        if got == Some(want) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "users stuck at {got:?}, want {want}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A node whose heartbeat lapses fast (its key lives 2 s: reaped 2-3 s
/// into a pause), sharing resume with the others, with this resume window.
fn quick_beat(window: &str) -> [&str; 6] {
    ["--resume-secret", "one secret for the cluster", "--resume-window", window, "--heartbeat-ttl", "2s"]
}

/// A client of the node at `addr` in `group`, which `owner` sees join: the
/// client, its id and (when `resumable`) its ticket.
async fn member_on(addr: std::net::SocketAddr, group: &str, owner: &mut Raw, resumable: bool) -> (Raw, String, String) {
    let mut client = Raw::connect(&format!("ws://{addr}/ws")).await;
    let user = id(client.ok("init", json!([])).await);
    client.ok("join", json!([group])).await;
    assert_eq!(owner.incoming("member_joined").await["params"], json!([group, user]));
    let mut ticket = String::new();
    if resumable {
        ticket = client.ok("session", json!([])).await["resume_ticket"].as_str().expect("ticket").to_owned();
    }
    (client, user, ticket)
}

const CUT_OFF: (Option<u16>, &str) = (Some(1012), "node was cut off: session ended, start again");

/// The set-up of the pause tests: a node in the test process and one of its
/// own (the one to pause), with a short heartbeat and a resume window of
/// `window`, and a group created by a user of the first.
struct Pausing {
    redis: Redis,
    nodes: Vec<TestServer>,
    paused: tokio::process::Child,
    addr: std::net::SocketAddr,
    owner: (Raw, String),
    group: String,
}

impl Pausing {
    async fn start(window: &str) -> Self {
        let redis = Redis::start().await;
        let flags = quick_beat(window);
        let nodes = nodes(&redis, 1, &flags).await;
        let mut paused_flags = vec!["--redis", redis.url.as_str()];
        paused_flags.extend_from_slice(&flags);
        let (paused, addr) = common::spawn_binary(&paused_flags).await;
        let (mut owner, owner_id) = nodes[0].user().await;
        let group = id(owner.ok("create", json!([])).await);
        Self { redis, nodes, paused, addr, owner: (owner, owner_id), group }
    }
}

/// A node paused (SIGSTOP) longer than its heartbeat lives is reaped by the
/// others while it still runs; when it wakes it must not serve what the
/// cluster no longer has as its own. Here the pause is shorter than the
/// resume window: its v1 session, ended by the cluster, closes with 1012;
/// a resumable one whose client resumed on another node meanwhile closes
/// with 4001 and takes nothing from that node; one still suspended is its
/// own again, kept. Every node then agrees on the members, and nobody
/// left who did not.
#[tokio::test]
async fn a_node_paused_past_its_heartbeat_keeps_only_what_the_cluster_still_has_as_its_own() {
    let Pausing { redis, nodes, paused, addr, owner: (mut o, uo), group } = Pausing::start("10s").await;
    // On the node that pauses: e a v1 client, c and d resumable (init 1,
    // join 2, session 3).
    let (mut e, ue, _) = member_on(addr, &group, &mut o, false).await;
    let (mut c, uc, _) = member_on(addr, &group, &mut o, true).await;
    let (mut d, ud, ticket) = member_on(addr, &group, &mut o, true).await;
    for client in [&mut e, &mut c] {
        client.incoming("member_joined").await;
    }
    e.incoming("member_joined").await;

    signal(&paused, "-STOP");
    let stopped = std::time::Instant::now();
    // Reaped: e leaves, c and d stay, suspended.
    assert_eq!(o.incoming("member_left").await["params"], json!([group, ue]));
    let reaped = stopped.elapsed();
    // d's client gives up on the silent node and resumes on the other.
    let (mut d2, result) = resume_when_not_busy(&nodes[0], &ticket, 3).await;
    assert_eq!(
        result["result"],
        json!({"user_id": ud, "groups": [group], "received": 0, "replayed": false}),
        "{result}"
    );

    signal(&paused, "-CONT");
    let woke = std::time::Instant::now();
    assert_eq!(e.closed().await, (CUT_OFF.0, CUT_OFF.1.to_owned()), "the session the cluster ended ends here");
    let e_closed = woke.elapsed();
    assert_eq!(d.closed().await, (Some(4001), "resumed elsewhere".to_owned()));
    let d_closed = woke.elapsed();
    // c is the paused node's again: a member, reachable both ways.
    relay_rounds(&group, &mut o, &mut c, &uc, 2).await;
    relay_rounds(&group, &mut c, &mut d2, &ud, 2).await;
    for member in [&mut o, &mut c, &mut d2] {
        assert_eq!(member.ok("get_members", json!([group])).await, json!([uo, uc, ud]), "every node agrees");
    }
    // c heard of e leaving when its node woke; nobody else left: d's old
    // session ended on the paused node without taking d out of the group.
    assert_eq!(c.incoming("member_left").await["params"], json!([group, ue]));
    for member in [&mut o, &mut c, &mut d2] {
        member.nothing_pending().await;
    }
    users_settle_at(addr, 1.0).await;
    nodes[0].settles_at(HubStats { users: 2, groups: 1 }).await;
    redis_settles_at(&redis, "user:*", 3).await;
    eprintln!(
        "reaped {reaped:?} into the pause; after SIGCONT the ended session closed in {e_closed:?}, \
         the one resumed elsewhere in {d_closed:?}"
    );
}

/// As above, with a pause longer than the resume window: the cluster ended
/// every session of the paused node, and the node closes them all with
/// 1012 when it wakes; a resume is refused, and the client starts again on
/// another node, where every node sees it join.
#[tokio::test]
async fn a_node_paused_past_the_resume_window_closes_every_session_and_its_clients_start_again() {
    let Pausing { redis, nodes, paused, addr, owner: (mut o, uo), group } = Pausing::start("1s").await;
    let (mut e, ue, _) = member_on(addr, &group, &mut o, false).await;
    let (mut c, uc, ticket) = member_on(addr, &group, &mut o, true).await;

    signal(&paused, "-STOP");
    let stopped = std::time::Instant::now();
    assert_eq!(o.incoming("member_left").await["params"], json!([group, ue]));
    let reaped = stopped.elapsed();
    assert_eq!(o.incoming("member_left").await["params"], json!([group, uc]), "the window passed");
    let expired = stopped.elapsed();

    signal(&paused, "-CONT");
    let woke = std::time::Instant::now();
    assert_eq!(e.closed().await, (CUT_OFF.0, CUT_OFF.1.to_owned()));
    assert_eq!(c.closed().await, (CUT_OFF.0, CUT_OFF.1.to_owned()));
    let closed = woke.elapsed();
    let (_, refused) = resume_on(&nodes[0], &ticket, 3).await;
    assert_eq!(refused["error"]["code"], -32012, "{refused}");
    let (mut again, again_id) = nodes[0].user().await;
    again.ok("join", json!([group])).await;
    assert_eq!(o.incoming("member_joined").await["params"], json!([group, again_id]));
    let started_again = woke.elapsed();
    relay_rounds(&group, &mut o, &mut again, &again_id, 1).await;
    for member in [&mut o, &mut again] {
        assert_eq!(member.ok("get_members", json!([group])).await, json!([uo, again_id]), "every node agrees");
        member.nothing_pending().await;
    }
    users_settle_at(addr, 0.0).await;
    redis_settles_at(&redis, "user:*", 2).await;
    eprintln!(
        "reaped {reaped:?}, window passed {expired:?} into the pause; after SIGCONT every session closed in \
         {closed:?}, the client started again on another node in {started_again:?}"
    );
}

/// Subscribers connected to `redis` (the nodes' channels).
async fn subscribers(redis: &Redis) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut redis.connection().await)
        .await
        .expect("CLIENT LIST");
    list.lines().count()
}

/// Redis drops what a subscriber cannot take fast enough (past its pub/sub
/// output buffer limit, it closes the connection), and publishes nothing
/// to a channel nobody listens to: a node stopped meanwhile loses the
/// changes to its groups. Back on its channel it reads its groups again,
/// and its members are told what they missed, in order, once; what comes
/// after is told as ever.
#[tokio::test]
async fn members_are_told_the_changes_their_node_lost_while_off_its_channel() {
    let redis = Redis::start().await;
    let nodes = nodes(&redis, 1, &["--rate-limit", "1000000"]).await;
    // Stopped for less than its heartbeat lives (nobody takes it for
    // dead), and with room to queue what its buffers held for c.
    let flags = ["--redis", redis.url.as_str(), "--heartbeat-ttl", "60s", "--max-queued-bytes", "268435456"];
    let (stopped, addr) = common::spawn_binary(&flags).await;
    let (mut o, uo) = nodes[0].user().await;
    let group = id(o.ok("create", json!([])).await);
    let (mut c, uc, _) = member_on(addr, &group, &mut o, false).await;
    let (mut b, ub) = nodes[0].user().await;
    b.ok("join", json!([group])).await;
    assert_eq!(c.incoming("member_joined").await["params"], json!([group, ub]));
    o.incoming("member_joined").await;
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("client-output-buffer-limit")
        .arg("pubsub 65536 65536 0")
        .query_async::<()>(&mut redis.connection().await)
        .await
        .expect("CONFIG SET");

    // Relays to c while its node is stopped, until Redis drops that node.
    signal(&stopped, "-STOP");
    let data = "x".repeat(256 * 1024);
    let mut sent = 0;
    while subscribers(&redis).await == 2 {
        assert!(sent < 400, "Redis kept a subscriber that read nothing through {sent} relays of 256 KiB");
        for _ in 0..4 {
            o.notify("relay", json!([group, uc, data])).await;
        }
        sent += 4;
    }
    // Lost for c's node: b leaves, d joins.
    b.ok("leave", json!([group])).await;
    let (mut d, ud) = nodes[0].user().await;
    d.ok("join", json!([group])).await;
    signal(&stopped, "-CONT");

    assert_eq!(c.incoming("member_left").await["params"], json!([group, ub]));
    assert_eq!(c.incoming("member_joined").await["params"], json!([group, ud]));
    let (mut e, ue) = nodes[0].user().await;
    e.ok("join", json!([group])).await;
    assert_eq!(c.incoming("member_joined").await["params"], json!([group, ue]));
    // Nothing twice: after a relay sent last, no other change is told.
    o.notify("relay", json!([group, uc, "last"])).await;
    c.next_matching(|m| m["method"] == "relay" && m["params"][2] == "last").await;
    let changes: Vec<Value> = c.take_stashed().into_iter().filter(|m| m["method"] != "relay").collect();
    assert!(changes.is_empty(), "told again: {changes:?}");
    for member in [&mut o, &mut c, &mut d, &mut e] {
        assert_eq!(member.ok("get_members", json!([group])).await, json!([uo, uc, ud, ue]), "every node agrees");
    }
    eprintln!("Redis dropped the stopped node after {sent} relays of 256 KiB to it");
}
