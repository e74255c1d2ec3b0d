//! What one client can make the server hold or do, and what it hears when
//! the server has had enough: memory bounded in bytes whatever a client
//! sends or leaves unread, the close frame heard after every close the
//! server starts, and fan-out charged to whoever causes it.
//!
//! Memory is measured as the server binary's resident set (`VmRSS` from
//! `/proc/PID/status`), so these clients' own memory is not in it.

mod common;

use std::time::{Duration, Instant};

use common::{WireClient, opcode};
use serde_json::{Value, json};

/// How long any attack below may run at most, whatever its count says.
const ATTACK_TIME: Duration = Duration::from_secs(5);

/// A client-side masking key (clients must mask; its value is irrelevant).
const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);

fn text_frame(payload: &[u8]) -> Vec<u8> {
    WireClient::encode(true, 0, opcode::TEXT, MASK, payload)
}

/// Finding 7: after a 1009 the answers already queued and the close frame
/// reach the client, rather than a TCP reset that destroys them. Each trial
/// queues ~50 KB of answers, then sends one frame over the 1 MiB limit
/// (what conformance suites send) before reading anything.
#[tokio::test]
async fn answers_and_the_close_frame_survive_a_1009_in_100_of_100_trials() {
    let (_server, addr) = common::spawn_binary(&[]).await;
    const ANSWERS: usize = 50;
    let id = "x".repeat(1000);
    let mut requests = Vec::new();
    for n in 0..ANSWERS {
        let request = format!(r#"{{"jsonrpc":"2.0","id":"{id}{n}","method":"no_such_method"}}"#);
        requests.extend(text_frame(request.as_bytes()));
    }
    requests.extend(text_frame(&vec![b' '; (1 << 20) + 100_000]));
    let started = Instant::now();
    let mut lost = Vec::new();
    for trial in 0..100 {
        assert!(started.elapsed() < Duration::from_secs(60), "100 trials take too long");
        let mut client = WireClient::connect(addr, "").await;
        client.send_raw(&requests).await;
        let mut answers = 0;
        let code = loop {
            match client.frame().await {
                Some(frame) if frame.opcode == opcode::TEXT => answers += 1,
                Some(frame) if frame.opcode == opcode::CLOSE => {
                    break Some(u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                }
                Some(_) => {}
                None => break None,
            }
        };
        if answers != ANSWERS || code != Some(1009) {
            lost.push((trial, answers, code));
        }
    }
    assert!(lost.is_empty(), "trials that lost answers or the close frame (trial, answers, code): {lost:?}");
}

/// The largest resident set seen over `span`, sampled every few ms.
async fn peak_rss_kib(server: &tokio::process::Child, span: Duration) -> u64 {
    let until = Instant::now() + span;
    let mut peak = common::rss_kib(server);
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
        peak = peak.max(common::rss_kib(server));
    }
    peak
}

/// A raw client that has called `init`.
async fn initialised(addr: std::net::SocketAddr) -> WireClient {
    let mut client = WireClient::connect(addr, "").await;
    client.send(true, opcode::TEXT, br#"{"jsonrpc":"2.0","id":1,"method":"init"}"#).await;
    let answer = client.json().await;
    assert!(answer["result"].is_string(), "{answer}");
    client
}

/// Finding 1: a client that sends pings and never reads cannot make the
/// server queue pongs without limit. 400,000 pings (52 MB of pongs owed)
/// grew the server by ~50 MiB before; now what is owed waits in a write
/// buffer of one message and tungstenite's single pending pong.
#[tokio::test]
async fn pings_from_a_client_that_never_reads_cost_a_bounded_amount() {
    let (server, addr) = common::spawn_binary(&[]).await;
    let mut client = initialised(addr).await;
    let before = common::rss_kib(&server);
    let ping = WireClient::encode(true, 0, opcode::PING, MASK, &[b'p'; 125]);
    let burst: Vec<u8> = ping.iter().copied().cycle().take(ping.len() * 1000).collect();
    let started = Instant::now();
    let mut peak = before;
    for _ in 0..400 {
        if started.elapsed() > ATTACK_TIME {
            break;
        }
        client.send_raw(&burst).await;
        peak = peak.max(common::rss_kib(&server));
    }
    let peak = peak.max(peak_rss_kib(&server, Duration::from_millis(300)).await);
    let grown = peak.saturating_sub(before);
    eprintln!("unanswered pings: the server grew by {grown} KiB");
    assert!(grown < 16 * 1024, "the server grew by {grown} KiB under unanswered pings");
}

/// Finding 2: relays queued for a client that does not read are bounded in
/// bytes (`--max-queued-bytes`, 4 MiB), not only in frames: 96 relays of
/// ~1 MiB held ~96 MiB for one such client before (1,024 frames of up to
/// 1 MiB each); now it is disconnected as a slow consumer (1008) once 4 MiB
/// wait, and the server stays within a few MiB.
#[tokio::test]
async fn relays_to_a_client_that_does_not_read_are_bounded_in_bytes() {
    let (server, addr) = common::spawn_binary(&[]).await;
    let url = format!("ws://{addr}/ws");
    let mut attacker = common::Raw::connect(&url).await;
    attacker.ok("init", json!([])).await;
    let group = attacker.ok("create", json!([])).await;
    let mut victim = initialised(addr).await;
    let join = format!(r#"{{"jsonrpc":"2.0","id":2,"method":"join","params":[{group}]}}"#);
    victim.send(true, opcode::TEXT, join.as_bytes()).await;
    assert!(victim.json().await["result"].is_object());
    let joined = attacker.incoming("member_joined").await;
    let target = joined["params"][1].as_str().expect("user id").to_owned();
    let before = common::rss_kib(&server);
    let data = "d".repeat((1 << 20) - 256);
    let relay = format!(r#"{{"jsonrpc":"2.0","method":"relay","params":[{group},"{target}","{data}"]}}"#);
    let started = Instant::now();
    let mut peak = before;
    for _ in 0..96 {
        if started.elapsed() > ATTACK_TIME {
            break;
        }
        if !attacker.try_send_text(&relay).await {
            break;
        }
        peak = peak.max(common::rss_kib(&server));
    }
    let peak = peak.max(peak_rss_kib(&server, Duration::from_millis(300)).await);
    let grown = peak.saturating_sub(before);
    eprintln!("relays for a client that does not read: the server grew by {grown} KiB");
    assert!(grown < 24 * 1024, "the server grew by {grown} KiB holding relays for a client that does not read");
    drop(victim);
    assert_eq!(refused(addr, "queued_frames").await, 1.0, "the victim is closed as a slow consumer");
}

/// `webrtc_p2p_refused_total{limit}` of the server at `addr`.
async fn refused(addr: std::net::SocketAddr, limit: &str) -> f64 {
    let response = common::http(addr, "GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").await;
    common::metric(&response, &format!("webrtc_p2p_refused_total{{limit=\"{limit}\"}}")).unwrap_or(0.0)
}

/// Finding 6: every element of a batch pays its own message, invalid ones
/// too. 300 batches of 100 invalid elements got ~20,000 error answers past
/// a 200-per-second limit; now at most what the limit allows.
#[tokio::test]
async fn invalid_batch_elements_are_charged_to_the_rate_limit() {
    const RATE: usize = 200;
    let server = common::TestServer::with_flags(&["--rate-limit", "200"]).await;
    let (mut client, _) = server.user().await;
    let batch = format!("[{}]", vec!["1"; 100].join(","));
    let started = Instant::now();
    for _ in 0..300 {
        if started.elapsed() > ATTACK_TIME {
            break;
        }
        client.send_text(&batch).await;
    }
    // Two round trips, so that the answers of the last batches are in.
    let mut received = client.received_so_far().await;
    received.extend(client.received_so_far().await);
    let elapsed = started.elapsed().as_secs_f64();
    let answered: usize = received.iter().filter_map(Value::as_array).map(Vec::len).sum();
    let budget = (RATE as f64 * (elapsed + 1.0)).ceil() as usize;
    eprintln!("invalid batch elements: {answered} answered in {elapsed:.1} s (limit {RATE}/s)");
    assert!(answered <= budget, "{answered} invalid elements answered, over the {budget} the rate limit allows");
}
