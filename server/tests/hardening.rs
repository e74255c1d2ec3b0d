//! Abuse at the transport: each attacker is refused or disconnected by its
//! own limit while everyone else keeps being served. Slow consumers,
//! connection floods, slowloris, JSON bombs, rate and origin limits.

mod common;

use std::time::{Duration, Instant};

use common::{Raw, TestServer, group_of_three, http, http_head, metric, upgrade_request};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BUSY: i64 = -32009;
const GROUP_NOT_FOUND: i64 = -32003;
const UNKNOWN_ID: &str = "0123456789abcdef0123456789abcdef";

/// One relay from `from` to `to`'s user `uto`, answered at once; its round trip.
async fn timed_relay(from: &mut Raw, to: &mut Raw, group: &str, uto: &str) -> Duration {
    let started = Instant::now();
    let id = from.request("relay", json!([group, uto, "ping"])).await;
    let request = to.incoming("relay").await;
    to.answer(&request, json!("pong")).await;
    assert_eq!(from.response(id).await["result"], "pong");
    started.elapsed()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test]
async fn a_slow_consumer_fills_only_its_own_queue_and_others_keep_their_latency() {
    let server = TestServer::with_flags(&["--max-queued-frames", "64"]).await;
    let (group, [(mut a, ua), (mut b, _), (mut c, uc)]) = group_of_three(&server).await;
    let (mut flooder, _) = server.user().await;
    flooder.ok("join", json!([group])).await;
    for member in [&mut b, &mut c] {
        member.incoming("member_joined").await;
    }
    let payload = "x".repeat(16 * 1024);

    // The same traffic twice: to A while it reads, then while it does not.
    let mut healthy = Vec::new();
    for _ in 0..30 {
        for _ in 0..4 {
            flooder.notify("relay", json!([group, ua, payload])).await;
        }
        healthy.push(timed_relay(&mut b, &mut c, &group, &uc).await);
    }
    a.stall();
    let mut stalled = Vec::new();
    while server.hub.stats().users == 4 || stalled.len() < 30 {
        for _ in 0..4 {
            flooder.notify("relay", json!([group, ua, payload])).await;
        }
        stalled.push(timed_relay(&mut b, &mut c, &group, &uc).await);
        assert!(stalled.len() < 10_000, "A was never disconnected");
    }
    // A's kernel buffers, then its 64 queued frames, filled: A alone is gone.
    server.metric_settles_at("webrtc_p2p_refused_total{limit=\"queued_frames\"}", 1.0).await;
    server.metric_settles_at("webrtc_p2p_users", 3.0).await;
    let (healthy, worst) = (median(healthy), stalled.iter().max().copied().unwrap_or_default());
    let stalled = median(stalled);
    // Generous bounds: CI machines are shared and noisy; a server that
    // waited on A would stall these relays for good, not by milliseconds.
    assert!(stalled <= healthy * 4 + Duration::from_millis(20), "median relay {stalled:?}, was {healthy:?}");
    assert!(worst < Duration::from_secs(2), "slowest relay {worst:?}");
    assert_eq!(flooder.incoming("member_left").await["params"][1], json!(ua));
    flooder.nothing_pending().await;
}

#[tokio::test]
async fn past_max_connections_an_upgrade_gets_503_and_nothing_else_is_disturbed() {
    let server = TestServer::with_flags(&["--max-connections", "3"]).await;
    let (group, [(mut a, ua), (mut b, _), c]) = group_of_three(&server).await;
    for _ in 0..3 {
        let refused = http_head(server.addr, &upgrade_request("")).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.to_ascii_lowercase().contains("retry-after:"), "{refused}");
    }
    // The three keep signaling, and plain HTTP is not capped.
    assert!(timed_relay(&mut b, &mut a, &group, &ua).await < common::PATIENCE);
    let health = http(server.addr, "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let scraped = server.scrape().await;
    assert_eq!(metric(&scraped, "webrtc_p2p_refused_total{limit=\"connections\"}"), Some(3.0));
    assert_eq!(metric(&scraped, "webrtc_p2p_connections"), Some(3.0));

    // A slot freed is a slot taken.
    c.0.close().await;
    server.metric_settles_at("webrtc_p2p_connections", 2.0).await;
    let (mut d, _) = server.user().await;
    d.nothing_pending().await;
}

/// Reads until the server ends the connection; how long that took.
async fn closed_by_server(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut sink = [0u8; 1024];
    loop {
        match tokio::time::timeout(common::PATIENCE, stream.read(&mut sink)).await.expect("closed in time") {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn a_half_sent_upgrade_request_is_closed_within_the_header_timeout() {
    let server = TestServer::with_flags(&["--header-timeout", "300ms"]).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\n").await.unwrap();
    // A byte every 50 ms never finishes a head: the timeout is for the whole head.
    let trickle = TcpStream::connect(server.addr).await.unwrap();
    let (mut trickle_read, mut trickle_write) = trickle.into_split();
    let trickler = tokio::spawn(async move {
        trickle_write.write_all(b"GET /ws HTTP/1.1\r\nX-Slow: ").await.unwrap();
        let mut ticks = tokio::time::interval(Duration::from_millis(50));
        while trickle_write.write_all(b"a").await.is_ok() {
            ticks.tick().await;
        }
    });
    // Meanwhile everyone else is served.
    let (mut client, _) = server.user().await;
    client.nothing_pending().await;

    for stream in [&mut silent, &mut half] {
        let waited = closed_by_server(stream).await;
        assert!(waited < Duration::from_secs(3), "closed after {waited:?}");
    }
    let mut sink = [0u8; 64];
    let waited = {
        let started = Instant::now();
        while !matches!(
            tokio::time::timeout(common::PATIENCE, trickle_read.read(&mut sink)).await.expect("closed in time"),
            Ok(0) | Err(_)
        ) {}
        started.elapsed()
    };
    assert!(waited < Duration::from_secs(3), "the trickler was closed after {waited:?}");
    trickler.abort();
    server.metric_settles_at("webrtc_p2p_refused_total{limit=\"header_timeout\"}", 3.0).await;
    client.nothing_pending().await;
}

#[tokio::test]
async fn a_complete_request_is_not_cut_by_the_header_timeout() {
    let server = TestServer::with_flags(&["--header-timeout", "200ms"]).await;
    // A WebSocket outlives the header timeout by far: it only bounds the head.
    let (mut client, _) = server.user().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    client.nothing_pending().await;
}

#[tokio::test]
async fn a_json_bomb_gets_a_parse_error_and_the_server_stays_up() {
    let server = TestServer::start().await;
    let (mut bomber, _) = server.user().await;
    let (mut bystander, _) = server.user().await;
    let deep = |open: &str, close: &str| format!("{}{}", open.repeat(100_000), close.repeat(100_000));
    for bomb in [
        "[".repeat(100_000),
        "{\"a\":".repeat(100_000),
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"relay","params":{}}}"#, "[".repeat(100_000)),
        format!(r#"[{{"jsonrpc":"2.0","id":1,"method":"init","params":{}}}]"#, "{\"a\":".repeat(50_000)),
    ] {
        bomber.send_text(&bomb).await;
        let answer = bomber.next().await;
        assert_eq!(answer["error"]["code"], -32700, "{}", &bomb[..40]);
        assert_eq!(answer["id"], json!(null));
    }
    // Well-formed but deep: refused as too deep to parse (-32700), or as not
    // having the shape asked for (-32602, -32600); either way answered.
    for bomb in [
        format!(r#"{{"jsonrpc":"2.0","id":2,"method":"join","params":[{}]}}"#, deep("[", "]")),
        format!(r#"{{"jsonrpc":"2.0","id":2,"method":"relay","params":{}}}"#, deep("{\"a\":", "}")),
        deep("[", "]"),
    ] {
        bomber.send_text(&bomb).await;
        let answer = bomber.next().await;
        let answer = answer.as_array().and_then(|batch| batch.first()).unwrap_or(&answer);
        let code = answer["error"]["code"].as_i64();
        assert!(matches!(code, Some(-32700 | -32602 | -32600)), "{}: {answer}", &bomb[..60]);
    }
    bomber.nothing_pending().await;
    bystander.nothing_pending().await;
}

#[tokio::test]
async fn calls_past_the_rate_limit_get_busy_until_the_window_passes() {
    let server = TestServer::with_flags(&["--rate-limit", "5", "--rate-window", "400ms"]).await;
    let (mut fast, _) = server.user().await; // init spent one
    let (mut other, _) = server.user().await;
    let ids: Vec<i64> = {
        let mut ids = Vec::new();
        for _ in 0..10 {
            ids.push(fast.request("get_members", json!([UNKNOWN_ID])).await);
        }
        ids
    };
    let mut codes = Vec::new();
    for id in ids {
        codes.push(fast.response(id).await["error"]["code"].as_i64().unwrap());
    }
    assert_eq!(codes[..4], [GROUP_NOT_FOUND; 4], "{codes:?}");
    assert_eq!(codes[4..], [BUSY; 6], "{codes:?}");
    // Notifications past the limit are dropped without a word; other
    // connections have their own budget.
    fast.notify("relay", json!([UNKNOWN_ID, UNKNOWN_ID, 1])).await;
    assert_eq!(other.err("get_members", json!([UNKNOWN_ID])).await, GROUP_NOT_FOUND);

    // A window later the whole budget is back.
    tokio::time::sleep(Duration::from_millis(450)).await;
    for _ in 0..5 {
        assert_eq!(fast.err("get_members", json!([UNKNOWN_ID])).await, GROUP_NOT_FOUND);
    }
    assert_eq!(fast.err("get_members", json!([UNKNOWN_ID])).await, BUSY);
    let refused = metric(&server.scrape().await, "webrtc_p2p_refused_total{limit=\"rate\"}");
    assert_eq!(refused, Some(8.0), "6 calls, 1 notification, 1 call");
}

#[tokio::test]
async fn a_batch_pays_for_each_of_its_elements() {
    let server = TestServer::with_flags(&["--rate-limit", "4", "--rate-window", "1h"]).await;
    let (mut client, _) = server.user().await;
    let call = |id: i64| json!({"jsonrpc": "2.0", "id": id, "method": "get_members", "params": [UNKNOWN_ID]});
    client.send(json!([call(1), call(2), call(3), call(4)])).await;
    let answers = client.next().await;
    let codes: Vec<_> = answers.as_array().unwrap().iter().map(|a| a["error"]["code"].clone()).collect();
    assert_eq!(codes, [json!(GROUP_NOT_FOUND), json!(GROUP_NOT_FOUND), json!(GROUP_NOT_FOUND), json!(BUSY)]);
}

#[tokio::test]
async fn only_allowed_origins_may_upgrade_and_a_flag_decides_for_clients_without_one() {
    let server = TestServer::with_flags(&[
        "--allowed-origin",
        "https://app.example",
        "--allowed-origin",
        "http://localhost:8080",
    ])
    .await;
    for (origin, want) in [
        ("Origin: https://app.example\r\n", "HTTP/1.1 101"),
        ("Origin: http://LOCALHOST:8080\r\n", "HTTP/1.1 101"),
        ("", "HTTP/1.1 101"),
        ("Origin: https://evil.example\r\n", "HTTP/1.1 403"),
        ("Origin: https://app.example.evil.example\r\n", "HTTP/1.1 403"),
        ("Origin: http://app.example\r\n", "HTTP/1.1 403"),
        ("Origin: null\r\n", "HTTP/1.1 403"),
    ] {
        let head = http_head(server.addr, &upgrade_request(origin)).await;
        assert!(head.starts_with(want), "{origin:?}: {head}");
    }
    assert_eq!(metric(&server.scrape().await, "webrtc_p2p_refused_total{limit=\"origin\"}"), Some(4.0));

    let strict = TestServer::with_flags(&["--allowed-origin", "https://app.example", "--require-origin"]).await;
    assert!(http_head(strict.addr, &upgrade_request("")).await.starts_with("HTTP/1.1 403"));
    assert!(
        http_head(strict.addr, &upgrade_request("Origin: https://app.example\r\n")).await.starts_with("HTTP/1.1 101")
    );
    // The page and the client bundle stay public: only /ws is guarded.
    let page =
        http(strict.addr, "GET /webrtc-p2p.js HTTP/1.1\r\nHost: t\r\nOrigin: https://x\r\nConnection: close\r\n\r\n")
            .await;
    assert!(page.starts_with("HTTP/1.1 200"), "{}", &page[..40]);
}

#[tokio::test]
async fn metrics_are_served_in_the_prometheus_text_format() {
    let server = TestServer::start().await;
    let (group, [(mut a, ua), (mut b, _), _c]) = group_of_three(&server).await;
    timed_relay(&mut b, &mut a, &group, &ua).await;
    assert_eq!(b.err("relay", json!([group, UNKNOWN_ID, 1])).await, -32005);
    b.send_text("nonsense").await;
    assert_eq!(b.next().await["error"]["code"], -32700);

    let response = http(server.addr, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    for (sample, want) in [
        ("webrtc_p2p_connections", 3.0),
        ("webrtc_p2p_connections_opened_total", 3.0),
        ("webrtc_p2p_users", 3.0),
        ("webrtc_p2p_groups", 1.0),
        ("webrtc_p2p_relays_in_flight", 0.0),
        ("webrtc_p2p_relays_total{outcome=\"answered\"}", 1.0),
        ("webrtc_p2p_relays_total{outcome=\"refused\"}", 1.0),
        ("webrtc_p2p_relays_total{outcome=\"timeout\"}", 0.0),
        ("webrtc_p2p_relay_duration_seconds_count", 1.0),
        ("webrtc_p2p_errors_total{error=\"UserNotFound\"}", 1.0),
        ("webrtc_p2p_errors_total{error=\"ParseError\"}", 1.0),
        ("webrtc_p2p_refused_total{limit=\"message_size\"}", 0.0),
    ] {
        assert_eq!(metric(body, sample), Some(want), "{sample} in\n{body}");
    }
    for family in ["connections", "users", "groups", "relays", "relay_duration_seconds", "errors", "refused", "closes"]
    {
        assert!(body.contains(&format!("# TYPE webrtc_p2p_{family} ")), "{family} in\n{body}");
    }
    assert!(body.contains("webrtc_p2p_relay_duration_seconds_bucket{le=\"+Inf\"} 1"), "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
}
