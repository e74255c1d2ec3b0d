//! Churn soak: 500 clients join, relay and leave (some abruptly, some never
//! answering, some vanishing with relays waiting on them), twice. Every
//! relay ends with an answer or a defined error, none hangs, and afterwards
//! the server holds nothing: 0 users, 0 groups, 0 relays in flight, 0
//! connections, and its memory is back near where it was.
//!
//! Alone in its test binary, so the process's memory is the server's and
//! these clients' only; on jemalloc, which counts the live heap exactly
//! (RSS mostly shows what glibc keeps after a free).

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Raw, TestServer, metric};
use serde_json::{Value, json};
use tokio::sync::watch;
use webrtc_p2p_simple::HubStats;

#[global_allocator]
static HEAP: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const GROUPS: usize = 25;
const CLIENTS: usize = 500;
/// Relays each churning client sends.
const RELAYS_EACH: usize = 3;
/// Short, so that relays to clients that never answer end quickly, yet
/// long enough that a busy debug build answers the others in time.
const RELAY_TIMEOUT: &str = "2s";
/// On a cluster: this soak is about what churn leaves behind, not about
/// noticing stopped nodes, and on a loaded machine the nodes (all in this
/// process, with 500 clients) can go seconds without running their
/// heartbeat: with the default 3 s others took a live node for stopped and
/// ended its sessions.
const HEARTBEAT_TTL: &str = "30s";
/// The whole round, generous for a debug build on a busy 2-core machine.
const ROUND_LIMIT: Duration = Duration::from_secs(60);
/// Identical rounds: what a leak adds grows with each.
const ROUNDS: usize = 2;

/// How relays ended, from their callers' side.
type Tally = Arc<Mutex<BTreeMap<&'static str, usize>>>;

fn count(tally: &Tally, kind: &'static str) {
    *tally.lock().expect("tally").entry(kind).or_default() += 1;
}

fn outcome(response: &Value) -> &'static str {
    if response.get("result").is_some() {
        return "answered";
    }
    match response["error"]["code"].as_i64() {
        Some(-32005) => "user_not_found (target left first)",
        Some(-32007) => "relay_timeout (target never answered)",
        Some(-32008) => "peer_gone (target vanished)",
        Some(-32009) => "busy",
        other => panic!("relay ended with an undefined outcome {other:?}: {response}"),
    }
}

/// A small deterministic generator, so a failing round can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn is_relay_request(message: &Value) -> bool {
    message["method"] == "relay" && message.get("id").is_some()
}

async fn answer(client: &mut Raw, request: &Value) {
    client.answer(request, json!({"type": "answer", "sdp": "v=0"})).await;
}

/// Calls until the answer is not Busy, and returns the result (fails the
/// test on any other error). On a cluster a call that needs Redis answers
/// Busy when Redis does not answer its node in time (a loaded machine),
/// and a client tries again; on one node these calls are never Busy. Redis
/// may still run the call it did not answer in time: then a `leave` tried
/// again finds the client out already (NotAMember), which is its result.
async fn ok_unless_busy(client: &mut Raw, method: &str, params: Value) -> Value {
    let deadline = Instant::now() + ROUND_LIMIT;
    let mut busy_before = false;
    loop {
        let response = client.call(method, params.clone()).await;
        if busy_before && method == "leave" && response["error"]["code"] == -32004 {
            return Value::Null;
        }
        if response["error"]["code"] != -32009 {
            assert!(response.get("error").is_none(), "{method} failed: {response}");
            return response["result"].clone();
        }
        busy_before = true;
        assert!(Instant::now() < deadline, "{method} still Busy after {ROUND_LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An owner: creates a group and answers relays until the round ends.
async fn anchor(url: String, created: tokio::sync::oneshot::Sender<String>, mut done: watch::Receiver<bool>) {
    let mut me = Raw::connect(&url).await;
    ok_unless_busy(&mut me, "init", json!([])).await;
    let group = ok_unless_busy(&mut me, "create", json!([])).await.as_str().expect("group").to_owned();
    let _ = created.send(group.clone());
    loop {
        tokio::select! {
            message = me.next_or_closed() => match message {
                Ok(request) if is_relay_request(&request) => answer(&mut me, &request).await,
                Ok(_) => {}
                Err(code) => panic!("anchor closed by the server: {code:?}"),
            },
            () = async { let _ = done.wait_for(|d| *d).await; } => break,
        }
    }
    ok_unless_busy(&mut me, "leave", json!([group])).await;
    me.close().await;
}

/// What a churning client does besides joining and relaying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Manner {
    /// Answers relays, leaves, closes cleanly.
    Polite,
    /// Answers relays, closes without leaving.
    Closes,
    /// Answers relays, then drops the TCP connection without a close frame.
    Drops,
    /// Never answers a relay (its callers get RelayTimeout).
    Silent,
    /// Vanishes right after sending its relays, with calls waiting on it.
    Crashes,
}

async fn churner(url: String, groups: Arc<Vec<String>>, n: usize, tally: Tally) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
    let manner = match n % 10 {
        0 => Manner::Silent,
        1 | 2 => Manner::Drops,
        3 => Manner::Crashes,
        4 | 5 => Manner::Closes,
        _ => Manner::Polite,
    };
    let mut me = Raw::connect(&url).await;
    let my_id = ok_unless_busy(&mut me, "init", json!([])).await;
    let group = groups[rng.below(groups.len())].clone();
    ok_unless_busy(&mut me, "join", json!([group])).await;
    let members = ok_unless_busy(&mut me, "get_members", json!([group])).await;
    let others: Vec<&Value> = members.as_array().expect("members").iter().filter(|m| **m != my_id).collect();
    let mut waiting = HashSet::new();
    for _ in 0..RELAYS_EACH {
        let target = others[rng.below(others.len())];
        waiting.insert(me.request("relay", json!([group, target, {"type": "offer", "sdp": "v=0"}])).await);
    }
    if manner == Manner::Crashes {
        return; // drops `me`: the TCP connection ends without a word
    }
    while !waiting.is_empty() {
        match me.next_or_closed().await {
            Ok(request) if is_relay_request(&request) => {
                if manner != Manner::Silent {
                    answer(&mut me, &request).await;
                }
            }
            Ok(response) if response.get("method").is_none() => {
                let id = response["id"].as_i64().expect("our id");
                assert!(waiting.remove(&id), "an answer to a relay not waiting: {response}");
                count(&tally, outcome(&response));
            }
            Ok(_) => {}
            Err(code) => panic!("client {n} closed by the server: {code:?}"),
        }
    }
    match manner {
        Manner::Polite => {
            ok_unless_busy(&mut me, "leave", json!([group])).await;
            me.close().await;
        }
        Manner::Closes | Manner::Silent => me.close().await,
        Manner::Drops | Manner::Crashes => drop(me),
    }
}

/// One round: the anchors make the groups, every churner comes and goes,
/// then the anchors leave.
async fn round(server: &TestServer) -> (Tally, Duration) {
    let started = Instant::now();
    let tally = Tally::default();
    let (done, done_rx) = watch::channel(false);
    let mut anchors = Vec::new();
    let mut groups = Vec::new();
    for _ in 0..GROUPS {
        let (created, group) = tokio::sync::oneshot::channel();
        anchors.push(tokio::spawn(anchor(server.url(), created, done_rx.clone())));
        groups.push(group.await.expect("group created"));
    }
    let groups = Arc::new(groups);
    let churners: Vec<_> =
        (0..CLIENTS - GROUPS).map(|n| tokio::spawn(churner(server.url(), groups.clone(), n, tally.clone()))).collect();
    for churner in churners {
        churner.await.expect("a churner failed");
    }
    let _ = done.send(true);
    for anchor in anchors {
        anchor.await.expect("an anchor failed");
    }
    (tally, started.elapsed())
}

/// Live heap of this process, in KiB.
fn heap_kib() -> usize {
    tikv_jemalloc_ctl::epoch::advance().expect("jemalloc epoch");
    tikv_jemalloc_ctl::stats::allocated::read().expect("jemalloc stats") / 1024
}

/// Waits until the server holds nothing at all: on every node, and (on a
/// cluster) in Redis.
async fn empty(server: &TestServer) {
    server.settles_at(HubStats { users: 0, groups: 0 }).await;
    assert_eq!(server.relays_in_flight(), 0);
    assert_eq!(server.redis_state().await, Vec::<String>::new(), "users, groups or memberships left in Redis");
    server.metric_settles_at("webrtc_p2p_connections", 0.0).await;
    for node in 0..server.node_count() {
        let scraped = server.scrape_node(node).await;
        for gauge in ["webrtc_p2p_users", "webrtc_p2p_groups", "webrtc_p2p_relays_in_flight"] {
            assert_eq!(metric(&scraped, gauge), Some(0.0), "{gauge} on node {node}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_churning_leave_nothing_behind() {
    let server = TestServer::with_flags(&["--relay-timeout", RELAY_TIMEOUT, "--heartbeat-ttl", HEARTBEAT_TTL]).await;
    let before = heap_kib();
    let mut heap = Vec::new();
    for n in 1..=ROUNDS {
        let (tally, took) = tokio::time::timeout(ROUND_LIMIT, round(&server)).await.expect("the round hung");
        empty(&server).await;
        heap.push(heap_kib());
        let tally = tally.lock().unwrap().clone();
        let relays: usize = tally.values().sum();
        eprintln!("round {n}: {relays} relays in {took:?}: {tally:?}; heap {} KiB", heap[n - 1]);
        assert!(tally.get("answered").copied().unwrap_or(0) > 0, "{tally:?}");
    }
    let scraped = server.scrape().await;
    let server_side: Vec<String> =
        scraped.lines().filter(|l| l.starts_with("webrtc_p2p_relays_total")).map(str::to_owned).collect();
    eprintln!("server side: {server_side:?}; heap before {before} KiB, after each round {heap:?} KiB");
    // What stays after a round is capacity kept for the next (maps, tokio's
    // slabs, allocator caches: about 0.5 MiB, give or take 0.5 MiB between
    // rounds), not one allocation per client or relay: a leak of 1 KiB per
    // relay would add more than 1 MiB a round.
    for (n, after) in heap.iter().enumerate() {
        assert!(*after <= before + 2048, "heap {after} KiB after round {}, {before} KiB before", n + 1);
    }
    let (first, last) = (heap[0], heap[ROUNDS - 1]);
    assert!(last <= first + 1024, "heap grew from {first} KiB to {last} KiB over identical rounds");
}
